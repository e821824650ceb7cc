//! Domain vocabulary shared by every module: identifiers parsed at the edge
//! so that invalid values cannot exist inside.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The 23 check letters of a UAI: A to Z without I, O and Q.
const UAI_LETTERS: &[u8; 23] = b"ABCDEFGHJKLMNPRSTUVWXYZ";

/// Why a string is not a valid UAI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UaiError {
    #[error("a UAI is 8 characters (7 digits and a check letter), got {0}")]
    Length(usize),
    #[error("a UAI starts with 7 digits")]
    Digits,
    #[error("the check letter of {uai} should be {expected}")]
    CheckLetter { uai: String, expected: char },
}

/// An establishment's identifier (Unité Administrative Immatriculée):
/// 7 digits and a check letter, the digits' value modulo 23 mapped onto
/// A..Z without I, O and Q.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "0750001A")]
pub struct Uai(String);

impl Uai {
    /// Parses a UAI, accepting a lower-case check letter and surrounding
    /// spaces.
    pub fn parse(input: &str) -> Result<Self, UaiError> {
        let s = input.trim().to_ascii_uppercase();
        if s.chars().count() != 8 {
            return Err(UaiError::Length(s.chars().count()));
        }
        let (digits, letter) = s.split_at(7);
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UaiError::Digits);
        }
        let expected = Self::check_letter(digits);
        if !letter.starts_with(expected) {
            return Err(UaiError::CheckLetter { uai: s, expected });
        }
        Ok(Self(s))
    }

    /// Builds the UAI of a 7-digit number, adding its check letter.
    pub fn from_number(number: u32) -> Self {
        let digits = format!("{:07}", number % 10_000_000);
        let letter = Self::check_letter(&digits);
        Self(format!("{digits}{letter}"))
    }

    fn check_letter(digits: &str) -> char {
        let n: u64 = digits.parse().unwrap_or(0);
        char::from(UAI_LETTERS[(n % 23) as usize])
    }

    /// The UAI as stored and displayed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uai {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Uai {
    type Err = UaiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for Uai {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How an exam is closed and rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExamKind {
    /// One-off exam, closed per establishment.
    Ponctuel,
    /// Grades moderated by a board; closed by the academic coordinator.
    Harmonised,
    /// Common continuous-assessment test; render options are fixed.
    E3c,
}

impl ExamKind {
    /// The name stored in the database and used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ponctuel => "ponctuel",
            Self::Harmonised => "harmonised",
            Self::E3c => "e3c",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ponctuel" => Some(Self::Ponctuel),
            "harmonised" => Some(Self::Harmonised),
            "e3c" => Some(Self::E3c),
            _ => None,
        }
    }
}

impl fmt::Display for ExamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a closure unit. `published` is the exam's, shown over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an export item (a grade for Cyclades, a count for Imag'In) is:
/// to send, sent without an answer, or answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    /// To send (never sent, or sent and not answered: a retryable failure).
    Pending,
    /// Sent; the answer has not been recorded.
    Sent,
    /// The target accepted it: nothing more to send.
    Accepted,
    /// The target refused it, with a reason; a relaunch sends it again.
    Rejected,
}

impl ItemState {
    /// The name stored in the ledger and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Sent, Self::Accepted, Self::Rejected]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a job in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Dead,
        Self::Cancelled,
    ];

    /// The name stored in `jobs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or user-given status name.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown job status {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }

    /// Whether the job will not run again unless retried by hand.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Dead | Self::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
