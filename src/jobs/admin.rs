//! The operations on the ledger a person asks for: list, show, retry,
//! cancel, and enqueue a job by kind name. Enqueueing by name is the
//! operator's (admin) and the scheduler's; a job whose payload names an
//! establishment (or an academy) is listed and shown to that establishment
//! and its coordinator, who may retry or cancel it.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;
use uuid::Uuid;

use super::registry;
use crate::{
    app::App,
    db::{
        self,
        jobs::{EventRow, JobRow},
    },
    domain::{JobStatus, Uai},
    ledger::{self, EnqueueError, EnqueueOptions, Enqueued},
    op::{Actor, OpError},
};

/// The most jobs one listing shows.
pub const MAX_LIST: i64 = 10_000;

/// The largest `offset` accepted (deprecated: pages are read by cursor).
pub const MAX_OFFSET: i64 = 10_000;

/// Each status's count stops at this many jobs ("10 000+"), so that the
/// counts read a bounded part of the ledger however large it grows.
pub const COUNT_CAP: i64 = 10_000;

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListInput {
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
    /// Jobs whose payload names this exam.
    pub exam: Option<String>,
    /// Jobs whose payload names this establishment.
    pub establishment: Option<Uai>,
    pub limit: i64,
    /// Where the page starts: the `next` cursor of the previous page, as
    /// given (opaque to callers); the newest jobs when `None`.
    pub cursor: Option<String>,
    /// Deprecated: jobs to skip before the page (at most [`MAX_OFFSET`],
    /// and not with a cursor).
    pub offset: i64,
}

/// The form of every cursor, as a regular expression: the 24 bytes of
/// [`Cursor::encode`] in base64url without padding.
pub const CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]{32}$";

/// Where the next page of a listing starts: the creation instant and id
/// of the last job shown. Callers see it only as an opaque string
/// ([`Cursor::encode`]), which stays valid whatever jobs arrive later:
/// pages are ordered newest first and a new job is newer than any shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(db::jobs::After);

impl Cursor {
    /// The cursor that starts after `job`.
    pub fn after(job: &JobRow) -> Self {
        Self(db::jobs::After {
            created_at: job.created_at,
            id: job.id,
        })
    }

    /// The cursor as callers hold it: base64url of the instant in
    /// microseconds since the epoch (8 bytes, big-endian) and the id.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.0.created_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(self.0.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a cursor given back by a caller: 32 characters of base64url
    /// ([`CURSOR_PATTERN`]); anything else is invalid input naming
    /// `cursor`.
    pub fn parse(text: &str) -> Result<Self, OpError> {
        let invalid = || {
            OpError::invalid(
                "cursor",
                format!("{text:?} is not a cursor of the jobs list (give back a page's `next`)"),
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let (micros, id) = bytes.split_at_checked(8).ok_or_else(invalid)?;
        let micros = i64::from_be_bytes(micros.try_into().map_err(|_| invalid())?);
        let id = Uuid::from_slice(id).map_err(|_| invalid())?;
        // Any 24 bytes are a place in the list: an instant outside years
        // 1 to 9999 (which PostgreSQL may refuse) is the list's start or
        // end, so that every string of the cursor's form is one.
        let first = chrono::NaiveDate::from_ymd_opt(1, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .ok_or_else(invalid)?;
        let last = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
            .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
            .map(|t| t.and_utc())
            .ok_or_else(invalid)?;
        let created_at = micros.clamp(first.timestamp_micros(), last.timestamp_micros());
        let created_at = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(created_at)
            .ok_or_else(invalid)?;
        Ok(Self(db::jobs::After { created_at, id }))
    }
}

/// One status's count in a listing: `n` jobs, or at least `n` when
/// `capped` (the count stopped at [`COUNT_CAP`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatusCount {
    pub n: i64,
    pub capped: bool,
}

impl std::fmt::Display for StatusCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.n, if self.capped { "+" } else { "" })
    }
}

/// A page of jobs, and every status's count among the jobs the listing
/// selects (whatever its status filter).
#[derive(Debug, Clone, Serialize)]
pub struct JobList {
    pub jobs: Vec<JobRow>,
    pub counts: Vec<(JobStatus, StatusCount)>,
    /// Whether jobs remain after this page.
    pub more: bool,
    /// The cursor of the next page, when jobs remain.
    pub next: Option<String>,
}

/// Lists the newest jobs the actor reaches: every job for admin and the
/// scheduler; those whose payload names the coordinator's academy (or one
/// of its establishments); those naming the establishment. A page starts
/// after its cursor; the counts stop at [`COUNT_CAP`] per status.
pub async fn list(app: &App, actor: &Actor, input: &ListInput) -> Result<JobList, OpError> {
    check_page(input)?;
    let after = input.cursor.as_deref().map(Cursor::parse).transpose()?;
    if after.is_some() && input.offset != 0 {
        return Err(OpError::invalid(
            "offset",
            "cannot be given with a cursor (the cursor says where the page starts)",
        ));
    }
    if let Some(kind) = &input.kind {
        registry::find(kind).map_err(|e| OpError::invalid("kind", e))?;
    }
    if let Some(exam) = &input.exam {
        crate::op::code("exam", exam)?;
    }
    if let Some(uai) = &input.establishment {
        actor
            .reach(app, uai, &format!("list the jobs of establishment {uai}"))
            .await?;
    }
    let scope = actor.scope();
    let own = scope.establishment().map(|u| u.to_string());
    let filter = db::jobs::JobFilter {
        status: input.status.map(JobStatus::as_str),
        kind: input.kind.as_deref(),
        exam: input.exam.as_deref(),
        establishment: input
            .establishment
            .as_ref()
            .map(Uai::as_str)
            .or(own.as_deref()),
        academy: scope.academy(),
    };
    let mut jobs = db::jobs::list_page(
        &app.db,
        &filter,
        after.map(|c| c.0),
        input.limit + 1,
        input.offset,
    )
    .await?;
    let more = jobs.len() as i64 > input.limit;
    jobs.truncate(input.limit as usize);
    let next = if more {
        jobs.last().map(|job| Cursor::after(job).encode())
    } else {
        None
    };
    let counts = status_counts(app, &filter).await?;
    Ok(JobList {
        jobs,
        counts,
        more,
        next,
    })
}

/// Checks a page's limit and offset (at most [`MAX_LIST`] and
/// [`MAX_OFFSET`]).
fn check_page(input: &ListInput) -> Result<(), OpError> {
    if !(1..=MAX_LIST).contains(&input.limit) {
        return Err(OpError::invalid(
            "limit",
            format!("must be 1 to {MAX_LIST}, got {}", input.limit),
        ));
    }
    if !(0..=MAX_OFFSET).contains(&input.offset) {
        return Err(OpError::invalid(
            "offset",
            format!(
                "must be 0 to {MAX_OFFSET}, got {} (deprecated: give the previous page's `next` as `cursor`)",
                input.offset
            ),
        ));
    }
    Ok(())
}

/// The jobs `filter` selects, counted by status up to [`COUNT_CAP`], every
/// status listed.
async fn status_counts(
    app: &App,
    filter: &db::jobs::JobFilter<'_>,
) -> Result<Vec<(JobStatus, StatusCount)>, OpError> {
    let counts: std::collections::HashMap<JobStatus, i64> =
        db::jobs::count_capped(&app.db, filter, COUNT_CAP)
            .await?
            .into_iter()
            .collect();
    Ok(JobStatus::ALL
        .into_iter()
        .map(|s| {
            let n = counts.get(&s).copied().unwrap_or(0);
            (
                s,
                StatusCount {
                    n,
                    capped: n >= COUNT_CAP,
                },
            )
        })
        .collect())
}

/// One job and its history.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    pub job: JobRow,
    pub events: Vec<EventRow>,
}

/// The job `id`, if the actor reaches it: admin and the scheduler every
/// job; a coordinator (when `coordinators` is true) the jobs whose payload
/// names an establishment of its academy or its academy; an establishment
/// (when `establishments` is true) the jobs whose payload names it.
async fn reach_job(
    app: &App,
    actor: &Actor,
    id: Uuid,
    what: &str,
    coordinators: bool,
    establishments: bool,
) -> Result<JobRow, OpError> {
    let job = db::jobs::get(&app.db, id)
        .await?
        .ok_or_else(|| OpError::not_found(format!("job {id}")))?;
    let allowed = match actor {
        Actor::Admin(_) | Actor::Scheduler => true,
        Actor::Coordinator { .. } if !coordinators => false,
        Actor::Establishment { .. } if !establishments => false,
        Actor::Coordinator { academy } if job.payload["academy"].as_str() == Some(academy) => true,
        _ => match job.payload["establishment"]
            .as_str()
            .and_then(|s| Uai::parse(s).ok())
        {
            Some(uai) => actor.reach(app, &uai, what).await.is_ok(),
            None => false,
        },
    };
    if allowed {
        Ok(job)
    } else {
        Err(actor.forbidden(what))
    }
}

/// Shows one job with its history: to admin and the scheduler, and to the
/// coordinator or establishment its payload names.
pub async fn show(app: &App, actor: &Actor, id: Uuid) -> Result<JobDetail, OpError> {
    let job = reach_job(app, actor, id, &format!("read job {id}"), true, true).await?;
    let events = db::jobs::events(&app.db, id).await?;
    Ok(JobDetail { job, events })
}

/// Queues a dead, failed or cancelled job again with fresh attempts;
/// returns the status it had. Admin, the scheduler, and the coordinator
/// of the academy its payload names; refused, for everyone, to a job that
/// sends the items of an exam Cyclades has published.
pub async fn retry(app: &App, actor: &Actor, id: Uuid) -> Result<JobStatus, OpError> {
    let job = reach_job(app, actor, id, &format!("retry job {id}"), true, false).await?;
    if let Some(refusal) =
        crate::closure::request::published_job_refusal(app, &job.kind, &job.payload).await?
    {
        return Err(refusal.into());
    }
    match db::jobs::retry_by_hand(&app.db, id, &actor.label()).await? {
        None => Err(OpError::not_found(format!("job {id}"))),
        Some(s @ (JobStatus::Dead | JobStatus::Failed | JobStatus::Cancelled)) => Ok(s),
        Some(s) => Err(OpError::conflict(format!(
            "job {id} is {s}; only dead, failed or cancelled jobs can be retried"
        ))),
    }
}

/// Cancels a queued or running job (a running one stops at its worker's
/// next heartbeat); returns the status it had. Admin, the scheduler, and
/// the coordinator of the academy its payload names.
pub async fn cancel(app: &App, actor: &Actor, id: Uuid) -> Result<JobStatus, OpError> {
    reach_job(app, actor, id, &format!("cancel job {id}"), true, false).await?;
    match db::jobs::cancel(&app.db, id, &actor.label()).await? {
        None => Err(OpError::not_found(format!("job {id}"))),
        Some(s @ (JobStatus::Queued | JobStatus::Running)) => Ok(s),
        Some(s) => Err(OpError::conflict(format!(
            "job {id} is {s}; only queued or running jobs can be cancelled"
        ))),
    }
}

/// A job to enqueue by its kind's name.
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueInput {
    pub kind: String,
    pub payload: serde_json::Value,
    /// A second enqueue with the same key returns the first job.
    pub key: Option<String>,
}

fn invalid_enqueue(e: EnqueueError) -> OpError {
    match e {
        EnqueueError::Invalid(reason) => OpError::invalid("options", reason),
        EnqueueError::Payload { .. } => OpError::invalid("payload", e.to_string()),
        EnqueueError::Database(e) => OpError::Internal(e),
    }
}

/// Enqueues one job of a registered kind, its payload checked against the
/// kind first (decoded, then [`ledger::Kind::validate`]).
pub async fn enqueue(app: &App, actor: &Actor, input: &EnqueueInput) -> Result<Enqueued, OpError> {
    actor.require_operator("enqueue jobs")?;
    let handler = registry::find(&input.kind).map_err(|e| OpError::invalid("kind", e))?;
    handler
        .check(input.payload.clone())
        .map_err(|e| OpError::invalid("payload", e))?;
    let mut opts = EnqueueOptions::by(actor.label());
    opts.idempotency_key.clone_from(&input.key);
    let mut tx = app.db.begin().await?;
    let enqueued = ledger::enqueue_raw(
        &mut tx,
        handler.name,
        input.payload.clone(),
        handler.max_attempts,
        handler.priority,
        opts,
    )
    .await
    .map_err(invalid_enqueue)?;
    tx.commit().await?;
    Ok(enqueued)
}

/// Enqueues many jobs of one kind, all or none: every payload is checked
/// first, and the first bad ones are named by position (from 1).
pub async fn enqueue_many(
    app: &App,
    actor: &Actor,
    kind: &str,
    payloads: Vec<serde_json::Value>,
) -> Result<Vec<Uuid>, OpError> {
    actor.require_operator("enqueue jobs")?;
    let handler = registry::find(kind).map_err(|e| OpError::invalid("kind", e))?;
    if payloads.is_empty() {
        return Err(OpError::invalid("payloads", "no payload given"));
    }
    let mut tx = app.db.begin().await?;
    let ids = handler
        .enqueue_many(&mut tx, payloads, EnqueueOptions::by(actor.label()))
        .await
        .map_err(invalid_enqueue)?;
    tx.commit().await?;
    Ok(ids)
}
