//! The export ledger's items (`grade_exports`, `count_exports`): counts
//! brought up to date, answers and failures of batches recorded, and
//! items counted by state or by reason.

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::db::Db;
use crate::db::types::decode;
use crate::domain::ItemState;

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

impl StateCounts {
    /// Items not accepted: to send, sent without an answer, or rejected.
    pub fn unaccepted(&self) -> i64 {
        self.pending + self.sent + self.rejected
    }
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
    /// Which items, the first five in order: candidates' numéros for
    /// Cyclades, graders' codes for Imag'In.
    pub examples: Vec<String>,
}

/// The rows of an error query as [`ErrorCount`]s (each query's rows are a
/// type of their own, checked at compile time).
macro_rules! error_counts {
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
                    examples: r.examples,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
}

/// Why items of a whole exam are not accepted, as [`errors_of_units`]
/// tells it for some establishments: the admin's status of every unit.
/// The exam's failing items are found through the partial index of
/// failing grades, whatever the number of failing units (reading every
/// failing unit's copies instead read 443 000 buffers for a national exam
/// during a closure, against 118 000: docs/performance.md).
pub async fn exam_errors(db: &Db, exam: &str) -> anyhow::Result<Vec<ErrorCount>> {
    Ok(error_counts!(
            sqlx::query!(
                r#"WITH failing AS (
                       SELECT ca.establishment_uai, 'cyclades' AS target, g.state,
                              coalesce(g.reason, g.last_error) AS message, ca.numero AS who
                       FROM copies c JOIN grade_exports g ON g.copy_id = c.id
                       JOIN candidates ca ON ca.id = c.candidate_id
                       WHERE c.exam_code = $1
                         AND (g.state = 'rejected' OR (g.state <> 'accepted' AND g.last_error IS NOT NULL))
                       UNION ALL
                       SELECT establishment_uai, 'imagin', state, coalesce(reason, last_error), grader_code
                       FROM count_exports
                       WHERE exam_code = $1
                         AND (state = 'rejected' OR (state <> 'accepted' AND last_error IS NOT NULL))
                   )
                   SELECT establishment_uai AS "establishment_uai!", target AS "target!",
                          CASE WHEN state = 'rejected' THEN 'rejected' ELSE 'pending' END AS "state!",
                          message AS "message!", count(*) AS "items!",
                          (array_agg(who ORDER BY who))[1:5] AS "examples!"
                   FROM failing
                   GROUP BY 1, 2, 3, 4
                   ORDER BY 1, 2, 5 DESC, 4"#,
                exam
            )
            .fetch_all(&db.pool)
            .await
            .context("listing the exam's export errors")?
    ))
}

/// Why items of `exam` in the establishments `uais` are not accepted:
/// rejection reasons and last errors, per establishment, most frequent
/// first, with the first five numéros (Cyclades) or graders' codes
/// (Imag'In) of each. A unit's run reads its own; the closure table those
/// of the units it shows whose counts hold items not accepted, never
/// every failing item of the exam.
pub async fn errors_of_units(
    db: &Db,
    exam: &str,
    uais: &[String],
) -> anyhow::Result<Vec<ErrorCount>> {
    if uais.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query!(
        r#"WITH units AS MATERIALIZED (
               SELECT c.id, ca.numero, ca.establishment_uai
               FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
               WHERE c.exam_code = $1 AND ca.establishment_uai = ANY($2)
           ), failing AS (
               SELECT units.establishment_uai, 'cyclades' AS target, g.state,
                      coalesce(g.reason, g.last_error) AS message, units.numero AS who
               FROM units JOIN grade_exports g ON g.copy_id = units.id
               WHERE g.state = 'rejected' OR (g.state <> 'accepted' AND g.last_error IS NOT NULL)
               UNION ALL
               SELECT establishment_uai, 'imagin', state, coalesce(reason, last_error), grader_code
               FROM count_exports
               WHERE exam_code = $1 AND establishment_uai = ANY($2)
                 AND (state = 'rejected' OR (state <> 'accepted' AND last_error IS NOT NULL))
           )
           SELECT establishment_uai AS "establishment_uai!", target AS "target!",
                  CASE WHEN state = 'rejected' THEN 'rejected' ELSE 'pending' END AS "state!",
                  message AS "message!", count(*) AS "items!",
                  (array_agg(who ORDER BY who))[1:5] AS "examples!"
           FROM failing
           GROUP BY 1, 2, 3, 4
           ORDER BY 1, 2, 5 DESC, 4"#,
        exam,
        uais
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the units' export errors")?;
    Ok(error_counts!(rows))
}
