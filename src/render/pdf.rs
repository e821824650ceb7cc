//! One graded copy as a PDF: a cover page (candidate, exam,
//! establishment, grade, and the grading details and appreciation when
//! asked), then every scanned page at its real size, with the annotations
//! drawn over it when asked.
//!
//! Scans are embedded byte for byte as `DCTDecode` image streams: nothing
//! is decoded or re-encoded, and the bytes are moved into the document
//! printpdf builds, then copied once, where the PDF is written, so
//! rendering costs little more than that copy.
//!
//! Text is set in Helvetica, built into every viewer, when it is all in
//! WinAnsi (nearly every French name and comment): nothing to embed.
//! Other copies embed DejaVu Sans, subset to the glyphs they use, so
//! that every name renders (Łukasz, Nguyễn, Şahin, Дмитриев) for some
//! 30 KB a PDF.

mod document;
mod drawing;
mod fonts;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use self::document::{PreparedPdf, prepare, render};
use super::jpeg;

/// A question's mark in the grading details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionMark {
    pub question: String,
    pub mark: f64,
    pub max: f64,
}

/// A mark or comment placed on a page; `x` and `y` are fractions of the
/// page's width and height from its top-left corner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub page: u32,
    pub x: f64,
    pub y: f64,
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// Everything a copy's PDF shows.
#[derive(Debug, Clone)]
pub struct CopyDocument {
    pub numero: String,
    pub nom: String,
    pub prenom: String,
    pub exam_code: String,
    pub exam_subject: String,
    pub session: String,
    pub establishment_uai: String,
    pub establishment_name: String,
    pub grade: Option<f64>,
    pub absent: bool,
    pub details: Vec<QuestionMark>,
    pub appreciation: Option<String>,
    pub annotations: Vec<Annotation>,
    /// The scanned pages, in order, as stored (JPEG).
    pub pages: Vec<bytes::Bytes>,
    /// When the copy was last imported or changed: the PDF's creation and
    /// modification dates, so that the same copy always gives the same
    /// bytes.
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// Why a copy could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("page {page}: {source}")]
    Scan {
        page: usize,
        #[source]
        source: jpeg::JpegError,
    },
    #[error("the embedded font cannot be read")]
    Font,
    #[error("the PDF could not be assembled")]
    Serialise,
}
