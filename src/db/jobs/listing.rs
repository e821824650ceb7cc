//! Reads of the jobs list: one job, a page of a filtered listing, counts
//! by status (capped, exact, or among given ids).

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::types::decode;
use crate::db::{Db, Tx};
use crate::domain::JobStatus;

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
/// (migrations 13 and 15). A generic plan cannot tell which filters are
/// set: at national size it scanned every job's index entry and sorted
/// them (docs/performance.md, "Reads at national size").
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
///
/// The listing indexes hold finished jobs only (migration 15), so the
/// statement reads the filtered jobs (`filtered`, inlined into each
/// half) in two halves, each in order up to the page's end: the active
/// jobs (through `jobs_active_recent`, or `jobs_leases` for the running
/// ones), then the finished ones (through the index of the filter);
/// PostgreSQL merges them in order. A status filter folds the half it
/// excludes away. Each half has its own `ORDER BY … LIMIT`: a plain
/// `UNION ALL` (or such a view) is flattened by PostgreSQL 15, which then
/// sorts every row of both halves instead of merging two index scans
/// (120 ms instead of 0.5 at national size, docs/performance.md).
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
        WITH filtered AS NOT MATERIALIZED (
            SELECT * FROM jobs
            WHERE (created_at, id) < ($1, $2)
              AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR kind = $4)
              AND ($5::text IS NULL OR payload->>'exam' = $5)
              AND ($6::text IS NULL OR payload->>'establishment' = $6)
              AND ($7::text IS NULL OR payload->>'academy' = $7
                   OR payload->>'establishment'
                      = ANY (ARRAY(SELECT uai FROM establishments WHERE academy_code = $7)))
        )
        SELECT id AS "id!", kind AS "kind!", status AS "status!", payload AS "payload!",
               priority AS "priority!", attempts AS "attempts!",
               max_attempts AS "max_attempts!", run_at AS "run_at!",
               lease_until, worker, progress_done, progress_total, result, last_error,
               idempotency_key, created_by AS "created_by!", created_at AS "created_at!",
               started_at, finished_at
        FROM (
            (SELECT * FROM filtered
             WHERE status IN ('queued', 'running')
               AND ($3::text IS NULL OR $3 IN ('queued', 'running'))
             ORDER BY created_at DESC, id DESC LIMIT $8::int8 + $9::int8)
            UNION ALL
            (SELECT * FROM filtered
             WHERE status IN ('succeeded', 'failed', 'dead', 'cancelled')
               AND ($3::text IS NULL OR $3 IN ('succeeded', 'failed', 'dead', 'cancelled'))
             ORDER BY created_at DESC, id DESC LIMIT $8::int8 + $9::int8)
        ) j
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
///
/// One statement per status, each planned for its status (custom plans):
/// a status with few jobs is read through its index, one with many stops
/// after `cap` rows. A single statement counting every status (a
/// subquery per row of `unnest`) gets one plan for all statuses, and
/// after a night where nearly every job succeeded that plan was a scan
/// of the whole ledger per status (2026-12-07: 40 ms instead of 5 at
/// 46 000 jobs; test `jobs_list::counts_read_each_status_through_its_own_plan`).
pub async fn count_capped(
    db: &Db,
    filter: &JobFilter<'_>,
    cap: i64,
) -> anyhow::Result<Vec<(JobStatus, i64)>> {
    let mut tx = db.begin().await?;
    custom_plans(&mut tx).await?;
    let mut counts = Vec::with_capacity(JobStatus::ALL.len());
    for status in JobStatus::ALL {
        let n = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM (
                   SELECT 1 FROM jobs j
                   WHERE j.status = $1
                     AND ($2::text IS NULL OR kind = $2)
                     AND ($3::text IS NULL OR payload->>'exam' = $3)
                     AND ($4::text IS NULL OR payload->>'establishment' = $4)
                     AND ($5::text IS NULL OR payload->>'academy' = $5
                          OR payload->>'establishment'
                             = ANY (ARRAY(SELECT uai FROM establishments
                                          WHERE academy_code = $5)))
                   LIMIT $6) AS capped"#,
            status.as_str(),
            filter.kind,
            filter.exam,
            filter.establishment,
            filter.academy,
            cap
        )
        .fetch_one(&mut *tx.inner)
        .await
        .with_context(|| format!("counting {} jobs", status.as_str()))?;
        counts.push((status, n));
    }
    tx.commit().await?;
    Ok(counts)
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
