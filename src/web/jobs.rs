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
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    WebState,
    api::{ApiResult, uai},
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

/// A page of the newest jobs the caller reaches, and their counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobListAnswer {
    pub jobs: Vec<crate::db::jobs::JobRow>,
    /// Per status, the jobs the filters (but the status) select, each
    /// counted up to 10 000: a status named in `capped` has at least that
    /// many.
    pub counts: std::collections::BTreeMap<String, i64>,
    /// The statuses whose count stopped at 10 000 ("10 000+").
    pub capped: Vec<String>,
    /// Whether jobs remain after this page.
    pub more: bool,
    /// When jobs remain, the `cursor` that asks for the next page (an
    /// opaque string, valid however many jobs arrive meanwhile).
    pub next: Option<String>,
}

/// Filters of the job list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    pub status: Option<String>,
    pub kind: Option<String>,
    /// Jobs whose payload names this exam.
    pub exam: Option<String>,
    /// Jobs whose payload names this establishment.
    pub establishment: Option<String>,
    #[serde(default = "default_jobs_limit")]
    pub limit: i64,
    /// Where the page starts: the previous page's `next`, as given.
    pub cursor: Option<String>,
    /// Deprecated (use `cursor`): jobs to skip, at most 10 000, not with
    /// a cursor.
    #[serde(default)]
    pub offset: i64,
}

fn default_jobs_limit() -> i64 {
    50
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobsQuery),
    responses((status = 200, body = JobListAnswer), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn jobs_list(
    State(s): State<WebState>,
    Caller(actor): Caller,
    query: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let status = q
        .status
        .as_deref()
        .map(JobStatus::parse)
        .transpose()
        .map_err(|e| OpError::invalid("status", e))?;
    let input = ListInput {
        status,
        kind: q.kind,
        exam: q.exam,
        establishment: q
            .establishment
            .as_deref()
            .map(|u| uai("establishment", u))
            .transpose()?,
        limit: q.limit,
        cursor: q.cursor,
        offset: q.offset,
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
            .map(|(s, _)| s.as_str().to_owned())
            .collect(),
        jobs: list.jobs,
        more: list.more,
        next: list.next,
    })
    .into_response())
}

fn job_id(id: &str) -> ApiResult<Uuid> {
    Uuid::try_parse(id).map_err(|e| OpError::invalid("id", format!("not a job id: {e}")).into())
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = crate::jobs::admin::JobDetail), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn job_show(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let detail = admin::show(&s.app, &actor, job_id(&id)?).await?;
    Ok(Json(detail).into_response())
}

/// The status a job had before a retry or cancel.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WasAnswer {
    pub was: JobStatus,
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = WasAnswer), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Not dead, failed or cancelled")))]
async fn job_retry(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WasAnswer>> {
    let was = admin::retry(&s.app, &actor, job_id(&id)?).await?;
    Ok(Json(WasAnswer { was }))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = WasAnswer), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Not queued or running")))]
async fn job_cancel(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WasAnswer>> {
    let was = admin::cancel(&s.app, &actor, job_id(&id)?).await?;
    Ok(Json(WasAnswer { was }))
}

/// A job's progress as Server-Sent Events: a `progress` event each time
/// its status or progress changes (read from Postgres every 250 ms, the
/// ledger being the system of record), then a final `done` event with the
/// final status, after which the stream ends.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "`progress` events ({status, done, total, last_error}) as the job moves, then one `done` event"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn job_events(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
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
                        let event = Event::default().event("done").data(r#"{"status":"gone"}"#);
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
                    let data = serde_json::json!({
                        "status": job.status,
                        "done": job.progress_done,
                        "total": job.progress_total,
                        "last_error": job.last_error,
                    })
                    .to_string();
                    let name = if job.status.is_final() {
                        "done"
                    } else {
                        "progress"
                    };
                    let event = Event::default().event(name).data(data);
                    return Some((Ok(event), (db, Some(now), job.status.is_final())));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
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
            retry: operator
                && matches!(
                    j.status,
                    JobStatus::Dead | JobStatus::Failed | JobStatus::Cancelled
                ),
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
