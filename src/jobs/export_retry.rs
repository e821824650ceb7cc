//! `export-retry`: a relaunch of one unit's closure — re-sends every item
//! not accepted yet (rejected ones included) under the same keys, until the
//! exam is published. The job itself refuses a unit never closed, whoever
//! enqueued it (`closure relaunch`, the sweep, `jobs enqueue`).

use super::{
    Job, JobContext, JobError, Kind, Outcome,
    closure::{run_unit, unit_exam, verdict},
};
pub use crate::closure::payload::ExportRetry;
use crate::{closure::plan::RunMode, db, domain::ExamKind, op::Refusal};

impl Kind for ExportRetry {
    const NAME: &'static str = "export-retry";
    const PRIORITY: i16 = 10;

    fn validate(&self) -> Result<(), String> {
        crate::ledger::non_empty("exam", &self.exam)
    }
}

impl Job for ExportRetry {
    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let exam = unit_exam(&ctx, &self.exam).await?;
        let harmonised = exam.kind == ExamKind::Harmonised;
        // A relaunch re-sends what a closure sent: a unit never closed has
        // nothing to re-send and must be closed (with its checks) first.
        let closed_before =
            db::closure::has_items(&ctx.app.db, &exam.code, self.establishment.as_str()).await?;
        if !closed_before {
            return Err(JobError::permanent(Refusal::NeverClosed {
                exam: exam.code,
                establishment: self.establishment,
            }));
        }
        let mode = RunMode {
            with_rejected: ctx.attempt == 1,
            validated_only: harmonised,
            report_progress: true,
            refuse_ungraded: false,
        };
        let summary = run_unit(&ctx, &exam, &self.establishment, mode).await?;
        verdict(&ctx, mode, vec![summary])
    }
}
