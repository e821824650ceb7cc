//! The typed edge of the database: stored text values (kinds, states,
//! statuses, UAIs) are decoded here once, when a row is read. A stored
//! value that does not decode is an error naming the column and the value,
//! never a default.

use crate::domain::JobStatus;
use crate::domain::{ExamKind, ItemState, Uai, UnitState};

/// A stored value that does not decode: the data, not the service, is
/// wrong, so another attempt cannot fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{column} has the {what} {value:?}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
pub struct Undecodable {
    /// The column, written `table.column`.
    pub column: String,
    /// What was expected: "unknown value", "invalid UAI".
    pub what: &'static str,
    /// The stored value.
    pub value: String,
    /// Why it does not decode, when there is more to say.
    pub reason: Option<String>,
}

/// A closed set of names stored in a text column.
pub trait Stored: Sized {
    /// The value named `s`, if it is one of the set.
    fn from_stored(s: &str) -> Option<Self>;
}

impl Stored for ExamKind {
    fn from_stored(s: &str) -> Option<Self> {
        ExamKind::parse(s)
    }
}

impl Stored for UnitState {
    fn from_stored(s: &str) -> Option<Self> {
        UnitState::parse(s)
    }
}

impl Stored for ItemState {
    fn from_stored(s: &str) -> Option<Self> {
        ItemState::parse(s)
    }
}

impl Stored for JobStatus {
    fn from_stored(s: &str) -> Option<Self> {
        JobStatus::parse(s).ok()
    }
}

/// Decodes the value of `column` (written `table.column`), or an error
/// naming the column and the unknown value.
pub fn decode<T: Stored>(column: &str, value: &str) -> anyhow::Result<T> {
    T::from_stored(value).ok_or_else(|| {
        Undecodable {
            column: column.to_owned(),
            what: "unknown value",
            value: value.to_owned(),
            reason: None,
        }
        .into()
    })
}

/// Decodes an optional value of `column`.
pub fn decode_opt<T: Stored>(column: &str, value: Option<&str>) -> anyhow::Result<Option<T>> {
    value.map(|v| decode(column, v)).transpose()
}

/// Decodes a UAI stored in `column`, or an error naming the column, the
/// value and what is wrong with it.
pub fn decode_uai(column: &str, value: &str) -> anyhow::Result<Uai> {
    Uai::parse(value).map_err(|e| {
        Undecodable {
            column: column.to_owned(),
            what: "invalid UAI",
            value: value.to_owned(),
            reason: Some(e.to_string()),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_decode() {
        assert_eq!(
            decode::<ExamKind>("exams.kind", "e3c").unwrap(),
            ExamKind::E3c
        );
        assert_eq!(
            decode::<UnitState>("closure_units.state", "closed_with_errors").unwrap(),
            UnitState::ClosedWithErrors
        );
        assert_eq!(
            decode::<JobStatus>("jobs.status", "cancelled").unwrap(),
            JobStatus::Cancelled
        );
        assert_eq!(
            decode_uai("establishments.uai", "0750001U")
                .unwrap()
                .as_str(),
            "0750001U"
        );
    }

    #[test]
    fn an_unknown_exam_kind_is_an_error_naming_table_and_value() {
        let e = decode::<ExamKind>("exams.kind", "E3C-v2").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"exams.kind has the unknown value "E3C-v2""#
        );
    }

    #[test]
    fn an_unknown_unit_state_is_an_error_naming_table_and_value() {
        let e = decode::<UnitState>("closure_units.state", "half_closed").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"closure_units.state has the unknown value "half_closed""#
        );
    }

    #[test]
    fn an_unknown_job_status_is_an_error_naming_table_and_value() {
        let e = decode::<JobStatus>("jobs.status", "paused").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"jobs.status has the unknown value "paused""#
        );
        let none = decode_opt::<JobStatus>("jobs.status", None).unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn an_invalid_stored_uai_is_an_error_naming_table_and_value() {
        let e = decode_uai("closure_units.establishment_uai", "0750001B").unwrap_err();
        let message = e.to_string();
        assert!(
            message
                .starts_with(r#"closure_units.establishment_uai has the invalid UAI "0750001B""#),
            "{message}"
        );
    }
}
