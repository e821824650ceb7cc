//! Planner statistics of the tables a night grows from little or nothing
//! (the ledger of exports, the closure's units, the jobs), refreshed by
//! the workers as they grow.
//!
//! A plan made while such a table was nearly empty (or never analysed)
//! reads all of it to find a few rows, and keeps doing so as the table
//! grows: the unit read of the nightly closure went from 40 to 131 ms a
//! unit, reading 1 500 then 4 300 buffers, as `grade_exports` grew to
//! 330 000 rows at a national scale of 0.4 (2026-12-07, autovacuum off).
//! Autovacuum's analyse would catch up eventually, when it runs at all;
//! the workers do not wait for it. `ANALYZE` samples a fixed number of
//! rows, so a refresh costs the same at any size, and refreshing when a
//! table has doubled keeps their number logarithmic in its size.

use anyhow::Context as _;

use super::Db;

/// The tables whose statistics the workers keep: those a night grows.
pub const NIGHT_TABLES: [&str; 7] = [
    "grade_exports",
    "count_exports",
    "closure_units",
    "unit_summaries",
    "jobs",
    "job_events",
    "downloads",
];

/// Live rows below which a table is never analysed for having grown.
const MIN_ROWS: f64 = 1_000.0;

/// The tables of [`NIGHT_TABLES`] that hold at least twice the rows their
/// last analyse counted (and [`MIN_ROWS`]; any table never analysed that
/// holds as many). Updates do not count: a night updates its ledger rows
/// two or three times each, which changes their states, not the plans.
pub async fn grown(db: &Db) -> anyhow::Result<Vec<&'static str>> {
    let names: Vec<String> = NIGHT_TABLES.iter().map(|t| (*t).to_owned()).collect();
    let grown = sqlx::query_scalar!(
        r#"SELECT s.relname AS "relname!"
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
           WHERE s.schemaname = current_schema() AND s.relname = ANY($1::text[])
             AND s.n_live_tup >= greatest($2::float8, 2 * c.reltuples::float8)"#,
        &names,
        MIN_ROWS
    )
    .fetch_all(&db.pool)
    .await
    .context("reading the tables' changes since their last analyse")?;
    Ok(NIGHT_TABLES
        .into_iter()
        .filter(|t| grown.iter().any(|g| g == t))
        .collect())
}

/// Analyses `table` (one of [`NIGHT_TABLES`]) unless another worker is
/// analysing it: whether this one did.
pub async fn analyze(db: &Db, table: &'static str) -> anyhow::Result<bool> {
    anyhow::ensure!(
        NIGHT_TABLES.contains(&table),
        "{table} is not a table whose statistics the workers keep"
    );
    let mut tx = db.pool.begin().await.context("beginning an analyse")?;
    // Two keys (not one bigint): apart from the locks of the ledger.
    let mine = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock(hashtext('copiste:analyze'), hashtext($1)) AS "mine!""#,
        table
    )
    .fetch_one(&mut *tx)
    .await
    .context("taking the analyse's lock")?;
    if !mine {
        return Ok(false);
    }
    // `table` is one of NIGHT_TABLES, checked above: no input reaches here.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("analysing {table}"))?;
    tx.commit().await.context("ending an analyse")?;
    Ok(true)
}
