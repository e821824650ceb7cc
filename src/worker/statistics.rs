//! The statistics keeper: every `queue.reconcile_interval_secs`, with the
//! reconciler, each worker process refreshes
//! the planner statistics of the tables the night has doubled since
//! their last analyse (see [`crate::db::statistics`]); one process at a
//! time analyses a table.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::{app::App, db};

pub(super) async fn run(app: App, stop: CancellationToken) {
    let every = Duration::from_secs(app.config.queue.reconcile_interval_secs);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = refresh(&app).await {
            tracing::warn!(
                error = %format!("{e:#}"),
                "the statistics of the night's tables were not refreshed; retrying"
            );
        }
    }
}

/// Analyses each grown table another worker is not analysing.
async fn refresh(app: &App) -> anyhow::Result<()> {
    for table in db::statistics::grown(&app.db).await? {
        let started = Instant::now();
        if db::statistics::analyze(&app.db, table).await? {
            tracing::info!(
                table,
                duration_ms = started.elapsed().as_millis() as u64,
                "statistics refreshed"
            );
        }
    }
    Ok(())
}
