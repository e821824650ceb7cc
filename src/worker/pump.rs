//! The pump: hands due job ids from the ledger to Redis, best first, in
//! batches: once at most half of `queue.window` are there unclaimed, it
//! fills the window. It wakes on every enqueue (LISTEN/NOTIFY), on this
//! process's claims, when the reconciler re-delivers, and at least every
//! `queue.pump_interval_ms`.
//!
//! A step that finds more than half the window in flight knows how many
//! claims must happen before a refill is possible; until this process has
//! made that many, or the interval has passed (other processes claim
//! too), wake-ups cost nothing. Without that, a busy worker ran one pump
//! transaction per claim batch only to find the window still full.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    db::{self, JobNotifications},
    jobs::context::Services,
    queue::Producer,
};

/// How the rest of the process wakes its pump.
#[derive(Debug, Default)]
pub(super) struct PumpWake {
    notify: Notify,
    claims: AtomicU64,
    forced: AtomicBool,
}

impl PumpWake {
    /// `n` jobs were claimed by this process: their places in the window
    /// are free.
    pub(super) fn claimed(&self, n: usize) {
        self.claims.fetch_add(n as u64, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// The window may have changed in a way claims do not count (lost ids
    /// forgotten, leases expired): look now.
    pub(super) fn force(&self) {
        self.forced.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }
}

pub(super) struct Pump {
    services: Services,
    producer: Producer,
    wake: Arc<PumpWake>,
    notifications: Option<JobNotifications>,
}

impl Pump {
    pub(super) async fn new(
        services: Services,
        producer: Producer,
        wake: Arc<PumpWake>,
    ) -> anyhow::Result<Self> {
        let notifications = JobNotifications::listen(&services.db).await?;
        Ok(Self {
            services,
            producer,
            wake,
            notifications: Some(notifications),
        })
    }

    pub(super) async fn run(mut self, stop: CancellationToken) {
        let interval = Duration::from_millis(self.services.config.queue.pump_interval_ms);
        let window = i64::from(self.services.config.queue.window);
        // Claims this process must make before a step can find room.
        let mut needed = 0u64;
        let mut claims_at_step = 0u64;
        let mut due = true;
        loop {
            let claims = self.wake.claims.load(Ordering::Relaxed);
            let forced = self.wake.forced.swap(false, Ordering::Relaxed);
            if due || forced || claims.wrapping_sub(claims_at_step) >= needed {
                claims_at_step = claims;
                needed = match self.pump_once(window).await {
                    Ok(in_flight) => u64::try_from(in_flight - window / 2).unwrap_or(0),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "pump step failed; retrying");
                        0
                    }
                };
            }
            let notified = async {
                match self.notifications.as_mut() {
                    Some(n) => {
                        if let Err(e) = n.recv().await {
                            tracing::warn!(error = %format!("{e:#}"), "job notifications lost; polling");
                            self.notifications = None;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            due = false;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = notified => {}
                _ = self.wake.notify.notified() => {}
                _ = tokio::time::sleep(interval) => due = true,
            }
        }
    }

    /// Fills the window with due jobs, if it has drained by half (one
    /// step fills it: a second would find it full). Returns how many ids
    /// are in flight after the step.
    async fn pump_once(&self, window: i64) -> anyhow::Result<i64> {
        let taken = db::jobs::take_due(&self.services.db, window).await?;
        if taken.ids.is_empty() {
            return Ok(taken.in_flight);
        }
        if let Err(e) = self.producer.push(&taken.ids).await {
            db::jobs::unmark_pushed(&self.services.db, &taken.ids).await?;
            return Err(e);
        }
        tracing::trace!(count = taken.ids.len(), "pushed job ids");
        Ok(taken.in_flight + taken.ids.len() as i64)
    }
}
