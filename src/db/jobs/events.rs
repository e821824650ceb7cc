//! A job's history: the `job_history` view, which reads its first entry
//! ("enqueued") from the job's row and the others from `job_events`.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Db;

/// One entry of a job's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub event: String,
    pub attempt: i32,
    pub worker: Option<String>,
    pub detail: Option<String>,
}

/// A job's history, oldest first.
pub async fn events(db: &Db, id: Uuid) -> anyhow::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"
        SELECT at AS "at!", event AS "event!", attempt AS "attempt!", worker, detail
        FROM job_history WHERE job_id = $1 ORDER BY seq
        "#,
        id
    )
    .fetch_all(&db.pool)
    .await
    .with_context(|| format!("reading the history of job {id}"))
}

/// Counts the events of one kind for a job (tests and checks).
pub async fn count_events(db: &Db, id: Uuid, event: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM job_history WHERE job_id = $1 AND event = $2"#,
        id,
        event
    )
    .fetch_one(&db.pool)
    .await
    .context("counting job events")
}
