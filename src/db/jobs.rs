//! Job ledger queries. Every transition is one statement that also writes
//! its `job_events` row, and every transition of a running job is fenced
//! by (worker, attempt) so that a worker that lost its lease cannot
//! overwrite the outcome of the run that replaced it.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, Tx, types::decode};

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

/// A job row to insert.
#[derive(Debug)]
pub struct NewJob<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub payload: serde_json::Value,
    pub priority: i16,
    pub max_attempts: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<&'a str>,
    pub created_by: &'a str,
}

/// Inserts a job, or returns the one holding the same idempotency key.
pub async fn insert(tx: &mut Tx, job: NewJob<'_>) -> anyhow::Result<Enqueued> {
    let inserted = sqlx::query_scalar!(
        r#"
        WITH ins AS (
            INSERT INTO jobs (id, kind, payload, priority, max_attempts, run_at,
                              idempotency_key, created_by)
            VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7, $8)
            ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING id
        ), ev AS (
            INSERT INTO job_events (job_id, event, attempt, detail)
            SELECT id, 'enqueued', 0, 'by ' || $8 FROM ins
        )
        SELECT id AS "id!" FROM ins
        "#,
        job.id,
        job.kind,
        job.payload,
        job.priority,
        job.max_attempts,
        job.run_at,
        job.idempotency_key,
        job.created_by,
    )
    .fetch_optional(&mut *tx.inner)
    .await
    .with_context(|| format!("inserting a {} job", job.kind))?;
    if let Some(id) = inserted {
        return Ok(Enqueued::Created(id));
    }
    // The key exists; the row is committed (ON CONFLICT waited for it).
    let existing = sqlx::query_scalar!(
        "SELECT id FROM jobs WHERE idempotency_key = $1",
        job.idempotency_key
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("reading the job of an existing idempotency key")?;
    Ok(Enqueued::Existing(existing))
}

/// Job rows of one kind to insert together.
#[derive(Debug)]
pub struct NewJobs<'a> {
    pub ids: &'a [Uuid],
    pub kind: &'a str,
    /// One per id.
    pub payloads: Vec<serde_json::Value>,
    pub priority: i16,
    pub max_attempts: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub created_by: &'a str,
}

/// Inserts jobs without idempotency keys, in one statement.
pub async fn insert_many(tx: &mut Tx, jobs: NewJobs<'_>) -> anyhow::Result<()> {
    anyhow::ensure!(
        jobs.ids.len() == jobs.payloads.len(),
        "{} job ids for {} payloads",
        jobs.ids.len(),
        jobs.payloads.len()
    );
    sqlx::query!(
        r#"
        WITH ins AS (
            INSERT INTO jobs (id, kind, payload, priority, max_attempts, run_at, created_by)
            SELECT id, $2, payload, $4, $5, coalesce($6, now()), $7
            FROM unnest($1::uuid[], $3::jsonb[]) AS t(id, payload)
            RETURNING id
        )
        INSERT INTO job_events (job_id, event, attempt, detail)
        SELECT id, 'enqueued', 0, 'by ' || $7 FROM ins
        "#,
        jobs.ids,
        jobs.kind,
        &jobs.payloads,
        jobs.priority,
        jobs.max_attempts,
        jobs.run_at,
        jobs.created_by,
    )
    .execute(&mut *tx.inner)
    .await
    .with_context(|| format!("inserting {} {} jobs", jobs.ids.len(), jobs.kind))?;
    Ok(())
}

/// Keyed job rows of one kind to insert together.
#[derive(Debug)]
pub struct NewKeyedJobs<'a> {
    pub ids: &'a [Uuid],
    pub kind: &'a str,
    /// One per id.
    pub payloads: Vec<serde_json::Value>,
    /// One per id, each unique within the batch.
    pub keys: &'a [String],
    pub priority: i16,
    pub max_attempts: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub created_by: &'a str,
}

/// Inserts jobs with idempotency keys in one statement; a row whose key
/// is already known is not written, and the existing job is returned in
/// its place. Returns one [`Enqueued`] per id, in order.
pub async fn insert_many_keyed(
    tx: &mut Tx,
    jobs: NewKeyedJobs<'_>,
) -> anyhow::Result<Vec<Enqueued>> {
    anyhow::ensure!(
        jobs.ids.len() == jobs.payloads.len() && jobs.ids.len() == jobs.keys.len(),
        "{} job ids for {} payloads and {} keys",
        jobs.ids.len(),
        jobs.payloads.len(),
        jobs.keys.len()
    );
    let inserted = sqlx::query_scalar!(
        r#"
        WITH ins AS (
            INSERT INTO jobs (id, kind, payload, priority, max_attempts, run_at,
                              idempotency_key, created_by)
            SELECT id, $2, payload, $5, $6, coalesce($7, now()), key, $8
            FROM unnest($1::uuid[], $3::jsonb[], $4::text[]) AS t(id, payload, key)
            ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING id
        ), ev AS (
            INSERT INTO job_events (job_id, event, attempt, detail)
            SELECT id, 'enqueued', 0, 'by ' || $8 FROM ins
        )
        SELECT id AS "id!" FROM ins
        "#,
        jobs.ids,
        jobs.kind,
        &jobs.payloads,
        jobs.keys,
        jobs.priority,
        jobs.max_attempts,
        jobs.run_at,
        jobs.created_by,
    )
    .fetch_all(&mut *tx.inner)
    .await
    .with_context(|| format!("inserting {} keyed {} jobs", jobs.ids.len(), jobs.kind))?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    let missing: Vec<String> = jobs
        .ids
        .iter()
        .zip(jobs.keys)
        .filter(|(id, _)| !inserted.contains(id))
        .map(|(_, key)| key.clone())
        .collect();
    let mut existing = std::collections::HashMap::new();
    if !missing.is_empty() {
        // Those keys exist; their rows are committed (ON CONFLICT waited
        // for them).
        let rows = sqlx::query!(
            r#"SELECT idempotency_key AS "key!", id FROM jobs WHERE idempotency_key = ANY($1)"#,
            &missing
        )
        .fetch_all(&mut *tx.inner)
        .await
        .context("reading the jobs of existing idempotency keys")?;
        existing.extend(rows.into_iter().map(|r| (r.key, r.id)));
    }
    jobs.ids
        .iter()
        .zip(jobs.keys)
        .map(|(id, key)| {
            if inserted.contains(id) {
                Ok(Enqueued::Created(*id))
            } else {
                existing
                    .get(key)
                    .map(|id| Enqueued::Existing(*id))
                    .with_context(|| format!("no job holds the idempotency key {key}"))
            }
        })
        .collect()
}

/// A job claimed by a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempt: i32,
    pub max_attempts: i32,
}

/// Claims delivered jobs: each queued and due one becomes running with a
/// lease, held by `worker`. At most one of any number of concurrent
/// claims of the same id succeeds; rows are locked in id order (the ids
/// are sorted, and each is looked up in turn), so that concurrent batches
/// cannot deadlock. Returns the jobs claimed.
///
/// Every row is reached through the primary key, whatever the table's
/// statistics said when the plan was made (see `Db::runs`): the lookup
/// names the id alone, and its `OFFSET 0` keeps Postgres from pushing the
/// status test into it (it would then pick `jobs_status_recent`, which
/// holds the status before the id, and walk every queued job). The same
/// holds for [`extend_leases`] and [`finish_many`].
pub async fn claim_many(
    db: &Db,
    ids: &[Uuid],
    worker: &str,
    lease_secs: f64,
) -> anyhow::Result<Vec<Claimed>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query_as!(
        Claimed,
        r#"
        WITH locked AS MATERIALIZED (
            SELECT job.id FROM unnest($1::uuid[]) AS wanted (id)
            CROSS JOIN LATERAL (
                SELECT jobs.id, jobs.status, jobs.run_at FROM jobs
                WHERE jobs.id = wanted.id
                FOR UPDATE OFFSET 0
            ) AS job
            WHERE job.status = $4 AND job.run_at <= now()
        ), claimed AS (
            UPDATE jobs
            SET status = 'running', attempts = attempts + 1, worker = $2,
                lease_until = now() + make_interval(secs => $3),
                started_at = coalesce(started_at, now()), pushed_at = NULL
            WHERE jobs.id = ANY ($1) AND jobs.id IN (SELECT id FROM locked)
            RETURNING jobs.id, jobs.kind, jobs.payload, jobs.attempts, jobs.max_attempts
        ), ev AS (
            INSERT INTO job_events (job_id, event, attempt, worker)
            SELECT id, 'started', attempts, $2 FROM claimed
        )
        SELECT id AS "id!", kind AS "kind!", payload AS "payload!",
               attempts AS "attempt!", max_attempts AS "max_attempts!"
        FROM claimed
        "#,
        &ids,
        worker,
        lease_secs,
        JobStatus::Queued.as_str(),
    )
    .fetch_all(&db.runs)
    .await
    .with_context(|| format!("claiming {} delivered jobs", ids.len()))
}

/// A finished run's outcome, for [`finish_many`].
#[derive(Debug, Clone)]
pub struct Finished {
    pub id: Uuid,
    pub attempt: i32,
    /// Succeeded or failed (another status is not recorded).
    pub status: JobStatus,
    pub result: serde_json::Value,
}

/// Records finished runs of `worker` with their results, in one
/// statement. An earlier attempt's error is cleared (the job's events
/// keep it): the run that finished is what the job shows. Returns the ids recorded: a run that no longer held its job
/// (cancelled, or its lease lost to another run) is left out.
pub async fn finish_many(
    db: &Db,
    worker: &str,
    mut runs: Vec<Finished>,
) -> anyhow::Result<Vec<Uuid>> {
    // Rows are locked in the order of the input (see [`claim_many`]).
    runs.sort_unstable_by_key(|run| run.id);
    let n = runs.len();
    let mut ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    for run in runs {
        ids.push(run.id);
        attempts.push(run.attempt);
        statuses.push(run.status.as_str());
        results.push(run.result);
    }
    sqlx::query_scalar!(
        r#"
        WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::jsonb[])
                AS t(id, attempt, status, result)
            WHERE status IN ('succeeded', 'failed')
        ), locked AS MATERIALIZED (
            SELECT job.id FROM input
            CROSS JOIN LATERAL (
                SELECT jobs.id, jobs.status, jobs.worker, jobs.attempts FROM jobs
                WHERE jobs.id = input.id
                FOR UPDATE OFFSET 0
            ) AS job
            WHERE job.status = $6 AND job.worker = $5 AND job.attempts = input.attempt
        ), done AS (
            UPDATE jobs
            SET status = input.status, result = input.result, finished_at = now(),
                lease_until = NULL, last_error = NULL
            FROM input
            WHERE jobs.id = ANY ($1) AND jobs.id IN (SELECT id FROM locked)
              AND jobs.id = input.id
            RETURNING jobs.id, jobs.attempts, jobs.status
        ), ev AS (
            INSERT INTO job_events (job_id, event, attempt, worker)
            SELECT id, status, attempts, $5 FROM done
        )
        SELECT id AS "id!" FROM done
        "#,
        &ids,
        &attempts,
        &statuses as &[&str],
        &results,
        worker,
        JobStatus::Running.as_str(),
    )
    .fetch_all(&db.runs)
    .await
    .with_context(|| format!("recording the outcomes of {n} jobs"))
}

/// Puts a failed run back in the queue, due after `delay_secs`.
pub async fn reschedule(
    db: &Db,
    id: Uuid,
    worker: &str,
    attempt: i32,
    delay_secs: f64,
    error: &str,
) -> anyhow::Result<bool> {
    let n = sqlx::query_scalar!(
        r#"
        WITH retry AS (
            UPDATE jobs
            SET status = 'queued', run_at = now() + make_interval(secs => $4),
                last_error = $5, lease_until = NULL, pushed_at = NULL
            WHERE id = $1 AND status = 'running' AND worker = $2 AND attempts = $3
            RETURNING id, attempts, run_at
        ), ev AS (
            INSERT INTO job_events (job_id, event, attempt, worker, detail)
            SELECT id, 'retry_scheduled', attempts, $2, 'at ' || run_at || ': ' || $5 FROM retry
        )
        SELECT count(*) AS "n!" FROM retry
        "#,
        id,
        worker,
        attempt,
        delay_secs,
        error,
    )
    .fetch_one(&db.pool)
    .await
    .with_context(|| format!("rescheduling job {id}"))?;
    Ok(n == 1)
}

/// Marks a run's job dead with its error.
pub async fn bury(
    db: &Db,
    id: Uuid,
    worker: &str,
    attempt: i32,
    error: &str,
) -> anyhow::Result<bool> {
    let n = sqlx::query_scalar!(
        r#"
        WITH dead AS (
            UPDATE jobs
            SET status = 'dead', last_error = $4, finished_at = now(), lease_until = NULL
            WHERE id = $1 AND status = 'running' AND worker = $2 AND attempts = $3
            RETURNING id, attempts
        ), ev AS (
            INSERT INTO job_events (job_id, event, attempt, worker, detail)
            SELECT id, 'dead', attempts, $2, $4 FROM dead
        )
        SELECT count(*) AS "n!" FROM dead
        "#,
        id,
        worker,
        attempt,
        error,
    )
    .fetch_one(&db.pool)
    .await
    .with_context(|| format!("marking job {id} dead"))?;
    Ok(n == 1)
}

/// Extends the leases of the jobs this worker runs; returns the ids it
/// still holds (a cancelled or reclaimed job is missing). Rows are locked
/// in id order, as by [`claim_many`] and [`finish_many`].
pub async fn extend_leases(
    db: &Db,
    ids: &[Uuid],
    worker: &str,
    lease_secs: f64,
) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query_scalar!(
        r#"
        WITH locked AS MATERIALIZED (
            SELECT job.id FROM unnest($1::uuid[]) AS held (id)
            CROSS JOIN LATERAL (
                SELECT jobs.id, jobs.status, jobs.worker FROM jobs
                WHERE jobs.id = held.id
                FOR UPDATE OFFSET 0
            ) AS job
            WHERE job.status = $4 AND job.worker = $2
        )
        UPDATE jobs SET lease_until = now() + make_interval(secs => $3)
        WHERE jobs.id = ANY ($1) AND jobs.id IN (SELECT id FROM locked)
        RETURNING jobs.id
        "#,
        &ids,
        worker,
        lease_secs,
        JobStatus::Running.as_str(),
    )
    .fetch_all(&db.runs)
    .await
    .context("extending leases")
}

/// Records progress of a running job.
pub async fn set_progress(
    db: &Db,
    id: Uuid,
    worker: &str,
    done: i64,
    total: i64,
) -> anyhow::Result<()> {
    sqlx::query!(
        r#"
        UPDATE jobs SET progress_done = $3, progress_total = $4
        WHERE id = $1 AND status = 'running' AND worker = $2
        "#,
        id,
        worker,
        done,
        total,
    )
    .execute(&db.pool)
    .await
    .with_context(|| format!("recording progress of job {id}"))?;
    Ok(())
}

/// The checkpoint a job's earlier runs recorded, if any.
pub async fn checkpoint(db: &Db, id: Uuid) -> anyhow::Result<Option<serde_json::Value>> {
    let row = sqlx::query_scalar!("SELECT checkpoint FROM jobs WHERE id = $1", id)
        .fetch_optional(&db.pool)
        .await
        .with_context(|| format!("reading the checkpoint of job {id}"))?;
    Ok(row.flatten())
}

/// A named entry of the checkpoint of a job that no run holds.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleCheckpointEntry {
    pub job: Uuid,
    /// The job's status: neither queued nor running.
    pub status: JobStatus,
    /// The entry, a JSON object.
    pub entry: serde_json::Value,
}

/// The entry `field` of the checkpoints of the jobs of `kind` that are
/// neither queued nor running, wherever it is a JSON object.
pub async fn idle_checkpoint_entries(
    db: &Db,
    kind: &str,
    field: &str,
) -> anyhow::Result<Vec<IdleCheckpointEntry>> {
    let rows = sqlx::query!(
        r#"
        SELECT id, status, checkpoint -> $2::text AS "entry!"
        FROM jobs
        WHERE kind = $1 AND status NOT IN ('queued', 'running')
          AND jsonb_typeof(checkpoint -> $2::text) = 'object'
        "#,
        kind,
        field,
    )
    .fetch_all(&db.pool)
    .await
    .with_context(|| format!("reading the {field} entries of the checkpoints of {kind} jobs"))?;
    rows.into_iter()
        .map(|r| {
            Ok(IdleCheckpointEntry {
                job: r.id,
                status: decode("jobs.status", &r.status)?,
                entry: r.entry,
            })
        })
        .collect()
}

/// Removes the entry `field` from the checkpoint of job `id` if it still
/// is `entry` and no run holds the job (neither queued nor running: a run
/// that started meanwhile keeps it). Returns whether it was removed.
pub async fn remove_idle_checkpoint_entry(
    db: &Db,
    id: Uuid,
    field: &str,
    entry: &serde_json::Value,
) -> anyhow::Result<bool> {
    let n = sqlx::query!(
        r#"
        UPDATE jobs SET checkpoint = checkpoint - $2::text
        WHERE id = $1 AND status NOT IN ('queued', 'running')
          AND checkpoint -> $2::text = $3
        "#,
        id,
        field,
        entry,
    )
    .execute(&db.pool)
    .await
    .with_context(|| format!("removing the {field} entry of the checkpoint of job {id}"))?
    .rows_affected();
    Ok(n == 1)
}

/// Records the checkpoint of a running job, fenced by `(worker, attempt)`:
/// `units` says how much work it covers. When `units` is more than any
/// earlier checkpoint recorded, the run moved the job forward and its
/// attempt is not counted against `max_attempts` (once per attempt).
/// Returns false when the run no longer holds the job.
pub async fn save_checkpoint(
    db: &Db,
    id: Uuid,
    worker: &str,
    attempt: i32,
    checkpoint: &serde_json::Value,
    units: i64,
) -> anyhow::Result<bool> {
    let n = sqlx::query!(
        r#"
        UPDATE jobs
        SET checkpoint = $4,
            advanced_attempts = advanced_attempts
                + CASE WHEN $5 > checkpoint_units AND advanced_attempt IS DISTINCT FROM attempts
                       THEN 1 ELSE 0 END,
            advanced_attempt = CASE WHEN $5 > checkpoint_units THEN attempts
                                    ELSE advanced_attempt END,
            checkpoint_units = greatest(checkpoint_units, $5)
        WHERE id = $1 AND status = 'running' AND worker = $2 AND attempts = $3
        "#,
        id,
        worker,
        attempt,
        checkpoint,
        units,
    )
    .execute(&db.pool)
    .await
    .with_context(|| format!("recording the checkpoint of job {id}"))?
    .rows_affected();
    Ok(n == 1)
}

/// A job's attempts that count against `max_attempts`: its claims, less
/// those that moved it forward (see [`save_checkpoint`]).
pub async fn counted_attempts(db: &Db, id: Uuid) -> anyhow::Result<Option<i32>> {
    sqlx::query_scalar!(
        r#"SELECT attempts - advanced_attempts AS "counted!" FROM jobs WHERE id = $1"#,
        id
    )
    .fetch_optional(&db.pool)
    .await
    .with_context(|| format!("counting the attempts of job {id}"))
}

/// Gives back jobs a stopping worker could not finish: they are queued
/// again at once, and the interrupted attempt does not count.
pub async fn release(db: &Db, ids: &[Uuid], worker: &str) -> anyhow::Result<u64> {
    let n = sqlx::query_scalar!(
        r#"
        WITH released AS (
            UPDATE jobs
            SET status = 'queued', attempts = greatest(attempts - 1, 0), lease_until = NULL,
                pushed_at = NULL, run_at = now(),
                advanced_attempts = CASE WHEN advanced_attempt = attempts
                                         THEN greatest(advanced_attempts - 1, 0)
                                         ELSE advanced_attempts END,
                advanced_attempt = CASE WHEN advanced_attempt = attempts
                                        THEN NULL ELSE advanced_attempt END
            WHERE id = ANY($1) AND status = 'running' AND worker = $2
            RETURNING id, attempts
        ), ev AS (
            INSERT INTO job_events (job_id, event, attempt, worker, detail)
            SELECT id, 'released', attempts, $2, 'worker stopping' FROM released
        )
        SELECT count(*) AS "n!" FROM released
        "#,
        ids,
        worker,
    )
    .fetch_one(&db.pool)
    .await
    .context("releasing leases")?;
    Ok(n as u64)
}

/// The lock every pump step and every reconciliation of pushed ids holds
/// (a transaction-scoped advisory lock over the whole ledger): while it
/// is held, no id is marked as pushed nor handed to Redis by anyone
/// else, so what Redis holds can be compared with the ledger. Dropping it
/// without [`PumpLock::commit`] rolls back what it marked.
pub struct PumpLock {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl PumpLock {
    /// Waits for the lock.
    pub async fn acquire(db: &Db) -> anyhow::Result<Self> {
        let mut tx = db
            .pool
            .begin()
            .await
            .context("starting the pump transaction")?;
        sqlx::query!("SELECT pg_advisory_xact_lock(7310001)")
            .execute(&mut *tx)
            .await
            .context("taking the pump lock")?;
        Ok(Self { tx })
    }

    /// Queued ids handed to Redis and not claimed yet, as the ledger
    /// knows them.
    pub async fn in_flight(&mut self) -> anyhow::Result<i64> {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM jobs WHERE status = 'queued' AND pushed_at IS NOT NULL"#
        )
        .fetch_one(&mut *self.tx)
        .await
        .context("counting jobs in flight")
    }

    /// Marks as pushed up to `n` due queued jobs that are not, best first,
    /// and returns their ids in delivery order (priority, then due time,
    /// then age).
    pub async fn take(&mut self, n: i64) -> anyhow::Result<Vec<Uuid>> {
        let mut rows = sqlx::query!(
            r#"
            WITH due AS (
                SELECT id FROM jobs
                WHERE status = 'queued' AND pushed_at IS NULL AND run_at <= now()
                ORDER BY priority DESC, run_at, created_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED
            )
            UPDATE jobs SET pushed_at = now()
            FROM due WHERE jobs.id = due.id
            RETURNING jobs.id, jobs.priority, jobs.run_at, jobs.created_at
            "#,
            n,
        )
        .fetch_all(&mut *self.tx)
        .await
        .context("marking due jobs as pushed")?;
        rows.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.run_at.cmp(&b.run_at))
                .then(a.created_at.cmp(&b.created_at))
        });
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// Ids handed to Redis longer ago than `after_secs`, never claimed,
    /// and not among `held` (the job ids Redis holds, read under this
    /// lock) are lost: they become deliverable again. An id waiting in
    /// Redis, or fetched by a consumer that waits for a free slot, is not
    /// lost, however long it waits. Returns how many were lost.
    pub async fn forget_lost(&mut self, after_secs: f64, held: &[Uuid]) -> anyhow::Result<u64> {
        let n = sqlx::query!(
            r#"
            UPDATE jobs SET pushed_at = NULL
            WHERE status = 'queued' AND pushed_at < now() - make_interval(secs => $1)
              AND NOT (id = ANY($2))
            "#,
            after_secs,
            held,
        )
        .execute(&mut *self.tx)
        .await
        .context("re-delivering lost pushes")?
        .rows_affected();
        Ok(n)
    }

    /// Releases the lock, keeping what was marked.
    pub async fn commit(self) -> anyhow::Result<()> {
        self.tx
            .commit()
            .await
            .context("ending the pump transaction")
    }
}

/// Makes ids handed to Redis deliverable again (a delivery handed back).
pub async fn unmark_pushed(db: &Db, ids: &[Uuid]) -> anyhow::Result<()> {
    sqlx::query!(
        "UPDATE jobs SET pushed_at = NULL WHERE id = ANY($1) AND status = 'queued'",
        ids
    )
    .execute(&db.pool)
    .await
    .context("unmarking pushed jobs")?;
    Ok(())
}

/// Running jobs whose lease expired (their worker died): queued again, or
/// dead when their attempts are exhausted; attempts that moved the job
/// forward (see [`save_checkpoint`]) do not count. Returns (requeued, dead).
pub async fn expire_leases(db: &Db) -> anyhow::Result<(u64, u64)> {
    let dead = sqlx::query_scalar!(
        r#"
        WITH dead AS (
            UPDATE jobs
            SET status = 'dead', finished_at = now(), lease_until = NULL,
                last_error = format('attempt %s of %s crashed: lease of worker %s expired',
                                    attempts - advanced_attempts, max_attempts, worker)
            WHERE status = 'running' AND lease_until < now()
              AND attempts - advanced_attempts >= max_attempts
            RETURNING id, attempts, worker, last_error
        ), ev AS (
            INSERT INTO job_events (job_id, event, attempt, worker, detail)
            SELECT id, 'dead', attempts, worker, last_error FROM dead
        )
        SELECT count(*) AS "n!" FROM dead
        "#
    )
    .fetch_one(&db.pool)
    .await
    .context("burying jobs with expired leases")?;
    let requeued = sqlx::query_scalar!(
        r#"
        WITH requeued AS (
            UPDATE jobs
            SET status = 'queued', lease_until = NULL, pushed_at = NULL, run_at = now(),
                last_error = format('attempt %s crashed: lease of worker %s expired',
                                    attempts, worker)
            WHERE status = 'running' AND lease_until < now()
            RETURNING id, attempts, worker, last_error
        ), ev AS (
            INSERT INTO job_events (job_id, event, attempt, worker, detail)
            SELECT id, 'lease_expired', attempts, worker, last_error FROM requeued
        )
        SELECT count(*) AS "n!" FROM requeued
        "#
    )
    .fetch_one(&db.pool)
    .await
    .context("requeueing jobs with expired leases")?;
    Ok((requeued as u64, dead as u64))
}

/// A job as shown by `copiste jobs`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub status: JobStatus,
    pub payload: serde_json::Value,
    pub priority: i16,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub progress_done: Option<i64>,
    pub progress_total: Option<i64>,
    pub result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A [`JobRow`] as stored, before its status is decoded.
struct StoredJob {
    id: Uuid,
    kind: String,
    status: String,
    payload: serde_json::Value,
    priority: i16,
    attempts: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    lease_until: Option<DateTime<Utc>>,
    worker: Option<String>,
    progress_done: Option<i64>,
    progress_total: Option<i64>,
    result: Option<serde_json::Value>,
    last_error: Option<String>,
    idempotency_key: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<StoredJob> for JobRow {
    type Error = anyhow::Error;

    fn try_from(r: StoredJob) -> anyhow::Result<Self> {
        Ok(Self {
            status: decode("jobs.status", &r.status)?,
            id: r.id,
            kind: r.kind,
            payload: r.payload,
            priority: r.priority,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            run_at: r.run_at,
            lease_until: r.lease_until,
            worker: r.worker,
            progress_done: r.progress_done,
            progress_total: r.progress_total,
            result: r.result,
            last_error: r.last_error,
            idempotency_key: r.idempotency_key,
            created_by: r.created_by,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

/// One entry of a job's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub event: String,
    pub attempt: i32,
    pub worker: Option<String>,
    pub detail: Option<String>,
}

/// One job, or `None`.
pub async fn get(db: &Db, id: Uuid) -> anyhow::Result<Option<JobRow>> {
    let row = sqlx::query_as!(
        StoredJob,
        r#"
        SELECT id, kind, status, payload, priority, attempts, max_attempts, run_at,
               lease_until, worker, progress_done, progress_total, result, last_error,
               idempotency_key, created_by, created_at, started_at, finished_at
        FROM jobs WHERE id = $1
        "#,
        id
    )
    .fetch_optional(&db.pool)
    .await
    .with_context(|| format!("reading job {id}"))?;
    row.map(JobRow::try_from).transpose()
}

/// Which jobs a scoped listing shows: each filter applies when set. The
/// exam, establishment and academy are those the job's payload names (an
/// establishment's academy counts for `academy`).
#[derive(Debug, Clone, Default)]
pub struct JobFilter<'a> {
    pub status: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub exam: Option<&'a str>,
    pub establishment: Option<&'a str>,
    pub academy: Option<&'a str>,
}

/// Where a page of the jobs list starts: after the job created at
/// `created_at` with id `id`, in the order newest first, ties broken by
/// the greater id first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl After {
    /// Before every job: the start of the first page.
    fn start() -> Self {
        Self {
            created_at: DateTime::<Utc>::MAX_UTC,
            id: Uuid::max(),
        }
    }
}

/// Runs the statements of the jobs list with custom plans: planned for
/// the filters given, so that those not set fold away and the planner
/// reads the index of the one that is, in order, from the cursor on
/// (migration 13). A generic plan cannot tell which filters are set: at
/// national size it scanned every job's index entry and sorted them
/// (docs/performance.md, "Reads at national size").
async fn custom_plans(tx: &mut Tx) -> anyhow::Result<()> {
    sqlx::query!("SET LOCAL plan_cache_mode = force_custom_plan")
        .execute(&mut *tx.inner)
        .await
        .context("asking for custom plans")?;
    Ok(())
}

/// The newest jobs that pass `filter`, `limit` of them, after `after`
/// (from the newest when `None`), skipping `offset` first. A page reads
/// the index of its most selective filter from the cursor on, so its cost
/// does not grow with the ledger nor with the page's depth (but for
/// `offset`, which the caller bounds).
pub async fn list_page(
    db: &Db,
    filter: &JobFilter<'_>,
    after: Option<After>,
    limit: i64,
    offset: i64,
) -> anyhow::Result<Vec<JobRow>> {
    let after = after.unwrap_or_else(After::start);
    let mut tx = db.begin().await?;
    custom_plans(&mut tx).await?;
    let rows = sqlx::query_as!(
        StoredJob,
        r#"
        SELECT id, kind, status, payload, priority, attempts, max_attempts, run_at,
               lease_until, worker, progress_done, progress_total, result, last_error,
               idempotency_key, created_by, created_at, started_at, finished_at
        FROM jobs j
        WHERE (created_at, id) < ($1, $2)
          AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR kind = $4)
          AND ($5::text IS NULL OR payload->>'exam' = $5)
          AND ($6::text IS NULL OR payload->>'establishment' = $6)
          AND ($7::text IS NULL OR payload->>'academy' = $7
               OR payload->>'establishment'
                  = ANY (ARRAY(SELECT uai FROM establishments WHERE academy_code = $7)))
        ORDER BY created_at DESC, id DESC
        LIMIT $8 OFFSET $9
        "#,
        after.created_at,
        after.id,
        filter.status,
        filter.kind,
        filter.exam,
        filter.establishment,
        filter.academy,
        limit,
        offset
    )
    .fetch_all(&mut *tx.inner)
    .await
    .context("listing jobs")?;
    tx.commit().await?;
    rows.into_iter().map(JobRow::try_from).collect()
}

/// The number of jobs per status among those `filter` selects (its status
/// filter ignored), each status counted up to `cap` jobs: a count equal
/// to `cap` means "at least". A count reads at most `cap` entries of the
/// status's index, or the jobs of the filter's own index (an exam's, an
/// establishment's, an academy's), never the whole ledger.
pub async fn count_capped(
    db: &Db,
    filter: &JobFilter<'_>,
    cap: i64,
) -> anyhow::Result<Vec<(JobStatus, i64)>> {
    let statuses: Vec<String> = JobStatus::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    let mut tx = db.begin().await?;
    custom_plans(&mut tx).await?;
    let rows = sqlx::query!(
        r#"SELECT s.status AS "status!",
                  (SELECT count(*) FROM (
                       SELECT 1 FROM jobs j
                       WHERE j.status = s.status
                         AND ($2::text IS NULL OR kind = $2)
                         AND ($3::text IS NULL OR payload->>'exam' = $3)
                         AND ($4::text IS NULL OR payload->>'establishment' = $4)
                         AND ($5::text IS NULL OR payload->>'academy' = $5
                              OR payload->>'establishment'
                                 = ANY (ARRAY(SELECT uai FROM establishments
                                              WHERE academy_code = $5)))
                       LIMIT $6) AS capped) AS "n!"
           FROM unnest($1::text[]) AS s (status)"#,
        &statuses,
        filter.kind,
        filter.exam,
        filter.establishment,
        filter.academy,
        cap
    )
    .fetch_all(&mut *tx.inner)
    .await
    .context("counting jobs")?;
    tx.commit().await?;
    rows.into_iter()
        .map(|r| Ok((decode("jobs.status", &r.status)?, r.n)))
        .collect()
}

/// Every job counted by status, exactly (tests and checks: it reads the
/// whole ledger; the jobs list uses [`count_capped`]).
pub async fn count_all(db: &Db) -> anyhow::Result<Vec<(JobStatus, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT status, count(*) AS "n!" FROM jobs GROUP BY status ORDER BY status"#
    )
    .fetch_all(&db.pool)
    .await
    .context("counting jobs")?;
    rows.into_iter()
        .map(|r| Ok((decode("jobs.status", &r.status)?, r.n)))
        .collect()
}

/// A job's history, oldest first.
pub async fn events(db: &Db, id: Uuid) -> anyhow::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        "SELECT at, event, attempt, worker, detail FROM job_events WHERE job_id = $1 ORDER BY id",
        id
    )
    .fetch_all(&db.pool)
    .await
    .with_context(|| format!("reading the history of job {id}"))
}

/// Counts the events of one kind for a job (tests and checks).
pub async fn count_events(db: &Db, id: Uuid, event: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM job_events WHERE job_id = $1 AND event = $2"#,
        id,
        event
    )
    .fetch_one(&db.pool)
    .await
    .context("counting job events")
}

/// Queues a dead, failed or cancelled job again with a fresh set of
/// attempts. Returns the status it had, or `None` if no such job.
pub async fn retry_by_hand(db: &Db, id: Uuid, by: &str) -> anyhow::Result<Option<JobStatus>> {
    let mut tx = db.pool.begin().await.context("starting a transaction")?;
    let status = sqlx::query_scalar!("SELECT status FROM jobs WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *tx)
        .await
        .context("locking the job")?;
    let Some(status) = status else {
        return Ok(None);
    };
    let status: JobStatus = decode("jobs.status", &status)?;
    if matches!(
        status,
        JobStatus::Dead | JobStatus::Failed | JobStatus::Cancelled
    ) {
        sqlx::query!(
            r#"
            WITH retried AS (
                UPDATE jobs
                SET status = 'queued', attempts = 0, run_at = now(), pushed_at = NULL,
                    lease_until = NULL, finished_at = NULL, result = NULL,
                    progress_done = NULL, progress_total = NULL,
                    checkpoint_units = 0, advanced_attempts = 0, advanced_attempt = NULL
                WHERE id = $1
                RETURNING id
            )
            INSERT INTO job_events (job_id, event, attempt, detail)
            SELECT id, 'retried_by_hand', 0, 'by ' || $2 FROM retried
            "#,
            id,
            by
        )
        .execute(&mut *tx)
        .await
        .context("queueing the job again")?;
    }
    tx.commit().await.context("committing the retry")?;
    Ok(Some(status))
}

/// Cancels a queued or running job (a running one is stopped by its
/// worker at its next heartbeat). Returns the status it had.
pub async fn cancel(db: &Db, id: Uuid, by: &str) -> anyhow::Result<Option<JobStatus>> {
    let mut tx = db.pool.begin().await.context("starting a transaction")?;
    let status = sqlx::query_scalar!("SELECT status FROM jobs WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *tx)
        .await
        .context("locking the job")?;
    let Some(status) = status else {
        return Ok(None);
    };
    let status: JobStatus = decode("jobs.status", &status)?;
    if matches!(status, JobStatus::Queued | JobStatus::Running) {
        sqlx::query!(
            r#"
            WITH cancelled AS (
                UPDATE jobs
                SET status = 'cancelled', finished_at = now(), lease_until = NULL, pushed_at = NULL
                WHERE id = $1
                RETURNING id, attempts
            )
            INSERT INTO job_events (job_id, event, attempt, detail)
            SELECT id, 'cancelled', attempts, 'by ' || $2 FROM cancelled
            "#,
            id,
            by
        )
        .execute(&mut *tx)
        .await
        .context("cancelling the job")?;
    }
    tx.commit().await.context("committing the cancellation")?;
    Ok(Some(status))
}

/// How many of `ids` are in a final status, by status.
pub async fn final_counts(db: &Db, ids: &[Uuid]) -> anyhow::Result<Vec<(JobStatus, i64)>> {
    let rows = sqlx::query!(
        r#"
        SELECT status, count(*) AS "n!" FROM jobs
        WHERE id = ANY($1) AND status IN ('succeeded', 'failed', 'dead', 'cancelled')
        GROUP BY status ORDER BY status
        "#,
        ids
    )
    .fetch_all(&db.pool)
    .await
    .context("counting finished jobs")?;
    rows.into_iter()
        .map(|r| Ok((decode("jobs.status", &r.status)?, r.n)))
        .collect()
}

/// Makes a queued job that waits for its `run_at` (a retry's backoff) due
/// now. Returns whether it was waiting.
pub async fn run_now(tx: &mut Tx, id: Uuid) -> anyhow::Result<bool> {
    let done = sqlx::query!(
        "UPDATE jobs SET run_at = now() WHERE id = $1 AND status = 'queued' AND run_at > now()",
        id
    )
    .execute(&mut *tx.inner)
    .await
    .context("making the job due now")?;
    Ok(done.rows_affected() > 0)
}
