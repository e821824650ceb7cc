//! Export targets: grades to Cyclades, per-grader counts of corrected
//! copies to Imag'In (service fait). Each target is a trait with two
//! implementations chosen in configuration: [`http`] (JSON over HTTP, the
//! contract of `docs/exports.md`) and [`outbox`] (the same documents as
//! files in the object store).
//!
//! A target answers item by item. Every item carries a key that is stable
//! for one item and one content version, so sending it again (after a
//! timeout, a crash, a relaunch) has no second effect: the target answers
//! `duplicate`.

pub mod http;
pub mod outbox;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::{config::Config, config::ExporterKind, storage::Storage};

/// The two export targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Cyclades,
    Imagin,
}

impl Target {
    /// Both targets, in the order a closure exports to them.
    pub const ALL: [Target; 2] = [Target::Cyclades, Target::Imagin];

    /// The name stored in the ledger and used in object keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cyclades => "cyclades",
            Self::Imagin => "imagin",
        }
    }

    /// Parses a stored target name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One document sent to a target: the items of one exam and one
/// establishment, at most `exports.batch_size` of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch<I> {
    pub session: String,
    pub exam: String,
    pub establishment: String,
    pub items: Vec<I>,
}

/// A grade for Cyclades. An absent candidate has no grade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradeItem {
    pub key: String,
    /// The candidate's numéro.
    pub candidate: String,
    pub grade: Option<f64>,
    pub absent: bool,
}

/// A grader's count of corrected copies for Imag'In: the total so far for
/// that exam and establishment (a later item replaces an earlier one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountItem {
    pub key: String,
    pub grader: String,
    pub copies: u32,
}

/// What a target did with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Taken into account now.
    Accepted,
    /// Already taken into account under this key; no second effect.
    Duplicate,
    /// Refused, with a reason; sending it again will not help until
    /// something changes.
    Rejected,
}

/// A target's answer for one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    pub key: String,
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a whole batch got no per-item answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Another attempt may succeed: connection refused, timeout, 429, 5xx,
    /// an unreadable answer. The target may have applied the batch; its
    /// keys make a resend harmless.
    #[error("{0}")]
    Retryable(String),
    /// The target refused the whole batch (another 4xx): every item of it
    /// is rejected with this reason.
    #[error("{0}")]
    Permanent(String),
}

/// Sends grades to Cyclades.
pub trait GradesExporter: Send + Sync + std::fmt::Debug {
    /// Sends one batch and returns the answer for each item.
    fn send_grades<'a>(
        &'a self,
        batch: &'a Batch<GradeItem>,
    ) -> BoxFuture<'a, Result<Vec<ItemResult>, ExportError>>;
}

/// Sends per-grader counts of corrected copies to Imag'In.
pub trait ServiceFaitExporter: Send + Sync + std::fmt::Debug {
    /// Sends one batch and returns the answer for each item.
    fn send_counts<'a>(
        &'a self,
        batch: &'a Batch<CountItem>,
    ) -> BoxFuture<'a, Result<Vec<ItemResult>, ExportError>>;
}

/// The configured targets; cheap to clone, shared by every job of a
/// process (so that each target's concurrency limit holds per process).
#[derive(Clone, Debug)]
pub struct Exporters {
    pub cyclades: Arc<dyn GradesExporter>,
    pub imagin: Arc<dyn ServiceFaitExporter>,
}

impl Exporters {
    /// Builds the targets the configuration names.
    pub fn from_config(config: &Config, storage: &Storage) -> anyhow::Result<Self> {
        let c = &config.exporters.cyclades;
        let cyclades: Arc<dyn GradesExporter> = match c.kind {
            ExporterKind::Http => Arc::new(http::HttpTarget::new(Target::Cyclades, c)?),
            ExporterKind::Outbox => {
                Arc::new(outbox::OutboxTarget::new(Target::Cyclades, storage.clone()))
            }
        };
        let i = &config.exporters.imagin;
        let imagin: Arc<dyn ServiceFaitExporter> = match i.kind {
            ExporterKind::Http => Arc::new(http::HttpTarget::new(Target::Imagin, i)?),
            ExporterKind::Outbox => {
                Arc::new(outbox::OutboxTarget::new(Target::Imagin, storage.clone()))
            }
        };
        Ok(Self { cyclades, imagin })
    }
}

/// Checks a target's answer against the batch it answers: one result per
/// item, no unknown key, a reason for every rejection. Items the answer
/// forgot are reported as a retryable error, since resending is harmless.
pub(crate) fn check_results(
    sent: &[&str],
    results: Vec<ItemResult>,
) -> Result<Vec<ItemResult>, ExportError> {
    let expected: std::collections::HashSet<&str> = sent.iter().copied().collect();
    let mut seen = std::collections::HashSet::new();
    for r in &results {
        if !expected.contains(r.key.as_str()) {
            return Err(ExportError::Retryable(format!(
                "the answer names key {:?}, which was not sent",
                r.key
            )));
        }
        if !seen.insert(r.key.clone()) {
            return Err(ExportError::Retryable(format!(
                "the answer names key {:?} twice",
                r.key
            )));
        }
    }
    if seen.len() < expected.len() {
        return Err(ExportError::Retryable(format!(
            "the answer covers {} of {} items",
            seen.len(),
            expected.len()
        )));
    }
    Ok(results
        .into_iter()
        .map(|mut r| {
            if r.status == ItemStatus::Rejected && r.reason.as_deref().is_none_or(str::is_empty) {
                r.reason = Some("rejected without a reason".into());
            }
            r
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(key: &str, status: ItemStatus) -> ItemResult {
        ItemResult {
            key: key.into(),
            status,
            reason: None,
        }
    }

    #[test]
    fn an_answer_must_cover_exactly_the_keys_sent() {
        let sent = ["a", "b"];
        let ok = check_results(
            &sent,
            vec![
                result("a", ItemStatus::Accepted),
                result("b", ItemStatus::Rejected),
            ],
        )
        .expect("complete answer");
        assert_eq!(ok[1].reason.as_deref(), Some("rejected without a reason"));
        let missing = check_results(&sent, vec![result("a", ItemStatus::Accepted)]);
        assert!(matches!(missing, Err(ExportError::Retryable(m)) if m.contains("1 of 2")));
        let stranger = check_results(
            &sent,
            vec![
                result("a", ItemStatus::Accepted),
                result("z", ItemStatus::Accepted),
            ],
        );
        assert!(matches!(stranger, Err(ExportError::Retryable(m)) if m.contains("\"z\"")));
        let twice = check_results(
            &sent,
            vec![
                result("a", ItemStatus::Accepted),
                result("a", ItemStatus::Duplicate),
            ],
        );
        assert!(matches!(twice, Err(ExportError::Retryable(m)) if m.contains("twice")));
    }
}
