//! The reconciler: Redis may lose ids (restart without persistence,
//! FLUSHALL) and workers may die. Every `queue.reconcile_interval_secs` it
//! makes lost ids deliverable again and requeues (or buries) jobs whose
//! lease expired.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::pump::PumpWake;
use crate::{db, jobs::context::Services};

pub(super) async fn run(services: Services, wake_pump: Arc<PumpWake>, stop: CancellationToken) {
    let every = Duration::from_secs(services.config.queue.reconcile_interval_secs);
    let redeliver_after = services.config.queue.redeliver_after_secs as f64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match reconcile(&services, redeliver_after).await {
            Ok((0, 0, 0)) => {}
            Ok((lost, requeued, dead)) => {
                tracing::info!(lost, requeued, dead, "reconciled the ledger with Redis");
                wake_pump.force();
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "reconciliation failed; retrying"),
        }
    }
}

/// One pass; returns (lost ids re-delivered, leases requeued, jobs dead).
pub(crate) async fn reconcile(
    services: &Services,
    redeliver_after: f64,
) -> anyhow::Result<(u64, u64, u64)> {
    let lost = db::jobs::forget_lost_pushes(&services.db, redeliver_after).await?;
    let (requeued, dead) = db::jobs::expire_leases(&services.db).await?;
    Ok((lost, requeued, dead))
}
