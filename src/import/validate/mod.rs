//! Structural validation of the export files: every field is read on its
//! own so that each problem carries its exact JSON path, and every problem
//! is collected instead of stopping at the first.
//!
//! Both formats share the same checks. Format 1 is one `manifest.json`
//! ([`check`]); format 2 splits it into `session.json` ([`check_session`]:
//! the session, academies, establishments, exams and graders) and pieces
//! ([`check_piece`]: candidates and copies), whose references to the
//! session's establishments, exams and graders resolve through the
//! [`SessionKeys`] of `session.json`.

mod fields;
mod sections;

use std::{
    collections::{HashMap, HashSet},
    path::{Component, Path},
    sync::Arc,
};

use serde_json::{Map, Value};

use super::{
    Problem,
    manifest::{FORMAT_VERSION, Manifest, PIECED_FORMAT_VERSION, Piece, SessionFile},
};
use crate::domain::Uai;

/// The highest grade.
const MAX_GRADE: f64 = 20.0;

/// Where a scan path is referenced: copy index and page index.
pub(super) type ScanRef = (usize, usize);

/// The outcome of reading one file of an export.
pub(super) struct Checked<T> {
    /// What the file holds, when no problem was found in it.
    pub value: Option<T>,
    /// Every problem found, in document order within each section.
    pub problems: Vec<Problem>,
    /// Every lexically valid scan path, with the pages that name it, in the
    /// order first met.
    pub scans: Vec<(String, Vec<ScanRef>)>,
}

/// The keys of a format-2 `session.json` that its pieces may reference.
#[derive(Debug, Default)]
pub(super) struct SessionKeys {
    establishments: HashSet<Uai>,
    exams: HashSet<String>,
    graders: HashSet<String>,
}

/// The JSON path of page `page` of copy `copy`.
pub(super) fn page_path(copy: usize, page: usize) -> String {
    format!("$.copies[{copy}].pages[{page}]")
}

/// Reads and checks a parsed format-1 `manifest.json` without touching the
/// disk or the database.
pub(super) fn check(value: Value) -> Checked<Manifest> {
    let mut checker = Checker::default();
    let manifest = checker.manifest(value);
    checker.into_checked(manifest)
}

/// Reads and checks a parsed format-2 `session.json`; returns, with the
/// outcome, the keys its pieces may reference.
pub(super) fn check_session(value: Value) -> (Checked<SessionFile>, SessionKeys) {
    let mut checker = Checker::default();
    let session = checker.session_file(value);
    let keys = SessionKeys {
        establishments: std::mem::take(&mut checker.establishments)
            .into_keys()
            .collect(),
        exams: std::mem::take(&mut checker.exams).into_keys().collect(),
        graders: std::mem::take(&mut checker.graders).into_keys().collect(),
    };
    (checker.into_checked(session), keys)
}

/// Reads and checks a parsed format-2 piece, whose establishments, exams
/// and graders are those of `keys` (from `session.json`).
pub(super) fn check_piece(value: Value, keys: Arc<SessionKeys>) -> Checked<Piece> {
    let mut checker = Checker {
        session_keys: Some(keys),
        ..Checker::default()
    };
    let piece = checker.piece(value);
    checker.into_checked(piece)
}

/// The state of one validation: the problems so far and the keys seen, to
/// detect duplicates and resolve references.
#[derive(Default)]
struct Checker {
    /// For a piece of format 2: the keys of its `session.json`.
    session_keys: Option<Arc<SessionKeys>>,
    problems: Vec<Problem>,
    academies: HashMap<String, usize>,
    establishments: HashMap<Uai, usize>,
    exams: HashMap<String, usize>,
    graders: HashMap<String, usize>,
    candidates: HashMap<String, usize>,
    copies: HashMap<(String, String), usize>,
    scan_refs: HashMap<String, Vec<ScanRef>>,
    scan_order: Vec<String>,
}

/// The fields of one JSON object, taken out one by one; whatever is left at
/// the end is an unknown field.
struct Fields {
    map: Map<String, Value>,
    path: String,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// The outcome: `value` only when no problem was found.
    fn into_checked<T>(mut self, value: Option<T>) -> Checked<T> {
        let scans = std::mem::take(&mut self.scan_order)
            .into_iter()
            .filter_map(|path| {
                let refs = self.scan_refs.remove(&path)?;
                Some((path, refs))
            })
            .collect();
        Checked {
            value: if self.problems.is_empty() {
                value
            } else {
                None
            },
            problems: self.problems,
            scans,
        }
    }

    /// Reads `format`, which must be `expected`; `None` when it is
    /// missing or mistyped (reported), and `Err` when it is another
    /// version, which ends the reading: another version may be laid out
    /// differently, so anything else reported would be noise.
    fn format(&mut self, root: &mut Fields, expected: u32, hint: &str) -> Result<Option<u32>, ()> {
        let format = self.required::<u32>(root, "format");
        match format {
            Some(other) if other != expected => {
                self.problem(
                    "$.format",
                    format!("format {other} is not supported ({hint})"),
                );
                Err(())
            }
            _ => Ok(format),
        }
    }

    /// Reads the whole manifest; returns it only when every element parsed.
    fn manifest(&mut self, value: Value) -> Option<Manifest> {
        let mut root = self.object(value, "$")?;
        let hint = format!("this build reads format {FORMAT_VERSION}");
        let format = self.format(&mut root, FORMAT_VERSION, &hint).ok()?;
        let head = self.head(&mut root, format);
        let body = self.body(&mut root, format);
        self.finish(root);
        let (head, body) = (head?, body?);
        Some(Manifest {
            format: head.format,
            session: head.session,
            academies: head.academies,
            establishments: head.establishments,
            exams: head.exams,
            graders: head.graders,
            candidates: body.candidates,
            copies: body.copies,
        })
    }

    /// Reads a format-2 `session.json`.
    fn session_file(&mut self, value: Value) -> Option<SessionFile> {
        let mut root = self.object(value, "$")?;
        let hint = format!(
            "session.json is format {PIECED_FORMAT_VERSION}; format {FORMAT_VERSION} is a single manifest.json"
        );
        let format = self.format(&mut root, PIECED_FORMAT_VERSION, &hint).ok()?;
        let head = self.head(&mut root, format);
        self.finish(root);
        head
    }

    /// Reads a format-2 piece.
    fn piece(&mut self, value: Value) -> Option<Piece> {
        let mut root = self.object(value, "$")?;
        let hint = format!("pieces are format {PIECED_FORMAT_VERSION}");
        let format = self.format(&mut root, PIECED_FORMAT_VERSION, &hint).ok()?;
        let body = self.body(&mut root, format);
        self.finish(root);
        body
    }

    /// Reads the session and what the candidates and copies reference:
    /// academies, establishments, exams and graders.
    fn head(&mut self, root: &mut Fields, format: Option<u32>) -> Option<SessionFile> {
        let session = self.session(root);
        let academies = self.list(root, "academies", Self::academy);
        let establishments = self.list(root, "establishments", Self::establishment);
        let exams = self.list(root, "exams", Self::exam);
        let graders = self.list(root, "graders", Self::grader);
        Some(SessionFile {
            format: format?,
            session: session?,
            academies: academies?,
            establishments: establishments?,
            exams: exams?,
            graders: graders?,
        })
    }

    /// Reads the candidates and their copies.
    fn body(&mut self, root: &mut Fields, format: Option<u32>) -> Option<Piece> {
        let candidates = self.list(root, "candidates", Self::candidate);
        let copies = self.list(root, "copies", Self::copy);
        Some(Piece {
            format: format?,
            candidates: candidates?,
            copies: copies?,
        })
    }

    /// Whether `uai` is an establishment of this file or of the session.
    fn knows_establishment(&self, uai: &Uai) -> bool {
        self.establishments.contains_key(uai)
            || self
                .session_keys
                .as_ref()
                .is_some_and(|keys| keys.establishments.contains(uai))
    }

    /// Whether `code` is an exam of this file or of the session.
    fn knows_exam(&self, code: &str) -> bool {
        self.exams.contains_key(code)
            || self
                .session_keys
                .as_ref()
                .is_some_and(|keys| keys.exams.contains(code))
    }

    /// Whether `code` is a grader of this file or of the session.
    fn knows_grader(&self, code: &str) -> bool {
        self.graders.contains_key(code)
            || self
                .session_keys
                .as_ref()
                .is_some_and(|keys| keys.graders.contains(code))
    }
}

impl Fields {
    fn field_path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }
}

/// The sections whose keys must be unique.
#[derive(Clone, Copy)]
enum UniqueKind {
    Academy,
    Exam,
    Grader,
    Candidate,
}

/// The control characters free text may hold: newline and tab.
const FREE_TEXT_CONTROLS: &[char] = &['\n', '\t'];

/// The longest code (session, academy, exam, grader, candidate numéro).
pub(super) const MAX_CODE_LEN: usize = 32;

/// The first control character of `text` (Unicode category Cc: C0, DEL
/// and C1) that is not `allowed`, with its position in characters.
fn control_char(text: &str, allowed: &[char]) -> Option<(usize, char)> {
    text.chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !allowed.contains(c))
}

/// Checks a code: 1 to [`MAX_CODE_LEN`] ASCII letters, digits, `-`, `_` or
/// `.`, not starting with `.`. Codes end up in object keys, file names,
/// HTTP headers and `:`-separated job keys, where anything else is unsafe.
/// The error is the end of a sentence starting with the code.
pub(super) fn check_code(code: &str) -> Result<(), String> {
    const RULE: &str = "use 1 to 32 ASCII letters, digits, '-', '_' or '.', not starting with '.'";
    if let Some(bad) = code
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("has the character {bad:?}: {RULE}"));
    }
    if code.len() > MAX_CODE_LEN {
        return Err(format!("is {} characters long: {RULE}", code.len()));
    }
    if code.is_empty() || code.starts_with('.') {
        return Err(format!("is not a valid code: {RULE}"));
    }
    Ok(())
}

/// What a JSON value is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a grade is a whole number of hundredths.
fn at_most_two_decimals(value: f64) -> bool {
    let scaled = value * 100.0;
    (scaled - scaled.round()).abs() <= 1e-6
}

/// Checks that a page path stays inside the export directory: relative,
/// without `..`. Symbolic links are followed as the operating system does;
/// a scans directory linked from elsewhere is a legitimate layout.
fn check_relative(relative: &str) -> Result<(), String> {
    if relative.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some((at, c)) = control_char(relative, &[]) {
        return Err(format!(
            "{relative:?} must not contain control characters (found U+{:04X} at character {})",
            u32::from(c),
            at + 1
        ));
    }
    let path = Path::new(relative);
    if path.is_absolute() || relative.starts_with('/') || relative.starts_with('\\') {
        return Err(format!(
            "{relative} is an absolute path; paths are relative to the manifest's directory"
        ));
    }
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "{relative} leaves the export directory (`..` is not allowed)"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{relative} is an absolute path; paths are relative to the manifest's directory"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
