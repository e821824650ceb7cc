//! Closure: exporting an exam's grades to Cyclades and its graders' counts
//! of corrected copies to Imag'In, per closure unit (exam × establishment),
//! relaunching what was not accepted until publication, and closing
//! harmonised exams pass by pass for the academic coordinator.
//!
//! The memo's rules live here:
//! 1. a closure exports to both targets and can be relaunched any number of
//!    times until publication; after it a relaunch is refused ([`request`]);
//! 2. a relaunch re-sends only what was not accepted, under the same keys
//!    ([`engine`]);
//! 3. "transmitted to Cyclades" means accepted by the Cyclades target;
//! 4. harmonised exams are closed by harmonisation validation, never by an
//!    establishment's closure request ([`request`]).

pub mod engine;
pub mod plan;
pub mod request;
pub mod status;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{ExamKind, Uai};

pub use request::{
    PassRequest, Published, UnitRequest, UnitRequested, Validation, publish, request_closure,
    request_relaunch, validate_harmonisation,
};

/// The state of a closure unit. `published` is the exam's, shown over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Never closed.
    Open,
    /// A closure, relaunch or harmonisation pass is sending its items.
    Closing,
    /// Every item accepted by both targets.
    Closed,
    /// Every exported item accepted, but some copies not exported: not
    /// validated yet (harmonised), or not graded (a grade withdrawn after
    /// the closure).
    PartiallyClosed,
    /// Some items were rejected or got no answer; a relaunch may fix it.
    ClosedWithErrors,
    /// Cyclades published the exam's results; nothing more is sent.
    Published,
}

impl UnitState {
    /// The name stored in `closure_units.state` and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closing => "closing",
            Self::Closed => "closed",
            Self::PartiallyClosed => "partially_closed",
            Self::ClosedWithErrors => "closed_with_errors",
            Self::Published => "published",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Open,
            Self::Closing,
            Self::Closed,
            Self::PartiallyClosed,
            Self::ClosedWithErrors,
            Self::Published,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a closure, relaunch, validation or publication was refused. Each
/// message names what is wrong; nothing is enqueued or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown exam {0}")]
    UnknownExam(String),
    #[error("unknown establishment {0}")]
    UnknownEstablishment(String),
    #[error("unknown academy {0}")]
    UnknownAcademy(String),
    #[error("establishment {establishment} has no copy of exam {exam}")]
    NoCopies { exam: String, establishment: Uai },
    #[error(
        "exam {0} is harmonised: it is closed by the academic coordinator \
         (copiste harmonisation validate), not by an establishment's closure"
    )]
    Harmonised(String),
    #[error(
        "exam {exam} is {kind}, not harmonised: it is closed per establishment (copiste closure run)"
    )]
    NotHarmonised { exam: String, kind: ExamKind },
    #[error(
        "exam {exam} was published by Cyclades on {at} (recorded by {by}): \
         its closure can no longer be run or relaunched"
    )]
    Published {
        exam: String,
        at: DateTime<Utc>,
        by: String,
    },
    #[error("{} of exam {exam} in {} {} not graded: {}",
        plural(numeros.len(), "copy", "copies"),
        establishment.as_ref().map_or("the selection".to_owned(), |u| u.to_string()),
        if numeros.len() == 1 { "is" } else { "are" },
        list(numeros))]
    Ungraded {
        exam: String,
        establishment: Option<Uai>,
        numeros: Vec<String>,
    },
    #[error("establishment {establishment} was never closed for exam {exam}: run a closure first")]
    NeverClosed { exam: String, establishment: Uai },
    #[error("exam {exam} has no candidate numbered {}", list(numeros))]
    UnknownCandidates { exam: String, numeros: Vec<String> },
    #[error("no copy selected for validation")]
    EmptySelection,
    #[error("exam {exam} is already published (on {at})")]
    AlreadyPublished { exam: String, at: DateTime<Utc> },
    #[error("a closure of exam {exam} is running in {}: wait for it to finish (or cancel it) before publishing",
        units.iter().map(|(u, j)| format!("{u} (job {j})")).collect::<Vec<_>>().join(", "))]
    ClosureRunning {
        exam: String,
        units: Vec<(String, uuid::Uuid)>,
    },
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A list of names, at most 20 shown.
fn list(names: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut out = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}
