//! The reconciler: Redis may lose ids (restart without persistence,
//! FLUSHALL) and workers may die. Every `queue.reconcile_interval_secs` it
//! compares what Redis holds with what the ledger believes it handed over,
//! makes lost ids deliverable again, empties a backlog apalis-redis could
//! no longer fetch from, and requeues (or buries) jobs whose lease expired.
//!
//! An id is lost only when Redis no longer holds it: an id waiting in
//! Redis, or fetched by a consumer whose slots are all busy, is not lost
//! however long it waits (taking it for lost and pushing it again made
//! Redis grow by a window at every pass until apalis' fetch failed).

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::pump::PumpWake;
use crate::{app::App, db, queue};

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reconciled {
    /// Ids the ledger had handed to Redis that Redis no longer holds.
    lost: u64,
    /// Waiting ids dropped from an overflowing queue.
    dropped: u64,
    /// Running jobs whose lease expired, queued again.
    requeued: u64,
    /// Running jobs whose lease expired with no attempt left.
    dead: u64,
}

pub(super) async fn run(
    app: App,
    producer: queue::Producer,
    wake_pump: Arc<PumpWake>,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(app.config.queue.reconcile_interval_secs);
    let redeliver_after = app.config.queue.redeliver_after_secs as f64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match reconcile(&app, &producer, redeliver_after).await {
            Ok(r) if r == Reconciled::default() => {}
            Ok(r) => {
                tracing::info!(
                    lost = r.lost,
                    dropped = r.dropped,
                    requeued = r.requeued,
                    dead = r.dead,
                    "reconciled the ledger with Redis"
                );
                wake_pump.force();
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "reconciliation failed; retrying"),
        }
    }
}

/// One pass. Ids pushed more than `redeliver_after` seconds ago that Redis
/// does not hold become deliverable again; a queue holding more than
/// [`queue::OVERFLOW`] waiting ids is emptied first (its ids are then
/// lost at once and pushed again within the window).
pub(super) async fn reconcile(
    app: &App,
    producer: &queue::Producer,
    redeliver_after: f64,
) -> anyhow::Result<Reconciled> {
    let mut out = Reconciled::default();
    {
        // Under the pump lock nothing is pushed while Redis is read.
        let mut lock = db::jobs::PumpLock::acquire(&app.db).await?;
        let mut holdings = producer.holdings().await?;
        let mut after = redeliver_after;
        if holdings.waiting > queue::OVERFLOW {
            out.dropped = producer.drop_waiting().await?;
            tracing::warn!(
                dropped = out.dropped,
                limit = queue::OVERFLOW,
                "Redis held more waiting ids than apalis-redis can fetch; emptied its queue, the ledger hands them over again"
            );
            holdings = producer.holdings().await?;
            after = 0.0;
        }
        let held: Vec<uuid::Uuid> = holdings.job_ids.into_iter().collect();
        out.lost = lock.forget_lost(after, &held).await?;
        lock.commit().await?;
    }
    let (requeued, dead) = db::jobs::expire_leases(&app.db).await?;
    out.requeued = requeued;
    out.dead = dead;
    Ok(out)
}
