//! Catalogue queries: the import of a session export, and the look-ups of
//! exams, academies and establishments.
//!
//! Every write is a bulk upsert over arrays (`UNNEST`) so that a session of
//! hundreds of thousands of rows is a handful of statements. Each upsert
//! only touches rows whose content differs, and reports how many rows it
//! inserted and how many it updated; the caller derives the unchanged ones.

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::{
    Db, Tx,
    types::{decode, decode_uai},
};
use crate::domain::{ExamKind, Uai};

/// How many rows one upsert inserted and updated.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    pub inserted: u64,
    pub updated: u64,
}

impl Upserted {
    fn from_counts(inserted: i64, updated: i64) -> Self {
        Self {
            inserted: u64::try_from(inserted).unwrap_or(0),
            updated: u64::try_from(updated).unwrap_or(0),
        }
    }
}

/// Creates the session, or renames it.
pub async fn upsert_session(tx: &mut Tx, code: &str, name: &str) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO sessions (code, name) VALUES ($1, $2)
         ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name
         WHERE sessions.name IS DISTINCT FROM EXCLUDED.name",
        code,
        name
    )
    .execute(&mut *tx.inner)
    .await
    .with_context(|| format!("writing session {code}"))?;
    Ok(())
}

/// The exams among `codes` that already belong to a session other than
/// `session`, with that session: exam codes are global, and an exam never
/// moves between sessions.
pub async fn exams_of_other_sessions(
    tx: &mut Tx,
    session: &str,
    codes: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let rows = sqlx::query!(
        "SELECT code, session_code FROM exams
         WHERE code = ANY($1::text[]) AND session_code <> $2
         ORDER BY code",
        codes,
        session
    )
    .fetch_all(&mut *tx.inner)
    .await
    .context("looking up exams of other sessions")?;
    Ok(rows
        .into_iter()
        .map(|row| (row.code, row.session_code))
        .collect())
}

/// Inserts academies, or renames them.
pub async fn upsert_academies(
    tx: &mut Tx,
    codes: &[String],
    names: &[String],
) -> anyhow::Result<Upserted> {
    let row = sqlx::query!(
        r#"WITH up AS (
             INSERT INTO academies (code, name)
             SELECT * FROM UNNEST($1::text[], $2::text[])
             ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name
             WHERE academies.name IS DISTINCT FROM EXCLUDED.name
             RETURNING (xmax = 0) AS inserted
           )
           SELECT count(*) FILTER (WHERE inserted) AS "inserted!",
                  count(*) FILTER (WHERE NOT inserted) AS "updated!"
           FROM up"#,
        codes,
        names
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("writing academies")?;
    Ok(Upserted::from_counts(row.inserted, row.updated))
}

/// The columns of establishments to upsert, one element per row.
#[derive(Debug, Default)]
pub struct EstablishmentRows {
    pub uais: Vec<String>,
    pub names: Vec<String>,
    pub academies: Vec<String>,
    pub abroad: Vec<bool>,
}

/// Inserts establishments, or updates their name, academy and location.
pub async fn upsert_establishments(
    tx: &mut Tx,
    rows: &EstablishmentRows,
) -> anyhow::Result<Upserted> {
    let row = sqlx::query!(
        r#"WITH up AS (
             INSERT INTO establishments (uai, name, academy_code, abroad)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bool[])
             ON CONFLICT (uai) DO UPDATE
             SET name = EXCLUDED.name, academy_code = EXCLUDED.academy_code,
                 abroad = EXCLUDED.abroad
             WHERE (establishments.name, establishments.academy_code, establishments.abroad)
                   IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.academy_code, EXCLUDED.abroad)
             RETURNING (xmax = 0) AS inserted
           )
           SELECT count(*) FILTER (WHERE inserted) AS "inserted!",
                  count(*) FILTER (WHERE NOT inserted) AS "updated!"
           FROM up"#,
        &rows.uais,
        &rows.names,
        &rows.academies,
        &rows.abroad
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("writing establishments")?;
    Ok(Upserted::from_counts(row.inserted, row.updated))
}

/// Inserts the exams of `session`, or updates their subject and kind.
pub async fn upsert_exams(
    tx: &mut Tx,
    session: &str,
    codes: &[String],
    subjects: &[String],
    kinds: &[String],
) -> anyhow::Result<Upserted> {
    let row = sqlx::query!(
        r#"WITH up AS (
             INSERT INTO exams (code, session_code, subject, kind)
             SELECT u.code, $1, u.subject, u.kind
             FROM UNNEST($2::text[], $3::text[], $4::text[]) AS u (code, subject, kind)
             ON CONFLICT (code) DO UPDATE
             SET subject = EXCLUDED.subject, kind = EXCLUDED.kind
             WHERE exams.session_code = EXCLUDED.session_code
               AND (exams.subject, exams.kind) IS DISTINCT FROM (EXCLUDED.subject, EXCLUDED.kind)
             RETURNING (xmax = 0) AS inserted
           )
           SELECT count(*) FILTER (WHERE inserted) AS "inserted!",
                  count(*) FILTER (WHERE NOT inserted) AS "updated!"
           FROM up"#,
        session,
        codes,
        subjects,
        kinds
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("writing exams")?;
    Ok(Upserted::from_counts(row.inserted, row.updated))
}

/// The columns of graders to upsert, one element per row.
#[derive(Debug, Default)]
pub struct GraderRows {
    pub codes: Vec<String>,
    pub noms: Vec<String>,
    pub prenoms: Vec<String>,
    pub academies: Vec<String>,
}

/// Inserts graders, or updates their names and academy.
pub async fn upsert_graders(tx: &mut Tx, rows: &GraderRows) -> anyhow::Result<Upserted> {
    let row = sqlx::query!(
        r#"WITH up AS (
             INSERT INTO graders (code, nom, prenom, academy_code)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT (code) DO UPDATE
             SET nom = EXCLUDED.nom, prenom = EXCLUDED.prenom,
                 academy_code = EXCLUDED.academy_code
             WHERE (graders.nom, graders.prenom, graders.academy_code)
                   IS DISTINCT FROM (EXCLUDED.nom, EXCLUDED.prenom, EXCLUDED.academy_code)
             RETURNING (xmax = 0) AS inserted
           )
           SELECT count(*) FILTER (WHERE inserted) AS "inserted!",
                  count(*) FILTER (WHERE NOT inserted) AS "updated!"
           FROM up"#,
        &rows.codes,
        &rows.noms,
        &rows.prenoms,
        &rows.academies
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("writing graders")?;
    Ok(Upserted::from_counts(row.inserted, row.updated))
}

/// The columns of candidates to upsert, one element per row.
#[derive(Debug, Default)]
pub struct CandidateRows {
    pub numeros: Vec<String>,
    pub noms: Vec<String>,
    pub prenoms: Vec<String>,
    pub establishments: Vec<String>,
}

/// Inserts the candidates of `session` (unique by numéro within it), or
/// updates their names and establishment.
pub async fn upsert_candidates(
    tx: &mut Tx,
    session: &str,
    rows: &CandidateRows,
) -> anyhow::Result<Upserted> {
    let row = sqlx::query!(
        r#"WITH up AS (
             INSERT INTO candidates (session_code, numero, nom, prenom, establishment_uai)
             SELECT $1, u.numero, u.nom, u.prenom, u.uai
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[])
                  AS u (numero, nom, prenom, uai)
             ON CONFLICT (session_code, numero) DO UPDATE
             SET nom = EXCLUDED.nom, prenom = EXCLUDED.prenom,
                 establishment_uai = EXCLUDED.establishment_uai
             WHERE (candidates.nom, candidates.prenom, candidates.establishment_uai)
                   IS DISTINCT FROM (EXCLUDED.nom, EXCLUDED.prenom, EXCLUDED.establishment_uai)
             RETURNING (xmax = 0) AS inserted
           )
           SELECT count(*) FILTER (WHERE inserted) AS "inserted!",
                  count(*) FILTER (WHERE NOT inserted) AS "updated!"
           FROM up"#,
        session,
        &rows.numeros,
        &rows.noms,
        &rows.prenoms,
        &rows.establishments
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("writing candidates")?;
    Ok(Upserted::from_counts(row.inserted, row.updated))
}

/// The columns of copies to upsert, one element per row.
#[derive(Debug, Default)]
pub struct CopyRows {
    pub exams: Vec<String>,
    /// The candidate's numéro within the session.
    pub numeros: Vec<String>,
    pub graders: Vec<Option<String>>,
    pub absent: Vec<bool>,
    /// Decimal text with two decimals, e.g. `"12.50"`.
    pub grades: Vec<Option<String>>,
    /// JSON arrays.
    pub grading_details: Vec<String>,
    pub appreciations: Vec<Option<String>>,
    /// JSON arrays.
    pub annotations: Vec<String>,
    /// The object keys of the pages joined by commas (keys never contain
    /// one); empty for no page.
    pub page_keys: Vec<String>,
    pub content_sha256: Vec<String>,
}

/// Inserts copies of candidates of `session` at version 1, or replaces the
/// content of those whose `content_sha256` changed and bumps their version.
/// Every candidate named must exist in the session.
pub async fn upsert_copies(
    tx: &mut Tx,
    session: &str,
    rows: &CopyRows,
) -> anyhow::Result<Upserted> {
    let row = sqlx::query!(
        r#"WITH up AS (
             INSERT INTO copies (exam_code, candidate_id, grader_code, absent, grade,
                                 grading_details, appreciation, annotations, page_keys,
                                 content_sha256)
             SELECT u.exam_code, c.id, u.grader_code, u.absent, u.grade::numeric(5, 2),
                    u.grading_details::jsonb, u.appreciation, u.annotations::jsonb,
                    string_to_array(u.page_keys, ','), u.content_sha256
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bool[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
                  AS u (exam_code, numero, grader_code, absent, grade, grading_details,
                        appreciation, annotations, page_keys, content_sha256)
             JOIN candidates c ON c.session_code = $1 AND c.numero = u.numero
             ON CONFLICT (exam_code, candidate_id) DO UPDATE
             SET grader_code = EXCLUDED.grader_code, absent = EXCLUDED.absent,
                 grade = EXCLUDED.grade, grading_details = EXCLUDED.grading_details,
                 appreciation = EXCLUDED.appreciation, annotations = EXCLUDED.annotations,
                 page_keys = EXCLUDED.page_keys, content_sha256 = EXCLUDED.content_sha256,
                 version = copies.version + 1, updated_at = now()
             WHERE copies.content_sha256 <> EXCLUDED.content_sha256
             RETURNING (xmax = 0) AS inserted
           )
           SELECT count(*) FILTER (WHERE inserted) AS "inserted!",
                  count(*) FILTER (WHERE NOT inserted) AS "updated!"
           FROM up"#,
        session,
        &rows.exams,
        &rows.numeros,
        &rows.graders[..] as &[Option<String>],
        &rows.absent,
        &rows.grades[..] as &[Option<String>],
        &rows.grading_details,
        &rows.appreciations[..] as &[Option<String>],
        &rows.annotations,
        &rows.page_keys,
        &rows.content_sha256
    )
    .fetch_one(&mut *tx.inner)
    .await
    .context("writing copies")?;
    Ok(Upserted::from_counts(row.inserted, row.updated))
}

/// The pieces of `session` already imported (format 2), by file name,
/// with the SHA-256 of the content imported.
pub async fn imported_pieces(
    db: &super::Db,
    session: &str,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let rows = sqlx::query!(
        "SELECT piece, sha256 FROM import_pieces WHERE session_code = $1",
        session
    )
    .fetch_all(&db.pool)
    .await
    .with_context(|| format!("reading the pieces of session {session} already imported"))?;
    Ok(rows
        .into_iter()
        .map(|row| (row.piece, row.sha256))
        .collect())
}

/// Records that piece `piece` of `session`, of content `sha256`, is
/// imported with its `candidates` and `copies`: in the transaction that
/// writes its rows, so that the record and the rows commit together.
pub async fn record_piece(
    tx: &mut Tx,
    session: &str,
    piece: &str,
    sha256: &str,
    candidates: i64,
    copies: i64,
) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO import_pieces (session_code, piece, sha256, candidates, copies)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (session_code, piece) DO UPDATE
         SET sha256 = EXCLUDED.sha256, candidates = EXCLUDED.candidates,
             copies = EXCLUDED.copies, imported_at = now()",
        session,
        piece,
        sha256,
        candidates,
        copies
    )
    .execute(&mut *tx.inner)
    .await
    .with_context(|| format!("recording piece {piece} as imported"))?;
    Ok(())
}

/// The number of copies in the catalogue.
pub async fn count_copies(db: &super::Db) -> anyhow::Result<i64> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM copies"#)
        .fetch_one(&db.pool)
        .await
        .context("counting copies")
}

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

/// Refreshes the planner's statistics of the tables an import writes.
///
/// A session's rows arrive in a few bulk statements; until the tables are
/// analysed (autovacuum may take minutes, or be off), the planner guesses
/// their sizes and reads a whole exam's copies to find one
/// establishment's (the nightly closure's look-up of a unit took 318 ms
/// instead of 7 ms at a tenth of a national session). `ANALYZE` samples
/// a fixed number of rows per table, so its cost does not grow with the
/// session.
pub async fn analyze_imported(db: &super::Db) -> anyhow::Result<()> {
    sqlx::query!(
        "ANALYZE academies, establishments, exams, graders, candidates, copies, unit_summaries"
    )
    .execute(&db.pool)
    .await
    .context("refreshing the statistics of the imported tables")?;
    Ok(())
}

/// The subjects of the exams among `codes` that exist, by code.
pub async fn exam_subjects(
    db: &Db,
    codes: &[String],
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let rows = sqlx::query!(
        "SELECT code, subject FROM exams WHERE code = ANY($1::text[])",
        codes
    )
    .fetch_all(&db.pool)
    .await
    .context("reading the exams' subjects")?;
    Ok(rows.into_iter().map(|r| (r.code, r.subject)).collect())
}

/// The name and academy of the establishments among `uais` that exist,
/// by UAI.
pub async fn establishment_names(
    db: &Db,
    uais: &[String],
) -> anyhow::Result<std::collections::HashMap<String, (String, String)>> {
    let rows = sqlx::query!(
        "SELECT uai, name, academy_code FROM establishments WHERE uai = ANY($1::text[])",
        uais
    )
    .fetch_all(&db.pool)
    .await
    .context("reading the establishments' names")?;
    Ok(rows
        .into_iter()
        .map(|r| (r.uai, (r.name, r.academy_code)))
        .collect())
}

/// An academy: its code and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcademyRow {
    pub code: String,
    pub name: String,
}

/// Every academy, in code order (`code` alone when given).
pub async fn academies(db: &Db, code: Option<&str>) -> anyhow::Result<Vec<AcademyRow>> {
    sqlx::query_as!(
        AcademyRow,
        "SELECT code, name FROM academies WHERE ($1::text IS NULL OR code = $1) ORDER BY code",
        code
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the academies")
}
