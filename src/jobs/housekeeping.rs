//! `housekeeping`: deletes expired downloads and their objects, prunes
//! finished jobs older than `jobs.retention_days`, and removes what apalis
//! leaves in Redis for finished deliveries, so that Redis stays flat.

use serde::{Deserialize, Serialize};

use super::{Job, JobContext, JobError, Outcome};
use crate::{db, render::zip::Part};

/// The `housekeeping` job's payload (no parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Housekeeping {}

impl Job for Housekeeping {
    const NAME: &'static str = "housekeeping";

    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let services = &ctx.services;
        let mut objects = 0u64;
        let expired = db::schedule::expired_downloads(&services.db)
            .await
            .map_err(JobError::Retryable)?;
        let downloads = expired.len();
        for (id, parts) in expired {
            let parts: Vec<Part> = serde_json::from_value(parts).unwrap_or_default();
            for part in parts {
                services
                    .storage
                    .delete(&part.key)
                    .await
                    .map_err(JobError::retryable)?;
                objects += 1;
            }
            db::schedule::delete_download(&services.db, id)
                .await
                .map_err(JobError::Retryable)?;
        }
        let retention = chrono::Duration::days(i64::from(services.config.jobs.retention_days));
        let pruned = db::schedule::prune_jobs(&services.db, chrono::Utc::now() - retention)
            .await
            .map_err(JobError::Retryable)?;
        let redis = crate::queue::sweep_finished(&services.config)
            .await
            .map_err(JobError::Retryable)?;
        Ok(Outcome::Succeeded(serde_json::json!({
            "downloads_expired": downloads,
            "objects_deleted": objects,
            "jobs_pruned": pruned,
            "redis_keys_removed": redis,
        })))
    }
}
