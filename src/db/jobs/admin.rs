//! Actions by hand on a job: retry, cancel, run now.

use anyhow::Context as _;
use uuid::Uuid;

use crate::db::types::decode;
use crate::db::{Db, Tx};
use crate::domain::JobStatus;

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
