//! `noop`: a job that does nothing, slowly or badly on request. It exists
//! for tests, the demo and the queue benchmark.

use std::time::Duration;

use anyhow::anyhow;
use serde::{Deserialize, Serialize};

use super::{Job, JobContext, JobError, Kind, Outcome};

/// How a noop run should fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoopFailure {
    /// Succeed.
    #[default]
    None,
    /// Fail with a retryable error.
    Retryable,
    /// Fail with a permanent error.
    Permanent,
    /// Finish with a partial (failed) outcome.
    Partial,
    /// Panic inside the job.
    Panic,
}

/// The `noop` job's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noop {
    /// Sleep this long (in `steps` steps, reporting progress).
    #[serde(default)]
    pub sleep_ms: u64,
    /// Progress steps over the sleep (0 = no progress reported).
    #[serde(default)]
    pub steps: u32,
    /// How to fail.
    #[serde(default)]
    pub fail: NoopFailure,
    /// Fail only on attempts up to this one (0 = every attempt).
    #[serde(default)]
    pub fail_attempts: u32,
}

impl Kind for Noop {
    const NAME: &'static str = "noop";
}

impl Job for Noop {
    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let steps = self.steps.max(1);
        let step = Duration::from_millis(self.sleep_ms / u64::from(steps));
        for done in 1..=steps {
            if !step.is_zero() {
                tokio::time::sleep(step).await;
            }
            if self.steps > 0 {
                ctx.progress(u64::from(done), u64::from(steps)).await;
            }
        }
        let failing = self.fail_attempts == 0 || ctx.attempt <= self.fail_attempts;
        match self.fail {
            NoopFailure::None => {}
            _ if !failing => {}
            NoopFailure::Retryable => {
                return Err(JobError::Retryable(anyhow!(
                    "noop: retryable failure on attempt {}",
                    ctx.attempt
                )));
            }
            NoopFailure::Permanent => {
                return Err(JobError::Permanent(anyhow!("noop: permanent failure")));
            }
            NoopFailure::Partial => {
                return Ok(Outcome::Failed(serde_json::json!({"partial": true})));
            }
            NoopFailure::Panic => panic!("noop: panic on request"),
        }
        Ok(Outcome::Succeeded(
            serde_json::json!({"attempt": ctx.attempt, "slept_ms": self.sleep_ms}),
        ))
    }
}
