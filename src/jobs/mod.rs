//! The jobs: how each kind runs and how its outcome is classified. Every
//! kind lives in its own file with its stable `NAME` ([`Kind`]), and all
//! are registered in [`registry`]. Enqueueing is the ledger's
//! ([`crate::ledger`]), so domain modules enqueue without depending on
//! this module.

pub mod admin;
pub mod backoff;
pub mod bulk_render;
pub mod closure;
pub mod context;
pub mod export_retry;
pub mod harmonisation_validation;
pub mod housekeeping;
pub mod nightly_closure;
pub mod noop;
pub mod operators;
pub mod registry;
pub mod sweep;
pub mod zip_prebuild;

use std::future::Future;

pub use crate::ledger::{
    DEFAULT_MAX_ATTEMPTS, EnqueueError, EnqueueOptions, Enqueued, Kind, enqueue, enqueue_many,
    enqueue_many_keyed, enqueue_raw, non_empty, wait_final,
};
pub use context::JobContext;

/// How a kind of job runs. The kind's declarations ([`Kind`]: name,
/// attempts, priority, checks) are implemented beside it, in the same file.
pub trait Job: Kind {
    /// Does the work. Must be idempotent: a job may run again after a
    /// crash or a lost lease.
    fn run(self, ctx: JobContext) -> impl Future<Output = Result<Outcome, JobError>> + Send;
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
        let undecodable =
            crate::db::types::decode::<crate::domain::JobStatus>("jobs.status", "paused")
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
