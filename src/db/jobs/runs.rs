//! Claims and outcomes of runs: a worker claims delivered jobs under a
//! lease, extends it, reports progress, and records how each run ended
//! (finished, rescheduled, buried, or given back when stopping). Every
//! transition is fenced by (worker, attempt).

use anyhow::Context as _;
use uuid::Uuid;

use crate::db::Db;
use crate::domain::JobStatus;

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
/// status test into it (it would then pick an index restricted to the
/// status, such as `jobs_active_recent`, and walk every queued job). The
/// same holds for [`extend_leases`] and [`finish_many`].
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
