//! The job ledger's API, below every domain module: what a kind of job
//! declares (its stable name, attempts, priority and payload checks), how
//! one is enqueued inside the caller's transaction, and how a running job
//! reports progress. Domain operations enqueue through it; the job files in
//! `crate::jobs` say how each kind runs. The rows themselves are written by
//! `crate::db::jobs`.
//!
//! Postgres is the system of record: [`enqueue`] writes the row inside the
//! caller's transaction; the worker's pump later hands its id to Redis, and
//! a worker claims, runs and finishes it.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

pub use crate::db::jobs::Enqueued;
use crate::db::{self, Tx};
use crate::domain::JobStatus;

/// The default number of attempts (crashes included) before a job is dead.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// What a kind of job declares: its payload is the implementing value,
/// serialised as JSON into the ledger. How it runs is `crate::jobs::Job`,
/// implemented in the kind's file under `src/jobs/`, where its `NAME` is.
pub trait Kind: Serialize + DeserializeOwned + Send + Sync + 'static {
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
}

/// Where long work reports how far it is: `done` of `total` units. A job
/// writes it to its ledger row; other callers may ignore it.
pub trait Progress: Send + Sync {
    /// Records `done` of `total`; may be throttled, but the final value
    /// (`done == total`) is always kept.
    fn report(&self, done: u64, total: u64) -> BoxFuture<'_, ()>;
}

/// Progress nobody watches.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _done: u64, _total: u64) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A [`Kind::validate`] check: `value` of `field` must not be blank.
pub fn non_empty(field: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    Ok(())
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
pub async fn enqueue<J: Kind>(
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
/// key: enqueue keyed jobs with [`enqueue`] or [`enqueue_many_keyed`].
pub async fn enqueue_many<J: Kind>(
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

/// Writes many jobs of one kind, each with its own idempotency key,
/// inside the caller's transaction, in one statement; returns one
/// [`Enqueued`] per job, in order: `Existing` when its key was already
/// known (whatever that job's state), as [`enqueue`] does. `opts` must
/// not carry a key of its own; keys must be distinct within the batch.
pub async fn enqueue_many_keyed<J: Kind>(
    tx: &mut Tx,
    jobs: &[(J, String)],
    opts: EnqueueOptions,
) -> Result<Vec<Enqueued>, EnqueueError> {
    if opts.idempotency_key.is_some() {
        return Err(EnqueueError::Invalid(
            "a keyed batch takes its keys with its jobs, not in the options".into(),
        ));
    }
    let max_attempts = opts.checked_max_attempts(J::MAX_ATTEMPTS)?;
    let mut seen = std::collections::HashSet::with_capacity(jobs.len());
    for (_, key) in jobs {
        if key.is_empty() || key.len() > 400 {
            return Err(EnqueueError::Invalid(
                "an idempotency key is 1 to 400 bytes".into(),
            ));
        }
        if !seen.insert(key.as_str()) {
            return Err(EnqueueError::Invalid(format!(
                "the idempotency key {key} appears twice in one batch"
            )));
        }
    }
    let payloads = jobs
        .iter()
        .map(|(job, _)| serde_json::to_value(job))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| EnqueueError::Payload {
            kind: J::NAME,
            source,
        })?;
    let keys: Vec<String> = jobs.iter().map(|(_, key)| key.clone()).collect();
    let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
    Ok(db::jobs::insert_many_keyed(
        tx,
        db::jobs::NewKeyedJobs {
            ids: &ids,
            kind: J::NAME,
            payloads,
            keys: &keys,
            priority: opts.priority.unwrap_or(J::PRIORITY),
            max_attempts,
            run_at: opts.run_at,
            created_by: &opts.created_by,
        },
    )
    .await?)
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
