//! `export-retry-sweep`: enqueues a relaunch for every unit closed with
//! retryable errors whose backoff has passed, until publication.

use serde::{Deserialize, Serialize};

use super::{Job, JobContext, JobError, Kind, Outcome};
use crate::{
    closure::{self, request::UnitsInput},
    db,
    op::{Actor, OpError},
};

/// The `export-retry-sweep` job's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRetrySweep {
    /// A unit is relaunched once its last run is this old (default:
    /// `jobs.backoff_base_secs`).
    #[serde(default)]
    pub min_age_secs: Option<u64>,
}

impl Kind for ExportRetrySweep {
    const NAME: &'static str = "export-retry-sweep";
}

impl Job for ExportRetrySweep {
    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let db = &ctx.app.db;
        let age = self
            .min_age_secs
            .map(|s| s as f64)
            .unwrap_or(ctx.app.config.jobs.backoff_base_secs);
        let due_before = chrono::Utc::now() - chrono::Duration::milliseconds((age * 1000.0) as i64);
        let units = db::schedule::units_to_relaunch(db, due_before).await?;
        let mut relaunched = Vec::new();
        for (exam, uai) in units {
            let input = UnitsInput::unit(exam, uai);
            match closure::request_relaunch(&ctx.app, &Actor::Scheduler, &input).await {
                Ok(units) => {
                    relaunched.extend(units.iter().filter_map(|u| u.outcome.as_ref().ok()?.job()))
                }
                Err(OpError::Internal(e)) => return Err(e.into()),
                // Published since it was listed, or another refusal: the
                // unit has nothing to relaunch.
                Err(_) => {}
            }
        }
        Ok(Outcome::Succeeded(
            serde_json::json!({"relaunches": relaunched}),
        ))
    }
}
