//! Reads of closure's state: units by state per exam, one line per
//! establishment of an exam, and the recount of the units' summaries.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{items::StateCounts, units::UnitContent};
use crate::db::Db;
use crate::db::types::{decode, decode_opt};
use crate::domain::{JobStatus, UnitState};

/// How many units of an exam are in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExamUnitCount {
    pub exam: String,
    pub state: UnitState,
    pub units: i64,
}

/// Per exam and unit state, how many units with copies there are, within
/// `academy` or `uai` when given (one row per unit summary read, grouped:
/// no copy is counted).
pub async fn exam_unit_counts(
    db: &Db,
    academy: Option<&str>,
    uai: Option<&str>,
) -> anyhow::Result<Vec<ExamUnitCount>> {
    let rows = sqlx::query!(
        r#"SELECT s.exam_code AS "exam!", coalesce(u.state, 'open') AS "state!",
                  count(*) AS "units!"
           FROM unit_summaries s
           JOIN establishments e ON e.uai = s.establishment_uai
           LEFT JOIN closure_units u
             ON u.exam_code = s.exam_code AND u.establishment_uai = s.establishment_uai
           WHERE s.copies > 0
             AND ($1::text IS NULL OR e.academy_code = $1)
             AND ($2::text IS NULL OR s.establishment_uai = $2)
           GROUP BY 1, 2
           ORDER BY 1, 2"#,
        academy,
        uai
    )
    .fetch_all(&db.pool)
    .await
    .context("counting the units of each exam")?;
    rows.into_iter()
        .map(|r| {
            Ok(ExamUnitCount {
                state: decode("closure_units.state", &r.state)?,
                exam: r.exam,
                units: r.units,
            })
        })
        .collect()
}

/// One establishment's line of `closure status`.
#[derive(Debug, Clone)]
pub struct UnitRow {
    pub establishment: String,
    pub name: String,
    pub state: UnitState,
    pub runs: i32,
    pub closed_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub active_job: Option<Uuid>,
    pub active_status: Option<JobStatus>,
    pub content: UnitContent,
    pub cyclades: StateCounts,
    pub imagin: StateCounts,
}

/// Which of an exam's units [`unit_rows`] reads: those of `academy` or
/// `uai` (when given), in `state` (when given), after the establishment
/// `after` in UAI order, at most `limit` (when given).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitFilter<'a> {
    pub academy: Option<&'a str>,
    pub uai: Option<&'a str>,
    pub state: Option<UnitState>,
    pub after: Option<&'a str>,
    pub limit: Option<i64>,
}

/// Every establishment with copies of `exam` that `filter` keeps, in UAI
/// order, with its unit's state and item counts, read from
/// `unit_summaries` (kept up to date by triggers on copies, candidates and
/// both ledgers; see migration 10): a page costs one read of a row per
/// unit shown, whatever the unit holds.
pub async fn unit_rows(
    db: &Db,
    exam: &str,
    filter: UnitFilter<'_>,
) -> anyhow::Result<Vec<UnitRow>> {
    let rows = sqlx::query!(
        r#"
        SELECT s.establishment_uai AS "uai!", e.name, coalesce(u.state, 'open') AS "state!",
               coalesce(u.runs, 0) AS "runs!", u.closed_at AS "closed_at?", u.updated_at AS "updated_at?",
               u.active_job_id AS "active_job?", j.status AS "active_status?",
               s.copies, s.validated, s.graders, s.ungraded,
               s.c_pending, s.c_sent, s.c_accepted, s.c_rejected,
               s.i_pending, s.i_sent, s.i_accepted, s.i_rejected
        FROM unit_summaries s
        JOIN establishments e ON e.uai = s.establishment_uai
        LEFT JOIN closure_units u
          ON u.exam_code = s.exam_code AND u.establishment_uai = s.establishment_uai
        LEFT JOIN jobs j ON j.id = u.active_job_id
        WHERE s.exam_code = $1 AND s.copies > 0
          AND ($2::text IS NULL OR e.academy_code = $2)
          AND ($3::text IS NULL OR s.establishment_uai = $3)
          AND ($4::text IS NULL OR coalesce(u.state, 'open') = $4)
          AND ($5::text IS NULL OR s.establishment_uai > $5)
        ORDER BY s.establishment_uai
        LIMIT $6
        "#,
        exam,
        filter.academy,
        filter.uai,
        filter.state.map(UnitState::as_str),
        filter.after,
        filter.limit,
    )
    .fetch_all(&db.pool)
    .await
    .context("reading the closure status")?;
    rows.into_iter()
        .map(|r| {
            Ok(UnitRow {
                state: decode("closure_units.state", &r.state)?,
                active_status: decode_opt("jobs.status", r.active_status.as_deref())?,
                establishment: r.uai,
                name: r.name,
                runs: r.runs,
                closed_at: r.closed_at,
                updated_at: r.updated_at,
                active_job: r.active_job,
                content: UnitContent {
                    copies: r.copies,
                    validated: r.validated,
                    graders: r.graders,
                    ungraded: r.ungraded,
                },
                cyclades: StateCounts {
                    pending: r.c_pending,
                    sent: r.c_sent,
                    accepted: r.c_accepted,
                    rejected: r.c_rejected,
                },
                imagin: StateCounts {
                    pending: r.i_pending,
                    sent: r.i_sent,
                    accepted: r.i_accepted,
                    rejected: r.i_rejected,
                },
            })
        })
        .collect()
}

/// An establishment with copies of an exam, and its unit's stored state.
#[derive(Debug, Clone)]
pub struct UnitPlace {
    pub uai: String,
    pub name: String,
    pub state: UnitState,
}

/// The establishments with copies of `exam`, within `academy` or `uai`
/// (when given), in UAI order, each with its unit's stored state (`open`
/// for a unit never closed): the closure table's forms list them and its
/// filter counts them, from this one read.
pub async fn unit_places(
    db: &Db,
    exam: &str,
    academy: Option<&str>,
    uai: Option<&str>,
) -> anyhow::Result<Vec<UnitPlace>> {
    let rows = sqlx::query!(
        r#"SELECT s.establishment_uai AS "uai!", e.name, coalesce(u.state, 'open') AS "state!"
           FROM unit_summaries s
           JOIN establishments e ON e.uai = s.establishment_uai
           LEFT JOIN closure_units u
             ON u.exam_code = s.exam_code AND u.establishment_uai = s.establishment_uai
           WHERE s.exam_code = $1 AND s.copies > 0
             AND ($2::text IS NULL OR e.academy_code = $2)
             AND ($3::text IS NULL OR s.establishment_uai = $3)
           ORDER BY s.establishment_uai"#,
        exam,
        academy,
        uai
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the exam's establishments")?;
    rows.into_iter()
        .map(|r| {
            Ok(UnitPlace {
                state: decode("closure_units.state", &r.state)?,
                uai: r.uai,
                name: r.name,
            })
        })
        .collect()
}

/// Recounts every unit's summary (the closure table's counts, see
/// [`unit_rows`]) from copies and both ledgers, writing those that
/// differ; returns how many it wrote. The triggers keep them exact, so
/// anything but 0 means a write escaped them.
///
/// The units are recounted `units_per_statement` at a time, each batch in
/// a statement (and a transaction) of its own: a recount locks the
/// summary rows it compares until it commits, and the night's writers
/// (whose triggers update the same rows) wait for those locks. One
/// statement over the 46 000 units of a national night held them all for
/// the whole recount; a batch holds a few hundred for a fraction of a
/// second (docs/performance.md, "Reads at national size").
pub async fn recount_summaries(db: &Db, units_per_statement: usize) -> anyhow::Result<u64> {
    let units = sqlx::query!(
        r#"SELECT exam_code AS "exam!", uai AS "uai!"
           FROM (SELECT DISTINCT c.exam_code, ca.establishment_uai AS uai
                 FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
                 UNION
                 SELECT exam_code, establishment_uai FROM unit_summaries) u
           ORDER BY 1, 2"#
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the units to recount")?;
    let mut written = 0;
    for batch in units.chunks(units_per_statement.max(1)) {
        let (exams, uais): (Vec<String>, Vec<String>) = batch
            .iter()
            .map(|u| (u.exam.clone(), u.uai.clone()))
            .unzip();
        let n = sqlx::query_scalar!(
            r#"SELECT unit_summaries_recount($1::text[], $2::text[], true, true, true)
                      AS "written!""#,
            &exams,
            &uais
        )
        .fetch_one(&db.pool)
        .await
        .context("recounting the unit summaries")?;
        written += u64::try_from(n).unwrap_or(0);
    }
    Ok(written)
}
