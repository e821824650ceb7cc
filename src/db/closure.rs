//! Closure queries: closure units, the per-item export ledger, publication
//! and harmonisation passes.
//!
//! The ledger has two tables, written in bulk:
//! - `grade_exports` (Cyclades): one narrow row per copy, reached through
//!   the copy, written once per answer (or failure) of a batch. Its key is
//!   a function of the copy and the revision sent, so nothing is written
//!   before the request.
//! - `count_exports` (Imag'In): one row per grader and unit. A count's
//!   revision is assigned when it changes, so one upsert per unit creates,
//!   refreshes and takes for sending every count to send (marked `sent`,
//!   attempt counted) before the request, and one update settles it.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::jobs::JobStatus;
use super::{
    Db, Tx,
    types::{decode, decode_opt, decode_uai},
};
use crate::domain::{ExamKind, ItemState, Uai, UnitState};

/// An exam as closure sees it.
#[derive(Debug, Clone)]
pub struct ExamRow {
    pub code: String,
    pub session_code: String,
    pub kind: ExamKind,
    pub published_at: Option<DateTime<Utc>>,
    pub published_by: Option<String>,
}

/// The exam `code`, if it exists.
pub async fn exam(db: &Db, code: &str) -> anyhow::Result<Option<ExamRow>> {
    let row = sqlx::query!(
        "SELECT code, session_code, kind, published_at, published_by FROM exams WHERE code = $1",
        code
    )
    .fetch_optional(&db.pool)
    .await
    .with_context(|| format!("reading exam {code}"))?;
    row.map(|r| {
        Ok(ExamRow {
            kind: decode("exams.kind", &r.kind)?,
            code: r.code,
            session_code: r.session_code,
            published_at: r.published_at,
            published_by: r.published_by,
        })
    })
    .transpose()
}

/// An exam as listed: its code, subject, kind and publication.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExamListed {
    pub code: String,
    pub subject: String,
    pub kind: ExamKind,
    pub published_at: Option<DateTime<Utc>>,
}

/// The exams with copies in `uai` (if given) or in `academy` (if given),
/// every exam otherwise, in code order.
pub async fn exams(
    db: &Db,
    academy: Option<&str>,
    uai: Option<&str>,
) -> anyhow::Result<Vec<ExamListed>> {
    let rows = sqlx::query!(
        r#"SELECT e.code, e.subject, e.kind, e.published_at
           FROM exams e
           WHERE ($1::text IS NULL AND $2::text IS NULL)
              OR EXISTS (SELECT 1 FROM copies c
                         JOIN candidates ca ON ca.id = c.candidate_id
                         JOIN establishments es ON es.uai = ca.establishment_uai
                         WHERE c.exam_code = e.code
                           AND ($1::text IS NULL OR es.academy_code = $1)
                           AND ($2::text IS NULL OR es.uai = $2))
           ORDER BY e.code"#,
        academy,
        uai
    )
    .fetch_all(&db.pool)
    .await
    .context("listing exams")?;
    rows.into_iter()
        .map(|r| {
            Ok(ExamListed {
                kind: decode("exams.kind", &r.kind)?,
                code: r.code,
                subject: r.subject,
                published_at: r.published_at,
            })
        })
        .collect()
}

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

/// The establishments with copies of `exam` (within `academy` if given),
/// in UAI order.
pub async fn exam_establishments(
    db: &Db,
    exam: &str,
    academy: Option<&str>,
) -> anyhow::Result<Vec<Uai>> {
    let uais = sqlx::query_scalar!(
        "SELECT DISTINCT ca.establishment_uai
         FROM copies c
         JOIN candidates ca ON ca.id = c.candidate_id
         JOIN establishments e ON e.uai = ca.establishment_uai
         WHERE c.exam_code = $1 AND ($2::text IS NULL OR e.academy_code = $2)
         ORDER BY 1",
        exam,
        academy
    )
    .fetch_all(&db.pool)
    .await
    .with_context(|| format!("listing the establishments of exam {exam}"))?;
    uais.iter()
        .map(|u| decode_uai("candidates.establishment_uai", u))
        .collect()
}

/// Whether the academy exists.
pub async fn academy_exists(db: &Db, code: &str) -> anyhow::Result<bool> {
    let found = sqlx::query_scalar!("SELECT 1 AS one FROM academies WHERE code = $1", code)
        .fetch_optional(&db.pool)
        .await
        .context("looking up the academy")?;
    Ok(found.is_some())
}

/// Whether the establishment exists.
pub async fn establishment_exists(db: &Db, uai: &str) -> anyhow::Result<bool> {
    let found = sqlx::query_scalar!("SELECT 1 AS one FROM establishments WHERE uai = $1", uai)
        .fetch_optional(&db.pool)
        .await
        .context("looking up the establishment")?;
    Ok(found.is_some())
}

/// The academy of establishment `uai`, or `None` if there is no such
/// establishment (who may act for it is decided from this).
pub async fn establishment_academy(db: &Db, uai: &str) -> anyhow::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT academy_code FROM establishments WHERE uai = $1",
        uai
    )
    .fetch_optional(&db.pool)
    .await
    .context("looking up the establishment's academy")
}

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

/// A grader's count to send, with the key it is sent under.
#[derive(Debug, Clone)]
pub struct CountOutgoing {
    pub id: i64,
    pub key: String,
    pub document: serde_json::Value,
}

/// Brings the Imag'In items of a unit up to date with `counts` (per
/// grader, the copies to declare; a grader with an item but no count is
/// counted 0) and takes for sending, as [`sync_grades`] does, every item to
/// send. A changed count gets the next revision and a new key.
pub async fn sync_counts(
    db: &Db,
    exam: &str,
    uai: &str,
    counts: &[(String, i64)],
    with_rejected: bool,
) -> anyhow::Result<Vec<CountOutgoing>> {
    let (graders, copies): (Vec<String>, Vec<i64>) = counts.iter().cloned().unzip();
    let rows = sqlx::query_as!(
        CountOutgoing,
        r#"
        WITH counted AS (
            SELECT * FROM UNNEST($3::text[], $4::bigint[]) AS counted (grader_code, copies)
        ), n AS (
            SELECT grader_code, copies FROM counted
            UNION ALL
            SELECT e.grader_code, 0 FROM count_exports e
            WHERE e.target = 'imagin' AND e.exam_code = $1 AND e.establishment_uai = $2
              AND e.grader_code IS NOT NULL
              AND e.grader_code NOT IN (SELECT grader_code FROM counted)
        )
        INSERT INTO count_exports AS e (target, exam_code, establishment_uai, grader_code, revision,
                                        key, document, state, attempts, sent_at)
        SELECT 'imagin', $1, $2, n.grader_code, 1,
               'i:' || $1 || ':' || $2 || ':' || n.grader_code || ':r1',
               jsonb_build_object('grader', n.grader_code, 'copies', n.copies),
               'sent', 1, now()
        FROM n
        ON CONFLICT (target, exam_code, establishment_uai, grader_code) WHERE grader_code IS NOT NULL
        DO UPDATE
        SET revision = CASE WHEN e.document = EXCLUDED.document THEN e.revision ELSE e.revision + 1 END,
            key = CASE WHEN e.document = EXCLUDED.document THEN e.key
                       ELSE 'i:' || $1 || ':' || $2 || ':' || e.grader_code || ':r' || (e.revision + 1)
                  END,
            last_error = CASE WHEN e.document = EXCLUDED.document THEN e.last_error END,
            accepted_at = CASE WHEN e.document = EXCLUDED.document THEN e.accepted_at END,
            document = EXCLUDED.document,
            state = 'sent', reason = NULL, attempts = e.attempts + 1, sent_at = now(), updated_at = now()
        WHERE e.document <> EXCLUDED.document OR e.state IN ('pending', 'sent')
           OR ($5 AND e.state = 'rejected')
        RETURNING e.id, e.key, e.document
        "#,
        exam,
        uai,
        &graders,
        &copies,
        with_rejected
    )
    .fetch_all(&db.pool)
    .await
    .context("taking the Imag'In items")?;
    let mut out = rows;
    out.sort_by_key(|o| o.id);
    Ok(out)
}

/// A Cyclades item sent in a batch: its copy and the copy version whose
/// grade it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentGrade {
    pub copy_id: i64,
    pub revision: i32,
}

/// Records the target's answers to a batch of Cyclades items sent at
/// `sent_at`: `accepted` when their reason is `None` (accepted or
/// duplicate), `rejected` with the reason otherwise. This is the only
/// write an answered item costs: its key is a function of the copy and
/// revision, so nothing needs recording before the request (see
/// `closure::engine`). An item already recorded at a later revision is
/// left as it is.
pub async fn settle_grades(
    db: &Db,
    sent: &[SentGrade],
    reasons: &[Option<String>],
    sent_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let (copies, revisions): (Vec<i64>, Vec<i32>) =
        sent.iter().map(|s| (s.copy_id, s.revision)).unzip();
    sqlx::query!(
        "INSERT INTO grade_exports AS g (copy_id, revision, state, reason, attempts, sent_at,
                                         accepted_at)
         SELECT r.id, r.revision, CASE WHEN r.reason IS NULL THEN 'accepted' ELSE 'rejected' END,
                r.reason, 1, $4, CASE WHEN r.reason IS NULL THEN now() END
         FROM UNNEST($1::bigint[], $2::int4[], $3::text[]) AS r(id, revision, reason)
         ON CONFLICT (copy_id) DO UPDATE
         SET revision = EXCLUDED.revision, state = EXCLUDED.state, reason = EXCLUDED.reason,
             attempts = g.attempts + 1, last_error = NULL, sent_at = EXCLUDED.sent_at,
             accepted_at = EXCLUDED.accepted_at, updated_at = now()
         WHERE g.revision <= EXCLUDED.revision",
        &copies,
        &revisions,
        reasons as &[Option<String>],
        sent_at
    )
    .execute(&db.pool)
    .await
    .context("recording the Cyclades answers")?;
    Ok(())
}

/// Settles Imag'In items (named by id), as [`settle_grades`] does.
pub async fn settle_counts(db: &Db, ids: &[i64], reasons: &[Option<String>]) -> anyhow::Result<()> {
    sqlx::query!(
        "UPDATE count_exports e
         SET state = CASE WHEN r.reason IS NULL THEN 'accepted' ELSE 'rejected' END,
             reason = r.reason, accepted_at = CASE WHEN r.reason IS NULL THEN now() END,
             last_error = NULL, updated_at = now()
         FROM UNNEST($1::bigint[], $2::text[]) AS r(id, reason)
         WHERE e.id = ANY($1) AND e.id = r.id",
        ids,
        reasons as &[Option<String>]
    )
    .execute(&db.pool)
    .await
    .context("recording the Imag'In answers")?;
    Ok(())
}

/// Records a batch of Cyclades items sent at `sent_at` that got no
/// per-item answer: retryable failures leave the items pending with the
/// error (they are sent again, under the same keys); permanent ones reject
/// them with it.
pub async fn fail_grades(
    db: &Db,
    sent: &[SentGrade],
    error: &str,
    permanent: bool,
    sent_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let (copies, revisions): (Vec<i64>, Vec<i32>) =
        sent.iter().map(|s| (s.copy_id, s.revision)).unzip();
    sqlx::query!(
        r#"
        INSERT INTO grade_exports AS g (copy_id, revision, state, reason, attempts, last_error,
                                        sent_at)
        SELECT r.id, r.revision, CASE WHEN $4 THEN 'rejected' ELSE 'pending' END,
               CASE WHEN $4 THEN $3 END, 1, CASE WHEN $4 THEN NULL ELSE $3 END, $5
        FROM UNNEST($1::bigint[], $2::int4[]) AS r(id, revision)
        ON CONFLICT (copy_id) DO UPDATE
        SET revision = EXCLUDED.revision, state = EXCLUDED.state, reason = EXCLUDED.reason,
            attempts = g.attempts + 1, last_error = EXCLUDED.last_error,
            sent_at = EXCLUDED.sent_at, accepted_at = NULL, updated_at = now()
        WHERE g.revision <= EXCLUDED.revision
        "#,
        &copies,
        &revisions,
        error,
        permanent,
        sent_at
    )
    .execute(&db.pool)
    .await
    .context("recording a failed batch")?;
    Ok(())
}

/// Records a batch of Imag'In items (named by id) that got no per-item
/// answer, as [`fail_grades`] does.
pub async fn fail_counts(db: &Db, ids: &[i64], error: &str, permanent: bool) -> anyhow::Result<()> {
    sqlx::query!(
        r#"
        UPDATE count_exports
        SET state = CASE WHEN $3 THEN 'rejected' ELSE 'pending' END,
            reason = CASE WHEN $3 THEN $2 END,
            last_error = CASE WHEN $3 THEN NULL ELSE $2 END,
            updated_at = now()
        WHERE id = ANY($1)
        "#,
        ids,
        error,
        permanent
    )
    .execute(&db.pool)
    .await
    .context("recording a failed batch")?;
    Ok(())
}

/// Items of a unit and target by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub pending: i64,
    pub sent: i64,
    pub accepted: i64,
    pub rejected: i64,
}

/// The unit's Imag'In items by state.
pub async fn count_states(db: &Db, exam: &str, uai: &str) -> anyhow::Result<StateCounts> {
    let r = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE state = 'pending') AS "pending!",
                  count(*) FILTER (WHERE state = 'sent') AS "sent!",
                  count(*) FILTER (WHERE state = 'accepted') AS "accepted!",
                  count(*) FILTER (WHERE state = 'rejected') AS "rejected!"
           FROM count_exports WHERE exam_code = $1 AND establishment_uai = $2"#,
        exam,
        uai
    )
    .fetch_one(&db.pool)
    .await
    .context("counting the unit's Imag'In items")?;
    Ok(StateCounts {
        pending: r.pending,
        sent: r.sent,
        accepted: r.accepted,
        rejected: r.rejected,
    })
}

/// A reason items are not accepted, with how many.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorCount {
    pub establishment: String,
    pub target: String,
    /// `rejected` (the target refused) or `pending` (no answer yet).
    pub state: ItemState,
    pub message: String,
    pub items: i64,
}

/// Why items of an exam (or of one unit) are not accepted: rejection
/// reasons and last errors, most frequent first.
pub async fn errors(db: &Db, exam: &str, uai: Option<&str>) -> anyhow::Result<Vec<ErrorCount>> {
    // One query per scope: a unit's copies are found through the
    // establishment's candidates, an exam's through its copies.
    macro_rules! collect {
        ($rows:expr) => {
            $rows
                .into_iter()
                .map(|r| {
                    Ok(ErrorCount {
                        establishment: r.establishment_uai,
                        target: r.target,
                        state: decode("export_ledger.state", &r.state)?,
                        message: r.message,
                        items: r.items,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        };
    }
    Ok(match uai {
        Some(uai) => collect!(
            sqlx::query!(
                r#"WITH unit AS MATERIALIZED (
                       SELECT c.id FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
                       WHERE c.exam_code = $1 AND ca.establishment_uai = $2
                   ), failing AS (
                       SELECT 'cyclades' AS target, g.state, coalesce(g.reason, g.last_error) AS message
                       FROM unit JOIN grade_exports g ON g.copy_id = unit.id
                       WHERE g.state = 'rejected' OR (g.state <> 'accepted' AND g.last_error IS NOT NULL)
                       UNION ALL
                       SELECT 'imagin', state, coalesce(reason, last_error)
                       FROM count_exports
                       WHERE exam_code = $1 AND establishment_uai = $2
                         AND (state = 'rejected' OR (state <> 'accepted' AND last_error IS NOT NULL))
                   )
                   SELECT $2 AS "establishment_uai!", target AS "target!",
                          CASE WHEN state = 'rejected' THEN 'rejected' ELSE 'pending' END AS "state!",
                          message AS "message!", count(*) AS "items!"
                   FROM failing
                   GROUP BY 2, 3, 4
                   ORDER BY 2, 5 DESC, 4"#,
                exam,
                uai
            )
            .fetch_all(&db.pool)
            .await
            .context("listing the unit's export errors")?
        ),
        None => collect!(
            sqlx::query!(
                r#"SELECT establishment_uai AS "establishment_uai!", target AS "target!",
                          CASE WHEN state = 'rejected' THEN 'rejected' ELSE 'pending' END AS "state!",
                          coalesce(reason, last_error) AS "message!", count(*) AS "items!"
                   FROM export_ledger
                   WHERE exam_code = $1
                     AND (state = 'rejected' OR (state <> 'accepted' AND last_error IS NOT NULL))
                   GROUP BY 1, 2, 3, 4
                   ORDER BY 1, 2, 5 DESC, 4"#,
                exam
            )
            .fetch_all(&db.pool)
            .await
            .context("listing the exam's export errors")?
        ),
    })
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

/// Every establishment with copies of `exam`, with its unit's state and
/// item counts, read from `unit_summaries` (kept up to date by triggers on
/// copies, candidates and both ledgers; see migration 10): a page costs one
/// read of a row per unit, whatever the unit holds.
pub async fn unit_rows(
    db: &Db,
    exam: &str,
    academy: Option<&str>,
    uai: Option<&str>,
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
        ORDER BY s.establishment_uai
        "#,
        exam,
        academy,
        uai
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

/// A copy named in a harmonisation validation, as found.
#[derive(Debug, Clone)]
pub struct CandidateCopy {
    pub numero: String,
    pub establishment: String,
    pub graded: bool,
    pub validated: bool,
}

/// The copies of `exam` (within `academy` if given), all of them or those
/// of the candidates `numeros`.
pub async fn exam_copies(
    db: &Db,
    exam: &str,
    academy: Option<&str>,
    numeros: Option<&[String]>,
) -> anyhow::Result<Vec<CandidateCopy>> {
    let rows = sqlx::query!(
        r#"SELECT ca.numero, ca.establishment_uai,
                  (c.grade IS NOT NULL OR c.absent) AS "graded!",
                  (c.validated_pass IS NOT NULL) AS "validated!"
           FROM copies c
           JOIN candidates ca ON ca.id = c.candidate_id
           JOIN establishments e ON e.uai = ca.establishment_uai
           WHERE c.exam_code = $1
             AND ($2::text IS NULL OR e.academy_code = $2)
             AND ($3::text[] IS NULL OR ca.numero = ANY($3))
           ORDER BY ca.numero"#,
        exam,
        academy,
        numeros as Option<&[String]>
    )
    .fetch_all(&db.pool)
    .await
    .context("reading the copies to validate")?;
    Ok(rows
        .into_iter()
        .map(|r| CandidateCopy {
            numero: r.numero,
            establishment: r.establishment_uai,
            graded: r.graded,
            validated: r.validated,
        })
        .collect())
}

/// Records a harmonisation pass over the copies of `numeros` in `tx`:
/// copies not validated before are validated by it. Returns the pass id
/// and how many copies it validated (0: nothing new).
pub async fn insert_pass(
    tx: &mut Tx,
    exam: &str,
    academy: Option<&str>,
    numeros: &[String],
    by: &str,
) -> anyhow::Result<(i64, i64)> {
    let pass = sqlx::query_scalar!(
        "INSERT INTO harmonisation_passes (exam_code, academy_code, copies, created_by)
         VALUES ($1, $2, 0, $3) RETURNING id",
        exam,
        academy,
        by
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("recording the pass")?;
    let validated = sqlx::query_scalar!(
        r#"
        WITH v AS (
            UPDATE copies c SET validated_pass = $3
            FROM candidates ca
            WHERE ca.id = c.candidate_id AND c.exam_code = $1 AND ca.numero = ANY($2)
              AND c.validated_pass IS NULL
            RETURNING c.id
        )
        SELECT count(*) AS "n!" FROM v
        "#,
        exam,
        numeros,
        pass
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("validating the copies")?;
    sqlx::query!(
        "UPDATE harmonisation_passes SET copies = $2 WHERE id = $1",
        pass,
        validated as i32
    )
    .execute(&mut *tx.inner)
    .await
    .context("counting the pass's copies")?;
    Ok((pass, validated))
}

/// The establishments of the copies a pass validated, or that an earlier
/// pass validated within the same scope, in UAI order.
pub async fn validated_establishments(
    db: &Db,
    exam: &str,
    academy: Option<&str>,
) -> anyhow::Result<Vec<Uai>> {
    let uais = sqlx::query_scalar!(
        "SELECT DISTINCT ca.establishment_uai
         FROM copies c
         JOIN candidates ca ON ca.id = c.candidate_id
         JOIN establishments e ON e.uai = ca.establishment_uai
         WHERE c.exam_code = $1 AND c.validated_pass IS NOT NULL
           AND ($2::text IS NULL OR e.academy_code = $2)
         ORDER BY 1",
        exam,
        academy
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the establishments of validated copies")?;
    uais.iter()
        .map(|u| decode_uai("candidates.establishment_uai", u))
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
