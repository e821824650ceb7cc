//! The session export formats read by `copiste import`: format 1 (written
//! by `copiste demo-data`), a directory holding `manifest.json` and the
//! JPEG scans it names by relative path, and format 2 ("pieced"), the same
//! content split into `session.json` and any number of `pieces/*.json`.
//! The formats are documented in `docs/import-format.md`.

use serde::{Deserialize, Serialize};

use crate::domain::{ExamKind, Uai};

/// The version of the format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The version of the pieced format (`session.json` and `pieces/*.json`).
pub const PIECED_FORMAT_VERSION: u32 = 2;

/// The whole `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_VERSION`].
    pub format: u32,
    pub session: Session,
    pub academies: Vec<Academy>,
    pub establishments: Vec<Establishment>,
    pub exams: Vec<Exam>,
    pub graders: Vec<Grader>,
    pub candidates: Vec<Candidate>,
    pub copies: Vec<Copy>,
}

impl Manifest {
    /// The manifest as the two halves of format 2: what `session.json`
    /// holds and what a piece holds (all of it in one piece).
    pub fn split(self) -> (SessionFile, Piece) {
        let session = SessionFile {
            format: self.format,
            session: self.session,
            academies: self.academies,
            establishments: self.establishments,
            exams: self.exams,
            graders: self.graders,
        };
        let piece = Piece {
            format: self.format,
            candidates: self.candidates,
            copies: self.copies,
        };
        (session, piece)
    }
}

/// The `session.json` of a pieced export (format 2): the session and what
/// its pieces reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// Always [`PIECED_FORMAT_VERSION`] in a `session.json`.
    pub format: u32,
    pub session: Session,
    pub academies: Vec<Academy>,
    pub establishments: Vec<Establishment>,
    pub exams: Vec<Exam>,
    pub graders: Vec<Grader>,
}

/// One `pieces/*.json` of a pieced export (format 2): candidates and their
/// copies. Its candidates name establishments of `session.json`; its
/// copies name exams and graders of `session.json` and candidates of the
/// same piece.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Piece {
    /// Always [`PIECED_FORMAT_VERSION`] in a piece.
    pub format: u32,
    pub candidates: Vec<Candidate>,
    pub copies: Vec<Copy>,
}

/// The exam session the export belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub code: String,
    pub name: String,
}

/// An academy (region).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Academy {
    pub code: String,
    pub name: String,
}

/// An exam centre.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Establishment {
    pub uai: Uai,
    pub name: String,
    /// Code of an academy of this manifest.
    pub academy: String,
    /// A centre abroad, attached to an academy.
    #[serde(default)]
    pub abroad: bool,
}

/// One exam paper of the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exam {
    /// Unique across sessions (codes carry their session).
    pub code: String,
    pub subject: String,
    pub kind: ExamKind,
}

/// A grader (correcteur).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grader {
    pub code: String,
    pub nom: String,
    pub prenom: String,
    /// Code of an academy of this manifest.
    pub academy: String,
}

/// A candidate, unique by `numero` within the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub numero: String,
    pub nom: String,
    pub prenom: String,
    /// UAI of an establishment of this manifest.
    pub establishment: Uai,
}

/// One candidate's copy of one exam.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    /// Code of an exam of this manifest.
    pub exam: String,
    /// `numero` of a candidate of this manifest.
    pub candidate: String,
    /// Code of a grader of this manifest; absent until the copy is assigned.
    #[serde(default)]
    pub grader: Option<String>,
    /// The candidate did not sit the exam; `grade` must then be null.
    #[serde(default)]
    pub absent: bool,
    /// The grade out of 20; null while not graded (or when absent).
    #[serde(default)]
    pub grade: Option<f64>,
    #[serde(default)]
    pub grading_details: Vec<QuestionMark>,
    #[serde(default)]
    pub appreciation: Option<String>,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    /// Paths of the JPEG scans relative to the manifest's directory, in
    /// page order. May be empty for an absent candidate.
    pub pages: Vec<String>,
}

/// The mark of one question, part of the grading details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionMark {
    pub question: String,
    pub mark: f64,
    pub max: f64,
}

/// What an annotation draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnotationKind {
    /// A tick or cross at the position.
    Mark,
    /// A written comment starting at the position.
    Comment,
}

/// A mark or comment placed on a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotation {
    /// 1-based page number.
    pub page: u32,
    /// Horizontal position as a fraction of the page width, from the left.
    pub x: f64,
    /// Vertical position as a fraction of the page height, from the top.
    pub y: f64,
    pub kind: AnnotationKind,
    #[serde(default)]
    pub text: String,
}
