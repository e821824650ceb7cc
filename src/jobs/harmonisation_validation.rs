//! `harmonisation-validation`: one pass of the academic coordinator over a
//! harmonised exam — exports the validated copies' grades and counts for
//! every establishment of the academy that has validated copies.

use futures::StreamExt as _;

use super::{
    Job, JobContext, JobError, Kind, Outcome,
    closure::{run_unit, unit_exam, verdict},
};
pub use crate::closure::payload::HarmonisationValidation;
use crate::{closure::plan::RunMode, db, domain::ExamKind, op::Refusal};

impl Kind for HarmonisationValidation {
    const NAME: &'static str = "harmonisation-validation";
    const PRIORITY: i16 = 10;

    fn validate(&self) -> Result<(), String> {
        crate::ledger::non_empty("exam", &self.exam)?;
        if let Some(academy) = &self.academy {
            crate::ledger::non_empty("academy", academy)?;
        }
        if self.pass < 1 {
            return Err(format!(
                "pass: {} is not a harmonisation pass (they are numbered from 1)",
                self.pass
            ));
        }
        Ok(())
    }
}

impl Job for HarmonisationValidation {
    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let exam = unit_exam(&ctx, &self.exam).await?;
        let kind = exam.kind;
        if kind != ExamKind::Harmonised {
            return Err(JobError::permanent(Refusal::NotHarmonised {
                exam: exam.code,
                kind,
            }));
        }
        let db = &ctx.app.db;
        let establishments =
            db::closure::validated_establishments(db, &exam.code, self.academy.as_deref()).await?;
        let mode = RunMode {
            with_rejected: false,
            validated_only: true,
            report_progress: false,
            refuse_ungraded: false,
        };
        let total = establishments.len() as u64;
        // The academy's units run side by side, as many as the requests
        // Cyclades may have in flight from this process: a unit mostly
        // waits for its answers, and one unit at a time kept a pass of a
        // 700-establishment academy on one core for minutes (national
        // rehearsal, docs/performance.md). Each unit is its own run in the
        // ledger, so a pass killed half-way resumes like a sequential one.
        let at_once = ctx.app.config.exporters.cyclades.concurrency.max(1) as usize;
        let (ctx, exam) = (&ctx, &exam);
        let mut runs = futures::stream::iter(establishments)
            .map(|uai| async move { run_unit(ctx, exam, &uai, mode).await })
            .buffered(at_once);
        // A failed unit does not cut the others short (a run dropped
        // mid-request would stay closing until the pass is retried): every
        // unit of the pass runs, then the first failure is the job's.
        let mut summaries = Vec::with_capacity(total as usize);
        let mut failure = None;
        let mut done = 0;
        while let Some(run) = runs.next().await {
            match run {
                Ok(summary) => summaries.push(summary),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
            done += 1;
            ctx.progress(done, total).await;
        }
        drop(runs);
        match failure {
            Some(e) => Err(e),
            None => verdict(ctx, mode, summaries),
        }
    }
}
