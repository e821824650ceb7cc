//! `harmonisation-validation`: one pass of the academic coordinator over a
//! harmonised exam — exports the validated copies' grades and counts for
//! every establishment of the academy that has validated copies.

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
        let mut summaries = Vec::with_capacity(establishments.len());
        for (done, uai) in establishments.iter().enumerate() {
            summaries.push(run_unit(&ctx, &exam, uai, mode).await?);
            ctx.progress(done as u64 + 1, total).await;
        }
        verdict(&ctx, mode, summaries)
    }
}
