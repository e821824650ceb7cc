//! Rendering graded copies: options (rule 5) and, next, one copy as PDF
//! and an establishment's copies as a zip.

pub mod options;

pub use options::{E3cOptionsFixed, RenderOptions, RequestedOptions};
