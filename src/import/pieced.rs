//! Format 2, "pieced": `session.json`, then each of `pieces/*.json` on its
//! own, so that a national session is imported with bounded memory.
//!
//! `session.json` is checked and committed first, in its own transaction.
//! The pieces then flow through a small pipeline: while one piece's rows
//! are being written (one transaction per piece, with the record of the
//! piece in `import_pieces`), the next ones are read, hashed, checked, their
//! scans checked and uploaded, and their rows built. At most
//! [`PREPARE_AHEAD`] pieces are being prepared, one waits in the channel and
//! one is being written, and only one piece at a time is parsed (the parsed
//! JSON is the largest form a piece takes), so memory does not grow with
//! the number of pieces.
//!
//! A piece that is already recorded with the same content is skipped before
//! it is parsed. A piece with problems is reported and skipped; the others
//! go on. A failure of the database or of the object store ends the import
//! (it would fail every piece), keeping what is committed.

use std::{
    collections::HashMap,
    fs::File,
    io::Read as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use futures::{StreamExt as _, stream};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Semaphore, mpsc};

use super::{
    FailedPiece, ImportError, ImportOptions, ImportStep, ImportSummary, MAX_LISTED_PROBLEMS,
    MAX_PIECE_BYTES, MAX_SESSION_BYTES, PIECES_DIR, PieceCounts, Problem, SESSION_FILE,
    candidate_rows, check_exam_sessions, check_scans, copy_rows,
    manifest::Piece,
    parse_and_check,
    scans::{self, Scan, ScanCache, Uploaded},
    validate::{self, Checked, SessionKeys},
    write_body, write_head,
};
use crate::{
    db::{
        Db,
        catalog::{self, CandidateRows, CopyRows},
    },
    storage::Storage,
};

/// Pieces being prepared at once, ahead of the one being written.
const PREPARE_AHEAD: usize = 2;

/// Imports a format-2 export: `session.json`, then every piece.
pub(super) async fn import(
    db: &Db,
    storage: &Storage,
    dir: &Path,
    options: &ImportOptions,
    progress: &dyn Fn(ImportStep),
) -> Result<ImportSummary, ImportError> {
    progress(ImportStep::Manifest);
    let (session, keys, mut summary) = import_session(db, dir).await?;
    let names = list_pieces(&dir.join(PIECES_DIR)).await?;
    let recorded = catalog::imported_pieces(db, &session)
        .await
        .map_err(ImportError::Database)?;
    let total = names.len() as u64;
    progress(ImportStep::Pieces { done: 0, total });

    let preparer = Preparer {
        dir: dir.to_path_buf(),
        storage,
        keys: Arc::new(keys),
        recorded,
        cache: ScanCache::new(),
        max_scan_bytes: options.max_scan_bytes,
        parsing: Semaphore::new(1),
        uploading: Semaphore::new(1),
    };
    let preparer = &preparer;
    let (sender, mut receiver) = mpsc::channel::<Result<Prepared, ImportError>>(1);
    let producer = async move {
        let mut prepared = stream::iter(names)
            .map(|name| preparer.prepare(name))
            .buffered(PREPARE_AHEAD);
        while let Some(result) = prepared.next().await {
            let stop = result.is_err();
            if sender.send(result).await.is_err() || stop {
                break;
            }
        }
    };
    let session_code = session.as_str();
    let summary_ref = &mut summary;
    let consumer = async move {
        let mut counts = PieceCounts::default();
        let mut failed = Vec::new();
        let mut listed = 0;
        let mut done = 0;
        let mut statistics = Statistics {
            written: 0,
            next: options.first_analyze_rows,
        };
        while let Some(result) = receiver.recv().await {
            match result? {
                Prepared::Skipped => counts.skipped += 1,
                Prepared::Failed { piece, problems } => {
                    counts.failed += 1;
                    failed.push(keep_listable(piece, problems, &mut listed));
                }
                Prepared::Ready(ready) => {
                    write_piece(db, session_code, &ready, summary_ref).await?;
                    counts.imported += 1;
                    statistics
                        .written(db, ready.candidate_count + ready.copy_count)
                        .await;
                }
            }
            done += 1;
            progress(ImportStep::Pieces { done, total });
        }
        Ok::<_, ImportError>((counts, failed))
    };
    let ((), written) = tokio::join!(producer, consumer);
    let (counts, failed) = written?;
    summary.pieces = Some(counts);
    // Every piece is done: the progress bar goes, whatever the outcome.
    progress(ImportStep::Done);
    if !failed.is_empty() {
        return Err(ImportError::PiecesFailed {
            failed,
            summary: Box::new(summary),
        });
    }
    Ok(summary)
}

/// Checks `session.json` and commits its rows in their own transaction;
/// returns the session's code, the keys pieces may reference and the
/// summary so far.
async fn import_session(
    db: &Db,
    dir: &Path,
) -> Result<(String, SessionKeys, ImportSummary), ImportError> {
    let path = dir.join(SESSION_FILE);
    let bytes = tokio::task::spawn_blocking(move || read_limited(&path, MAX_SESSION_BYTES))
        .await
        .context("reading session.json")
        .map_err(ImportError::Read)?
        .map_err(|message| ImportError::Read(anyhow::anyhow!("{SESSION_FILE} {message}")))?;
    let invalid = |problems| ImportError::InvalidFile {
        file: SESSION_FILE.to_owned(),
        problems,
    };
    let (checked, keys) = parse_and_check(bytes, validate::check_session)
        .await?
        .map_err(|problem| invalid(vec![problem]))?;
    let Checked {
        value, problems, ..
    } = checked;
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let head = value
        .context("session.json was rejected without a problem being reported")
        .map_err(ImportError::Read)?;
    let session = head.session.code.clone();
    let mut summary = ImportSummary {
        session: session.clone(),
        ..ImportSummary::default()
    };
    let mut tx = db.begin().await.map_err(ImportError::Database)?;
    check_exam_sessions(&mut tx, &session, &head.exams)
        .await
        .map_err(|error| match error {
            ImportError::Invalid(problems) => invalid(problems),
            other => other,
        })?;
    write_head(&mut tx, &head, &mut summary, &mut |_| {}).await?;
    tx.commit().await.map_err(ImportError::Database)?;
    Ok((session, keys, summary))
}

/// The file names of the pieces (`*.json`, not hidden) in `dir`, in
/// byte order.
async fn list_pieces(dir: &Path) -> Result<Vec<String>, ImportError> {
    let read = ImportError::Read;
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .with_context(|| format!("listing the pieces in {}", dir.display()))
        .map_err(read)?;
    let mut names = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .with_context(|| format!("listing the pieces in {}", dir.display()))
        .map_err(read)?
    {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(read(anyhow::anyhow!(
                "{}: the file name {name:?} is not UTF-8; name pieces in UTF-8",
                dir.display()
            )));
        };
        if name.ends_with(".json") && !name.starts_with('.') {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Reads a file that must be a regular file of at most `limit` bytes; the
/// error completes a sentence starting with the file's name.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let too_large = |size: u64| {
        format!(
            "has {size} bytes, more than the limit of {} MiB: split it into smaller pieces",
            limit >> 20
        )
    };
    let metadata = std::fs::metadata(path).map_err(|error| format!("cannot be read: {error}"))?;
    if !metadata.is_file() {
        return Err("is not a regular file".to_owned());
    }
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    let file = File::open(path).map_err(|error| format!("cannot be read: {error}"))?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot be read: {error}"))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A piece once prepared.
enum Prepared {
    /// Already imported with the same content.
    Skipped,
    /// Not importable: its problems.
    Failed {
        piece: String,
        problems: Vec<Problem>,
    },
    /// Checked, its scans stored: its rows, ready to be written.
    Ready(Box<ReadyPiece>),
}

/// The rows of a valid piece whose scans are stored.
struct ReadyPiece {
    /// The file name within `pieces/`.
    name: String,
    /// SHA-256 of the file, lower-case hex.
    sha256: String,
    candidates: Vec<CandidateRows>,
    copies: Vec<CopyRows>,
    candidate_count: usize,
    copy_count: usize,
    uploaded: Uploaded,
}

/// What preparing a piece needs, shared by the pieces of one import.
struct Preparer<'a> {
    dir: PathBuf,
    storage: &'a Storage,
    keys: Arc<SessionKeys>,
    /// The pieces already imported, by name, with their content's hash.
    recorded: HashMap<String, String>,
    cache: ScanCache,
    max_scan_bytes: u64,
    /// Held while a piece is parsed and checked: one at a time.
    parsing: Semaphore,
    /// Held while a piece's scans are uploaded: one piece at a time, so
    /// that a scan named by two pieces prepared together is uploaded by the
    /// first and found stored (in the cache) by the second, instead of
    /// being looked up and uploaded by both at once.
    uploading: Semaphore,
}

impl Preparer<'_> {
    /// Reads the piece `name`, and unless it is already imported, checks it
    /// and its scans, uploads its scans and builds its rows. An `Err` ends
    /// the import; a bad piece is [`Prepared::Failed`].
    async fn prepare(&self, name: String) -> Result<Prepared, ImportError> {
        let piece = format!("{PIECES_DIR}/{name}");
        let failed = |problems| Prepared::Failed {
            piece: piece.clone(),
            problems,
        };
        let (sha256, bytes) = match self.read(&name).await? {
            Ok(read) => read,
            Err(problem) => return Ok(failed(vec![problem])),
        };
        if self.recorded.get(&name) == Some(&sha256) {
            return Ok(Prepared::Skipped);
        }
        let (body, scans) = match self.check(&piece, bytes).await? {
            Ok(checked) => checked,
            Err(problems) => return Ok(failed(problems)),
        };
        let uploaded = self.upload(&scans).await?;
        let (candidates, copies, candidate_count, copy_count) = build_rows(body, scans).await?;
        Ok(Prepared::Ready(Box::new(ReadyPiece {
            name,
            sha256,
            candidates,
            copies,
            candidate_count,
            copy_count,
            uploaded,
        })))
    }

    /// Reads the piece `name` and its SHA-256 (lower-case hex); `Ok(Err)`
    /// is the problem of a piece that cannot be read.
    async fn read(&self, name: &str) -> Result<Result<(String, Vec<u8>), Problem>, ImportError> {
        let path = self.dir.join(PIECES_DIR).join(name);
        let read = tokio::task::spawn_blocking(move || {
            read_limited(&path, MAX_PIECE_BYTES)
                .map(|bytes| (hex::encode(Sha256::digest(&bytes)), bytes))
        })
        .await
        .context("reading a piece")
        .map_err(ImportError::Read)?;
        Ok(read.map_err(|message| Problem {
            path: "$".to_owned(),
            message: format!("the piece {message}"),
        }))
    }

    /// Parses and checks the piece (one at a time), then its scans; `Ok(Err)`
    /// is every problem found.
    async fn check(
        &self,
        piece: &str,
        bytes: Vec<u8>,
    ) -> Result<Result<(Piece, HashMap<String, Scan>), Vec<Problem>>, ImportError> {
        let checked = {
            let _parsing = self
                .parsing
                .acquire()
                .await
                .context("waiting to parse a piece")
                .map_err(ImportError::Read)?;
            let keys = Arc::clone(&self.keys);
            parse_and_check(bytes, move |value| validate::check_piece(value, keys)).await?
        };
        let Checked {
            value,
            mut problems,
            scans: references,
        } = match checked {
            Ok(checked) => checked,
            Err(problem) => return Ok(Err(vec![problem])),
        };
        let (scans, scan_problems) = check_scans(
            &self.dir,
            references,
            self.max_scan_bytes,
            &self.cache,
            &|_| {},
        )
        .await?;
        problems.extend(scan_problems);
        if !problems.is_empty() {
            return Ok(Err(problems));
        }
        let body = value
            .with_context(|| format!("{piece} was rejected without a problem being reported"))
            .map_err(ImportError::Read)?;
        Ok(Ok((body, scans)))
    }

    /// Uploads the scans of a checked piece, one piece at a time.
    async fn upload(&self, scans: &HashMap<String, Scan>) -> Result<Uploaded, ImportError> {
        let _uploading = self
            .uploading
            .acquire()
            .await
            .context("waiting to upload the scans of a piece")
            .map_err(ImportError::Read)?;
        scans::upload(self.storage, &self.dir, scans, &self.cache, &|_| {})
            .await
            .map_err(ImportError::Storage)
    }
}

/// The rows of a checked piece whose scans are stored, with its counts of
/// candidates and copies, built on a blocking thread.
async fn build_rows(
    body: Piece,
    scans: HashMap<String, Scan>,
) -> Result<(Vec<CandidateRows>, Vec<CopyRows>, usize, usize), ImportError> {
    tokio::task::spawn_blocking(move || {
        let copies = copy_rows(&body.copies, &scans)?;
        anyhow::Ok((
            candidate_rows(&body.candidates),
            copies,
            body.candidates.len(),
            body.copies.len(),
        ))
    })
    .await
    .context("building the rows of a piece")
    .and_then(|rows| rows)
    .map_err(ImportError::Read)
}

/// Writes the rows of a piece and its record in one transaction, adding
/// its counts to `summary`.
async fn write_piece(
    db: &Db,
    session: &str,
    piece: &ReadyPiece,
    summary: &mut ImportSummary,
) -> Result<(), ImportError> {
    let database = ImportError::Database;
    let mut counted = ImportSummary::default();
    let mut tx = db.begin().await.map_err(database)?;
    write_body(
        &mut tx,
        session,
        &piece.candidates,
        &piece.copies,
        &mut counted,
        &mut |_| {},
    )
    .await?;
    catalog::record_piece(
        &mut tx,
        session,
        &piece.name,
        &piece.sha256,
        i64::try_from(piece.candidate_count).unwrap_or(i64::MAX),
        i64::try_from(piece.copy_count).unwrap_or(i64::MAX),
    )
    .await
    .map_err(database)?;
    tx.commit().await.map_err(database)?;
    summary.candidates.add(counted.candidates);
    summary.copies.add(counted.copies);
    summary.scans_uploaded += piece.uploaded.uploaded;
    summary.scans_already_stored += piece.uploaded.already_stored;
    summary.bytes_uploaded += piece.uploaded.bytes;
    Ok(())
}

/// When the statistics of the tables an import grows are refreshed: after
/// its first [`ImportOptions::first_analyze_rows`] rows, then each time
/// the rows it wrote have doubled (about eight `ANALYZE` for a national
/// session).
///
/// Without it the planner knows nothing of tables that grow from empty
/// while autovacuum lags (or is off): it took all of a session's
/// candidates for a few hundred and hashed every one of them to find the
/// candidates of each piece's copies, so that each piece cost more than
/// the one before. Measured at a national scale of 0.4 (2026-12-07): the
/// copies' statement of a piece went from 85 to 226 ms as the session
/// grew to 190 000 candidates, and back to 83 ms once analysed.
struct Statistics {
    written: usize,
    next: usize,
}

impl Statistics {
    /// Counts `rows` written, refreshing the statistics when they are due.
    /// A refresh that fails is logged: the rows are committed, and a stale
    /// plan is slower, not wrong.
    async fn written(&mut self, db: &Db, rows: usize) {
        self.written += rows;
        if self.written < self.next {
            return;
        }
        self.next = self.written * 2;
        let started = std::time::Instant::now();
        match catalog::analyze_imported(db).await {
            Ok(()) => tracing::debug!(
                rows = self.written,
                duration_ms = started.elapsed().as_millis() as u64,
                "statistics refreshed during the import"
            ),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "the statistics of the imported tables were not refreshed"
            ),
        }
    }
}

/// The failed piece to report, keeping its problems while the import holds
/// fewer than [`MAX_LISTED_PROBLEMS`] (`listed` so far) and only counting
/// the rest.
fn keep_listable(piece: String, mut problems: Vec<Problem>, listed: &mut usize) -> FailedPiece {
    let room = MAX_LISTED_PROBLEMS.saturating_sub(*listed);
    let unlisted = problems.len().saturating_sub(room);
    problems.truncate(room);
    *listed += problems.len();
    FailedPiece {
        piece,
        problems,
        unlisted,
    }
}
