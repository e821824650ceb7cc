//! Closure queries: closure units, the per-item export ledger, publication
//! and harmonisation passes.
//!
//! The ledger is written in bulk: items are created or refreshed from the
//! copies by one upsert per target and unit, taken for sending a batch at a
//! time (marked `sent`, attempts counted), and settled by one update per
//! answer.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Db, Tx};

/// An exam as closure sees it.
#[derive(Debug, Clone)]
pub struct ExamRow {
    pub code: String,
    pub session_code: String,
    pub kind: String,
    pub published_at: Option<DateTime<Utc>>,
    pub published_by: Option<String>,
}

/// The exam `code`, if it exists.
pub async fn exam(db: &Db, code: &str) -> anyhow::Result<Option<ExamRow>> {
    sqlx::query_as!(
        ExamRow,
        "SELECT code, session_code, kind, published_at, published_by FROM exams WHERE code = $1",
        code
    )
    .fetch_optional(&db.pool)
    .await
    .with_context(|| format!("reading exam {code}"))
}

/// The establishments with copies of `exam` (within `academy` if given),
/// in UAI order.
pub async fn exam_establishments(
    db: &Db,
    exam: &str,
    academy: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar!(
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
    .with_context(|| format!("listing the establishments of exam {exam}"))
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

/// The numéros of the candidates of (`exam`, `uai`) whose copy is neither
/// graded nor absent.
pub async fn ungraded(db: &Db, exam: &str, uai: &str) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT ca.numero
         FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
         WHERE c.exam_code = $1 AND ca.establishment_uai = $2
           AND c.grade IS NULL AND NOT c.absent
         ORDER BY ca.numero",
        exam,
        uai
    )
    .fetch_all(&db.pool)
    .await
    .context("listing ungraded copies")
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

/// The job last enqueued for a unit, as its lock found it.
#[derive(Debug, Clone)]
pub struct ActiveJob {
    pub id: Uuid,
    pub status: String,
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
        (Some(id), Some(status), Some(run_at)) => Some(ActiveJob { id, status, run_at }),
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
        "SELECT 1 AS one FROM export_items WHERE exam_code = $1 AND establishment_uai = $2 LIMIT 1",
        exam,
        uai
    )
    .fetch_optional(&db.pool)
    .await
    .context("looking up the unit's export items")?;
    Ok(found.is_some())
}

/// How many items of the unit are not accepted yet.
pub async fn unaccepted_items(db: &Db, exam: &str, uai: &str) -> anyhow::Result<i64> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM export_items
           WHERE exam_code = $1 AND establishment_uai = $2 AND state <> 'accepted'"#,
        exam,
        uai
    )
    .fetch_one(&db.pool)
    .await
    .context("counting unaccepted items")?;
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

/// Creates or refreshes the Cyclades items of a unit from its copies (only
/// the validated ones when `validated_only`). A new item, or one whose copy
/// version changed (it gets a new key), is written directly as `sent` with
/// its attempt counted, and returned for the caller to send now.
pub async fn sync_grades(
    db: &Db,
    exam: &str,
    uai: &str,
    validated_only: bool,
) -> anyhow::Result<Vec<Outgoing>> {
    let rows = sqlx::query_as!(
        Outgoing,
        r#"
        INSERT INTO export_items (target, exam_code, establishment_uai, copy_id, revision, key, document,
                                  state, attempts, sent_at)
        SELECT 'cyclades', c.exam_code, ca.establishment_uai, c.id, c.version,
               'c:' || c.exam_code || ':' || ca.numero || ':v' || c.version,
               jsonb_build_object('candidate', ca.numero, 'grade', c.grade, 'absent', c.absent),
               'sent', 1, now()
        FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
        WHERE c.exam_code = $1 AND ca.establishment_uai = $2
          AND (c.grade IS NOT NULL OR c.absent)
          AND (NOT $3 OR c.validated_pass IS NOT NULL)
        ON CONFLICT (target, copy_id) WHERE copy_id IS NOT NULL DO UPDATE
        SET revision = EXCLUDED.revision, key = EXCLUDED.key, document = EXCLUDED.document,
            state = 'sent', attempts = export_items.attempts + 1, sent_at = now(),
            reason = NULL, last_error = NULL, accepted_at = NULL, updated_at = now()
        WHERE export_items.revision <> EXCLUDED.revision
        RETURNING id, key, document
        "#,
        exam,
        uai,
        validated_only
    )
    .fetch_all(&db.pool)
    .await
    .context("writing the Cyclades items")?;
    let mut out = rows;
    out.sort_by_key(|o| o.id);
    Ok(out)
}

/// Creates or refreshes the Imag'In items of a unit: per grader, the count
/// of corrected (graded, not absent) copies, validated ones only when
/// `validated_only`. A changed count gets the next revision and a new key.
/// New and changed items are written as `sent` and returned, as by
/// [`sync_grades`].
pub async fn sync_counts(
    db: &Db,
    exam: &str,
    uai: &str,
    validated_only: bool,
) -> anyhow::Result<Vec<Outgoing>> {
    let rows = sqlx::query_as!(
        Outgoing,
        r#"
        INSERT INTO export_items (target, exam_code, establishment_uai, grader_code, revision, key, document,
                                  state, attempts, sent_at)
        SELECT 'imagin', $1, $2, n.grader_code, 1,
               'i:' || $1 || ':' || $2 || ':' || n.grader_code || ':r1',
               jsonb_build_object('grader', n.grader_code, 'copies', n.copies),
               'sent', 1, now()
        FROM (
            SELECT c.grader_code, count(*) AS copies
            FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
            WHERE c.exam_code = $1 AND ca.establishment_uai = $2
              AND c.grader_code IS NOT NULL AND c.grade IS NOT NULL AND NOT c.absent
              AND (NOT $3 OR c.validated_pass IS NOT NULL)
            GROUP BY c.grader_code
        ) n
        ON CONFLICT (target, exam_code, establishment_uai, grader_code) WHERE grader_code IS NOT NULL
        DO UPDATE
        SET revision = export_items.revision + 1,
            key = 'i:' || $1 || ':' || $2 || ':' || export_items.grader_code
                  || ':r' || (export_items.revision + 1),
            document = EXCLUDED.document,
            state = 'sent', attempts = export_items.attempts + 1, sent_at = now(),
            reason = NULL, last_error = NULL, accepted_at = NULL, updated_at = now()
        WHERE export_items.document <> EXCLUDED.document
        RETURNING id, key, document
        "#,
        exam,
        uai,
        validated_only
    )
    .fetch_all(&db.pool)
    .await
    .context("writing the Imag'In items")?;
    let mut out = rows;
    out.sort_by_key(|o| o.id);
    Ok(out)
}

/// An item taken for sending.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: i64,
    pub key: String,
    pub document: serde_json::Value,
}

/// How many items of a unit are to send, over both targets (pending or
/// sent, and rejected ones too when `with_rejected`).
pub async fn count_to_send(
    db: &Db,
    exam: &str,
    uai: &str,
    with_rejected: bool,
) -> anyhow::Result<i64> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM export_items
           WHERE exam_code = $1 AND establishment_uai = $2
             AND (state IN ('pending', 'sent') OR ($3 AND state = 'rejected'))"#,
        exam,
        uai,
        with_rejected
    )
    .fetch_one(&db.pool)
    .await
    .context("counting the items to send")?;
    Ok(n)
}

/// Takes the next `limit` items to send after item `after` (in id order),
/// except those of `exclude` (already sent by this run), marks them `sent`
/// and counts the attempt.
#[allow(clippy::too_many_arguments)]
pub async fn take_batch(
    db: &Db,
    exam: &str,
    uai: &str,
    target: &str,
    with_rejected: bool,
    after: i64,
    limit: i64,
    exclude: &[i64],
) -> anyhow::Result<Vec<Outgoing>> {
    let rows = sqlx::query_as!(
        Outgoing,
        r#"
        UPDATE export_items e
        SET state = 'sent', reason = NULL, attempts = e.attempts + 1, sent_at = now(), updated_at = now()
        FROM (
            SELECT id FROM export_items
            WHERE exam_code = $1 AND establishment_uai = $2 AND target = $3
              AND (state IN ('pending', 'sent') OR ($4 AND state = 'rejected'))
              AND id > $5 AND id <> ALL($7)
            ORDER BY id
            LIMIT $6
            FOR UPDATE
        ) next
        WHERE e.id = next.id
        RETURNING e.id, e.key, e.document
        "#,
        exam,
        uai,
        target,
        with_rejected,
        after,
        limit,
        exclude
    )
    .fetch_all(&db.pool)
    .await
    .context("taking a batch of items")?;
    let mut out = rows;
    out.sort_by_key(|o| o.id);
    Ok(out)
}

/// Settles items with the target's answers: `accepted` (accepted or
/// duplicate) and `rejected` with their reasons. Items are named by id and
/// matched with `= ANY`, which stays linear whatever the planner believes
/// about a table that has just grown.
pub async fn record_results(
    db: &Db,
    accepted: &[i64],
    rejected: &[i64],
    reasons: &[String],
) -> anyhow::Result<()> {
    let mut tx = db.pool.begin().await.context("starting a transaction")?;
    if !accepted.is_empty() {
        sqlx::query!(
            "UPDATE export_items
             SET state = 'accepted', reason = NULL, accepted_at = now(), last_error = NULL,
                 updated_at = now()
             WHERE id = ANY($1)",
            accepted
        )
        .execute(&mut *tx)
        .await
        .context("recording accepted items")?;
    }
    if !rejected.is_empty() {
        sqlx::query!(
            "UPDATE export_items e
             SET state = 'rejected', reason = r.reason, accepted_at = NULL, last_error = NULL,
                 updated_at = now()
             FROM UNNEST($1::bigint[], $2::text[]) AS r(id, reason)
             WHERE e.id = ANY($1) AND e.id = r.id",
            rejected,
            reasons
        )
        .execute(&mut *tx)
        .await
        .context("recording rejected items")?;
    }
    tx.commit().await.context("committing the answers")?;
    Ok(())
}

/// Records a batch that got no per-item answer: retryable failures leave
/// the items pending with the error; permanent ones reject them with it.
pub async fn record_failure(
    db: &Db,
    ids: &[i64],
    error: &str,
    permanent: bool,
) -> anyhow::Result<()> {
    sqlx::query!(
        r#"
        UPDATE export_items
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

/// Per target, the unit's items by state.
pub async fn unit_counts(
    db: &Db,
    exam: &str,
    uai: &str,
) -> anyhow::Result<Vec<(String, StateCounts)>> {
    let rows = sqlx::query!(
        r#"SELECT target,
                  count(*) FILTER (WHERE state = 'pending') AS "pending!",
                  count(*) FILTER (WHERE state = 'sent') AS "sent!",
                  count(*) FILTER (WHERE state = 'accepted') AS "accepted!",
                  count(*) FILTER (WHERE state = 'rejected') AS "rejected!"
           FROM export_items WHERE exam_code = $1 AND establishment_uai = $2
           GROUP BY target ORDER BY target"#,
        exam,
        uai
    )
    .fetch_all(&db.pool)
    .await
    .context("counting the unit's items")?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.target,
                StateCounts {
                    pending: r.pending,
                    sent: r.sent,
                    accepted: r.accepted,
                    rejected: r.rejected,
                },
            )
        })
        .collect())
}

/// A reason items are not accepted, with how many.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorCount {
    pub establishment: String,
    pub target: String,
    /// `rejected` (the target refused) or `pending` (no answer yet).
    pub state: String,
    pub message: String,
    pub items: i64,
}

/// Why items of an exam (or of one unit) are not accepted: rejection
/// reasons and last errors, most frequent first.
pub async fn errors(db: &Db, exam: &str, uai: Option<&str>) -> anyhow::Result<Vec<ErrorCount>> {
    let rows = sqlx::query!(
        r#"SELECT establishment_uai, target,
                  CASE WHEN state = 'rejected' THEN 'rejected' ELSE 'pending' END AS "state!",
                  coalesce(reason, last_error) AS "message!", count(*) AS "items!"
           FROM export_items
           WHERE exam_code = $1 AND ($2::text IS NULL OR establishment_uai = $2)
             AND (state = 'rejected' OR (state <> 'accepted' AND last_error IS NOT NULL))
           GROUP BY 1, 2, 3, 4
           ORDER BY 1, 2, 5 DESC, 4"#,
        exam,
        uai
    )
    .fetch_all(&db.pool)
    .await
    .context("listing export errors")?;
    Ok(rows
        .into_iter()
        .map(|r| ErrorCount {
            establishment: r.establishment_uai,
            target: r.target,
            state: r.state,
            message: r.message,
            items: r.items,
        })
        .collect())
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

/// The content of (`exam`, `uai`).
pub async fn unit_content(db: &Db, exam: &str, uai: &str) -> anyhow::Result<UnitContent> {
    let r = sqlx::query!(
        r#"SELECT count(*) AS "copies!",
                  count(*) FILTER (WHERE c.validated_pass IS NOT NULL) AS "validated!",
                  count(DISTINCT c.grader_code) FILTER (WHERE c.grade IS NOT NULL AND NOT c.absent) AS "graders!",
                  count(*) FILTER (WHERE c.grade IS NULL AND NOT c.absent) AS "ungraded!"
           FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
           WHERE c.exam_code = $1 AND ca.establishment_uai = $2"#,
        exam,
        uai
    )
    .fetch_one(&db.pool)
    .await
    .context("reading the unit's content")?;
    Ok(UnitContent {
        copies: r.copies,
        validated: r.validated,
        graders: r.graders,
        ungraded: r.ungraded,
    })
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
    pub state: String,
    pub runs: i32,
    pub closed_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub active_job: Option<Uuid>,
    pub active_status: Option<String>,
    pub content: UnitContent,
    pub cyclades: StateCounts,
    pub imagin: StateCounts,
}

/// Every establishment with copies of `exam`, with its unit's state and
/// item counts.
pub async fn unit_rows(db: &Db, exam: &str) -> anyhow::Result<Vec<UnitRow>> {
    let rows = sqlx::query!(
        r#"
        WITH content AS (
            SELECT ca.establishment_uai AS uai, count(*) AS copies,
                   count(*) FILTER (WHERE c.validated_pass IS NOT NULL) AS validated,
                   count(DISTINCT c.grader_code) FILTER (WHERE c.grade IS NOT NULL AND NOT c.absent) AS graders,
                   count(*) FILTER (WHERE c.grade IS NULL AND NOT c.absent) AS ungraded
            FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
            WHERE c.exam_code = $1
            GROUP BY 1
        ), items AS (
            SELECT establishment_uai AS uai,
                count(*) FILTER (WHERE target = 'cyclades' AND state = 'pending') AS c_pending,
                count(*) FILTER (WHERE target = 'cyclades' AND state = 'sent') AS c_sent,
                count(*) FILTER (WHERE target = 'cyclades' AND state = 'accepted') AS c_accepted,
                count(*) FILTER (WHERE target = 'cyclades' AND state = 'rejected') AS c_rejected,
                count(*) FILTER (WHERE target = 'imagin' AND state = 'pending') AS i_pending,
                count(*) FILTER (WHERE target = 'imagin' AND state = 'sent') AS i_sent,
                count(*) FILTER (WHERE target = 'imagin' AND state = 'accepted') AS i_accepted,
                count(*) FILTER (WHERE target = 'imagin' AND state = 'rejected') AS i_rejected
            FROM export_items WHERE exam_code = $1
            GROUP BY 1
        )
        SELECT c.uai AS "uai!", e.name, coalesce(u.state, 'open') AS "state!",
               coalesce(u.runs, 0) AS "runs!", u.closed_at AS "closed_at?", u.updated_at AS "updated_at?",
               u.active_job_id AS "active_job?", j.status AS "active_status?",
               c.copies AS "copies!", c.validated AS "validated!", c.graders AS "graders!",
               c.ungraded AS "ungraded!",
               coalesce(i.c_pending, 0) AS "c_pending!", coalesce(i.c_sent, 0) AS "c_sent!",
               coalesce(i.c_accepted, 0) AS "c_accepted!", coalesce(i.c_rejected, 0) AS "c_rejected!",
               coalesce(i.i_pending, 0) AS "i_pending!", coalesce(i.i_sent, 0) AS "i_sent!",
               coalesce(i.i_accepted, 0) AS "i_accepted!", coalesce(i.i_rejected, 0) AS "i_rejected!"
        FROM content c
        JOIN establishments e ON e.uai = c.uai
        LEFT JOIN closure_units u ON u.exam_code = $1 AND u.establishment_uai = c.uai
        LEFT JOIN jobs j ON j.id = u.active_job_id
        LEFT JOIN items i ON i.uai = c.uai
        ORDER BY c.uai
        "#,
        exam
    )
    .fetch_all(&db.pool)
    .await
    .context("reading the closure status")?;
    Ok(rows
        .into_iter()
        .map(|r| UnitRow {
            establishment: r.uai,
            name: r.name,
            state: r.state,
            runs: r.runs,
            closed_at: r.closed_at,
            updated_at: r.updated_at,
            active_job: r.active_job,
            active_status: r.active_status,
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
        .collect())
}

/// Why a publication was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishRefusal {
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
) -> anyhow::Result<Result<(DateTime<Utc>, Vec<Uuid>), PublishRefusal>> {
    let mut tx = db.pool.begin().await.context("starting a transaction")?;
    let row = sqlx::query!(
        "SELECT published_at, published_by FROM exams WHERE code = $1 FOR UPDATE",
        exam
    )
    .fetch_optional(&mut *tx)
    .await
    .with_context(|| format!("locking exam {exam}"))?;
    let Some(row) = row else {
        return Ok(Err(PublishRefusal::UnknownExam));
    };
    if let Some(at) = row.published_at {
        return Ok(Err(PublishRefusal::AlreadyPublished {
            at,
            by: row.published_by,
        }));
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
        return Ok(Err(PublishRefusal::ClosureRunning(
            running.into_iter().map(|r| (r.scope, r.id)).collect(),
        )));
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
    Ok(Ok((at, cancelled)))
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
) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar!(
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
    .context("listing the establishments of validated copies")
}
