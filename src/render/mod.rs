//! Rendering graded copies: options (rule 5), one copy as PDF, and an
//! establishment's copies as a zip.

pub mod copy;
pub mod jpeg;
pub mod options;
pub mod pdf;
pub mod zip;

pub use options::{E3cOptionsFixed, RenderOptions, RequestedOptions};
