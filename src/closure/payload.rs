//! What the closure's jobs carry: the payloads that requests enqueue
//! through the ledger. How each runs (and its stable kind name) is in its
//! file under `src/jobs/`.

use serde::{Deserialize, Serialize};

use crate::domain::Uai;

/// The `closure` job's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Closure {
    pub exam: String,
    pub establishment: Uai,
}

/// The `export-retry` job's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRetry {
    pub exam: String,
    pub establishment: Uai,
}

/// The `harmonisation-validation` job's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarmonisationValidation {
    pub exam: String,
    /// The coordinator's academy; `None` for every academy of the exam.
    pub academy: Option<String>,
    /// The pass (harmonisation_passes.id) that enqueued the job.
    pub pass: i64,
}
