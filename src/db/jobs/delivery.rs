//! Delivery and recovery: the pump's lock over ids handed to Redis, ids
//! handed back, and the expiry of leases whose worker died.

use anyhow::Context as _;
use uuid::Uuid;

use crate::db::Db;

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
/// forward (see [`save_checkpoint`](super::save_checkpoint)) do not
/// count. Returns (requeued, dead).
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
