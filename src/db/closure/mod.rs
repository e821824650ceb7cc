//! Closure queries: closure units, the per-item export ledger, publication
//! and harmonisation passes.
//!
//! The ledger has two tables, written in bulk:
//! - `grade_exports` (Cyclades): one narrow row per copy, reached through
//!   the copy, written once per answer (or failure) of a batch. Its key is
//!   a function of the copy and the revision sent, so nothing is written
//!   before the request.
//! - `count_exports` (Imag'In): one row per grader and unit. A count's
//!   revision is assigned when it changes, so one upsert per unit creates,
//!   refreshes and takes for sending every count to send (marked `sent`,
//!   attempt counted) before the request, and one update settles it.

mod harmonisation;
mod items;
mod publication;
mod status;
mod units;

// Closure's queries are one adapter to their callers
// (`db::closure::lock_unit`): the files below split it by concern only, so
// their items are reached here rather than through each file's name.
pub use harmonisation::{CandidateCopy, exam_copies, insert_pass, validated_establishments};
pub use items::{
    CountOutgoing, ErrorCount, SentGrade, StateCounts, count_states, errors_of_units, exam_errors,
    fail_counts, fail_grades, settle_counts, settle_grades, sync_counts,
};
pub use publication::{PublishOutcome, publish};
pub use status::{
    ExamUnitCount, UnitFilter, UnitPlace, UnitRow, exam_unit_counts, recount_summaries,
    unit_places, unit_rows,
};
pub use units::{
    ActiveJob, UnitContent, UnitCopy, UnitLock, finish_run, has_items, lock_unit, relaunch_work,
    set_active_job, start_run, ungraded_by_establishment, unit_copies, unit_exists, unit_ungraded,
};
