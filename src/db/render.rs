//! Render and download queries: copies with what their PDF shows,
//! candidate search, and download records.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Db,
    types::{decode, decode_uai},
};
use crate::domain::{ExamKind, Uai};

/// A copy with everything its PDF shows, and whether it was transmitted
/// to Cyclades (its Cyclades item accepted at the copy's current version).
#[derive(Debug, Clone)]
pub struct CopyRow {
    pub copy_id: i64,
    pub numero: String,
    pub nom: String,
    pub prenom: String,
    pub exam_code: String,
    pub exam_subject: String,
    pub exam_kind: ExamKind,
    pub session: String,
    pub establishment_uai: Uai,
    pub establishment_name: String,
    pub grade: Option<f64>,
    pub absent: bool,
    pub grading_details: serde_json::Value,
    pub appreciation: Option<String>,
    pub annotations: serde_json::Value,
    pub page_keys: Vec<String>,
    pub version: i32,
    pub transmitted: bool,
    /// When the copy was last imported or changed (its content's date:
    /// the dates in its PDF and zip entry).
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A [`CopyRow`] as stored, before its kind and UAI are decoded.
struct StoredCopy {
    copy_id: i64,
    numero: String,
    nom: String,
    prenom: String,
    exam_code: String,
    exam_subject: String,
    exam_kind: String,
    session: String,
    establishment_uai: String,
    establishment_name: String,
    grade: Option<f64>,
    absent: bool,
    grading_details: serde_json::Value,
    appreciation: Option<String>,
    annotations: serde_json::Value,
    page_keys: Vec<String>,
    version: i32,
    transmitted: bool,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl TryFrom<StoredCopy> for CopyRow {
    type Error = anyhow::Error;

    fn try_from(r: StoredCopy) -> anyhow::Result<Self> {
        Ok(Self {
            exam_kind: decode("exams.kind", &r.exam_kind)?,
            establishment_uai: decode_uai("establishments.uai", &r.establishment_uai)?,
            copy_id: r.copy_id,
            numero: r.numero,
            nom: r.nom,
            prenom: r.prenom,
            exam_code: r.exam_code,
            exam_subject: r.exam_subject,
            session: r.session,
            establishment_name: r.establishment_name,
            grade: r.grade,
            absent: r.absent,
            grading_details: r.grading_details,
            appreciation: r.appreciation,
            annotations: r.annotations,
            page_keys: r.page_keys,
            version: r.version,
            transmitted: r.transmitted,
            updated_at: r.updated_at,
        })
    }
}

/// The copy of candidate `numero` for `exam`.
pub async fn copy(db: &Db, exam: &str, numero: &str) -> anyhow::Result<Option<CopyRow>> {
    let rows = sqlx::query_as!(
        StoredCopy,
        r#"SELECT c.id AS copy_id, ca.numero, ca.nom, ca.prenom, x.code AS exam_code,
                  x.subject AS exam_subject, x.kind AS exam_kind, x.session_code AS session,
                  e.uai AS establishment_uai, e.name AS establishment_name,
                  c.grade::float8 AS grade, c.absent, c.grading_details, c.appreciation,
                  c.annotations, c.page_keys, c.version, c.updated_at,
                  EXISTS (SELECT 1 FROM grade_exports g
                          WHERE g.copy_id = c.id
                            AND g.state = 'accepted' AND g.revision = c.version) AS "transmitted!"
           FROM copies c
           JOIN candidates ca ON ca.id = c.candidate_id
           JOIN exams x ON x.code = c.exam_code
           JOIN establishments e ON e.uai = ca.establishment_uai
           WHERE c.exam_code = $1 AND ca.numero = $2 AND ca.session_code = x.session_code"#,
        exam,
        numero
    )
    .fetch_optional(&db.pool)
    .await
    .context("reading the copy")?;
    rows.map(CopyRow::try_from).transpose()
}

/// The transmitted copies of (`exam`, `uai`), in name order.
pub async fn transmitted_copies(db: &Db, exam: &str, uai: &str) -> anyhow::Result<Vec<CopyRow>> {
    let rows = sqlx::query_as!(
        StoredCopy,
        r#"SELECT c.id AS copy_id, ca.numero, ca.nom, ca.prenom, x.code AS exam_code,
                  x.subject AS exam_subject, x.kind AS exam_kind, x.session_code AS session,
                  e.uai AS establishment_uai, e.name AS establishment_name,
                  c.grade::float8 AS grade, c.absent, c.grading_details, c.appreciation,
                  c.annotations, c.page_keys, c.version, true AS "transmitted!", c.updated_at
           FROM copies c
           JOIN candidates ca ON ca.id = c.candidate_id
           JOIN exams x ON x.code = c.exam_code
           JOIN establishments e ON e.uai = ca.establishment_uai
           WHERE c.exam_code = $1 AND ca.establishment_uai = $2
             AND EXISTS (SELECT 1 FROM grade_exports g
                         WHERE g.copy_id = c.id
                           AND g.state = 'accepted' AND g.revision = c.version)
           ORDER BY ca.nom, ca.prenom, ca.numero"#,
        exam,
        uai
    )
    .fetch_all(&db.pool)
    .await
    .context("listing the transmitted copies")?;
    rows.into_iter().map(CopyRow::try_from).collect()
}

/// Whether (`exam`, `uai`) has at least one transmitted copy.
pub async fn has_transmitted(db: &Db, exam: &str, uai: &str) -> anyhow::Result<bool> {
    let found = sqlx::query_scalar!(
        r#"SELECT EXISTS (
             SELECT 1 FROM copies c
             JOIN candidates ca ON ca.id = c.candidate_id
             JOIN grade_exports g ON g.copy_id = c.id
             WHERE c.exam_code = $1 AND ca.establishment_uai = $2
               AND g.state = 'accepted' AND g.revision = c.version
           ) AS "found!""#,
        exam,
        uai
    )
    .fetch_one(&db.pool)
    .await
    .context("looking for transmitted copies")?;
    Ok(found)
}

/// A candidate found by a search, with their copy's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    pub numero: String,
    pub nom: String,
    pub prenom: String,
    pub absent: bool,
    pub grade: Option<f64>,
    /// Transmitted to Cyclades, hence downloadable.
    pub downloadable: bool,
}

/// What a search found.
#[derive(Debug, Clone)]
pub enum Search {
    Found(SearchPage),
    UnknownExam,
    /// No term has a letter or digit.
    NothingToSearch,
}

/// A page of search results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchPage {
    /// How many candidates match in all.
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
    /// Whether matches remain after this page.
    pub more: bool,
    pub candidates: Vec<Found>,
}

/// The candidates of (`exam`, `uai`) whose nom, prénom or numéro contains
/// every term, case- and accent-insensitively and ignoring punctuation
/// ("helene" finds Hélène, "ndiaye" finds N'Diaye), `limit` of them from
/// `offset` on, with the total. Terms are matched as plain substrings
/// (`strpos`, no `LIKE` pattern: `%` or `_` match only themselves, and
/// are punctuation anyway). A query without a letter or digit, or on an
/// unknown exam, is refused.
pub async fn search(
    db: &Db,
    exam: &str,
    uai: &str,
    terms: &[String],
    limit: i64,
    offset: i64,
) -> anyhow::Result<Search> {
    // One round trip for the exam and the terms, folded as the names
    // are: what is left of each term to look for.
    let asked = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM exams WHERE code = $1) AS "known!",
                  ARRAY(SELECT f FROM (SELECT regexp_replace(copiste_fold(t.term), '[^a-z0-9]+', '', 'g') AS f
                                       FROM unnest($2::text[]) AS t(term)) folded
                        WHERE f <> '') AS "folded!""#,
        exam,
        terms
    )
    .fetch_one(&db.pool)
    .await
    .context("looking the exam up and folding the search terms")?;
    if !asked.known {
        return Ok(Search::UnknownExam);
    }
    let folded = asked.folded;
    if folded.is_empty() {
        return Ok(Search::NothingToSearch);
    }
    // One more for the page and the total, on the folded text kept with
    // each candidate (migration 9).
    let rows = sqlx::query!(
        r#"WITH found AS MATERIALIZED (
               SELECT c.id, c.version, c.absent, c.grade, ca.numero, ca.nom, ca.prenom
               FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
               WHERE c.exam_code = $1 AND ca.establishment_uai = $2
                 AND NOT EXISTS (
                     SELECT 1 FROM unnest($3::text[]) AS t(term)
                     WHERE strpos(ca.folded, t.term) = 0)
           ), total AS (SELECT count(*) AS n FROM found)
           SELECT total.n AS "total!", f.numero AS "numero?", f.nom AS "nom?", f.prenom AS "prenom?",
                  f.absent AS "absent?", f.grade::float8 AS grade,
                  EXISTS (SELECT 1 FROM grade_exports g
                          WHERE g.copy_id = f.id
                            AND g.state = 'accepted' AND g.revision = f.version) AS "downloadable!"
           FROM total LEFT JOIN LATERAL (
               SELECT * FROM found ORDER BY nom, prenom, numero LIMIT $4 OFFSET $5
           ) f ON true"#,
        exam,
        uai,
        &folded,
        limit,
        offset
    )
    .fetch_all(&db.pool)
    .await
    .context("searching candidates")?;
    let total = rows.first().map_or(0, |r| r.total);
    let candidates: Vec<Found> = rows
        .into_iter()
        .filter_map(|r| {
            Some(Found {
                numero: r.numero?,
                nom: r.nom?,
                prenom: r.prenom?,
                absent: r.absent?,
                grade: r.grade,
                downloadable: r.downloadable,
            })
        })
        .collect();
    let more = offset.saturating_add(candidates.len() as i64) < total;
    Ok(Search::Found(SearchPage {
        total,
        offset,
        limit,
        more,
        candidates,
    }))
}

/// A finished zip and where its parts are.
#[derive(Debug, Clone)]
pub struct DownloadRow {
    pub id: Uuid,
    pub exam_code: String,
    pub establishment_uai: Uai,
    pub options: String,
    pub parts: serde_json::Value,
    pub copies: i32,
    pub errors: i32,
    pub job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A [`DownloadRow`] as stored, before its UAI is decoded.
struct StoredDownload {
    id: Uuid,
    exam_code: String,
    establishment_uai: String,
    options: String,
    parts: serde_json::Value,
    copies: i32,
    errors: i32,
    job_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl TryFrom<StoredDownload> for DownloadRow {
    type Error = anyhow::Error;

    fn try_from(r: StoredDownload) -> anyhow::Result<Self> {
        Ok(Self {
            establishment_uai: decode_uai("downloads.establishment_uai", &r.establishment_uai)?,
            id: r.id,
            exam_code: r.exam_code,
            options: r.options,
            parts: r.parts,
            copies: r.copies,
            errors: r.errors,
            job_id: r.job_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

/// Records a finished zip.
#[allow(clippy::too_many_arguments)]
pub async fn insert_download(
    db: &Db,
    exam: &str,
    uai: &str,
    options: &str,
    parts: serde_json::Value,
    copies: i32,
    errors: i32,
    job: Uuid,
    expires_at: DateTime<Utc>,
) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO downloads (id, exam_code, establishment_uai, options, parts, copies, errors,
                                job_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        id,
        exam,
        uai,
        options,
        parts,
        copies,
        errors,
        job,
        expires_at
    )
    .execute(&db.pool)
    .await
    .context("recording the download")?;
    Ok(id)
}

/// The newest unexpired download of (`exam`, `uai`, `options`).
pub async fn current_download(
    db: &Db,
    exam: &str,
    uai: &str,
    options: &str,
) -> anyhow::Result<Option<DownloadRow>> {
    let row = sqlx::query_as!(
        StoredDownload,
        "SELECT id, exam_code, establishment_uai, options, parts, copies, errors, job_id,
                created_at, expires_at
         FROM downloads
         WHERE exam_code = $1 AND establishment_uai = $2 AND options = $3 AND expires_at > now()
         ORDER BY created_at DESC LIMIT 1",
        exam,
        uai,
        options
    )
    .fetch_optional(&db.pool)
    .await
    .context("reading the current download")?;
    row.map(DownloadRow::try_from).transpose()
}

/// Serialises requests for the same zip until `tx` ends (an advisory
/// transaction lock on the request's identity).
pub async fn lock_zip_request(tx: &mut super::Tx, identity: &str) -> anyhow::Result<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 7310002))",
        identity
    )
    .execute(&mut *tx.inner)
    .await
    .context("locking the zip request")?;
    Ok(())
}

/// A queued or running job of `kind` with exactly this payload.
pub async fn active_job(
    tx: &mut super::Tx,
    kind: &str,
    payload: &serde_json::Value,
) -> anyhow::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM jobs WHERE kind = $1 AND payload = $2 AND status IN ('queued', 'running')
         ORDER BY created_at LIMIT 1",
        kind,
        payload
    )
    .fetch_optional(&mut *tx.inner)
    .await
    .context("looking for a job in progress")
}

/// Serialises the zip requests of one exam until `tx` ends: a single
/// request takes it shared (many run at once), a request for every
/// establishment takes it exclusive, so that neither enqueues a zip the
/// other is enqueuing (an advisory transaction lock on the exam code).
pub async fn lock_exam_zips(tx: &mut super::Tx, exam: &str, exclusive: bool) -> anyhow::Result<()> {
    let locked = if exclusive {
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7310003))",
            exam
        )
        .execute(&mut *tx.inner)
        .await
    } else {
        sqlx::query!(
            "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 7310003))",
            exam
        )
        .execute(&mut *tx.inner)
        .await
    };
    locked.context("locking the exam's zip requests")?;
    Ok(())
}

/// The establishments (of `academy`, when given) with at least one
/// transmitted copy of `exam`, in UAI order.
pub async fn transmitted_establishments(
    tx: &mut super::Tx,
    exam: &str,
    academy: Option<&str>,
) -> anyhow::Result<Vec<Uai>> {
    let uais = sqlx::query_scalar!(
        r#"SELECT DISTINCT ca.establishment_uai AS "uai!"
           FROM copies c
           JOIN candidates ca ON ca.id = c.candidate_id
           JOIN establishments e ON e.uai = ca.establishment_uai
           JOIN grade_exports g ON g.copy_id = c.id
           WHERE c.exam_code = $1 AND ($2::text IS NULL OR e.academy_code = $2)
             AND g.state = 'accepted' AND g.revision = c.version
           ORDER BY 1"#,
        exam,
        academy
    )
    .fetch_all(&mut *tx.inner)
    .await
    .context("listing the establishments with transmitted copies")?;
    uais.iter()
        .map(|u| decode_uai("candidates.establishment_uai", u))
        .collect()
}

/// The establishments with an unexpired download of (`exam`, `options`).
pub async fn ready_establishments(
    tx: &mut super::Tx,
    exam: &str,
    options: &str,
) -> anyhow::Result<Vec<Uai>> {
    let uais = sqlx::query_scalar!(
        "SELECT DISTINCT establishment_uai FROM downloads
         WHERE exam_code = $1 AND options = $2 AND expires_at > now()",
        exam,
        options
    )
    .fetch_all(&mut *tx.inner)
    .await
    .context("listing the ready zips")?;
    uais.iter()
        .map(|u| decode_uai("downloads.establishment_uai", u))
        .collect()
}

/// The payloads of the queued or running jobs of `kind` whose payload
/// names `exam`.
pub async fn active_exam_jobs(
    tx: &mut super::Tx,
    kind: &str,
    exam: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    sqlx::query_scalar!(
        "SELECT payload FROM jobs
         WHERE kind = $1 AND status IN ('queued', 'running') AND payload->>'exam' = $2",
        kind,
        exam
    )
    .fetch_all(&mut *tx.inner)
    .await
    .context("listing the zip jobs in progress")
}
