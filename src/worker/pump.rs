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
    app::App,
    db::{self, JobNotifications},
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

/// The first delay before listening again after notifications were lost;
/// it doubles at each failed attempt up to [`RELISTEN_MAX`].
const RELISTEN_MIN: Duration = Duration::from_millis(100);
const RELISTEN_MAX: Duration = Duration::from_secs(5);

pub(super) struct Pump {
    app: App,
    producer: Producer,
    wake: Arc<PumpWake>,
    notifications: Option<JobNotifications>,
}

impl Pump {
    pub(super) async fn new(
        app: App,
        producer: Producer,
        wake: Arc<PumpWake>,
    ) -> anyhow::Result<Self> {
        let notifications = JobNotifications::listen(&app.db).await?;
        Ok(Self {
            app,
            producer,
            wake,
            notifications: Some(notifications),
        })
    }

    pub(super) async fn run(mut self, stop: CancellationToken) {
        let interval = Duration::from_millis(self.app.config.queue.pump_interval_ms);
        let window = i64::from(self.app.config.queue.window);
        // Claims this process must make before a step can find room.
        let mut needed = 0u64;
        let mut claims_at_step = 0u64;
        let mut due = true;
        // While notifications are lost: when to listen again, and the
        // delay after that attempt if it fails too.
        let mut relisten_at = tokio::time::Instant::now();
        let mut relisten_delay = RELISTEN_MIN;
        loop {
            if self.notifications.is_none() && tokio::time::Instant::now() >= relisten_at {
                match JobNotifications::listen(&self.app.db).await {
                    Ok(n) => {
                        tracing::info!("job notifications restored");
                        self.notifications = Some(n);
                        relisten_delay = RELISTEN_MIN;
                        // Enqueues while nobody listened were not heard.
                        due = true;
                    }
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), retry_in_ms = relisten_delay.as_millis() as u64, "cannot listen for job notifications yet");
                        relisten_at = tokio::time::Instant::now() + relisten_delay;
                        relisten_delay = (relisten_delay * 2).min(RELISTEN_MAX);
                    }
                }
            }
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
                            tracing::warn!(error = %format!("{e:#}"), "job notifications lost; polling until they are restored");
                            self.notifications = None;
                            relisten_at = tokio::time::Instant::now() + RELISTEN_MIN;
                        }
                    }
                    None => tokio::time::sleep_until(relisten_at).await,
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
    ///
    /// The window is counted twice, and the larger count holds: the
    /// ledger's ids pushed and not claimed, and the ids waiting in Redis.
    /// The push happens under the pump lock, so no other pump pushes
    /// between the count and the push: whatever the ledger believes
    /// (ids it forgot as lost, duplicates), Redis never holds more than
    /// the window of waiting ids.
    async fn pump_once(&self, window: i64) -> anyhow::Result<i64> {
        let mut lock = db::jobs::PumpLock::acquire(&self.app.db).await?;
        let ledger = lock.in_flight().await?;
        let waiting = i64::try_from(self.producer.waiting().await?).unwrap_or(i64::MAX);
        metrics::gauge!("copiste_queue_waiting_ids").set(waiting as f64);
        let in_flight = ledger.max(waiting);
        // Refill only once half the window has drained: one pump
        // transaction then pushes a batch instead of a single id per
        // claim, and an idle queue (nothing in flight) is still served
        // at once.
        if in_flight > window / 2 {
            lock.commit().await?;
            return Ok(in_flight);
        }
        let ids = lock.take(window - in_flight).await?;
        if ids.is_empty() {
            lock.commit().await?;
            return Ok(in_flight);
        }
        // A failed push drops the lock uncommitted: nothing stays marked.
        self.producer.push(&ids).await?;
        lock.commit().await?;
        tracing::trace!(count = ids.len(), "pushed job ids");
        metrics::counter!("copiste_pump_batches_total").increment(1);
        metrics::counter!("copiste_pump_pushed_ids_total").increment(ids.len() as u64);
        Ok(in_flight + ids.len() as i64)
    }
}
