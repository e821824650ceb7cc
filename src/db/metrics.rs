//! What the ledger says about the work, for the metrics: jobs by kind and
//! state, the oldest job waiting to run, export items by target and state.

use anyhow::Context as _;

use super::Db;

/// One count of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub kind: String,
    pub state: String,
    pub n: i64,
}

/// The ledger's counts at one moment.
#[derive(Debug, Clone, Default)]
pub struct LedgerCounts {
    /// Jobs by kind and status.
    pub jobs: Vec<Count>,
    /// Seconds the oldest due, queued job has waited (0 when none waits).
    pub oldest_queued_secs: f64,
    /// Export items by target (`kind`) and state.
    pub exports: Vec<Count>,
}

/// Reads the counts (three aggregate queries).
pub async fn ledger_counts(db: &Db) -> anyhow::Result<LedgerCounts> {
    let jobs = sqlx::query_as!(
        Count,
        r#"SELECT kind AS "kind!", status AS "state!", count(*) AS "n!" FROM jobs GROUP BY 1, 2"#
    )
    .fetch_all(&db.pool)
    .await
    .context("counting jobs")?;
    let oldest_queued_secs = sqlx::query_scalar!(
        r#"SELECT coalesce(extract(epoch FROM now() - min(run_at))::float8, 0) AS "secs!"
           FROM jobs WHERE status = 'queued' AND run_at <= now()"#
    )
    .fetch_one(&db.pool)
    .await
    .context("finding the oldest queued job")?;
    let exports = sqlx::query_as!(
        Count,
        r#"SELECT 'cyclades' AS "kind!", state AS "state!", count(*) AS "n!" FROM grade_exports GROUP BY 2
           UNION ALL
           SELECT 'imagin', state, count(*) FROM count_exports GROUP BY 2"#
    )
    .fetch_all(&db.pool)
    .await
    .context("counting export items")?;
    Ok(LedgerCounts {
        jobs,
        oldest_queued_secs,
        exports,
    })
}
