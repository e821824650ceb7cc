//! `closure`: closes one ponctuel or E3C exam for one establishment —
//! exports its grades to Cyclades and its graders' counts to Imag'In.

use super::{Job, JobContext, JobError, Kind, Outcome};
pub use crate::closure::payload::Closure;
use crate::{
    closure::{
        engine::{self, RunError, UnitRun, UnitSummary},
        plan::RunMode,
    },
    db::{self, catalog::ExamRow},
    domain::{ExamKind, Uai},
    op::Refusal,
};

impl Kind for Closure {
    const NAME: &'static str = "closure";
    const PRIORITY: i16 = 10;

    fn validate(&self) -> Result<(), String> {
        crate::ledger::non_empty("exam", &self.exam)
    }
}

impl Job for Closure {
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
        let summary = run_unit(&ctx, &exam, &self.establishment, mode).await?;
        verdict(&ctx, mode, vec![summary])
    }
}

/// The exam a job works on; an unknown exam is a permanent failure.
pub(crate) async fn unit_exam(ctx: &JobContext, exam: &str) -> Result<ExamRow, JobError> {
    db::catalog::exam(&ctx.app.db, exam)
        .await?
        .ok_or_else(|| JobError::permanent(anyhow::anyhow!("unknown exam {exam}")))
}

/// Runs the engine on one unit for a job: a refusal is permanent, any
/// other failure retryable (unless a stored value does not decode).
pub(crate) async fn run_unit(
    ctx: &JobContext,
    exam: &ExamRow,
    uai: &Uai,
    mode: RunMode,
) -> Result<UnitSummary, JobError> {
    let run = UnitRun {
        app: &ctx.app,
        job: ctx.job_id,
        progress: ctx,
    };
    engine::run_unit(&run, exam, uai, mode)
        .await
        .map_err(|e| match e {
            RunError::Refused(r) => JobError::permanent(r),
            RunError::Failed(e) => JobError::from(e),
        })
}

/// The job's verdict on a set of unit runs: success when every item is
/// accepted (and, but for a harmonisation pass, every copy graded); a
/// retryable error when some got no answer (the ledger retries with
/// backoff, unless this was the job's last attempt); a partial result when
/// only rejections or ungraded copies remain.
pub(crate) fn verdict(
    ctx: &JobContext,
    mode: RunMode,
    summaries: Vec<UnitSummary>,
) -> Result<Outcome, JobError> {
    let result = serde_json::json!({ "units": summaries });
    let pending: i64 = summaries
        .iter()
        .flat_map(|s| s.targets.values())
        .map(|t| t.pending)
        .sum();
    let rejected: i64 = summaries
        .iter()
        .flat_map(|s| s.targets.values())
        .map(|t| t.rejected)
        .sum();
    // A harmonisation pass exports validated copies only: the others,
    // ungraded ones included, wait for a later pass.
    let ungraded: i64 = if mode.validated_only {
        0
    } else {
        summaries.iter().map(|s| s.ungraded).sum()
    };
    if pending > 0 {
        let first = summaries
            .iter()
            .flat_map(|s| s.errors.iter())
            .find(|e| e.state == crate::domain::ItemState::Pending)
            .map(|e| format!(" (first error: {})", e.message))
            .unwrap_or_default();
        let ungraded = if ungraded > 0 {
            format!(", {ungraded} copies not graded")
        } else {
            String::new()
        };
        // The job is dead after this attempt: promise no retry.
        let next = if ctx.is_last_attempt() {
            "no attempt left: relaunch the closure by hand"
        } else {
            "retrying with backoff"
        };
        return Err(JobError::Retryable(anyhow::anyhow!(
            "closed with errors: {pending} items not answered yet{first}, {rejected} rejected{ungraded}; {next}"
        )));
    }
    if rejected > 0 || ungraded > 0 {
        return Ok(Outcome::Failed(result));
    }
    Ok(Outcome::Succeeded(result))
}
