//! Writing an export's rows: the session and what candidates and copies
//! reference, then candidates and copies in bulk batches, each copy with
//! the hash of the content that makes up its version.

use std::collections::HashMap;

use anyhow::Context as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{
    Counts, ImportError, ImportSummary,
    manifest::{AnnotationKind, Candidate, Copy, SessionFile},
    scans::Scan,
};
use crate::db::{
    Tx,
    catalog::{self, CandidateRows, CopyRows, EstablishmentRows, GraderRows},
};

/// Rows written by one bulk statement for the large tables.
const BATCH: usize = 10_000;

/// Upserts the session and what candidates and copies reference
/// (academies, establishments, exams, graders) in `tx`, counting them in
/// `summary` and reporting the rows written to `advance`.
pub(super) async fn write_head(
    tx: &mut Tx,
    head: &SessionFile,
    summary: &mut ImportSummary,
    advance: &mut impl FnMut(usize),
) -> Result<(), ImportError> {
    let session = head.session.code.as_str();
    let database = ImportError::Database;
    catalog::upsert_session(tx, session, &head.session.name)
        .await
        .map_err(database)?;

    let (codes, names) = head
        .academies
        .iter()
        .map(|a| (a.code.clone(), a.name.clone()))
        .unzip::<_, _, Vec<_>, Vec<_>>();
    let upserted = catalog::upsert_academies(tx, &codes, &names)
        .await
        .map_err(database)?;
    summary.academies = Counts::of(upserted, codes.len());
    advance(codes.len());

    let mut rows = EstablishmentRows::default();
    for e in &head.establishments {
        rows.uais.push(e.uai.as_str().to_owned());
        rows.names.push(e.name.clone());
        rows.academies.push(e.academy.clone());
        rows.abroad.push(e.abroad);
    }
    let upserted = catalog::upsert_establishments(tx, &rows)
        .await
        .map_err(database)?;
    summary.establishments = Counts::of(upserted, rows.uais.len());
    advance(rows.uais.len());

    let codes: Vec<String> = head.exams.iter().map(|e| e.code.clone()).collect();
    let subjects: Vec<String> = head.exams.iter().map(|e| e.subject.clone()).collect();
    let kinds: Vec<String> = head
        .exams
        .iter()
        .map(|e| e.kind.as_str().to_owned())
        .collect();
    let upserted = catalog::upsert_exams(tx, session, &codes, &subjects, &kinds)
        .await
        .map_err(database)?;
    summary.exams = Counts::of(upserted, codes.len());
    advance(codes.len());

    let mut rows = GraderRows::default();
    for g in &head.graders {
        rows.codes.push(g.code.clone());
        rows.noms.push(g.nom.clone());
        rows.prenoms.push(g.prenom.clone());
        rows.academies.push(g.academy.clone());
    }
    let upserted = catalog::upsert_graders(tx, &rows).await.map_err(database)?;
    summary.graders = Counts::of(upserted, rows.codes.len());
    advance(rows.codes.len());
    Ok(())
}

/// The candidates as rows, in batches of [`BATCH`].
pub(super) fn candidate_rows(candidates: &[Candidate]) -> Vec<CandidateRows> {
    candidates
        .chunks(BATCH)
        .map(|chunk| {
            let mut rows = CandidateRows::default();
            for c in chunk {
                rows.numeros.push(c.numero.clone());
                rows.noms.push(c.nom.clone());
                rows.prenoms.push(c.prenom.clone());
                rows.establishments
                    .push(c.establishment.as_str().to_owned());
            }
            rows
        })
        .collect()
}

/// Upserts candidates and copies of `session` in `tx`, adding their
/// counts to `summary` and reporting the rows written to `advance`.
pub(super) async fn write_body(
    tx: &mut Tx,
    session: &str,
    candidates: &[CandidateRows],
    copies: &[CopyRows],
    summary: &mut ImportSummary,
    advance: &mut impl FnMut(usize),
) -> Result<(), ImportError> {
    let database = ImportError::Database;
    for rows in candidates {
        let count = rows.numeros.len();
        let upserted = catalog::upsert_candidates(tx, session, rows)
            .await
            .map_err(database)?;
        summary.candidates.add(Counts::of(upserted, count));
        advance(count);
    }
    for rows in copies {
        let count = rows.exams.len();
        let upserted = catalog::upsert_copies(tx, session, rows)
            .await
            .map_err(database)?;
        summary.copies.add(Counts::of(upserted, count));
        advance(count);
    }
    Ok(())
}

/// The copies as rows, in batches of [`BATCH`].
pub(super) fn copy_rows(
    copies: &[Copy],
    scans: &HashMap<String, Scan>,
) -> anyhow::Result<Vec<CopyRows>> {
    let mut batches = Vec::with_capacity(copies.len().div_ceil(BATCH));
    for chunk in copies.chunks(BATCH) {
        let mut rows = CopyRows::default();
        for copy in chunk {
            let content = CopyContent::of(copy, scans)?;
            let grading_details =
                serde_json::to_string(&content.grading_details).context("serialising details")?;
            let annotations =
                serde_json::to_string(&content.annotations).context("serialising annotations")?;
            let sha256 = content.sha256()?;
            rows.exams.push(copy.exam.clone());
            rows.numeros.push(copy.candidate.clone());
            rows.graders.push(content.grader.map(str::to_owned));
            rows.absent.push(content.absent);
            rows.grades.push(content.grade.clone());
            rows.grading_details.push(grading_details);
            rows.appreciations
                .push(content.appreciation.map(str::to_owned));
            rows.annotations.push(annotations);
            rows.page_keys.push(content.page_keys.join(","));
            rows.content_sha256.push(sha256);
        }
        batches.push(rows);
    }
    Ok(batches)
}

/// Everything of a copy that makes up its version, in a canonical form:
/// its SHA-256 (over this struct serialised as JSON, fields in this order)
/// is `content_sha256`, and any change of it bumps the copy's version.
/// Changing this serialisation therefore bumps every copy on the next
/// import: do it only with a reason.
#[derive(Serialize)]
struct CopyContent<'a> {
    grader: Option<&'a str>,
    absent: bool,
    /// With exactly two decimals, as stored (`"12.50"`).
    grade: Option<String>,
    grading_details: Vec<DetailContent<'a>>,
    /// `None` for a missing or blank appreciation.
    appreciation: Option<&'a str>,
    annotations: Vec<AnnotationContent<'a>>,
    /// Content-addressed object keys: renaming scan files changes nothing,
    /// changing their content does.
    page_keys: Vec<String>,
}

/// One entry of `copies.grading_details`.
#[derive(Serialize)]
struct DetailContent<'a> {
    question: &'a str,
    mark: f64,
    max: f64,
}

/// One entry of `copies.annotations`.
#[derive(Serialize)]
struct AnnotationContent<'a> {
    page: u32,
    x: f64,
    y: f64,
    kind: AnnotationKind,
    text: &'a str,
}

impl<'a> CopyContent<'a> {
    fn of(copy: &'a Copy, scans: &HashMap<String, Scan>) -> anyhow::Result<Self> {
        let page_keys = copy
            .pages
            .iter()
            .map(|path| {
                scans
                    .get(path)
                    .map(Scan::key)
                    .with_context(|| format!("scan {path} was not checked"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            grader: copy.grader.as_deref(),
            absent: copy.absent,
            grade: copy.grade.map(|grade| format!("{:.2}", zero(grade))),
            grading_details: copy
                .grading_details
                .iter()
                .map(|d| DetailContent {
                    question: &d.question,
                    mark: zero(d.mark),
                    max: zero(d.max),
                })
                .collect(),
            appreciation: copy
                .appreciation
                .as_deref()
                .filter(|text| !text.trim().is_empty()),
            annotations: copy
                .annotations
                .iter()
                .map(|a| AnnotationContent {
                    page: a.page,
                    x: zero(a.x),
                    y: zero(a.y),
                    kind: a.kind,
                    text: &a.text,
                })
                .collect(),
            page_keys,
        })
    }

    fn sha256(&self) -> anyhow::Result<String> {
        let json = serde_json::to_vec(self).context("serialising a copy")?;
        Ok(hex::encode(Sha256::digest(&json)))
    }
}

/// Turns -0.0 into 0.0 so that both hash alike.
fn zero(value: f64) -> f64 {
    value + 0.0
}
