//! The runner: claim → run → record, for one delivered id at a time per
//! task. Job futures run in their own tokio tasks so that a panic, a
//! cancelled job or a restarted Redis consumer never loses an outcome.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{sync::Semaphore, task::AbortHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{batch::Batcher, pump::PumpWake};
use crate::{
    app::App,
    db::{
        self,
        jobs::{Claimed, Finished},
    },
    domain::JobStatus,
    jobs::{
        JobContext, JobError, Outcome, backoff,
        registry::{self, Handler},
    },
    queue::DeliveryHandler,
};

/// What happened to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Another runner holds the job, or it is not due / not queued.
    NotClaimed,
    /// The run ended and its outcome was recorded with this status.
    Recorded(JobStatus),
    /// The run was interrupted (shutdown, cancellation, lost lease).
    Interrupted,
    /// The ledger could not be read or written; the lease will expire and
    /// the job will be delivered again.
    LedgerError,
}

struct Running {
    abort: AbortHandle,
}

/// Runs delivered jobs for one worker process.
pub struct Runner {
    app: App,
    name: Arc<str>,
    handlers: HashMap<&'static str, Handler>,
    running: Mutex<HashMap<Uuid, Running>>,
    tracker: TaskTracker,
    draining: AtomicBool,
    /// Wakes this process's pump when a claim frees a place in the window.
    pub(super) wake_pump: Arc<PumpWake>,
    /// One permit per job that may run at once: taken before the claim,
    /// given back when the run ends, before its outcome is written.
    slots: Arc<Semaphore>,
    /// Claims of concurrent deliveries, one statement per batch.
    claims: Batcher<Uuid, Option<Claimed>>,
    /// Succeeded and failed outcomes, one statement per batch.
    finishes: Batcher<Finished, bool>,
}

/// At most this many claims, or outcomes, are written in one statement.
const MAX_BATCH: usize = 64;

impl Runner {
    /// A runner named `name` (unique per process) that runs at most
    /// `concurrency` jobs at once. Starts the tasks that write claims and
    /// outcomes in batches, so it must be called within a tokio runtime.
    pub fn new(app: App, name: String, concurrency: usize) -> Self {
        let name: Arc<str> = name.into();
        let wake_pump = Arc::new(PumpWake::default());
        let claims = {
            let (db, worker, wake) = (app.db.clone(), name.clone(), wake_pump.clone());
            let lease = app.config.lease().as_secs_f64();
            Batcher::spawn(MAX_BATCH, move |ids: Vec<Uuid>| {
                let (db, worker, wake) = (db.clone(), worker.clone(), wake.clone());
                async move {
                    let claimed = db::jobs::claim_many(&db, &ids, &worker, lease).await?;
                    if !claimed.is_empty() {
                        // Places freed in the window.
                        wake.claimed(claimed.len());
                    }
                    let mut by_id: HashMap<Uuid, Claimed> =
                        claimed.into_iter().map(|c| (c.id, c)).collect();
                    // An id delivered twice in one batch goes to its first
                    // delivery only.
                    Ok(ids.iter().map(|id| by_id.remove(id)).collect())
                }
            })
        };
        let finishes = {
            let (db, worker) = (app.db.clone(), name.clone());
            Batcher::spawn(MAX_BATCH, move |runs: Vec<Finished>| {
                let (db, worker) = (db.clone(), worker.clone());
                async move {
                    let ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
                    let recorded: std::collections::HashSet<Uuid> =
                        db::jobs::finish_many(&db, &worker, runs)
                            .await?
                            .into_iter()
                            .collect();
                    Ok(ids.iter().map(|id| recorded.contains(id)).collect())
                }
            })
        };
        Self {
            app,
            name,
            handlers: registry::by_name(),
            running: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            draining: AtomicBool::new(false),
            wake_pump,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            claims,
            finishes,
        }
    }

    /// The worker's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Jobs running now.
    pub fn running_count(&self) -> usize {
        self.lock_running().len()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Running>> {
        match self.running.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The handler given to the Redis consumer.
    pub(super) fn delivery_handler(self: Arc<Self>) -> DeliveryHandler {
        DeliveryHandler::new(move |id| {
            let runner = self.clone();
            async move {
                let _ = runner.deliver(id).await;
            }
        })
    }

    /// Handles one delivery of `id` in a tracked task: the work goes on
    /// even if the caller is dropped.
    pub async fn deliver(self: &Arc<Self>, id: Uuid) -> DeliveryOutcome {
        let runner = self.clone();
        let task = self
            .tracker
            .spawn(async move { runner.claim_and_run(id).await });
        task.await.unwrap_or(DeliveryOutcome::Interrupted)
    }

    async fn claim_and_run(self: Arc<Self>, id: Uuid) -> DeliveryOutcome {
        tracing::trace!(job.id = %id, "delivery received");
        // A slot first, so that a claimed job never waits for one (its
        // lease is extended only while it runs).
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return DeliveryOutcome::Interrupted;
        };
        let claimed = match self.claim(id).await {
            Ok(claimed) => claimed,
            Err(outcome) => return outcome,
        };
        tracing::trace!(job.id = %id, "delivery claimed");
        let attempt = claimed.attempt;
        let span = tracing::info_span!(
            "job",
            job.id = %id,
            job.kind = %claimed.kind,
            job.attempt = attempt,
            duration_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let kind = claimed.kind.clone();
        let max_attempts = claimed.max_attempts;
        let Some(result) = self.run_claimed(id, claimed, slot, &span).await else {
            return DeliveryOutcome::Interrupted;
        };
        let elapsed = started.elapsed();
        span.record("duration_ms", elapsed.as_millis() as u64);
        let recorded = self
            .record(id, attempt, max_attempts, result)
            .instrument(span)
            .await;
        count_run(kind, &recorded, elapsed);
        recorded
    }

    /// Claims the delivered `id`, unless this worker is draining (the
    /// delivery is then handed back), another runner holds it, or it is
    /// not due or not queued; `Err` is what the delivery then comes to.
    async fn claim(&self, id: Uuid) -> Result<Claimed, DeliveryOutcome> {
        if self.draining.load(Ordering::SeqCst) {
            // Not ours to run any more: make it deliverable to others now.
            if let Err(e) = db::jobs::unmark_pushed(&self.app.db, &[id]).await {
                tracing::warn!(job.id = %id, error = %format!("{e:#}"), "cannot hand back a delivery");
            }
            return Err(DeliveryOutcome::NotClaimed);
        }
        match self.claims.call(id).await {
            Ok(Some(claimed)) => Ok(claimed),
            Ok(None) => {
                tracing::debug!(job.id = %id, "delivery not claimed (taken, not due or not queued)");
                Err(DeliveryOutcome::NotClaimed)
            }
            Err(e) => {
                tracing::error!(job.id = %id, error = %format!("{e:#}"), "cannot claim a delivered job");
                Err(DeliveryOutcome::LedgerError)
            }
        }
    }

    /// Runs the claimed job in a task of its own (so that a panic is an
    /// outcome and the heartbeat can abort it), giving `slot` back when
    /// the run ends. `None` when the run was interrupted (aborted).
    async fn run_claimed(
        &self,
        id: Uuid,
        claimed: Claimed,
        slot: tokio::sync::OwnedSemaphorePermit,
        span: &tracing::Span,
    ) -> Option<Result<Outcome, JobError>> {
        let Some(handler) = self.handlers.get(claimed.kind.as_str()).copied() else {
            let mut names: Vec<_> = self.handlers.keys().copied().collect();
            names.sort_unstable();
            return Some(Err(JobError::Permanent(anyhow::anyhow!(
                registry::unknown_kind(&claimed.kind, &names)
            ))));
        };
        let ctx = JobContext::new(
            id,
            claimed.attempt as u32,
            claimed.max_attempts as u32,
            self.name.clone(),
            self.app.clone(),
        );
        let job = tokio::spawn(handler.run(claimed.payload, ctx).instrument(span.clone()));
        self.lock_running().insert(
            id,
            Running {
                abort: job.abort_handle(),
            },
        );
        let joined = job.await;
        self.lock_running().remove(&id);
        // The run is over: the next job may start while this outcome is
        // written.
        drop(slot);
        match joined {
            Ok(result) => Some(result),
            Err(e) if e.is_panic() => {
                let message = panic_message(e.into_panic());
                Some(Err(JobError::Retryable(anyhow::anyhow!(
                    "the job panicked: {message}"
                ))))
            }
            Err(_) => {
                span.in_scope(|| tracing::info!("run interrupted"));
                None
            }
        }
    }

    /// Writes a run's outcome to the ledger.
    async fn record(
        &self,
        id: Uuid,
        attempt: i32,
        max_attempts: i32,
        result: Result<Outcome, JobError>,
    ) -> DeliveryOutcome {
        let (status, written) = match result {
            Ok(outcome) => {
                let (status, result) = match outcome {
                    Outcome::Succeeded(result) => (JobStatus::Succeeded, result),
                    Outcome::Failed(result) => {
                        tracing::warn!(result = %result, "job finished with a failed outcome");
                        (JobStatus::Failed, result)
                    }
                };
                let run = Finished {
                    id,
                    attempt,
                    status,
                    result,
                };
                (status, self.finishes.call(run).await)
            }
            Err(error) => self.record_error(id, attempt, max_attempts, error).await,
        };
        match written {
            Ok(true) => DeliveryOutcome::Recorded(status),
            Ok(false) => {
                tracing::warn!("outcome discarded: the job was cancelled or its lease was lost");
                DeliveryOutcome::Interrupted
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot record the outcome; the lease will expire");
                DeliveryOutcome::LedgerError
            }
        }
    }

    /// Writes a failed run: dead when permanent or out of attempts, else
    /// queued again after its backoff. Returns the status written and
    /// whether it was (the job still held by this worker).
    async fn record_error(
        &self,
        id: Uuid,
        attempt: i32,
        max_attempts: i32,
        error: JobError,
    ) -> (JobStatus, anyhow::Result<bool>) {
        let db = &self.app.db;
        let jobs = &self.app.config.jobs;
        let e = match error {
            JobError::Permanent(e) => {
                let message = format!("{e:#}");
                tracing::error!(error = %message, "job failed permanently; dead");
                let buried = db::jobs::bury(db, id, &self.name, attempt, &message).await;
                return (JobStatus::Dead, buried);
            }
            JobError::Retryable(e) => e,
        };
        let counted = self.counted_attempts(id, attempt).await;
        if counted >= max_attempts {
            let message = format!("attempts exhausted ({counted}/{max_attempts}): {e:#}");
            tracing::error!(error = %message, "job failed; dead");
            let buried = db::jobs::bury(db, id, &self.name, attempt, &message).await;
            return (JobStatus::Dead, buried);
        }
        let message = format!("{e:#}");
        let delay = backoff::delay(
            counted.max(1) as u32,
            jobs.backoff_base_secs,
            jobs.backoff_max_secs,
            backoff::random_jitter(),
        );
        tracing::warn!(error = %message, retry_in_ms = delay.as_millis() as u64, "job failed; will retry");
        let written =
            db::jobs::reschedule(db, id, &self.name, attempt, delay.as_secs_f64(), &message).await;
        (JobStatus::Queued, written)
    }

    /// The attempts of job `id` that count against its maximum: attempts
    /// that moved the job forward (a checkpoint recorded more work than
    /// ever before) do not. All of them when the ledger cannot say.
    async fn counted_attempts(&self, id: Uuid, attempt: i32) -> i32 {
        match db::jobs::counted_attempts(&self.app.db, id).await {
            Ok(Some(counted)) => counted,
            Ok(None) => attempt,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot count the job's attempts; counting them all");
                attempt
            }
        }
    }

    /// Extends the leases of running jobs every lease/3 until `stop`;
    /// aborts jobs this worker no longer holds (cancelled or reclaimed).
    pub(super) async fn heartbeat(self: Arc<Self>, stop: CancellationToken) {
        let lease = self.app.config.lease();
        let every = lease / 3;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.beat().await {
                tracing::warn!(error = %format!("{e:#}"), "heartbeat failed; retrying");
            }
        }
    }

    /// One heartbeat.
    pub async fn beat(&self) -> anyhow::Result<()> {
        let ids: Vec<Uuid> = self.lock_running().keys().copied().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let lease = self.app.config.lease().as_secs_f64();
        let held = db::jobs::extend_leases(&self.app.db, &ids, &self.name, lease).await?;
        let running = self.lock_running();
        for id in ids.iter().filter(|id| !held.contains(id)) {
            if let Some(job) = running.get(id) {
                tracing::warn!(job.id = %id, "job no longer held (cancelled or lease lost); stopping it");
                job.abort.abort();
            }
        }
        Ok(())
    }

    /// Stops taking deliveries, waits up to `grace` for running jobs, then
    /// aborts the rest and releases their leases. Returns how many were
    /// released.
    pub(super) async fn drain(&self, grace: Duration) -> anyhow::Result<u64> {
        self.draining.store(true, Ordering::SeqCst);
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return Ok(0);
        }
        let ids: Vec<Uuid> = {
            let running = self.lock_running();
            for job in running.values() {
                job.abort.abort();
            }
            running.keys().copied().collect()
        };
        let released = db::jobs::release(&self.app.db, &ids, &self.name).await?;
        tracing::warn!(
            released,
            "grace period over: running jobs released to other workers"
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        Ok(released)
    }

    /// Aborts every running job without touching the ledger (a crash).
    pub(super) fn abort_all(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for job in self.lock_running().values() {
            job.abort.abort();
        }
    }
}

/// Counts a run and its duration in the metrics, by kind and outcome.
fn count_run(kind: String, recorded: &DeliveryOutcome, elapsed: Duration) {
    let outcome = match recorded {
        DeliveryOutcome::Recorded(JobStatus::Queued) => "retry",
        DeliveryOutcome::Recorded(status) => status.as_str(),
        DeliveryOutcome::Interrupted => "interrupted",
        _ => "unrecorded",
    };
    metrics::counter!("copiste_job_runs_total", "kind" => kind.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("copiste_job_run_duration_seconds", "kind" => kind)
        .record(elapsed.as_secs_f64());
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}
