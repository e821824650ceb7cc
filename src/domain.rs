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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
