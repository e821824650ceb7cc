//! The publication of an exam's results.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Db;

/// What an attempt to record a publication found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Recorded at `at`; closure jobs still queued were cancelled.
    Published {
        at: DateTime<Utc>,
        cancelled: Vec<Uuid>,
    },
    UnknownExam,
    AlreadyPublished {
        at: DateTime<Utc>,
        by: Option<String>,
    },
    /// Closure jobs running now: (establishment or academy, job).
    ClosureRunning(Vec<(String, Uuid)>),
}

/// Records the publication of `exam` by `by`, unless a job of one of
/// `closure_kinds` is running for it; closure jobs of the exam still queued
/// are cancelled, since they would be refused. Returns the publication
/// instant and the cancelled jobs.
pub async fn publish(
    db: &Db,
    exam: &str,
    by: &str,
    closure_kinds: &[&str],
) -> anyhow::Result<PublishOutcome> {
    let mut tx = db.pool.begin().await.context("starting a transaction")?;
    let row = sqlx::query!(
        "SELECT published_at, published_by FROM exams WHERE code = $1 FOR UPDATE",
        exam
    )
    .fetch_optional(&mut *tx)
    .await
    .with_context(|| format!("locking exam {exam}"))?;
    let Some(row) = row else {
        return Ok(PublishOutcome::UnknownExam);
    };
    if let Some(at) = row.published_at {
        return Ok(PublishOutcome::AlreadyPublished {
            at,
            by: row.published_by,
        });
    }
    // A job of these kinds claimed before this lock is refused here; one
    // claimed after it sees the publication when it starts and refuses.
    let running = sqlx::query!(
        r#"SELECT coalesce(payload->>'establishment', payload->>'academy', 'academy') AS "scope!", id
           FROM jobs
           WHERE status = 'running' AND kind = ANY($2) AND payload->>'exam' = $1
           ORDER BY 1, 2"#,
        exam,
        closure_kinds as &[&str]
    )
    .fetch_all(&mut *tx)
    .await
    .context("looking for running closures")?;
    if !running.is_empty() {
        return Ok(PublishOutcome::ClosureRunning(
            running.into_iter().map(|r| (r.scope, r.id)).collect(),
        ));
    }
    let at = sqlx::query_scalar!(
        "UPDATE exams SET published_at = now(), published_by = $2 WHERE code = $1
         RETURNING published_at AS \"at!\"",
        exam,
        by
    )
    .fetch_one(&mut *tx)
    .await
    .context("recording the publication")?;
    let cancelled = sqlx::query_scalar!(
        r#"
        WITH cancelled AS (
            UPDATE jobs j
            SET status = 'cancelled', finished_at = now(), lease_until = NULL, pushed_at = NULL,
                last_error = 'exam published'
            WHERE j.status = 'queued' AND j.kind = ANY($3) AND j.payload->>'exam' = $1
            RETURNING j.id, j.attempts
        ), ev AS (
            INSERT INTO job_events (job_id, event, attempt, detail)
            SELECT id, 'cancelled', attempts, 'exam published by ' || $2 FROM cancelled
        )
        SELECT id FROM cancelled
        "#,
        exam,
        by,
        closure_kinds as &[&str]
    )
    .fetch_all(&mut *tx)
    .await
    .context("cancelling queued closures")?;
    tx.commit().await.context("committing the publication")?;
    Ok(PublishOutcome::Published { at, cancelled })
}
