//! `copiste import DIR`: validates a session export and loads it.
//!
//! The format is picked from what `DIR` holds (both or neither is an
//! error), and is documented in `docs/import-format.md`.
//!
//! **Format 1**, one `manifest.json`, is imported in four steps, and
//! nothing is written unless the export is valid as a whole:
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
//! **Format 2**, "pieced" (`session.json` and `pieces/*.json`), streams a
//! session of any size with bounded memory (see `pieced`): `session.json`
//! is checked and committed first, in its own transaction; then each piece,
//! in file-name order, goes through the four steps above on its own and is
//! committed in its own transaction with a record of its name and content
//! hash (table `import_pieces`). A bad piece is reported and skipped while
//! the others go on ([`ImportError::PiecesFailed`] at the end); a piece
//! already recorded with the same content is skipped without reading its
//! scans, so that an interrupted import resumes where it stopped.

pub mod manifest;
mod pieced;
mod scans;
mod validate;

use std::{collections::HashMap, fmt, io::IsTerminal as _, path::Path, time::Duration};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use self::{
    manifest::{AnnotationKind, Candidate, Copy, Exam, SessionFile},
    scans::{Scan, ScanCache},
    validate::ScanRef,
};
use crate::{
    config::ImportConfig,
    db::{
        Db, Tx,
        catalog::{self, CandidateRows, CopyRows, EstablishmentRows, GraderRows, Upserted},
    },
    storage::Storage,
};

/// The name of the manifest inside a format-1 export directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The name of the session file inside a format-2 export directory.
pub const SESSION_FILE: &str = "session.json";

/// The directory of the pieces inside a format-2 export directory.
pub const PIECES_DIR: &str = "pieces";

/// The largest piece file accepted, in bytes (64 MiB, some 100 000 copies):
/// a piece is parsed whole, and two are in memory at once, so this bounds
/// the memory of an import.
pub const MAX_PIECE_BYTES: u64 = 64 << 20;

/// The largest `session.json` accepted, in bytes (64 MiB; a national
/// session's is well under 10 MiB).
pub const MAX_SESSION_BYTES: u64 = 64 << 20;

/// Rows written by one bulk statement for the large tables.
const BATCH: usize = 10_000;

/// One problem found in an export, located by its JSON path
/// (e.g. `$.copies[3].pages[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the problem is, as a JSON path from the file's root `$`.
    pub path: String,
    /// What is wrong, as a sentence fragment.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A piece of a format-2 export that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedPiece {
    /// The piece's path in the export, e.g. `pieces/0750001A.json`.
    pub piece: String,
    /// The problems found in it (the first ones only when
    /// [`FailedPiece::unlisted`] is not 0).
    pub problems: Vec<Problem>,
    /// Problems found but not kept, once the import holds
    /// [`MAX_LISTED_PROBLEMS`] of them.
    pub unlisted: usize,
}

/// The problems of failed pieces an import keeps to report, all pieces
/// together; beyond, only their number is kept, so that memory stays
/// bounded whatever the export.
pub const MAX_LISTED_PROBLEMS: usize = 10_000;

impl fmt::Display for FailedPiece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for problem in &self.problems {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{}: {problem}", self.piece)?;
        }
        if self.unlisted > 0 {
            if !first {
                writeln!(f)?;
            }
            write!(
                f,
                "{}: {} more problem(s), not listed (fix those above first)",
                self.piece, self.unlisted
            )?;
        }
        Ok(())
    }
}

/// Why an import failed. For format 1, nothing was written to the
/// database in every case; for format 2, `session.json` and the pieces
/// committed before the failure stay committed, and running the import
/// again resumes after them.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The export is invalid; every problem found is listed, one per line.
    #[error("{}", list_problems(.0))]
    Invalid(Vec<Problem>),
    /// A file of a format-2 export (`session.json`) is invalid; every
    /// problem found is listed, one per line, after the file's name.
    #[error("{}", list_file_problems(file, problems))]
    InvalidFile {
        /// The file's path in the export.
        file: String,
        problems: Vec<Problem>,
    },
    /// Some pieces of a format-2 export were not imported; the others are
    /// committed, and `summary` says what was imported.
    #[error("{}", list_failed_pieces(failed, summary))]
    PiecesFailed {
        failed: Vec<FailedPiece>,
        summary: Box<ImportSummary>,
    },
    /// The export directory holds both formats, or its layout is otherwise
    /// ambiguous; the message names the files.
    #[error("{0}")]
    Layout(String),
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

fn list_file_problems(file: &str, problems: &[Problem]) -> String {
    let mut text = match problems.len() {
        1 => format!("{file} has 1 problem:"),
        n => format!("{file} has {n} problems:"),
    };
    for problem in problems {
        text.push('\n');
        text.push_str(&format!("{file}: {problem}"));
    }
    text
}

fn list_failed_pieces(failed: &[FailedPiece], summary: &ImportSummary) -> String {
    let mut text = format!(
        "{} piece(s) failed and were not imported; the other pieces are committed, \
         and running the import again imports only what is missing or changed:",
        failed.len()
    );
    for piece in failed {
        text.push('\n');
        text.push_str(&piece.to_string());
    }
    text.push_str("\nimported:\n");
    text.push_str(&summary.to_string());
    text
}

/// Progress of an import, reported as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportStep {
    /// `manifest.json` (or `session.json`) is being read and checked.
    Manifest,
    /// Scan files read, checked and hashed, out of all distinct paths.
    Checking { done: u64, total: u64 },
    /// Distinct scans uploaded or found already stored, out of all.
    Uploading { done: u64, total: u64 },
    /// Catalogue rows written, out of all (every table together).
    Writing { done: u64, total: u64 },
    /// Format 2: pieces done (imported, skipped or failed), out of all.
    Pieces { done: u64, total: u64 },
    /// The transaction is committed (format 2: every piece is done).
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

/// What happened to the pieces of a format-2 export.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PieceCounts {
    /// Pieces whose rows were committed by this import.
    pub imported: u64,
    /// Pieces skipped because they were already imported with the same
    /// content.
    pub skipped: u64,
    /// Pieces that were not imported because of problems.
    pub failed: u64,
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
    /// Distinct scans written to the object store (for format 2: summed
    /// over the pieces).
    pub scans_uploaded: u64,
    /// Distinct scans found already stored with the same size (for format
    /// 2: summed over the pieces).
    pub scans_already_stored: u64,
    /// Bytes written to the object store.
    pub bytes_uploaded: u64,
    /// For format 2, what happened to the pieces.
    pub pieces: Option<PieceCounts>,
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
        if let Some(pieces) = &self.pieces {
            writeln!(
                f,
                "  {:<15} {} imported, {} skipped (already imported), {} failed",
                "pieces", pieces.imported, pieces.skipped, pieces.failed
            )?;
        }
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

/// Imports the export in `dir` within the limits of `options`, reporting
/// progress to `progress`: format 1 when `dir` holds `manifest.json`,
/// format 2 when it holds `session.json` (both is
/// [`ImportError::Layout`]; neither is [`ImportError::Read`]).
///
/// A format-1 export is validated entirely first; when anything is wrong
/// the result is [`ImportError::Invalid`] with every problem, and nothing
/// is written anywhere. A format-2 export is committed piece by piece (see
/// the module's documentation). Importing the same export again changes
/// nothing; importing it with some copies changed updates those copies and
/// bumps their version.
pub async fn import_dir_with(
    db: &Db,
    storage: &Storage,
    dir: &Path,
    options: &ImportOptions,
    progress: &dyn Fn(ImportStep),
) -> Result<ImportSummary, ImportError> {
    let exists = |name: &str| {
        let path = dir.join(name);
        async move {
            tokio::fs::try_exists(&path)
                .await
                .with_context(|| format!("looking for {}", path.display()))
                .map_err(ImportError::Read)
        }
    };
    let manifest = exists(MANIFEST_FILE).await?;
    let session = exists(SESSION_FILE).await?;
    let summary = match (manifest, session) {
        (true, true) => Err(ImportError::Layout(format!(
            "{} holds both {MANIFEST_FILE} (format 1) and {SESSION_FILE} (format 2): \
             keep only the one of the export to import",
            dir.display()
        ))),
        (false, true) => pieced::import(db, storage, dir, options, progress).await,
        (true, false) => import_manifest(db, storage, dir, options, progress).await,
        (false, false) => Err(ImportError::Read(anyhow::anyhow!(
            "{} holds neither {MANIFEST_FILE} (format 1) nor {SESSION_FILE} (format 2)",
            dir.display()
        ))),
    }?;
    // The rows are committed: statistics that cannot be refreshed now are
    // autovacuum's to refresh later, not a failed import.
    if let Err(e) = catalog::analyze_imported(db).await {
        tracing::warn!(
            error = format!("{e:#}"),
            "the imported tables were not analysed"
        );
    }
    Ok(summary)
}

/// Imports a format-1 export: `manifest.json` and the scans it names.
async fn import_manifest(
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
    let checked = parse_and_check(bytes, validate::check)
        .await?
        .map_err(|problem| ImportError::Invalid(vec![problem]))?;
    let validate::Checked {
        value: manifest,
        mut problems,
        scans: references,
    } = checked;

    let cache = ScanCache::disabled();
    let (scans, scan_problems) =
        check_scans(dir, references, options.max_scan_bytes, &cache, progress).await?;
    problems.extend(scan_problems);
    if !problems.is_empty() {
        return Err(ImportError::Invalid(problems));
    }
    let (head, body) = manifest
        .context("the manifest was rejected without a problem being reported")
        .map_err(ImportError::Read)?
        .split();

    // Refuse an exam of another session before uploading anything.
    let mut tx = db.begin().await.map_err(ImportError::Database)?;
    check_exam_sessions(&mut tx, &head.session.code, &head.exams).await?;
    drop(tx);

    // Scans go to the store before the rows that name them. If the
    // transaction then fails, the uploaded objects are orphans, which is
    // harmless: keys are the content's hash, so a retry finds them already
    // stored and nothing ever points at a wrong object.
    let uploaded = scans::upload(storage, dir, &scans, &cache, progress)
        .await
        .map_err(ImportError::Storage)?;

    let copies = copy_rows(&body.copies, &scans).map_err(ImportError::Read)?;
    let total = (head.academies.len()
        + head.establishments.len()
        + head.exams.len()
        + head.graders.len()
        + body.candidates.len()
        + body.copies.len()) as u64;
    let mut done = 0;
    let mut advance = |rows: usize| {
        done += rows as u64;
        progress(ImportStep::Writing { done, total });
    };
    advance(0);

    let mut summary = ImportSummary {
        session: head.session.code.clone(),
        ..ImportSummary::default()
    };
    let mut tx = db.begin().await.map_err(ImportError::Database)?;
    // Again inside the transaction, in case another import ran meanwhile.
    check_exam_sessions(&mut tx, &head.session.code, &head.exams).await?;
    write_head(&mut tx, &head, &mut summary, &mut advance).await?;
    let candidates = candidate_rows(&body.candidates);
    drop(body);
    write_body(
        &mut tx,
        &head.session.code,
        &candidates,
        &copies,
        &mut summary,
        &mut advance,
    )
    .await?;
    tx.commit().await.map_err(ImportError::Database)?;

    summary.scans_uploaded = uploaded.uploaded;
    summary.scans_already_stored = uploaded.already_stored;
    summary.bytes_uploaded = uploaded.bytes;
    progress(ImportStep::Done);
    Ok(summary)
}

/// Parses `bytes` as JSON and checks them with `check`, off the runtime;
/// a file that is not JSON at all is one problem at `$`.
async fn parse_and_check<T: Send + 'static>(
    bytes: Vec<u8>,
    check: impl FnOnce(serde_json::Value) -> T + Send + 'static,
) -> Result<Result<T, Problem>, ImportError> {
    tokio::task::spawn_blocking(move || {
        serde_json::from_slice(&bytes)
            .map(check)
            .map_err(|error| Problem {
                path: "$".to_owned(),
                message: format!("not valid JSON: {error}"),
            })
    })
    .await
    .context("checking an export file")
    .map_err(ImportError::Read)
}

/// Checks the scans of `references` (see [`scans::check`]): the scans
/// usable, by relative path, and a problem for each page naming an
/// unusable one, in page order.
async fn check_scans(
    dir: &Path,
    references: Vec<(String, Vec<ScanRef>)>,
    max_scan_bytes: u64,
    cache: &ScanCache,
    progress: &dyn Fn(ImportStep),
) -> Result<(HashMap<String, Scan>, Vec<Problem>), ImportError> {
    let paths = references.iter().map(|(path, _)| path.clone()).collect();
    let mut checked_scans = scans::check(dir, paths, max_scan_bytes, cache, progress)
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
    let problems = scan_problems
        .into_iter()
        .map(|((copy, page), message)| Problem {
            path: validate::page_path(copy, page),
            message,
        })
        .collect();
    Ok((scans, problems))
}

/// Reports the exams of `exams` that already belong to a session other
/// than `session`.
async fn check_exam_sessions(
    tx: &mut Tx,
    session: &str,
    exams: &[Exam],
) -> Result<(), ImportError> {
    let codes: Vec<String> = exams.iter().map(|e| e.code.clone()).collect();
    let others = catalog::exams_of_other_sessions(tx, session, &codes)
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
        .map(|(code, other)| {
            let at = index.get(code.as_str()).copied().unwrap_or_default();
            let problem = Problem {
                path: format!("$.exams[{at}].code"),
                message: format!("exam {code} already belongs to session {other}, not {session}"),
            };
            (at, problem)
        })
        .collect();
    problems.sort_by_key(|(at, _)| *at);
    Err(ImportError::Invalid(
        problems.into_iter().map(|(_, problem)| problem).collect(),
    ))
}

/// Upserts the session and what candidates and copies reference
/// (academies, establishments, exams, graders) in `tx`, counting them in
/// `summary` and reporting the rows written to `advance`.
async fn write_head(
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
fn candidate_rows(candidates: &[Candidate]) -> Vec<CandidateRows> {
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
async fn write_body(
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
fn copy_rows(copies: &[Copy], scans: &HashMap<String, Scan>) -> anyhow::Result<Vec<CopyRows>> {
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
            ImportStep::Pieces { done, total } => ("importing pieces", done, total),
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
