//! `zip-prebuild`: enqueues the zip of every (exam, establishment) unit
//! closed since its last zip, so that establishments find their zips
//! ready after a closure night. Which units: see [`download::prebuild`].

use serde::{Deserialize, Serialize};

use super::{Job, JobContext, JobError, Kind, Outcome};
use crate::{
    download::{self, PrebuildInput},
    op::{Actor, OpError},
    render::RequestedOptions,
};

/// How far back a pre-build looks by default, in days.
pub const DEFAULT_LOOKBACK_DAYS: u32 = 7;

/// The `zip-prebuild` job's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZipPrebuild {
    /// Units whose copies were all transmitted longer ago than this are
    /// left alone (default 7 days). It bounds how long a missed slot can
    /// be made up for, and must stay below `jobs.retention_days`: a build
    /// pruned from the ledger is not known any more.
    #[serde(default)]
    pub lookback_days: Option<u32>,
    /// The switches of the zips (default: all three on, which every kind
    /// of exam accepts; an E3C exam refuses any other).
    #[serde(default)]
    pub options: Option<RequestedOptions>,
}

impl Kind for ZipPrebuild {
    const NAME: &'static str = "zip-prebuild";

    fn validate(&self) -> Result<(), String> {
        match self.lookback_days {
            Some(0) => Err("lookback_days: must be at least 1".into()),
            Some(d) if d > 365 => Err(format!("lookback_days: {d} is more than 365")),
            _ => Ok(()),
        }
    }
}

impl Job for ZipPrebuild {
    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let days = self.lookback_days.unwrap_or(DEFAULT_LOOKBACK_DAYS);
        let retention = ctx.app.config.jobs.retention_days;
        if days >= retention {
            tracing::warn!(
                lookback_days = days,
                retention_days = retention,
                "zip-prebuild looks back as far as finished jobs are kept: zips pruned from the ledger may be built again"
            );
        }
        let input = PrebuildInput {
            since: chrono::Utc::now() - chrono::Duration::days(i64::from(days)),
            options: self.options.unwrap_or_default(),
        };
        match download::prebuild(&ctx.app, &Actor::Scheduler, &input).await {
            Ok(done) => Ok(Outcome::Succeeded(serde_json::json!({
                "enqueued": done.exams.iter().map(|e| e.enqueued).sum::<usize>(),
                "already_building": done.exams.iter().map(|e| e.already_building).sum::<usize>(),
                "exams": done.exams.iter().map(|e| serde_json::json!({
                    "exam": e.exam,
                    "enqueued": e.enqueued,
                    "already_building": e.already_building,
                })).collect::<Vec<_>>(),
                "refused": done.refused,
            }))),
            Err(OpError::Internal(e)) => Err(e.into()),
            Err(other) => Err(JobError::permanent(other)),
        }
    }
}
