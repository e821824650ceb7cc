//! `copiste import DIR`: validates a session export and loads it.
//!
//! An import runs in four steps, and writes nothing unless the export is
//! valid as a whole:
//!
//! 1. `manifest.json` is read and every field checked, collecting all the
//!    problems with their JSON paths (see `validate`).
//! 2. Every scan is read (regular files of at most `import.max_scan_bytes`
//!    only), checked to be a complete JPEG by decoding it, and hashed (see
//!    `scans`).
//!    Any problem so far ends the import with [`ImportError::Invalid`].
//! 3. The scans are uploaded under content-addressed keys.
//! 4. The catalogue rows are upserted in one transaction with bulk
//!    statements (see [`crate::db::catalog`]).
//!
//! The format is documented in `docs/import-format.md`.

pub mod manifest;
mod scans;
mod validate;

use std::{collections::HashMap, fmt, io::IsTerminal as _, path::Path, time::Duration};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use self::{
    manifest::{AnnotationKind, Copy, Manifest},
    scans::Scan,
};
use crate::{
    config::ImportConfig,
    db::{
        Db, Tx,
        catalog::{self, CandidateRows, CopyRows, EstablishmentRows, GraderRows, Upserted},
    },
    storage::Storage,
};

/// The name of the manifest inside an export directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Rows written by one bulk statement for the large tables.
const BATCH: usize = 10_000;

/// One problem found in an export, located by its JSON path
/// (e.g. `$.copies[3].pages[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the problem is, as a JSON path from the manifest's root `$`.
    pub path: String,
    /// What is wrong, as a sentence fragment.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why an import failed; in every case nothing was written to the
/// database.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The export is invalid; every problem found is listed, one per line.
    #[error("{}", list_problems(.0))]
    Invalid(Vec<Problem>),
    /// The export directory or its manifest could not be read.
    #[error("cannot read the export")]
    Read(#[source] anyhow::Error),
    /// The object store failed while the scans were uploaded; scans already
    /// uploaded are harmless (their keys are their content).
    #[error("cannot store the scans")]
    Storage(#[source] anyhow::Error),
    /// The database failed; the transaction was rolled back.
    #[error("cannot write the catalogue")]
    Database(#[source] anyhow::Error),
}

fn list_problems(problems: &[Problem]) -> String {
    let mut text = match problems.len() {
        1 => "the export has 1 problem:".to_owned(),
        n => format!("the export has {n} problems:"),
    };
    for problem in problems {
        text.push('\n');
        text.push_str(&problem.to_string());
    }
    text
}

/// Progress of an import, reported as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportStep {
    /// `manifest.json` is being read and checked.
    Manifest,
    /// Scan files read, checked and hashed, out of all distinct paths.
    Checking { done: u64, total: u64 },
    /// Distinct scans uploaded or found already stored, out of all.
    Uploading { done: u64, total: u64 },
    /// Catalogue rows written, out of all (every table together).
    Writing { done: u64, total: u64 },
    /// The transaction is committed.
    Done,
}

/// What happened to the rows of one table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Rows created.
    pub inserted: u64,
    /// Rows whose content changed (for copies: whose version was bumped).
    pub updated: u64,
    /// Rows already in the database as the export has them.
    pub unchanged: u64,
}

impl Counts {
    fn of(upserted: Upserted, total: usize) -> Self {
        let total = total as u64;
        Self {
            inserted: upserted.inserted,
            updated: upserted.updated,
            unchanged: total.saturating_sub(upserted.inserted + upserted.updated),
        }
    }

    fn add(&mut self, other: Self) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} inserted, {} updated, {} unchanged",
            self.inserted, self.updated, self.unchanged
        )
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// The session code of the export.
    pub session: String,
    pub academies: Counts,
    pub establishments: Counts,
    pub exams: Counts,
    pub graders: Counts,
    pub candidates: Counts,
    pub copies: Counts,
    /// Distinct scans written to the object store.
    pub scans_uploaded: u64,
    /// Distinct scans found already stored with the same size.
    pub scans_already_stored: u64,
    /// Bytes written to the object store.
    pub bytes_uploaded: u64,
}

impl ImportSummary {
    /// The counts of every table, named, in load order.
    pub fn tables(&self) -> [(&'static str, Counts); 6] {
        [
            ("academies", self.academies),
            ("establishments", self.establishments),
            ("exams", self.exams),
            ("graders", self.graders),
            ("candidates", self.candidates),
            ("copies", self.copies),
        ]
    }
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "session {}", self.session)?;
        for (name, counts) in self.tables() {
            writeln!(f, "  {name:<15} {counts}")?;
        }
        write!(
            f,
            "  {:<15} {} uploaded ({} bytes), {} already stored",
            "scans", self.scans_uploaded, self.bytes_uploaded, self.scans_already_stored
        )
    }
}

/// The limits of an import, from `[import]` of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    /// The largest scan file accepted, in bytes (`import.max_scan_bytes`).
    pub max_scan_bytes: u64,
}

impl ImportOptions {
    /// The limits the configuration sets.
    pub fn from_config(config: &ImportConfig) -> Self {
        Self {
            max_scan_bytes: config.max_scan_bytes,
        }
    }
}

impl Default for ImportOptions {
    /// The limits of `config/default.toml`.
    fn default() -> Self {
        Self {
            max_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
        }
    }
}

/// `import.max_scan_bytes` in `config/default.toml`: 20 MiB.
pub const DEFAULT_MAX_SCAN_BYTES: u64 = 20 << 20;

/// Imports the export in `dir` with the default [`ImportOptions`]; see
/// [`import_dir_with`].
pub async fn import_dir(
    db: &Db,
    storage: &Storage,
    dir: &Path,
    progress: &dyn Fn(ImportStep),
) -> Result<ImportSummary, ImportError> {
    import_dir_with(db, storage, dir, &ImportOptions::default(), progress).await
}

/// Imports the export in `dir` (its `manifest.json` and the scans it
/// names) within the limits of `options`, reporting progress to
/// `progress`.
///
/// The export is validated entirely first; when anything is wrong the
/// result is [`ImportError::Invalid`] with every problem, and nothing is
/// written anywhere. Importing the same export again changes nothing;
/// importing it with some copies changed updates those copies and bumps
/// their version.
pub async fn import_dir_with(
    db: &Db,
    storage: &Storage,
    dir: &Path,
    options: &ImportOptions,
    progress: &dyn Fn(ImportStep),
) -> Result<ImportSummary, ImportError> {
    progress(ImportStep::Manifest);
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = tokio::fs::read(&manifest_path)
        .await
        .with_context(|| format!("reading {}", manifest_path.display()))
        .map_err(ImportError::Read)?;
    // Parsing and checking a large manifest takes a while: off the runtime.
    let checked = tokio::task::spawn_blocking(move || {
        serde_json::from_slice(&bytes)
            .map(validate::check)
            .map_err(|error| Problem {
                path: "$".to_owned(),
                message: format!("not valid JSON: {error}"),
            })
    })
    .await
    .context("checking the manifest")
    .map_err(ImportError::Read)?
    .map_err(|problem| ImportError::Invalid(vec![problem]))?;
    let validate::Checked {
        manifest,
        mut problems,
        scans: references,
    } = checked;

    let paths = references.iter().map(|(path, _)| path.clone()).collect();
    let mut checked_scans = scans::check(dir, paths, options.max_scan_bytes, progress)
        .await
        .map_err(ImportError::Read)?;
    let mut scans = HashMap::with_capacity(checked_scans.len());
    let mut scan_problems = Vec::new();
    for (path, pages) in references {
        match checked_scans.remove(&path) {
            Some(Ok(scan)) => {
                scans.insert(path, scan);
            }
            Some(Err(message)) => {
                scan_problems.extend(pages.into_iter().map(|page| (page, message.clone())));
            }
            None => {}
        }
    }
    scan_problems.sort_by_key(|(page, _)| *page);
    problems.extend(
        scan_problems
            .into_iter()
            .map(|((copy, page), message)| Problem {
                path: validate::page_path(copy, page),
                message,
            }),
    );
    if !problems.is_empty() {
        return Err(ImportError::Invalid(problems));
    }
    let manifest = manifest
        .context("the manifest was rejected without a problem being reported")
        .map_err(ImportError::Read)?;

    // Refuse an exam of another session before uploading anything.
    let mut tx = db.begin().await.map_err(ImportError::Database)?;
    check_exam_sessions(&mut tx, &manifest).await?;
    drop(tx);

    // Scans go to the store before the rows that name them. If the
    // transaction then fails, the uploaded objects are orphans, which is
    // harmless: keys are the content's hash, so a retry finds them already
    // stored and nothing ever points at a wrong object.
    let uploaded = scans::upload(storage, dir, &scans, progress)
        .await
        .map_err(ImportError::Storage)?;

    let mut summary = write_catalogue(db, &manifest, &scans, progress).await?;
    summary.scans_uploaded = uploaded.uploaded;
    summary.scans_already_stored = uploaded.already_stored;
    summary.bytes_uploaded = uploaded.bytes;
    progress(ImportStep::Done);
    Ok(summary)
}

/// Reports the exams of the export that already belong to another session.
async fn check_exam_sessions(tx: &mut Tx, manifest: &Manifest) -> Result<(), ImportError> {
    let codes: Vec<String> = manifest.exams.iter().map(|e| e.code.clone()).collect();
    let others = catalog::exams_of_other_sessions(tx, &manifest.session.code, &codes)
        .await
        .map_err(ImportError::Database)?;
    if others.is_empty() {
        return Ok(());
    }
    let index: HashMap<&str, usize> = codes
        .iter()
        .enumerate()
        .map(|(i, code)| (code.as_str(), i))
        .collect();
    let mut problems: Vec<(usize, Problem)> = others
        .into_iter()
        .map(|(code, session)| {
            let at = index.get(code.as_str()).copied().unwrap_or_default();
            let problem = Problem {
                path: format!("$.exams[{at}].code"),
                message: format!(
                    "exam {code} already belongs to session {session}, not {}",
                    manifest.session.code
                ),
            };
            (at, problem)
        })
        .collect();
    problems.sort_by_key(|(at, _)| *at);
    Err(ImportError::Invalid(
        problems.into_iter().map(|(_, problem)| problem).collect(),
    ))
}

/// Upserts every row of the export in one transaction.
async fn write_catalogue(
    db: &Db,
    manifest: &Manifest,
    scans: &HashMap<String, Scan>,
    progress: &dyn Fn(ImportStep),
) -> Result<ImportSummary, ImportError> {
    let copies = copy_rows(manifest, scans).map_err(ImportError::Read)?;
    let session = manifest.session.code.as_str();
    let total = (manifest.academies.len()
        + manifest.establishments.len()
        + manifest.exams.len()
        + manifest.graders.len()
        + manifest.candidates.len()
        + manifest.copies.len()) as u64;
    let mut done = 0;
    let mut advance = |rows: usize| {
        done += rows as u64;
        progress(ImportStep::Writing { done, total });
    };
    advance(0);

    let mut tx = db.begin().await.map_err(ImportError::Database)?;
    // Again inside the transaction, in case another import ran meanwhile.
    check_exam_sessions(&mut tx, manifest).await?;
    let mut summary = ImportSummary {
        session: session.to_owned(),
        ..ImportSummary::default()
    };
    let database = ImportError::Database;

    catalog::upsert_session(&mut tx, session, &manifest.session.name)
        .await
        .map_err(database)?;

    let (codes, names) = manifest
        .academies
        .iter()
        .map(|a| (a.code.clone(), a.name.clone()))
        .unzip::<_, _, Vec<_>, Vec<_>>();
    let upserted = catalog::upsert_academies(&mut tx, &codes, &names)
        .await
        .map_err(database)?;
    summary.academies = Counts::of(upserted, codes.len());
    advance(codes.len());

    let mut rows = EstablishmentRows::default();
    for e in &manifest.establishments {
        rows.uais.push(e.uai.as_str().to_owned());
        rows.names.push(e.name.clone());
        rows.academies.push(e.academy.clone());
        rows.abroad.push(e.abroad);
    }
    let upserted = catalog::upsert_establishments(&mut tx, &rows)
        .await
        .map_err(database)?;
    summary.establishments = Counts::of(upserted, rows.uais.len());
    advance(rows.uais.len());

    let codes: Vec<String> = manifest.exams.iter().map(|e| e.code.clone()).collect();
    let subjects: Vec<String> = manifest.exams.iter().map(|e| e.subject.clone()).collect();
    let kinds: Vec<String> = manifest
        .exams
        .iter()
        .map(|e| e.kind.as_str().to_owned())
        .collect();
    let upserted = catalog::upsert_exams(&mut tx, session, &codes, &subjects, &kinds)
        .await
        .map_err(database)?;
    summary.exams = Counts::of(upserted, codes.len());
    advance(codes.len());

    let mut rows = GraderRows::default();
    for g in &manifest.graders {
        rows.codes.push(g.code.clone());
        rows.noms.push(g.nom.clone());
        rows.prenoms.push(g.prenom.clone());
        rows.academies.push(g.academy.clone());
    }
    let upserted = catalog::upsert_graders(&mut tx, &rows)
        .await
        .map_err(database)?;
    summary.graders = Counts::of(upserted, rows.codes.len());
    advance(rows.codes.len());

    for chunk in manifest.candidates.chunks(BATCH) {
        let mut rows = CandidateRows::default();
        for c in chunk {
            rows.numeros.push(c.numero.clone());
            rows.noms.push(c.nom.clone());
            rows.prenoms.push(c.prenom.clone());
            rows.establishments
                .push(c.establishment.as_str().to_owned());
        }
        let upserted = catalog::upsert_candidates(&mut tx, session, &rows)
            .await
            .map_err(database)?;
        summary.candidates.add(Counts::of(upserted, chunk.len()));
        advance(chunk.len());
    }

    for rows in copies {
        let count = rows.exams.len();
        let upserted = catalog::upsert_copies(&mut tx, session, &rows)
            .await
            .map_err(database)?;
        summary.copies.add(Counts::of(upserted, count));
        advance(count);
    }

    tx.commit().await.map_err(database)?;
    Ok(summary)
}

/// The copies as rows, in batches of [`BATCH`].
fn copy_rows(manifest: &Manifest, scans: &HashMap<String, Scan>) -> anyhow::Result<Vec<CopyRows>> {
    let mut batches = Vec::with_capacity(manifest.copies.len().div_ceil(BATCH));
    for chunk in manifest.copies.chunks(BATCH) {
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

/// A progress reporter drawing one bar on stderr with indicatif, or doing
/// nothing when stderr is not a terminal (logs, CI).
pub fn progress_bar() -> impl Fn(ImportStep) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let style = ProgressStyle::with_template(
            "{msg:<16} [{wide_bar}] {human_pos}/{human_len} {elapsed} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        ProgressBar::new(0).with_style(style)
    });
    move |step| {
        let Some(bar) = &bar else {
            return;
        };
        let (label, done, total) = match step {
            ImportStep::Manifest => {
                bar.set_message("reading manifest");
                bar.enable_steady_tick(Duration::from_millis(200));
                return;
            }
            ImportStep::Checking { done, total } => ("checking scans", done, total),
            ImportStep::Uploading { done, total } => ("uploading scans", done, total),
            ImportStep::Writing { done, total } => ("writing rows", done, total),
            ImportStep::Done => {
                bar.finish_and_clear();
                return;
            }
        };
        if bar.message() != label {
            bar.reset();
            bar.set_message(label);
            bar.set_length(total);
        }
        bar.set_position(done);
    }
}
