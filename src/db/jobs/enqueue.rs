//! Enqueues: job rows written inside the caller's transaction, one at a
//! time or many in one statement, with or without idempotency keys.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Tx;

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
        INSERT INTO jobs (id, kind, payload, priority, max_attempts, run_at,
                          idempotency_key, created_by)
        VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7, $8)
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id
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
        INSERT INTO jobs (id, kind, payload, priority, max_attempts, run_at, created_by)
        SELECT id, $2, payload, $4, $5, coalesce($6, now()), $7
        FROM unnest($1::uuid[], $3::jsonb[]) AS t(id, payload)
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
        INSERT INTO jobs (id, kind, payload, priority, max_attempts, run_at,
                          idempotency_key, created_by)
        SELECT id, $2, payload, $5, $6, coalesce($7, now()), key, $8
        FROM unnest($1::uuid[], $3::jsonb[], $4::text[]) AS t(id, payload, key)
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id
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
