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
mod report;
mod scans;
mod validate;
mod write;

use std::{collections::HashMap, path::Path};

use anyhow::Context as _;

use self::{
    manifest::{Exam, Manifest},
    scans::{Scan, ScanCache},
    validate::ScanRef,
};
// What an import reports is part of this module's interface
// (`import::ImportError`, `import::ImportSummary`): kept in its own file,
// named here.
pub use self::report::{
    Counts, FailedPiece, ImportError, ImportStep, ImportSummary, MAX_LISTED_PROBLEMS, PieceCounts,
    Problem, progress_bar,
};
use self::write::{candidate_rows, copy_rows, write_body, write_head};
use crate::{
    config::ImportConfig,
    db::{Db, Tx, catalog},
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

/// The limits of an import, from `[import]` of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    /// The largest scan file accepted, in bytes (`import.max_scan_bytes`).
    pub max_scan_bytes: u64,
    /// Rows a pieced import writes before it first refreshes the
    /// statistics of the tables it grows; it refreshes them again each
    /// time its rows double ([`DEFAULT_FIRST_ANALYZE_ROWS`]).
    pub first_analyze_rows: usize,
}

/// [`ImportOptions::first_analyze_rows`] unless a test sets it.
pub const DEFAULT_FIRST_ANALYZE_ROWS: usize = 20_000;

impl ImportOptions {
    /// The limits the configuration sets.
    pub fn from_config(config: &ImportConfig) -> Self {
        Self {
            max_scan_bytes: config.max_scan_bytes,
            ..Self::default()
        }
    }
}

impl Default for ImportOptions {
    /// The limits of `config/default.toml`.
    fn default() -> Self {
        Self {
            max_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
            first_analyze_rows: DEFAULT_FIRST_ANALYZE_ROWS,
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
    let cache = ScanCache::disabled();
    let (manifest, scans) = read_manifest(dir, options, &cache, progress).await?;
    let (head, body) = manifest.split();

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

/// Reads `manifest.json` and checks it and every scan it names, without
/// writing anything: the manifest and the checked scans, or every problem.
async fn read_manifest(
    dir: &Path,
    options: &ImportOptions,
    cache: &ScanCache,
    progress: &dyn Fn(ImportStep),
) -> Result<(Manifest, HashMap<String, Scan>), ImportError> {
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

    let (scans, scan_problems) =
        check_scans(dir, references, options.max_scan_bytes, cache, progress).await?;
    problems.extend(scan_problems);
    if !problems.is_empty() {
        return Err(ImportError::Invalid(problems));
    }
    let manifest = manifest
        .context("the manifest was rejected without a problem being reported")
        .map_err(ImportError::Read)?;
    Ok((manifest, scans))
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
