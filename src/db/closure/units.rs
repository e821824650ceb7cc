//! Closure units and their runs: ungraded copies, the lock an enqueue
//! decision holds, the start and end of a run, and what a run reads of
//! its unit.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::types::{decode, decode_opt};
use crate::db::{Db, Tx};
use crate::domain::{ItemState, JobStatus};

/// Per establishment, the numéros of the candidates of `exam` whose copy
/// is neither graded nor absent.
pub async fn ungraded_by_establishment(
    db: &Db,
    exam: &str,
) -> anyhow::Result<std::collections::HashMap<String, Vec<String>>> {
    let rows = sqlx::query!(
        r#"SELECT ca.establishment_uai, array_agg(ca.numero ORDER BY ca.numero) AS "numeros!"
           FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
           WHERE c.exam_code = $1 AND c.grade IS NULL AND NOT c.absent
           GROUP BY 1"#,
        exam
    )
    .fetch_all(&db.pool)
    .await
    .context("listing ungraded copies")?;
    Ok(rows
        .into_iter()
        .map(|r| (r.establishment_uai, r.numeros))
        .collect())
}

/// The numéros of the candidates of one unit (`exam`, `uai`) whose copy
/// is neither graded nor absent, in order. Reads the unit's copies only
/// (through its candidates), whatever the size of the exam: the nightly
/// closure asks unit by unit.
pub async fn unit_ungraded(db: &Db, exam: &str, uai: &str) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT ca.numero AS "numero!"
           FROM candidates ca JOIN copies c ON c.candidate_id = ca.id
           WHERE ca.establishment_uai = $2 AND c.exam_code = $1
             AND c.grade IS NULL AND NOT c.absent
           ORDER BY ca.numero"#,
        exam,
        uai
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the unit's ungraded copies")
}

/// Whether establishment `uai` has a copy of `exam` (a closure unit),
/// read through its candidates: the cost is the establishment's, not the
/// exam's.
pub async fn unit_exists(db: &Db, exam: &str, uai: &str) -> anyhow::Result<bool> {
    let found = sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM candidates ca JOIN copies c ON c.candidate_id = ca.id
               WHERE ca.establishment_uai = $2 AND c.exam_code = $1
           ) AS "found!""#,
        exam,
        uai
    )
    .fetch_one(&db.pool)
    .await
    .context("looking up the closure unit")?;
    Ok(found)
}

/// The job last enqueued for a unit, as its lock found it.
#[derive(Debug, Clone)]
pub struct ActiveJob {
    pub id: Uuid,
    pub status: JobStatus,
    pub run_at: DateTime<Utc>,
}

/// A closure unit locked for an enqueue decision.
#[derive(Debug, Clone)]
pub struct UnitLock {
    pub generation: i32,
    pub active: Option<ActiveJob>,
}

/// Creates the unit if needed and locks it until `tx` ends, so that
/// concurrent requests for the same unit are decided one after the other.
pub async fn lock_unit(tx: &mut Tx, exam: &str, uai: &str) -> anyhow::Result<UnitLock> {
    sqlx::query!(
        "INSERT INTO closure_units (exam_code, establishment_uai) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
        exam,
        uai
    )
    .execute(&mut *tx.inner)
    .await
    .context("creating the closure unit")?;
    let row = sqlx::query!(
        r#"SELECT u.generation, j.id AS "job_id?", j.status AS "status?", j.run_at AS "run_at?"
           FROM closure_units u LEFT JOIN jobs j ON j.id = u.active_job_id
           WHERE u.exam_code = $1 AND u.establishment_uai = $2
           FOR UPDATE OF u"#,
        exam,
        uai
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("locking the closure unit")?;
    let active = match (row.job_id, row.status, row.run_at) {
        (Some(id), Some(status), Some(run_at)) => Some(ActiveJob {
            id,
            status: decode("jobs.status", &status)?,
            run_at,
        }),
        _ => None,
    };
    Ok(UnitLock {
        generation: row.generation,
        active,
    })
}

/// Records the job just enqueued for a locked unit and its generation.
pub async fn set_active_job(
    tx: &mut Tx,
    exam: &str,
    uai: &str,
    generation: i32,
    job: Uuid,
) -> anyhow::Result<()> {
    sqlx::query!(
        "UPDATE closure_units SET generation = $3, active_job_id = $4, updated_at = now()
         WHERE exam_code = $1 AND establishment_uai = $2",
        exam,
        uai,
        generation,
        job
    )
    .execute(&mut *tx.inner)
    .await
    .context("recording the unit's job")?;
    Ok(())
}

/// Whether any export item of the unit exists (it was closed before).
pub async fn has_items(db: &Db, exam: &str, uai: &str) -> anyhow::Result<bool> {
    let found = sqlx::query_scalar!(
        r#"WITH unit AS MATERIALIZED (
               SELECT c.id FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
               WHERE c.exam_code = $1 AND ca.establishment_uai = $2
           )
           SELECT EXISTS (SELECT 1 FROM unit JOIN grade_exports g ON g.copy_id = unit.id)
               OR EXISTS (SELECT 1 FROM count_exports
                          WHERE exam_code = $1 AND establishment_uai = $2) AS "found!""#,
        exam,
        uai
    )
    .fetch_one(&db.pool)
    .await
    .context("looking up the unit's export items")?;
    Ok(found)
}

/// What a relaunch of the unit would have to do: its items not accepted
/// yet, plus one when its last run never finished (the unit is still
/// `closing`: a run killed or buried before it had created every item
/// leaves copies with no item at all, which no count of items shows).
pub async fn relaunch_work(db: &Db, exam: &str, uai: &str) -> anyhow::Result<i64> {
    let n = sqlx::query_scalar!(
        r#"WITH unit AS MATERIALIZED (
               SELECT c.id FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
               WHERE c.exam_code = $1 AND ca.establishment_uai = $2
           )
           SELECT (SELECT count(*) FROM unit JOIN grade_exports g ON g.copy_id = unit.id
                   WHERE g.state <> 'accepted')
                + (SELECT count(*) FROM count_exports
                   WHERE exam_code = $1 AND establishment_uai = $2 AND state <> 'accepted')
                + (SELECT count(*) FROM closure_units
                   WHERE exam_code = $1 AND establishment_uai = $2 AND state = 'closing')
                AS "n!""#,
        exam,
        uai
    )
    .fetch_one(&db.pool)
    .await
    .context("counting what a relaunch would send")?;
    Ok(n)
}

/// Marks a unit `closing` for `job`, unless the exam is published: then
/// nothing changes and the publication instant is returned. Holds a share
/// lock on the exam so that a concurrent publication waits or is refused.
pub async fn start_run(
    db: &Db,
    exam: &str,
    uai: &str,
    job: Uuid,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let mut tx = db.pool.begin().await.context("starting a transaction")?;
    let published = sqlx::query_scalar!(
        "SELECT published_at FROM exams WHERE code = $1 FOR SHARE",
        exam
    )
    .fetch_one(&mut *tx)
    .await
    .with_context(|| format!("locking exam {exam}"))?;
    if published.is_some() {
        return Ok(published);
    }
    sqlx::query!(
        "INSERT INTO closure_units (exam_code, establishment_uai, state, active_job_id)
         VALUES ($1, $2, 'closing', $3)
         ON CONFLICT (exam_code, establishment_uai) DO UPDATE
         SET state = 'closing', active_job_id = $3, updated_at = now()",
        exam,
        uai,
        job
    )
    .execute(&mut *tx)
    .await
    .context("marking the unit closing")?;
    tx.commit().await.context("committing the start of a run")?;
    Ok(None)
}

/// A copy of a unit as a run reads it: what it holds, and the revision and
/// state of its Cyclades item if one was ever recorded.
#[derive(Debug, Clone)]
pub struct UnitCopy {
    pub copy_id: i64,
    pub version: i32,
    pub numero: String,
    pub grader: Option<String>,
    pub grade: Option<f64>,
    pub absent: bool,
    pub validated: bool,
    pub item_revision: Option<i32>,
    pub item_state: Option<ItemState>,
}

/// Every copy of (`exam`, `uai`) with its Cyclades item, in copy order: the
/// one read a run makes of its unit (content, ungraded copies, items to
/// send and the states of the others).
pub async fn unit_copies(db: &Db, exam: &str, uai: &str) -> anyhow::Result<Vec<UnitCopy>> {
    // The unit's copies first (MATERIALIZED): a planner without statistics
    // on a ledger that has just grown must not scan all of it.
    let rows = sqlx::query!(
        r#"WITH unit AS MATERIALIZED (
               SELECT c.id, c.version, ca.numero, c.grader_code, c.grade::float8 AS grade,
                      c.absent, c.validated_pass IS NOT NULL AS validated
               FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
               WHERE c.exam_code = $1 AND ca.establishment_uai = $2
           )
           SELECT u.id AS "copy_id!", u.version AS "version!", u.numero AS "numero!",
                  u.grader_code AS grader, u.grade, u.absent AS "absent!",
                  u.validated AS "validated!",
                  g.revision AS "item_revision?", g.state AS "item_state?"
           FROM unit u LEFT JOIN grade_exports g ON g.copy_id = u.id
           ORDER BY u.id"#,
        exam,
        uai
    )
    .fetch_all(&db.pool)
    .await
    .context("reading the unit's copies")?;
    rows.into_iter()
        .map(|r| {
            Ok(UnitCopy {
                copy_id: r.copy_id,
                version: r.version,
                numero: r.numero,
                grader: r.grader,
                grade: r.grade,
                absent: r.absent,
                validated: r.validated,
                item_revision: r.item_revision,
                item_state: decode_opt("grade_exports.state", r.item_state.as_deref())?,
            })
        })
        .collect()
}

/// What a unit holds: copies, validated copies and graders with corrected
/// copies (the totals of the two targets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitContent {
    pub copies: i64,
    pub validated: i64,
    pub graders: i64,
    pub ungraded: i64,
}

/// Ends a run on a unit: its new state, the run's summary, and whether the
/// failures left may go away on another attempt.
pub async fn finish_run(
    db: &Db,
    exam: &str,
    uai: &str,
    state: &str,
    summary: serde_json::Value,
    retryable_errors: bool,
) -> anyhow::Result<()> {
    sqlx::query!(
        "UPDATE closure_units
         SET state = $3, summary = $4, retryable_errors = $5, runs = runs + 1,
             closed_at = CASE WHEN $3 = 'closed' THEN coalesce(closed_at, now()) ELSE closed_at END,
             updated_at = now()
         WHERE exam_code = $1 AND establishment_uai = $2",
        exam,
        uai,
        state,
        summary,
        retryable_errors
    )
    .execute(&db.pool)
    .await
    .context("recording the end of the run")?;
    Ok(())
}
