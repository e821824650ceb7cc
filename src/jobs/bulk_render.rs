//! `bulk-render`: renders every transmitted copy of one establishment for
//! one exam and streams them as a zip into the object store, then records
//! the download.

use anyhow::anyhow;
use chrono::Utc;

use super::{Job, JobContext, JobError, Kind, Outcome};
pub use crate::download::BulkRender;
use crate::{
    db,
    download::DOWNLOADS_PREFIX,
    render::{
        RenderOptions,
        zip::{Resume, ZipOutcome, ZipPlan, ZipProgress, write_zip_resumable},
    },
    storage::StorageError,
};

/// The folder where the build of job `job` uploads its parts before they
/// are moved to their final keys.
pub fn staging_dir(job: uuid::Uuid) -> String {
    format!("{}{job}", crate::download::STAGING_PREFIX)
}

/// A zip error as a job error: permanent when the store refuses the key
/// (e.g. an exam code that makes no valid key), which no retry can fix;
/// retryable otherwise.
fn classify(error: anyhow::Error) -> JobError {
    if StorageError::find_in(&error).is_some_and(StorageError::is_permanent) {
        JobError::Permanent(error)
    } else {
        JobError::Retryable(error)
    }
}

impl Kind for BulkRender {
    const NAME: &'static str = "bulk-render";
    const MAX_ATTEMPTS: u32 = 3;

    fn validate(&self) -> Result<(), String> {
        crate::ledger::non_empty("exam", &self.exam)
    }
}

impl BulkRender {
    /// Where job `job` builds this zip: its parts' keys, named by exam,
    /// establishment, options and job, and the staging folder where parts
    /// are uploaded and moved to their keys once all are complete
    /// (housekeeping deletes what a killed build leaves).
    fn plan(
        &self,
        exam: &str,
        options: RenderOptions,
        job: uuid::Uuid,
        downloads: &crate::config::DownloadsConfig,
    ) -> ZipPlan {
        let uai = &self.establishment;
        ZipPlan {
            key_stem: format!(
                "{DOWNLOADS_PREFIX}{exam}/{uai}/{}/{job}/{exam}_{uai}",
                options.tag()
            ),
            staging_dir: staging_dir(job),
            options,
            max_part_bytes: downloads.max_part_bytes,
        }
    }
}

/// What earlier runs staged, recorded with the job: this run goes on
/// after their last complete part (checked still there), and continues the
/// upload of the part in progress after its last recorded chunk. `None`
/// (the zip is built anew) when the checkpoint cannot be read.
fn read_checkpoint(value: serde_json::Value) -> Option<ZipProgress> {
    match serde_json::from_value::<ZipProgress>(value) {
        Ok(from) => Some(from),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable zip checkpoint: the zip is built anew");
            None
        }
    }
}

/// Counts a built zip in the metrics: its duration, entries, bytes, and
/// what was resumed or restarted.
fn count_zip(outcome: &ZipOutcome, took: std::time::Duration) {
    metrics::histogram!("copiste_zip_duration_seconds").record(took.as_secs_f64());
    metrics::counter!("copiste_zip_entries_total").increment(u64::from(outcome.copies));
    metrics::counter!("copiste_zip_bytes_total")
        .increment(outcome.parts.iter().map(|p| p.bytes).sum::<u64>());
    metrics::counter!("copiste_zip_chunks_resumed_total").increment(outcome.resumed_chunks);
    metrics::counter!("copiste_zip_upload_restarts_total")
        .increment(u64::from(outcome.restarted_uploads));
}

impl Job for BulkRender {
    async fn run(self, ctx: JobContext) -> Result<Outcome, JobError> {
        let app = &ctx.app;
        let loading = std::time::Instant::now();
        // The exam, its copies and the checkpoint, read side by side (one
        // round trip's wait instead of three).
        let (exam, rows, checkpoint) = tokio::try_join!(
            db::catalog::exam(&app.db, &self.exam),
            db::render::transmitted_copies(&app.db, &self.exam, self.establishment.as_str()),
            ctx.checkpoint(),
        )?;
        let exam =
            exam.ok_or_else(|| JobError::permanent(anyhow!("unknown exam {}", self.exam)))?;
        let kind = exam.kind;
        // Options read back from a payload are checked again.
        let options = RenderOptions::for_exam(&exam.code, kind, self.options.requested())
            .map_err(JobError::permanent)?;
        if rows.is_empty() {
            return Err(JobError::permanent(anyhow!(
                "establishment {} has no copy of exam {} transmitted to Cyclades",
                self.establishment,
                exam.code
            )));
        }
        let plan = self.plan(&exam.code, options, ctx.job_id, &app.config.downloads);
        let progress = |done, total| -> futures::future::BoxFuture<'static, ()> {
            let ctx = ctx.clone();
            Box::pin(async move { ctx.progress(done, total).await })
        };
        let from = checkpoint.and_then(read_checkpoint);
        let save =
            |recorded: &ZipProgress| -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
                let ctx = ctx.clone();
                let value = serde_json::to_value(recorded);
                let units = recorded.units();
                Box::pin(async move { ctx.save_checkpoint(&value?, units).await })
            };
        let resume = Resume {
            from,
            run: ctx.attempt,
            save: &save,
        };
        let load_ms = loading.elapsed().as_millis() as u64;
        let started = std::time::Instant::now();
        let outcome = write_zip_resumable(&app.storage, rows, &plan, &progress, Some(resume))
            .await
            .map_err(classify)?;
        let zip_ms = started.elapsed().as_millis() as u64;
        count_zip(&outcome, started.elapsed());
        let result = self.record(&ctx, &exam.code, options, &outcome).await?;
        tracing::info!(
            load_ms,
            zip_ms,
            record_ms = started.elapsed().as_millis() as u64 - zip_ms,
            "zip job stages"
        );
        if outcome.failures.is_empty() {
            Ok(Outcome::Succeeded(result))
        } else {
            Ok(Outcome::Failed(result))
        }
    }
}

impl BulkRender {
    /// Records the built zip as a download whose links expire after the
    /// configured time; returns the job's result.
    async fn record(
        &self,
        ctx: &JobContext,
        exam: &str,
        options: RenderOptions,
        outcome: &ZipOutcome,
    ) -> Result<serde_json::Value, JobError> {
        let app = &ctx.app;
        let ttl = chrono::Duration::seconds(
            i64::try_from(app.config.downloads.link_ttl_secs).unwrap_or(i64::MAX / 2),
        );
        let expires_at = Utc::now() + ttl;
        let parts = serde_json::to_value(&outcome.parts).map_err(JobError::permanent)?;
        let download = db::render::insert_download(
            &app.db,
            exam,
            self.establishment.as_str(),
            &options.tag(),
            parts.clone(),
            outcome.copies as i32,
            outcome.failures.len() as i32,
            ctx.job_id,
            expires_at,
        )
        .await?;
        let result = serde_json::json!({
            "download": download,
            "parts": parts,
            "copies": outcome.copies,
            "failures": outcome.failures,
            "resumed_parts": outcome.resumed_parts,
            "resumed_chunks": outcome.resumed_chunks,
            "uploaded_chunks": outcome.uploaded_chunks,
            "restarted_uploads": outcome.restarted_uploads,
            "expires_at": expires_at,
        });
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_key_is_permanent_and_a_store_outage_retryable() {
        let invalid = crate::storage::Storage::check_key("downloads/EVIL/../x/a.zip")
            .map_err(|e| anyhow::Error::new(e).context("the zip cannot be stored"))
            .expect_err("invalid");
        assert!(matches!(classify(invalid), JobError::Permanent(_)));
        let outage = anyhow!("connection reset").context("uploading the zip");
        assert!(matches!(classify(outage), JobError::Retryable(_)));
    }
}
