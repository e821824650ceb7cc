//! `housekeeping`: deletes expired downloads and their objects, aborts
//! the zip uploads that finished `bulk-render` jobs recorded and no run
//! will continue, deletes the objects under `downloads/` that no download
//! names once they are `downloads.abandoned_after_secs` old (what killed
//! or cancelled zip builds leave), prunes finished jobs older than
//! `jobs.retention_days`, removes what apalis leaves in Redis for
//! finished deliveries, so that Redis stays flat, and recounts the
//! closure table's unit summaries, correcting (and reporting) any that a
//! write made outside the triggers left wrong, and refreshes the planner's
//! statistics of the tables the night wrote.

use std::collections::HashSet;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{Job, JobContext, JobError, Kind, Outcome, bulk_render::BulkRender};
use crate::app::App;
use crate::{
    db,
    download::DOWNLOADS_PREFIX,
    render::zip::{Part, PartUpload, UPLOAD_FIELD},
};

/// Finished jobs deleted per statement (with their events): each batch
/// is a short transaction of its own.
pub const PRUNE_BATCH: i64 = 1_000;

/// Units recounted per statement: each batch locks its summary rows only
/// until it commits.
pub const RECOUNT_BATCH: usize = 500;

/// The `housekeeping` job's payload (no parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Housekeeping {}

impl Kind for Housekeeping {
    const NAME: &'static str = "housekeeping";
}

impl Job for Housekeeping {
    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let app = &ctx.app;
        let mut objects = 0u64;
        let expired = db::schedule::expired_downloads(&app.db).await?;
        let downloads = expired.len();
        for (id, parts) in expired {
            let parts: Vec<Part> = serde_json::from_value(parts).unwrap_or_default();
            for part in parts {
                app.storage
                    .delete(&part.key)
                    .await
                    .map_err(JobError::retryable)?;
                objects += 1;
            }
            db::schedule::delete_download(&app.db, id).await?;
        }
        let uploads = abort_abandoned_uploads(app).await?;
        let delay = std::time::Duration::from_secs(app.config.downloads.abandoned_after_secs);
        let abandoned = sweep_abandoned(app, delay).await?;
        let retention = chrono::Duration::days(i64::from(app.config.jobs.retention_days));
        let pruned =
            db::schedule::prune_jobs(&app.db, chrono::Utc::now() - retention, PRUNE_BATCH).await?;
        let redis = crate::queue::sweep_finished(&app.config).await?;
        let corrected = db::closure::recount_summaries(&app.db, RECOUNT_BATCH).await?;
        db::schedule::analyze_night_tables(&app.db).await?;
        if corrected > 0 {
            // The triggers keep the summaries exact; a difference means a
            // write escaped them (see migration 10).
            tracing::warn!(
                units = corrected,
                "unit summaries differed from a recount and were corrected"
            );
            metrics::counter!("copiste_unit_summary_corrections_total").increment(corrected);
        }
        Ok(Outcome::Succeeded(serde_json::json!({
            "downloads_expired": downloads,
            "objects_deleted": objects,
            "uploads_aborted": uploads,
            "abandoned_objects_deleted": abandoned,
            "jobs_pruned": pruned,
            "redis_keys_removed": redis,
            "unit_summaries_corrected": corrected,
            "tables_analysed": db::schedule::NIGHT_TABLES,
        })))
    }
}

/// Aborts the zip uploads recorded in the checkpoints of `bulk-render`
/// jobs that no run will continue (neither queued nor running: every
/// other status is final, and a retry by hand would start such a part
/// again), then removes their record, unless a run took the job again
/// meanwhile. Whatever they had uploaded is gone (an S3 multipart upload
/// aborted, a local staging file deleted); none was ever visible at a
/// key. Returns how many were aborted.
pub async fn abort_abandoned_uploads(app: &App) -> anyhow::Result<u64> {
    let recorded =
        db::jobs::idle_checkpoint_entries(&app.db, BulkRender::NAME, UPLOAD_FIELD).await?;
    let mut aborted = 0;
    for found in recorded {
        let upload: PartUpload = match serde_json::from_value(found.entry.clone()) {
            Ok(upload) => upload,
            Err(e) => {
                tracing::warn!(job.id = %found.job, error = %e, "unreadable recorded upload: left");
                continue;
            }
        };
        app.storage
            .abort_resumable_upload(&upload.key, &upload.upload_id)
            .await
            .with_context(|| {
                format!(
                    "aborting the upload {} of {} (job {}, {})",
                    upload.upload_id, upload.key, found.job, found.status
                )
            })?;
        db::jobs::remove_idle_checkpoint_entry(&app.db, found.job, UPLOAD_FIELD, &found.entry)
            .await?;
        tracing::info!(
            job.id = %found.job, key = %upload.key, upload_id = %upload.upload_id,
            "aborted the upload of a finished zip job"
        );
        aborted += 1;
    }
    Ok(aborted)
}

/// Deletes every object under `downloads/` that no download record names
/// and that was last modified more than `older_than` ago — the staging
/// parts of a zip build that was killed or cancelled, a local store's
/// partial files (`…#1`), a finished part whose record was never written
/// — except those in the folder of a `bulk-render` job still queued or
/// running. Returns how many objects were deleted.
pub async fn sweep_abandoned(app: &App, older_than: std::time::Duration) -> anyhow::Result<u64> {
    let cutoff = chrono::Duration::from_std(older_than)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    // Listed first: a record written after the listing names objects that
    // are younger than the delay, never older.
    let listed = app
        .storage
        .list(DOWNLOADS_PREFIX)
        .await
        .with_context(|| format!("listing {DOWNLOADS_PREFIX}"))?;
    let named: HashSet<String> = db::schedule::download_keys(&app.db)
        .await?
        .into_iter()
        .collect();
    let active: HashSet<String> = db::schedule::active_jobs(&app.db, BulkRender::NAME)
        .await?
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    let mut deleted = 0;
    for object in listed {
        if object.last_modified > cutoff || (!object.partial && named.contains(&object.key)) {
            continue;
        }
        // A build's objects are in a folder named after its job, staging
        // (`downloads/.staging/<job>/…`) and final keys alike.
        let folder = object.key.rsplit('/').nth(1).unwrap_or_default();
        if active.contains(folder) {
            continue;
        }
        app.storage
            .delete_listed(&object)
            .await
            .with_context(|| format!("deleting the abandoned object {}", object.key))?;
        tracing::info!(key = %object.key, "deleted an abandoned download object");
        deleted += 1;
    }
    Ok(deleted)
}
