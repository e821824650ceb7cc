//! What an import reports: the problems found, the pieces not imported,
//! why it failed, its progress as it goes and the summary of what it did.

use std::{fmt, io::IsTerminal as _, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

use crate::db::catalog::Upserted;

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
    pub(super) fn of(upserted: Upserted, total: usize) -> Self {
        let total = total as u64;
        Self {
            inserted: upserted.inserted,
            updated: upserted.updated,
            unchanged: total.saturating_sub(upserted.inserted + upserted.updated),
        }
    }

    pub(super) fn add(&mut self, other: Self) {
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
