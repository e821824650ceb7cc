//! The pump: hands due job ids from the ledger to Redis, best first, in
//! batches: once at most half of `queue.window` are there unclaimed, it
//! fills the window. It wakes on every
//! enqueue (LISTEN/NOTIFY), on every local claim, and at least every
//! `queue.pump_interval_ms`.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    db::{self, JobNotifications},
    jobs::context::Services,
    queue::Producer,
};

pub(super) struct Pump {
    services: Services,
    producer: Producer,
    wake: Arc<Notify>,
    notifications: Option<JobNotifications>,
}

impl Pump {
    pub(super) async fn new(
        services: Services,
        producer: Producer,
        wake: Arc<Notify>,
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
        loop {
            if let Err(e) = self.pump_once(window).await {
                tracing::warn!(error = %format!("{e:#}"), "pump step failed; retrying");
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
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = notified => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Fills the window with due jobs, if it has drained by half (one
    /// step fills it: a second would find it full).
    async fn pump_once(&self, window: i64) -> anyhow::Result<()> {
        let ids = db::jobs::take_due(&self.services.db, window).await?;
        if ids.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.producer.push(&ids).await {
            db::jobs::unmark_pushed(&self.services.db, &ids).await?;
            return Err(e);
        }
        tracing::trace!(count = ids.len(), "pushed job ids");
        Ok(())
    }
}
