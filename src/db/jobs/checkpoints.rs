//! Checkpoints: what a job's runs recorded to resume from, the entries of
//! idle jobs' checkpoints, and the attempts that count against
//! `max_attempts`.

use anyhow::Context as _;
use uuid::Uuid;

use crate::db::Db;
use crate::db::types::decode;
use crate::domain::JobStatus;

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
