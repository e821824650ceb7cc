//! What a run makes of its unit, read once: the unit's content, the copies
//! still ungraded, each grader's count of corrected copies, the Cyclades
//! items to send and the states of the others.

use crate::{
    db::closure::{StateCounts, UnitContent, UnitCopy},
    domain::ItemState,
};

/// How a run treats a unit's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMode {
    /// Send rejected items again too (a relaunch asked by a person).
    pub with_rejected: bool,
    /// Only validated copies are exported (harmonised exams).
    pub validated_only: bool,
    /// Report progress as items sent out of items to send.
    pub report_progress: bool,
    /// Refuse the unit, listing them, if some of its copies are neither
    /// graded nor absent (an establishment's closure).
    pub refuse_ungraded: bool,
}

/// The key a grade is sent under: stable for one copy and one copy version
/// (so a resend after a timeout or a crash reuses it), new for a changed
/// grade. The `export_ledger` view builds the same key.
pub fn grade_key(exam: &str, numero: &str, revision: i32) -> String {
    format!("c:{exam}:{numero}:v{revision}")
}

/// A grade a run sends: the copy, at the version read.
#[derive(Debug, Clone, PartialEq)]
pub struct GradeToSend {
    pub copy_id: i64,
    pub revision: i32,
    pub numero: String,
    pub grade: Option<f64>,
    pub absent: bool,
}

/// A run's view of its unit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitPlan {
    pub content: UnitContent,
    /// Numéros of the candidates whose copy is neither graded nor absent,
    /// sorted.
    pub ungraded: Vec<String>,
    /// Per grader with some, the corrected copies to declare to Imag'In
    /// (only validated ones for a harmonised exam), in grader order.
    pub counts: Vec<(String, i64)>,
    /// The Cyclades items to send, in copy order.
    pub grades: Vec<GradeToSend>,
    /// The Cyclades items this run leaves as they are, by state.
    pub kept: StateCounts,
}

impl UnitPlan {
    /// Sorts the unit's copies into what `mode` sends and what it keeps.
    /// A copy is exported once graded or absent (and validated, for a
    /// harmonised exam). Its item is sent when it has never been answered,
    /// when its copy changed since (under a new key), when it was left
    /// without an answer, and, on a relaunch asked by a person, when it was
    /// rejected.
    pub fn new(copies: Vec<UnitCopy>, mode: RunMode) -> Self {
        let mut plan = UnitPlan::default();
        let mut graders = std::collections::BTreeMap::<String, (i64, i64)>::new();
        for copy in copies {
            let graded = copy.grade.is_some() && !copy.absent;
            plan.content.copies += 1;
            plan.content.validated += i64::from(copy.validated);
            if copy.grade.is_none() && !copy.absent {
                plan.ungraded.push(copy.numero.clone());
            }
            if graded && let Some(grader) = &copy.grader {
                let (corrected, validated) = graders.entry(grader.clone()).or_default();
                *corrected += 1;
                *validated += i64::from(copy.validated);
            }
            let exported =
                (copy.grade.is_some() || copy.absent) && (!mode.validated_only || copy.validated);
            let to_send = exported
                && match (copy.item_revision, copy.item_state) {
                    (None, _) => true,
                    (Some(revision), _) if revision != copy.version => true,
                    (Some(_), Some(ItemState::Pending | ItemState::Sent)) => true,
                    (Some(_), Some(ItemState::Rejected)) => mode.with_rejected,
                    _ => false,
                };
            if to_send {
                plan.grades.push(GradeToSend {
                    copy_id: copy.copy_id,
                    revision: copy.version,
                    numero: copy.numero,
                    grade: copy.grade,
                    absent: copy.absent,
                });
            } else {
                let kept = &mut plan.kept;
                match copy.item_state {
                    Some(ItemState::Pending) => kept.pending += 1,
                    Some(ItemState::Sent) => kept.sent += 1,
                    Some(ItemState::Accepted) => kept.accepted += 1,
                    Some(ItemState::Rejected) => kept.rejected += 1,
                    None => {}
                }
            }
        }
        plan.ungraded.sort();
        plan.content.ungraded = plan.ungraded.len() as i64;
        plan.content.graders = graders.len() as i64;
        plan.counts = graders
            .into_iter()
            .map(|(grader, (corrected, validated))| {
                let n = if mode.validated_only {
                    validated
                } else {
                    corrected
                };
                (grader, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOSURE: RunMode = RunMode {
        with_rejected: false,
        validated_only: false,
        report_progress: true,
        refuse_ungraded: true,
    };

    fn copy(id: i64, grade: Option<f64>, absent: bool, item: Option<(i32, &str)>) -> UnitCopy {
        UnitCopy {
            copy_id: id,
            version: 2,
            numero: format!("{:012}", 100 - id),
            grader: Some(if id % 2 == 0 { "G2" } else { "G1" }.into()),
            grade,
            absent,
            validated: id <= 3,
            item_revision: item.map(|(r, _)| r),
            item_state: item.map(|(_, s)| ItemState::parse(s).expect("a state")),
        }
    }

    fn unit() -> Vec<UnitCopy> {
        vec![
            copy(1, Some(12.0), false, None),
            copy(2, Some(8.5), false, Some((2, "accepted"))),
            copy(3, Some(15.0), false, Some((1, "accepted"))),
            copy(4, None, true, Some((2, "pending"))),
            copy(5, Some(10.0), false, Some((2, "rejected"))),
            copy(6, None, false, None),
            copy(7, Some(11.0), false, Some((2, "sent"))),
        ]
    }

    fn sent(plan: &UnitPlan) -> Vec<i64> {
        plan.grades.iter().map(|g| g.copy_id).collect()
    }

    #[test]
    fn a_closure_sends_new_changed_and_unanswered_items_and_keeps_the_others() {
        let plan = UnitPlan::new(unit(), CLOSURE);
        assert_eq!(sent(&plan), [1, 3, 4, 7]);
        assert!(plan.grades.iter().all(|g| g.revision == 2));
        assert_eq!(
            plan.kept,
            StateCounts {
                accepted: 1,
                rejected: 1,
                ..StateCounts::default()
            }
        );
        assert_eq!(plan.ungraded, [format!("{:012}", 94)]);
        assert_eq!(
            plan.content,
            UnitContent {
                copies: 7,
                validated: 3,
                graders: 2,
                ungraded: 1,
            }
        );
        // Copies 1, 3, 5, 7 for G1; 2 for G2 (4 is absent, 6 ungraded).
        assert_eq!(plan.counts, [("G1".into(), 4), ("G2".into(), 1)]);
    }

    #[test]
    fn a_relaunch_asked_by_a_person_sends_rejected_items_too() {
        let mode = RunMode {
            with_rejected: true,
            ..CLOSURE
        };
        assert_eq!(sent(&UnitPlan::new(unit(), mode)), [1, 3, 4, 5, 7]);
    }

    #[test]
    fn a_harmonisation_pass_sends_and_counts_validated_copies_only() {
        let mode = RunMode {
            validated_only: true,
            ..CLOSURE
        };
        let plan = UnitPlan::new(unit(), mode);
        assert_eq!(sent(&plan), [1, 3]);
        assert_eq!(plan.counts, [("G1".into(), 2), ("G2".into(), 1)]);
        // Items of unvalidated copies are kept as they stand.
        assert_eq!(plan.kept.pending + plan.kept.sent, 2);
    }

    #[test]
    fn a_key_names_the_exam_the_candidate_and_the_revision() {
        assert_eq!(
            grade_key("BAC26-PHILO", "000000000042", 3),
            "c:BAC26-PHILO:000000000042:v3"
        );
    }
}
