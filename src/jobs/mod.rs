//! The job ledger's domain side: what a job type is, how it is enqueued,
//! and how its outcome is classified. Every job type lives in its own file
//! with a stable `NAME`, and all are registered in [`registry`].
//!
//! Postgres is the system of record: [`enqueue`] writes the row inside the
//! caller's transaction; the pump (see `crate::worker`) later hands its id
//! to Redis, and a worker claims, runs and finishes it.

pub mod backoff;
pub mod bulk_render;
pub mod closure;
pub mod context;
pub mod export_retry;
pub mod harmonisation_validation;
pub mod housekeeping;
pub mod nightly_closure;
pub mod noop;
pub mod registry;
pub mod sweep;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::db::{self, Tx};

pub use context::JobContext;

/// The default number of attempts (crashes included) before a job is dead.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// A kind of background job. Its payload is the implementing value,
/// serialised as JSON into the ledger.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name stored in `jobs.kind`; never a Rust type path, never
    /// renamed once jobs of this kind exist.
    const NAME: &'static str;
    /// Attempts before the job is dead.
    const MAX_ATTEMPTS: u32 = DEFAULT_MAX_ATTEMPTS;
    /// Delivery priority; higher first.
    const PRIORITY: i16 = 0;

    /// Checks what decoding cannot (an empty code, a pass number below
    /// 1…), naming the field; run on every enqueue by name (CLI,
    /// schedules) and again before every run.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Does the work. Must be idempotent: a job may run again after a
    /// crash or a lost lease.
    fn run(self, ctx: JobContext) -> impl Future<Output = Result<Outcome, JobError>> + Send;
}

/// A [`Job::validate`] check: `value` of `field` must not be blank.
pub(crate) fn non_empty(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    Ok(())
}

/// How a run ended, when it ended without an error.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Everything was done; the value is stored as the job's result.
    Succeeded(serde_json::Value),
    /// The job finished but did not achieve everything (a partial result);
    /// it is not retried automatically.
    Failed(serde_json::Value),
}

impl Outcome {
    /// A success with no result.
    pub fn done() -> Self {
        Self::Succeeded(serde_json::Value::Null)
    }
}

/// Why a run did not finish. Retryable errors are rescheduled with
/// backoff until the job's attempts are exhausted; permanent ones make the
/// job dead at once.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A transient failure (timeout, unavailable service, 5xx).
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// A failure that another attempt cannot fix (bad payload, refused by
    /// a rule).
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl JobError {
    /// A retryable error from any error.
    pub fn retryable(e: impl Into<anyhow::Error>) -> Self {
        Self::Retryable(e.into())
    }

    /// A permanent error from any error.
    pub fn permanent(e: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(e.into())
    }
}

/// An error from inside a job is retryable, so that `?` on an
/// `anyhow::Result` marks it for another attempt, unless the job says
/// otherwise with [`JobError::permanent`] or a stored value does not decode
/// (another attempt would read it again).
impl From<anyhow::Error> for JobError {
    fn from(e: anyhow::Error) -> Self {
        if e.chain().any(|c| c.is::<crate::db::types::Undecodable>()) {
            Self::Permanent(e)
        } else {
            Self::Retryable(e)
        }
    }
}

/// The status of a job in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Dead,
        Self::Cancelled,
    ];

    /// The name stored in `jobs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or user-given status name.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown job status {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }

    /// Whether the job will not run again unless retried by hand.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Dead | Self::Cancelled
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options of one enqueue.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// A second enqueue with the same key returns the first job, whatever
    /// its state.
    pub idempotency_key: Option<String>,
    /// Not before this instant (default: now).
    pub run_at: Option<DateTime<Utc>>,
    /// Overrides the kind's priority.
    pub priority: Option<i16>,
    /// Overrides the kind's attempts.
    pub max_attempts: Option<u32>,
    /// Who asked: a user, `scheduler`, `cli`, `demo`…
    pub created_by: String,
}

impl EnqueueOptions {
    /// Options naming who enqueues, everything else by default.
    pub fn by(created_by: impl Into<String>) -> Self {
        Self {
            created_by: created_by.into(),
            ..Self::default()
        }
    }

    /// Sets the idempotency key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Checks the options; returns the job's attempts (the override or
    /// the kind's default).
    fn checked_max_attempts(&self, default: u32) -> Result<i32, EnqueueError> {
        if self.created_by.trim().is_empty() {
            return Err(EnqueueError::Invalid(
                "created_by must name who enqueues".into(),
            ));
        }
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > 400)
        {
            return Err(EnqueueError::Invalid(
                "an idempotency key is 1 to 400 bytes".into(),
            ));
        }
        let max_attempts = self.max_attempts.unwrap_or(default);
        if max_attempts == 0 || max_attempts > 1000 {
            return Err(EnqueueError::Invalid(format!(
                "max_attempts must be 1 to 1000, got {max_attempts}"
            )));
        }
        Ok(max_attempts as i32)
    }
}

/// The result of an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job row was written.
    Created(Uuid),
    /// The idempotency key was known: the existing job.
    Existing(Uuid),
}

impl Enqueued {
    /// The job's id, new or existing.
    pub fn id(self) -> Uuid {
        match self {
            Self::Created(id) | Self::Existing(id) => id,
        }
    }
}

/// Why a job could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("invalid enqueue options: {0}")]
    Invalid(String),
    #[error("cannot serialise the {kind} payload: {source}")]
    Payload {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

/// Writes a job row inside the caller's transaction: the job exists if and
/// only if the transaction commits. With an idempotency key, a second
/// enqueue (concurrent or later) returns the existing job.
pub async fn enqueue<J: Job>(
    tx: &mut Tx,
    job: &J,
    opts: EnqueueOptions,
) -> Result<Enqueued, EnqueueError> {
    let payload = serde_json::to_value(job).map_err(|source| EnqueueError::Payload {
        kind: J::NAME,
        source,
    })?;
    enqueue_raw(tx, J::NAME, payload, J::MAX_ATTEMPTS, J::PRIORITY, opts).await
}

/// [`enqueue`] for a kind known by name only (CLI, schedules).
pub async fn enqueue_raw(
    tx: &mut Tx,
    kind: &'static str,
    payload: serde_json::Value,
    default_max_attempts: u32,
    default_priority: i16,
    opts: EnqueueOptions,
) -> Result<Enqueued, EnqueueError> {
    let max_attempts = opts.checked_max_attempts(default_max_attempts)?;
    let row = db::jobs::NewJob {
        id: Uuid::now_v7(),
        kind,
        payload,
        priority: opts.priority.unwrap_or(default_priority),
        max_attempts,
        run_at: opts.run_at,
        idempotency_key: opts.idempotency_key.as_deref(),
        created_by: &opts.created_by,
    };
    Ok(db::jobs::insert(tx, row).await?)
}

/// Writes many jobs of one kind inside the caller's transaction, in one
/// statement; returns their ids in order. A batch takes no idempotency
/// key: enqueue keyed jobs one by one with [`enqueue`].
pub async fn enqueue_many<J: Job>(
    tx: &mut Tx,
    jobs: &[J],
    opts: EnqueueOptions,
) -> Result<Vec<Uuid>, EnqueueError> {
    if opts.idempotency_key.is_some() {
        return Err(EnqueueError::Invalid(
            "a batch of jobs takes no idempotency key; enqueue keyed jobs one by one".into(),
        ));
    }
    let max_attempts = opts.checked_max_attempts(J::MAX_ATTEMPTS)?;
    let payloads = jobs
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| EnqueueError::Payload {
            kind: J::NAME,
            source,
        })?;
    let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
    db::jobs::insert_many(
        tx,
        db::jobs::NewJobs {
            ids: &ids,
            kind: J::NAME,
            payloads,
            priority: opts.priority.unwrap_or(J::PRIORITY),
            max_attempts,
            run_at: opts.run_at,
            created_by: &opts.created_by,
        },
    )
    .await?;
    Ok(ids)
}

/// Waits until every job of `ids` is in a final status, calling
/// `progress(finished)` at each poll; fails after `timeout` naming `what`.
/// Returns the final counts by status.
pub async fn wait_final(
    db: &db::Db,
    ids: &[Uuid],
    timeout: std::time::Duration,
    what: &str,
    progress: &dyn Fn(u64),
) -> anyhow::Result<Vec<(JobStatus, i64)>> {
    let started = std::time::Instant::now();
    loop {
        let counts = db::jobs::final_counts(db, ids).await?;
        let finished: i64 = counts.iter().map(|(_, n)| n).sum();
        progress(finished as u64);
        if finished >= ids.len() as i64 {
            return Ok(counts);
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "{what} did not finish within {} s ({finished} of {})",
            timeout.as_secs(),
            ids.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing_step() -> anyhow::Result<()> {
        Err(anyhow::anyhow!("Postgres did not answer"))
    }

    fn job_step() -> Result<(), JobError> {
        failing_step()?;
        Ok(())
    }

    #[test]
    fn an_anyhow_error_raised_with_question_mark_is_retryable() {
        match job_step() {
            Err(JobError::Retryable(e)) => assert_eq!(e.to_string(), "Postgres did not answer"),
            other => panic!("expected a retryable error, got {other:?}"),
        }
    }

    #[test]
    fn a_stored_value_that_does_not_decode_is_permanent() {
        let undecodable = crate::db::types::decode::<JobStatus>("jobs.status", "paused")
            .map(|_| ())
            .map_err(|e| e.context("reading job 1"));
        let outcome: Result<(), JobError> = (|| {
            undecodable?;
            Ok(())
        })();
        match outcome {
            Err(JobError::Permanent(e)) => {
                assert_eq!(
                    format!("{e:#}"),
                    r#"reading job 1: jobs.status has the unknown value "paused""#
                )
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }
}
