//! What a running job sees: its identity, the application, and a way
//! to report progress.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::app::App;

/// Progress is written at most this often; the last value is always written.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The context handed to [`super::Job::run`].
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The job's id in the ledger.
    pub job_id: Uuid,
    /// This run's attempt number, 1-based (crashed runs count).
    pub attempt: u32,
    /// Attempts allowed before the job is dead.
    pub max_attempts: u32,
    /// The unique name of the worker running the job.
    pub worker: Arc<str>,
    pub app: App,
    last_progress: Arc<Mutex<Option<Instant>>>,
}

impl JobContext {
    /// A context for one run.
    pub fn new(job_id: Uuid, attempt: u32, max_attempts: u32, worker: Arc<str>, app: App) -> Self {
        Self {
            job_id,
            attempt,
            max_attempts,
            worker,
            app,
            last_progress: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether another attempt will follow if this one fails retryably.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// Records `done` of `total` units of work, throttled; the final value
    /// (`done == total`) is always written. Progress is informative: a
    /// failure to record it is logged, not returned.
    pub async fn progress(&self, done: u64, total: u64) {
        let due = {
            let mut last = match self.last_progress.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let due = done >= total || last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due
            && let Err(e) = crate::db::jobs::set_progress(
                &self.app.db,
                self.job_id,
                &self.worker,
                done as i64,
                total as i64,
            )
            .await
        {
            tracing::warn!(job.id = %self.job_id, error = %format!("{e:#}"), "cannot record progress");
        }
    }
}

impl JobContext {
    /// The checkpoint this job's earlier runs recorded, if any (see
    /// [`JobContext::save_checkpoint`]).
    pub async fn checkpoint(&self) -> anyhow::Result<Option<serde_json::Value>> {
        crate::db::jobs::checkpoint(&self.app.db, self.job_id).await
    }

    /// Records where this job stands, so that a later run continues from
    /// there; `units` is how much work it covers (e.g. zip parts staged).
    /// A checkpoint covering more units than any before moves the job
    /// forward: this attempt is then not counted against its attempts.
    /// Fails when this run no longer holds the job (cancelled, or its
    /// lease lost).
    pub async fn save_checkpoint(
        &self,
        checkpoint: &serde_json::Value,
        units: u64,
    ) -> anyhow::Result<()> {
        let held = crate::db::jobs::save_checkpoint(
            &self.app.db,
            self.job_id,
            &self.worker,
            i32::try_from(self.attempt).unwrap_or(i32::MAX),
            checkpoint,
            i64::try_from(units).unwrap_or(i64::MAX),
        )
        .await?;
        anyhow::ensure!(held, "job {} is no longer held by this run", self.job_id);
        Ok(())
    }
}

impl crate::ledger::Progress for JobContext {
    fn report(&self, done: u64, total: u64) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(self.progress(done, total))
    }
}
