//! `closure`: closes one ponctuel or E3C exam for one establishment —
//! exports its grades to Cyclades and its graders' counts to Imag'In.

use serde::{Deserialize, Serialize};

use super::{Job, JobContext, JobError, Outcome};
use crate::{
    closure::{
        Refusal,
        engine::{self, RunMode},
        request::unit_exam,
    },
    domain::{ExamKind, Uai},
};

/// The `closure` job's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Closure {
    pub exam: String,
    pub establishment: Uai,
}

impl Job for Closure {
    const NAME: &'static str = "closure";
    const PRIORITY: i16 = 10;

    fn validate(&self) -> Result<(), String> {
        super::non_empty("exam", &self.exam)
    }

    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let exam = unit_exam(&ctx, &self.exam).await?;
        if exam.kind == ExamKind::Harmonised {
            return Err(JobError::permanent(Refusal::Harmonised(exam.code)));
        }
        let mode = RunMode {
            with_rejected: false,
            validated_only: false,
            report_progress: true,
            refuse_ungraded: true,
        };
        let summary = engine::run_unit(&ctx, &exam, &self.establishment, mode).await?;
        engine::verdict(&ctx, mode, vec![summary])
    }
}
