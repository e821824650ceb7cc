//! `export-retry`: a relaunch of one unit's closure — re-sends every item
//! not accepted yet (rejected ones included) under the same keys, until the
//! exam is published.

use serde::{Deserialize, Serialize};

use super::{Job, JobContext, JobError, Outcome};
use crate::{
    closure::{
        engine::{self, RunMode},
        request::{kind_of, unit_exam},
    },
    domain::{ExamKind, Uai},
};

/// The `export-retry` job's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRetry {
    pub exam: String,
    pub establishment: Uai,
}

impl Job for ExportRetry {
    const NAME: &'static str = "export-retry";
    const PRIORITY: i16 = 10;

    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let exam = unit_exam(&ctx, &self.exam).await?;
        let harmonised = kind_of(&exam).map_err(JobError::Permanent)? == ExamKind::Harmonised;
        let mode = RunMode {
            with_rejected: ctx.attempt == 1,
            validated_only: harmonised,
            report_progress: true,
            refuse_ungraded: false,
        };
        let summary = engine::run_unit(&ctx, &exam, &self.establishment, mode).await?;
        engine::verdict(vec![summary])
    }
}
