//! The jobs' routes of the JSON API and their wire types: the list with
//! its counts, a job's detail, its retry and its cancellation.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::JobStatus;
use crate::jobs::admin;
use crate::jobs::admin::ListInput;
use crate::jobs::operators;
use crate::op::OpError;
use crate::web::WebState;
use crate::web::api::{ApiPath, ApiQuery, ApiResult, Code, CursorText, KindName, UaiText, uai};
use crate::web::problem::Problem;
use crate::web::session::Caller;

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
pub(super) async fn jobs_list(
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
        limit: q.limit,
        cursor: q.cursor.map(|c| c.0),
        ..filters(q.kind, q.exam, q.establishment)?
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

/// A list's input of the filters the list and the bulk retry share.
fn filters(
    kind: Option<KindName>,
    exam: Option<Code>,
    establishment: Option<UaiText>,
) -> ApiResult<ListInput> {
    Ok(ListInput {
        kind: kind.map(|k| k.0),
        exam: exam.map(|e| e.0),
        establishment: establishment
            .map(|u| uai("establishment", &u.0))
            .transpose()?,
        ..ListInput::default()
    })
}

pub(super) fn job_id(id: &str) -> ApiResult<Uuid> {
    Uuid::try_parse(id).map_err(|e| OpError::invalid("id", format!("not a job id: {e}")).into())
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, body = JobDetailAnswer), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub(super) async fn job_show(
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
pub(super) async fn job_retry(
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
pub(super) async fn job_cancel(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WasAnswer>> {
    let was = admin::cancel(&s.app, &actor, job_id(&id)?).await?;
    Ok(Json(WasAnswer { was: was.into() }))
}

/// Filters of a bulk retry: the dead jobs of the list's filters (every
/// dead job the caller reaches when none is given).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadJobsQuery {
    /// Dead jobs of this kind.
    #[param(nullable = false)]
    pub kind: Option<KindName>,
    /// Dead jobs whose payload names this exam.
    #[param(nullable = false)]
    pub exam: Option<Code>,
    /// Dead jobs whose payload names this establishment.
    #[param(nullable = false)]
    pub establishment: Option<UaiText>,
}

/// A job a bulk retry left dead, with the answer its own retry gets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefusedRetry {
    pub job: Uuid,
    pub problem: Problem,
}

/// What a bulk retry did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkRetryAnswer {
    /// The jobs queued again.
    pub retried: Vec<Uuid>,
    /// The jobs refused, each with the answer its own retry gets (a
    /// published exam's closure, a job retried meanwhile by another
    /// operator).
    pub refused: Vec<RefusedRetry>,
    /// Whether dead jobs of the filters remain beyond the 1 000 newest
    /// that one bulk retry takes: ask again for the next ones.
    pub more: bool,
}

#[utoipa::path(post, path = "/api/v1/jobs/retry-dead", tag = "jobs", params(DeadJobsQuery),
    responses((status = 200, body = BulkRetryAnswer, description = "The dead jobs of the filters within the caller's scope (at most the 1 000 newest), each retried as its own retry would be"),
        (status = 403, body = Problem, description = "An establishment (only operators retry jobs in bulk)"),
        (status = 404, body = Problem, description = "An establishment of a UAI's form whose check letter is wrong"),
        (status = 422, body = Problem)))]
pub(super) async fn jobs_retry_dead(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiQuery(q): ApiQuery<DeadJobsQuery>,
) -> ApiResult<Json<BulkRetryAnswer>> {
    let input = ListInput {
        status: Some(JobStatus::Dead),
        ..filters(q.kind, q.exam, q.establishment)?
    };
    let done = operators::retry_dead(&s.app, &actor, &input).await?;
    Ok(Json(BulkRetryAnswer {
        retried: done.retried,
        refused: done
            .refused
            .into_iter()
            .map(|(job, e)| RefusedRetry {
                job,
                problem: e.into(),
            })
            .collect(),
        more: done.more,
    }))
}
