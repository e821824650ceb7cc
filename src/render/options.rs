//! Render options: the three switches of rule 5, parsed at the edge.

use serde::{Deserialize, Serialize};

use crate::domain::ExamKind;
pub use crate::op::E3cOptionsFixed;

/// What a render asks for; every switch defaults to on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestedOptions {
    pub details: bool,
    pub appreciation: bool,
    pub annotations: bool,
}

impl Default for RequestedOptions {
    fn default() -> Self {
        Self {
            details: true,
            appreciation: true,
            annotations: true,
        }
    }
}

/// Options valid for one exam: for E3C, every switch is on. Built by
/// [`RenderOptions::for_exam`]; a job that reads them back from its payload
/// checks them again against the exam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RenderOptions {
    details: bool,
    appreciation: bool,
    annotations: bool,
}

impl RenderOptions {
    /// Checks a request against the exam's kind: E3C options are fixed
    /// on, and a request asking otherwise is refused, never altered.
    pub fn for_exam(
        exam: &str,
        kind: ExamKind,
        requested: RequestedOptions,
    ) -> Result<Self, E3cOptionsFixed> {
        if kind == ExamKind::E3c {
            let off: Vec<&'static str> = [
                ("grading details", requested.details),
                ("appreciation", requested.appreciation),
                ("annotations", requested.annotations),
            ]
            .into_iter()
            .filter(|(_, on)| !on)
            .map(|(name, _)| name)
            .collect();
            if !off.is_empty() {
                return Err(E3cOptionsFixed {
                    exam: exam.to_owned(),
                    off,
                });
            }
        }
        Ok(Self {
            details: requested.details,
            appreciation: requested.appreciation,
            annotations: requested.annotations,
        })
    }

    pub fn details(self) -> bool {
        self.details
    }

    pub fn appreciation(self) -> bool {
        self.appreciation
    }

    pub fn annotations(self) -> bool {
        self.annotations
    }

    /// The request these options answer.
    pub fn requested(self) -> RequestedOptions {
        RequestedOptions {
            details: self.details,
            appreciation: self.appreciation,
            annotations: self.annotations,
        }
    }

    /// A short stable tag of the switches, e.g. `d1a0n1`, for keys.
    pub fn tag(self) -> String {
        format!(
            "d{}a{}n{}",
            u8::from(self.details),
            u8::from(self.appreciation),
            u8::from(self.annotations)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e3c_options_are_fixed_on_and_other_requests_are_refused_with_the_reason() {
        let all = RequestedOptions::default();
        assert!(RenderOptions::for_exam("E", ExamKind::E3c, all).is_ok());
        let off = RequestedOptions {
            appreciation: false,
            annotations: false,
            ..all
        };
        let e = RenderOptions::for_exam("E", ExamKind::E3c, off).expect_err("refused");
        assert_eq!(e.off, vec!["appreciation", "annotations"]);
        assert!(e.to_string().contains("E3C"), "{e}");
        let o = RenderOptions::for_exam("P", ExamKind::Ponctuel, off).expect("ponctuel");
        assert_eq!(o.tag(), "d1a0n0");
    }
}
