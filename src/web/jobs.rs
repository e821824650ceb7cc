//! Jobs: the list of the jobs the caller reaches with their counts, a
//! job's detail, its retry and cancellation, and its progress as
//! Server-Sent Events (API and pages).

use std::{convert::Infallible, time::Duration};

use askama::Template;
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    response::{
        IntoResponse, Redirect, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    WebState,
    api::{ApiPath, ApiQuery, ApiResult, Code, CursorText, KindName, UaiText, uai},
    french,
    pages::{PageError, Who, date, form_uai, render, urlencoding},
    problem::Problem,
    session::{Caller, Viewer},
};
use crate::{
    download::{self, ZipInput},
    jobs::admin::{self, ListInput},
    ledger::JobStatus,
    op::{Actor, OpError},
};

/// The API's routes of this resource.
pub(super) fn api() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(jobs_list))
        .routes(routes!(job_show))
        .routes(routes!(job_retry))
        .routes(routes!(job_cancel))
        .routes(routes!(job_events))
}

/// The pages of this resource.
pub(super) fn pages() -> Router<WebState> {
    Router::new()
        .route("/travaux", get(page_jobs))
        .route("/travaux/{id}", get(page_job))
        .route("/travaux/{id}/evenements", get(page_job_events))
        .route("/travaux/{id}/relance", post(page_job_retry))
        .route("/travaux/{id}/annulation", post(page_job_cancel))
}

/// A job's status, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl From<JobStatus> for JobState {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Queued => Self::Queued,
            JobStatus::Running => Self::Running,
            JobStatus::Succeeded => Self::Succeeded,
            JobStatus::Failed => Self::Failed,
            JobStatus::Dead => Self::Dead,
            JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<JobState> for JobStatus {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Queued => Self::Queued,
            JobState::Running => Self::Running,
            JobState::Succeeded => Self::Succeeded,
            JobState::Failed => Self::Failed,
            JobState::Dead => Self::Dead,
            JobState::Cancelled => Self::Cancelled,
        }
    }
}

/// A job, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    /// Its kind, e.g. `closure`, `bulk-render`.
    pub kind: String,
    pub status: JobState,
    /// What it works on, as its kind reads it (e.g. `exam`,
    /// `establishment`).
    pub payload: serde_json::Value,
    pub priority: i16,
    pub attempts: i32,
    pub max_attempts: i32,
    /// When it may run (its next attempt, when waiting).
    pub run_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub progress_done: Option<i64>,
    pub progress_total: Option<i64>,
    pub result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    /// Who asked: `coordinator:<academy>`, `establishment:<UAI>`,
    /// `token:<name>`, `scheduler`…
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<crate::db::jobs::JobRow> for Job {
    fn from(j: crate::db::jobs::JobRow) -> Self {
        Self {
            id: j.id,
            kind: j.kind,
            status: j.status.into(),
            payload: j.payload,
            priority: j.priority,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_at: j.run_at,
            lease_until: j.lease_until,
            worker: j.worker,
            progress_done: j.progress_done,
            progress_total: j.progress_total,
            result: j.result,
            last_error: j.last_error,
            idempotency_key: j.idempotency_key,
            created_by: j.created_by,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
        }
    }
}

/// One entry of a job's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobHistoryEntry {
    pub at: DateTime<Utc>,
    /// What happened: `enqueued`, `started`, `succeeded`, `retrying`…
    pub event: String,
    pub attempt: i32,
    pub worker: Option<String>,
    pub detail: Option<String>,
}

/// A job with its history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobDetailAnswer {
    pub job: Job,
    pub events: Vec<JobHistoryEntry>,
}

impl From<admin::JobDetail> for JobDetailAnswer {
    fn from(d: admin::JobDetail) -> Self {
        Self {
            job: d.job.into(),
            events: d
                .events
                .into_iter()
                .map(|e| JobHistoryEntry {
                    at: e.at,
                    event: e.event,
                    attempt: e.attempt,
                    worker: e.worker,
                    detail: e.detail,
                })
                .collect(),
        }
    }
}

/// A page of the newest jobs the caller reaches, and their counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobListAnswer {
    pub jobs: Vec<Job>,
    /// Per status, the jobs the filters (but the status) select, each
    /// counted up to 10 000: a status named in `capped` has at least that
    /// many.
    pub counts: std::collections::BTreeMap<String, i64>,
    /// The statuses whose count stopped at 10 000 ("10 000+").
    pub capped: Vec<JobState>,
    /// Whether jobs remain after this page.
    pub more: bool,
    /// When jobs remain, the `cursor` that asks for the next page (an
    /// opaque string, valid however many jobs arrive meanwhile).
    pub next: Option<String>,
}

/// Filters of the job list. Pages are read by `cursor` only (the
/// `offset` of earlier versions is refused).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Jobs of this status.
    #[param(nullable = false)]
    pub status: Option<JobState>,
    /// Jobs of this kind.
    #[param(nullable = false)]
    pub kind: Option<KindName>,
    /// Jobs whose payload names this exam.
    #[param(nullable = false)]
    pub exam: Option<Code>,
    /// Jobs whose payload names this establishment.
    #[param(nullable = false)]
    pub establishment: Option<UaiText>,
    /// Jobs per page.
    #[serde(default = "default_jobs_limit")]
    #[param(minimum = 1, maximum = 10000, default = 50)]
    pub limit: i64,
    /// Where the page starts: the previous page's `next`, as given.
    #[param(nullable = false)]
    pub cursor: Option<CursorText>,
    /// Removed: refused (give the previous page's `next` as `cursor`).
    #[param(ignore)]
    pub offset: Option<serde::de::IgnoredAny>,
}

fn default_jobs_limit() -> i64 {
    50
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobsQuery),
    responses((status = 200, body = JobListAnswer), (status = 403, body = Problem),
        (status = 404, body = Problem, description = "An establishment of a UAI's form whose check letter is wrong"),
        (status = 422, body = Problem)))]
async fn jobs_list(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiQuery(q): ApiQuery<JobsQuery>,
) -> ApiResult<Json<JobListAnswer>> {
    if q.offset.is_some() {
        return Err(OpError::invalid(
            "offset",
            "is not taken any more: give the previous page's `next` as `cursor`",
        )
        .into());
    }
    let input = ListInput {
        status: q.status.map(Into::into),
        kind: q.kind.map(|k| k.0),
        exam: q.exam.map(|e| e.0),
        establishment: q
            .establishment
            .map(|u| uai("establishment", &u.0))
            .transpose()?,
        limit: q.limit,
        cursor: q.cursor.map(|c| c.0),
        offset: 0,
    };
    let list = admin::list(&s.app, &actor, &input).await?;
    Ok(Json(JobListAnswer {
        counts: list
            .counts
            .iter()
            .map(|(s, c)| (s.as_str().to_owned(), c.n))
            .collect(),
        capped: list
            .counts
            .iter()
            .filter(|(_, c)| c.capped)
            .map(|(s, _)| JobState::from(*s))
            .collect(),
        jobs: list.jobs.into_iter().map(Job::from).collect(),
        more: list.more,
        next: list.next,
    }))
}

fn job_id(id: &str) -> ApiResult<Uuid> {
    Uuid::try_parse(id).map_err(|e| OpError::invalid("id", format!("not a job id: {e}")).into())
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, body = JobDetailAnswer), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
async fn job_show(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobDetailAnswer>> {
    let detail = admin::show(&s.app, &actor, job_id(&id)?).await?;
    Ok(Json(detail.into()))
}

/// The status a job had before a retry or cancel.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WasAnswer {
    pub was: JobState,
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, body = WasAnswer), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Not dead, failed or cancelled (/problems/conflict), or a job sending a published exam's items (/problems/refused)")))]
async fn job_retry(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WasAnswer>> {
    let was = admin::retry(&s.app, &actor, job_id(&id)?).await?;
    Ok(Json(WasAnswer { was: was.into() }))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, body = WasAnswer), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Not queued or running")))]
async fn job_cancel(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WasAnswer>> {
    let was = admin::cancel(&s.app, &actor, job_id(&id)?).await?;
    Ok(Json(WasAnswer { was: was.into() }))
}

/// The data of an event of a job's stream (`progress` while the job may
/// still move, then one `done`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobProgress {
    /// The job's status, or `gone` when the job was deleted meanwhile.
    pub status: ProgressStatus,
    pub done: Option<i64>,
    pub total: Option<i64>,
    pub last_error: Option<String>,
}

/// A job's status in its stream: its status, or `gone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProgressStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
    /// The job no longer exists.
    Gone,
}

impl From<JobStatus> for ProgressStatus {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Queued => Self::Queued,
            JobStatus::Running => Self::Running,
            JobStatus::Succeeded => Self::Succeeded,
            JobStatus::Failed => Self::Failed,
            JobStatus::Dead => Self::Dead,
            JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// One event of a job's stream, as the document describes it: its name
/// and its data, a [`JobProgress`] as JSON.
pub struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{
            Ref,
            schema::{ObjectBuilder, Type},
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An event of the stream: `progress` each time the job moves, then one `done`; its data is a JobProgress document.",
            ))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["progress", "done"])),
            )
            .required("event")
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json")
                    .content_schema(Some(Ref::from_schema_name("JobProgress"))),
            )
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for StreamEvent {}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs", params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, content_type = "text/event-stream", body = StreamEvent,
            description = "Server-Sent Events: a `progress` event each time the job moves, then one `done` event, each with a JobProgress document as its data; read from PostgreSQL"),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn job_events(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = job_id(&id)?;
    Ok(events(&s, &actor, id).await?)
}

/// The events of job `id` for `actor` (see [`job_events`]); the web pages
/// serve the same stream to their session.
pub async fn events(
    s: &WebState,
    actor: &Actor,
    id: Uuid,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, OpError> {
    // The scope check, once; the stream then reads the row only.
    admin::show(&s.app, actor, id).await?;
    let db = s.app.db.clone();
    let stream = futures::stream::unfold(
        (db, None::<(JobStatus, Option<i64>, Option<i64>)>, false),
        move |(db, last, finished)| async move {
            if finished {
                return None;
            }
            loop {
                let job = match crate::db::jobs::get(&db, id).await {
                    Ok(Some(job)) => job,
                    Ok(None) => {
                        let event = progress_event(
                            "done",
                            &JobProgress {
                                status: ProgressStatus::Gone,
                                done: None,
                                total: None,
                                last_error: None,
                            },
                        );
                        return Some((Ok(event), (db, last, true)));
                    }
                    Err(e) => {
                        tracing::warn!(job.id = %id, error = %format!("{e:#}"), "job events: read failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let now = (job.status, job.progress_done, job.progress_total);
                if last != Some(now) {
                    let name = if job.status.is_final() {
                        "done"
                    } else {
                        "progress"
                    };
                    let event = progress_event(
                        name,
                        &JobProgress {
                            status: job.status.into(),
                            done: job.progress_done,
                            total: job.progress_total,
                            last_error: job.last_error,
                        },
                    );
                    return Some((Ok(event), (db, Some(now), job.status.is_final())));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One event of a job's stream: its name and its [`JobProgress`] as
/// JSON data.
fn progress_event(name: &'static str, progress: &JobProgress) -> Event {
    match Event::default().event(name).json_data(progress) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(error = %e, "job events: cannot write an event");
            Event::default().event(name)
        }
    }
}

struct JobLine {
    id: Uuid,
    short: String,
    kind: String,
    exam: String,
    establishment: String,
    status: String,
    attempts: String,
    progress: String,
    created_by: String,
    created_at: String,
}

/// One status's count, linking to the list of that status.
struct CountLink {
    label: &'static str,
    count: String,
    href: String,
    current: bool,
}

/// An option of a filter's list: its value, French label and whether it
/// is chosen.
struct Choice {
    value: &'static str,
    label: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    who: Option<Who>,
    statuses: Vec<Choice>,
    kinds: Vec<Choice>,
    exam: String,
    uai: String,
    jobs: Vec<JobLine>,
    counts: Vec<CountLink>,
    previous: Option<String>,
    next: Option<String>,
}

/// A job's short reference: the last 8 hex digits of its id, the random
/// ones of a UUIDv7 (its first ones are the time it was made, the same
/// for every job made within a minute).
pub(super) fn short_ref(id: &Uuid) -> String {
    let hex = id.simple().to_string();
    format!("…{}", &hex[hex.len() - 8..])
}

/// A payload's text field (`exam`, `establishment`), empty when absent.
fn payload_text(payload: &serde_json::Value, field: &str) -> String {
    payload
        .get(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

#[derive(Deserialize, Clone)]
struct JobsForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    exam: String,
    #[serde(default)]
    uai: String,
    /// The cursor of the page: the previous page's `next` (empty: the
    /// newest jobs).
    #[serde(default)]
    apres: String,
}

/// Jobs per page of the jobs list.
const JOBS_PER_PAGE: i64 = 50;

async fn page_jobs(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Query(form): Query<JobsForm>,
) -> Result<Response, PageError> {
    let status = match form.status.as_str() {
        "" => None,
        s => Some(
            JobStatus::parse(s)
                .map_err(|e| PageError::of(OpError::invalid("status", e), &actor))?,
        ),
    };
    let cursor = Some(form.apres.trim().to_owned()).filter(|c| !c.is_empty());
    let input = ListInput {
        status,
        kind: Some(form.kind.trim().to_owned()).filter(|k| !k.is_empty()),
        exam: Some(form.exam.trim().to_owned()).filter(|k| !k.is_empty()),
        establishment: form_uai(&actor, Some(&form.uai))?,
        limit: JOBS_PER_PAGE,
        cursor: cursor.clone(),
        offset: 0,
    };
    let list = admin::list(&s.app, &actor, &input)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    render(
        JobsPage {
            who: Some(Who::of(&actor)),
            statuses: JobStatus::ALL
                .iter()
                .map(|s| Choice {
                    value: s.as_str(),
                    label: french::job_status(*s).to_owned(),
                    selected: s.as_str() == form.status,
                })
                .collect(),
            kinds: french::JOB_KINDS
                .iter()
                .map(|k| Choice {
                    value: k,
                    label: french::job_kind(k),
                    selected: *k == form.kind,
                })
                .collect(),
            counts: list
                .counts
                .iter()
                .map(|(s, n)| CountLink {
                    label: french::job_status(*s),
                    count: n.to_string(),
                    href: jobs_query(
                        &JobsForm {
                            status: s.as_str().to_owned(),
                            apres: String::new(),
                            ..form.clone()
                        },
                        None,
                    ),
                    current: s.as_str() == form.status,
                })
                .collect(),
            // Pages are read by key, newest first: the way back is to the
            // newest jobs.
            previous: cursor.is_some().then(|| jobs_query(&form, None)),
            next: list.next.as_deref().map(|c| jobs_query(&form, Some(c))),
            exam: form.exam.clone(),
            uai: form.uai.clone(),
            jobs: list
                .jobs
                .into_iter()
                .map(|j| JobLine {
                    short: short_ref(&j.id),
                    id: j.id,
                    kind: french::job_kind(&j.kind),
                    exam: payload_text(&j.payload, "exam"),
                    establishment: payload_text(&j.payload, "establishment"),
                    status: french::job_state(j.status, j.attempts, &j.run_at),
                    attempts: format!("{}/{}", j.attempts, j.max_attempts),
                    progress: match (j.progress_done, j.progress_total) {
                        (Some(d), Some(t)) => format!("{d}/{t}"),
                        _ => String::new(),
                    },
                    created_by: french::actor(&j.created_by),
                    created_at: date(j.created_at),
                })
                .collect(),
        },
        &actor,
    )
}

/// The jobs list's query string for page `page` with the same filters.
fn jobs_query(form: &JobsForm, cursor: Option<&str>) -> String {
    format!(
        "?status={}&kind={}&exam={}&uai={}&apres={}",
        urlencoding(&form.status),
        urlencoding(&form.kind),
        urlencoding(&form.exam),
        urlencoding(&form.uai),
        urlencoding(cursor.unwrap_or_default())
    )
}

struct EventLine {
    at: String,
    event: String,
    attempt: i32,
    detail: String,
    raw: Option<String>,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    who: Option<Who>,
    id: Uuid,
    kind: String,
    status: String,
    done: i64,
    total: i64,
    percent: i64,
    attempts: String,
    created_by: String,
    created_at: String,
    exam: String,
    establishment: String,
    /// The raw error, for admins only.
    last_error: Option<String>,
    events: Vec<EventLine>,
    buttons: Vec<super::downloads::Button>,
    zip_page: String,
    /// Whether the viewer may retry it now (an operator, a finished job
    /// that did not succeed).
    retry: bool,
    /// Whether the viewer may cancel it now (an operator, a job not
    /// finished).
    cancel: bool,
    /// Whether the job may still change: only then does the page follow
    /// its events (a finished job's stream ends at once, and following it
    /// would reload the page forever).
    live: bool,
}

fn parse_job_id(actor: &Actor, id: &str) -> Result<Uuid, PageError> {
    Uuid::try_parse(id).map_err(|e| PageError::of(OpError::invalid("id", e.to_string()), actor))
}

async fn page_job(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&actor, &id)?;
    let detail = admin::show(&s.app, &actor, id)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let j = &detail.job;
    let (done, total) = (j.progress_done.unwrap_or(0), j.progress_total.unwrap_or(0));
    let percent = if total > 0 {
        100 * done / total
    } else if j.status == JobStatus::Succeeded {
        100
    } else {
        0
    };
    // A finished zip: its buttons, for whoever reaches its establishment.
    let mut buttons = Vec::new();
    if j.kind == <download::BulkRender as crate::ledger::Kind>::NAME
        && j.status == JobStatus::Succeeded
        && let Ok(payload) = serde_json::from_value::<download::BulkRender>(j.payload.clone())
    {
        let input = ZipInput {
            exam: payload.exam,
            establishment: payload.establishment,
            options: payload.options.requested(),
        };
        if let Ok(Some(found)) = download::current_links(&s.app, &actor, &input).await {
            buttons = super::downloads::buttons(&s.app, &found);
        }
    }
    let admin = matches!(actor, Actor::Admin(_));
    let operator = !matches!(actor, Actor::Establishment { .. });
    // A job sending a published exam's items is never retried: no button.
    let retry = operator
        && matches!(
            j.status,
            JobStatus::Dead | JobStatus::Failed | JobStatus::Cancelled
        )
        && crate::closure::request::published_job_refusal(&s.app, &j.kind, &j.payload)
            .await
            .map_err(|e| PageError::of(e, &actor))?
            .is_none();
    render(
        JobPage {
            who: Some(Who::of(&actor)),
            id,
            kind: french::job_kind(&j.kind),
            status: french::job_state(j.status, j.attempts, &j.run_at),
            done,
            total: total.max(1),
            percent,
            attempts: format!("{}/{}", j.attempts, j.max_attempts),
            created_by: french::actor(&j.created_by),
            created_at: date(j.created_at),
            exam: payload_text(&j.payload, "exam"),
            establishment: payload_text(&j.payload, "establishment"),
            last_error: j.last_error.clone().filter(|_| admin),
            events: detail
                .events
                .iter()
                .map(|e| EventLine {
                    at: french::date_time_seconds(&e.at),
                    event: french::job_event(&e.event).to_owned(),
                    attempt: e.attempt,
                    detail: e
                        .detail
                        .as_deref()
                        .and_then(french::event_detail)
                        .unwrap_or_default(),
                    // The workers' own words, for admins only.
                    raw: e
                        .detail
                        .clone()
                        .filter(|d| admin && french::event_detail(d).is_none()),
                })
                .collect(),
            buttons,
            retry,
            cancel: operator && matches!(j.status, JobStatus::Queued | JobStatus::Running),
            zip_page: format!("/travaux/{id}"),
            live: !j.status.is_final(),
        },
        &actor,
    )
}

async fn page_job_events(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&actor, &id)?;
    events(&s, &actor, id)
        .await
        .map(IntoResponse::into_response)
        .map_err(|e| PageError::of(e, &actor))
}

async fn page_job_retry(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&actor, &id)?;
    admin::retry(&s.app, &actor, id)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    Ok(Redirect::to(&format!("/travaux/{id}")).into_response())
}

async fn page_job_cancel(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&actor, &id)?;
    admin::cancel(&s.app, &actor, id)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    Ok(Redirect::to(&format!("/travaux/{id}")).into_response())
}
