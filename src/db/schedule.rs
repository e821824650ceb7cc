//! Queries of the scheduled jobs: eligible closure units, due relaunches,
//! and housekeeping.

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::{Db, types::decode_uai};
use crate::domain::Uai;

/// (exam, establishment) units to close tonight: ponctuel or E3C exam not
/// published, every copy graded, never closed (no unit, or state open).
pub async fn units_to_close(db: &Db) -> anyhow::Result<Vec<(String, Uai)>> {
    let rows = sqlx::query!(
        r#"SELECT c.exam_code AS "exam!", ca.establishment_uai AS "uai!"
           FROM copies c
           JOIN candidates ca ON ca.id = c.candidate_id
           JOIN exams x ON x.code = c.exam_code
           LEFT JOIN closure_units u
             ON u.exam_code = c.exam_code AND u.establishment_uai = ca.establishment_uai
           WHERE x.kind IN ('ponctuel', 'e3c') AND x.published_at IS NULL
             AND (u.state IS NULL OR u.state = 'open')
           GROUP BY 1, 2
           HAVING bool_and(c.grade IS NOT NULL OR c.absent)
           ORDER BY 1, 2"#
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the units to close")?;
    rows.into_iter()
        .map(|r| Ok((r.exam, decode_uai("candidates.establishment_uai", &r.uai)?)))
        .collect()
}

/// Units closed with retryable errors, exam not published, no job queued
/// or running for them, last run at or before `due_before`.
pub async fn units_to_relaunch(
    db: &Db,
    due_before: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, Uai)>> {
    let rows = sqlx::query!(
        r#"SELECT u.exam_code, u.establishment_uai
           FROM closure_units u
           JOIN exams x ON x.code = u.exam_code
           LEFT JOIN jobs j ON j.id = u.active_job_id
           WHERE u.state = 'closed_with_errors' AND u.retryable_errors
             AND x.published_at IS NULL AND u.updated_at <= $1
             AND (j.id IS NULL OR j.status NOT IN ('queued', 'running'))
           ORDER BY 1, 2"#,
        due_before
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the units to relaunch")?;
    rows.into_iter()
        .map(|r| {
            let uai = decode_uai("closure_units.establishment_uai", &r.establishment_uai)?;
            Ok((r.exam_code, uai))
        })
        .collect()
}

/// Expired downloads: id and parts.
pub async fn expired_downloads(db: &Db) -> anyhow::Result<Vec<(uuid::Uuid, serde_json::Value)>> {
    let rows = sqlx::query!(
        "SELECT id, parts FROM downloads WHERE expires_at <= now() ORDER BY expires_at LIMIT 10000"
    )
    .fetch_all(&db.pool)
    .await
    .context("listing expired downloads")?;
    Ok(rows.into_iter().map(|r| (r.id, r.parts)).collect())
}

/// Every object key a download record names (expired records included:
/// their objects are deleted with them).
pub async fn download_keys(db: &Db) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT p.part->>'key' AS "key!"
           FROM downloads d, jsonb_array_elements(d.parts) AS p(part)
           WHERE p.part->>'key' IS NOT NULL"#
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the objects of the downloads")
}

/// The ids of the jobs of `kind` that are queued or running.
pub async fn active_jobs(db: &Db, kind: &str) -> anyhow::Result<Vec<uuid::Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM jobs WHERE kind = $1 AND status IN ('queued', 'running')",
        kind
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the jobs in progress")
}

/// Forgets a download whose objects are deleted.
pub async fn delete_download(db: &Db, id: uuid::Uuid) -> anyhow::Result<()> {
    sqlx::query!("DELETE FROM downloads WHERE id = $1", id)
        .execute(&db.pool)
        .await
        .context("deleting the download record")?;
    Ok(())
}

/// Deletes the jobs finished before `before`, and their events in the
/// same statement, oldest first, `batch` jobs per statement, each
/// statement a transaction of its own; returns how many. A batch locks
/// only the jobs it deletes (skipping any a retry by hand holds), their
/// events and the closure units and downloads that name them, and
/// commits before the next: the night's writers never wait for more than
/// one batch.
pub async fn prune_jobs(db: &Db, before: DateTime<Utc>, batch: i64) -> anyhow::Result<u64> {
    let mut pruned = 0;
    loop {
        let done = sqlx::query_scalar!(
            "WITH gone AS (
                 DELETE FROM jobs WHERE id IN (
                     SELECT id FROM jobs
                     WHERE finished_at < $1
                       AND status IN ('succeeded', 'failed', 'dead', 'cancelled')
                     ORDER BY finished_at
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 RETURNING id
             ), events AS (
                 DELETE FROM job_events WHERE job_id IN (SELECT id FROM gone)
             )
             SELECT count(*) AS \"n!\" FROM gone",
            before,
            batch
        )
        .fetch_one(&db.pool)
        .await
        .context("pruning finished jobs")?;
        let done = u64::try_from(done).unwrap_or(0);
        pruned += done;
        if done < u64::try_from(batch).unwrap_or(0) || batch <= 0 {
            return Ok(pruned);
        }
    }
}

/// (exam, establishment) units to pre-build a zip for: those whose latest
/// transmitted copy (accepted by Cyclades at its current version) was
/// accepted after `since`, and after the start of the newest succeeded
/// job of `kind` with these `options` for the unit (a zip built from
/// copies read after that start), in (exam, UAI) order. A unit whose
/// build failed, or was never asked for, stays listed until a build
/// succeeds; units transmitted before `since` are left alone, so that
/// builds pruned from the ledger are not made again.
///
/// Whether a job of the unit is queued or running is read by the same
/// statement, so from the same snapshot: a build that finishes while
/// the pre-build runs is either seen in progress or seen succeeded,
/// never neither (two statements could see it running in the first and
/// no longer in progress in the second, and build the zip again).
/// A unit listed by [`units_to_prebuild`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleZip {
    pub exam: String,
    pub uai: Uai,
    /// A job of this zip with these options is queued or running.
    pub building: bool,
}

pub async fn units_to_prebuild(
    db: &Db,
    kind: &str,
    options: &serde_json::Value,
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<StaleZip>> {
    let rows = sqlx::query!(
        r#"WITH latest AS MATERIALIZED (
               SELECT c.exam_code, ca.establishment_uai AS uai,
                      max(coalesce(g.accepted_at, g.updated_at)) AS at
               FROM grade_exports g
               JOIN copies c ON c.id = g.copy_id
               JOIN candidates ca ON ca.id = c.candidate_id
               WHERE g.state = 'accepted' AND g.revision = c.version
                 AND coalesce(g.accepted_at, g.updated_at) > $3
               GROUP BY 1, 2
           ), built AS (
               SELECT j.payload->>'exam' AS exam_code, j.payload->>'establishment' AS uai,
                      max(j.started_at) AS at
               FROM jobs j
               WHERE j.kind = $1 AND j.status = 'succeeded' AND j.finished_at > $3
                 AND j.payload->'options' = $2
               GROUP BY 1, 2
           )
           SELECT l.exam_code AS "exam!", l.uai AS "uai!",
                  EXISTS (
                      SELECT 1 FROM jobs a
                      WHERE a.kind = $1 AND a.status IN ('queued', 'running')
                        AND a.payload->>'exam' = l.exam_code
                        AND a.payload->>'establishment' = l.uai
                        AND a.payload->'options' = $2
                  ) AS "building!"
           FROM latest l
           LEFT JOIN built b ON b.exam_code = l.exam_code AND b.uai = l.uai
           WHERE b.at IS NULL OR b.at <= l.at
           ORDER BY 1, 2"#,
        kind,
        options,
        since
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the units whose zips to pre-build")?;
    rows.into_iter()
        .map(|r| {
            Ok(StaleZip {
                exam: r.exam,
                uai: decode_uai("candidates.establishment_uai", &r.uai)?,
                building: r.building,
            })
        })
        .collect()
}

/// The tables a night writes and the morning's pages read: export items,
/// closure units and their summaries, copies (harmonisation passes), the
/// ledger and its events, downloads.
pub const NIGHT_TABLES: [&str; 8] = [
    "grade_exports",
    "count_exports",
    "closure_units",
    "unit_summaries",
    "copies",
    "jobs",
    "job_events",
    "downloads",
];

/// Refreshes the planner's statistics of [`NIGHT_TABLES`].
///
/// Autovacuum analyses a table some time after a tenth of it changed, if
/// it runs at all; until then the pages plan on what the tables held the
/// day before (the closure table's export errors read every exported
/// copy of the exam instead of the few failing ones: 186 ms against
/// 2.3 ms at a tenth of a national session). `ANALYZE` samples a fixed
/// number of rows per table, so its cost does not grow with the session.
pub async fn analyze_night_tables(db: &Db) -> anyhow::Result<()> {
    sqlx::query!(
        "ANALYZE grade_exports, count_exports, closure_units, unit_summaries, copies, jobs, \
         job_events, downloads"
    )
    .execute(&db.pool)
    .await
    .context("refreshing the statistics of the night's tables")?;
    Ok(())
}
