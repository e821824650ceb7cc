//! The `worker` role: consumes job ids from Redis, claims each job in the
//! ledger, runs it, records its outcome. Each worker process also runs a
//! pump (ledger → Redis, within the window), a reconciler (lost ids,
//! expired leases) with the statistics keeper (the planner's statistics of
//! the tables the night grows), and a heartbeat (lease extension of its
//! running jobs).

mod batch;
mod pump;
mod reconciler;
mod runner;
mod statistics;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{app::App, queue};

pub use runner::{DeliveryOutcome, Runner};

/// What to run besides the consumer (tests switch parts off).
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs run at once.
    pub concurrency: usize,
    /// Run the pump (ledger → Redis).
    pub pump: bool,
    /// Run the reconciler (lost ids, expired leases) and the statistics
    /// keeper.
    pub reconciler: bool,
    /// Run the Redis consumer (tests may drive the runner directly).
    pub consumer: bool,
}

impl WorkerOptions {
    /// Everything on, with the configured concurrency.
    pub fn from_config(app: &App) -> Self {
        Self {
            concurrency: app.config.worker.concurrency as usize,
            pump: true,
            reconciler: true,
            consumer: true,
        }
    }
}

/// A unique worker name: host, process id and a random suffix, so that a
/// restarted process is never refused by apalis as a duplicate.
pub fn unique_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "copiste".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

/// A running worker.
pub struct Worker {
    runner: Arc<Runner>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Starts a worker's tasks in the background.
    pub async fn start(app: App, options: WorkerOptions) -> anyhow::Result<Self> {
        let name = unique_name();
        let producer = queue::Producer::connect(&app.config).await?;
        let runner = Arc::new(Runner::new(app.clone(), name.clone(), options.concurrency));
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(runner.clone().heartbeat(stop.clone())));
        if options.pump {
            let pump = pump::Pump::new(app.clone(), producer.clone(), runner.wake_pump.clone())
                .await
                .context("starting the pump")?;
            tasks.push(tokio::spawn(pump.run(stop.clone())));
        }
        if options.reconciler {
            tasks.push(tokio::spawn(reconciler::run(
                app.clone(),
                producer.clone(),
                runner.wake_pump.clone(),
                stop.clone(),
            )));
            tasks.push(tokio::spawn(statistics::run(app.clone(), stop.clone())));
        }
        if options.consumer {
            tasks.push(tokio::spawn(sweep_deliveries(
                producer.clone(),
                stop.clone(),
            )));
        }
        if options.consumer {
            tasks.push(tokio::spawn(consume_forever(
                app,
                producer.clone(),
                name,
                options.concurrency,
                runner.clone(),
                stop.clone(),
            )));
        }
        tracing::info!(worker = %runner.name(), concurrency = options.concurrency, "worker started");
        Ok(Self {
            runner,
            stop,
            tasks,
        })
    }

    /// The runner (for tests that deliver ids by hand).
    pub fn runner(&self) -> &Arc<Runner> {
        &self.runner
    }

    /// Stops fetching, lets running jobs finish within `grace`, then aborts
    /// the rest and releases their leases so that another worker takes
    /// them at once.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        self.stop.cancel();
        let released = self.runner.drain(grace).await?;
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!(worker = %self.runner.name(), released, "worker stopped");
        Ok(())
    }

    /// Stops everything at once without releasing anything, as a killed
    /// process would (tests of crash recovery).
    pub fn kill(self) {
        self.stop.cancel();
        for task in &self.tasks {
            task.abort();
        }
        self.runner.abort_all();
    }
}

/// Removes what apalis keeps of acknowledged deliveries every second, so
/// that Redis stays flat while jobs run (not only after the nightly
/// housekeeping).
async fn sweep_deliveries(producer: queue::Producer, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = producer.sweep_done().await {
            tracing::debug!(error = %format!("{e:#}"), "cannot sweep finished deliveries yet");
        }
    }
}

/// Runs the Redis consumer until `stop`, restarting it under a new name
/// when it fails (e.g. Redis was flushed and forgot the registration).
/// Before a restart, the tasks that are not deliveries (which fail a
/// whole fetch) are removed and the stopped consumer's fetched tasks are
/// given back to the queue.
async fn consume_forever(
    app: App,
    producer: queue::Producer,
    base_name: String,
    concurrency: usize,
    runner: Arc<Runner>,
    stop: CancellationToken,
) {
    let mut generation = 0u32;
    while !stop.is_cancelled() {
        let name = if generation == 0 {
            base_name.clone()
        } else {
            format!("{base_name}-r{generation}")
        };
        let handler = runner.clone().delivery_handler();
        // Twice as many deliveries as jobs that may run: a delivery whose
        // run has ended may still be writing its outcome, and the runner's
        // slots bound the jobs running.
        let result =
            queue::consume(&app.config, &name, 2 * concurrency, handler, stop.clone()).await;
        if stop.is_cancelled() {
            break;
        }
        match result {
            Ok(()) => tracing::warn!(worker = %name, "Redis consumer ended; restarting"),
            Err(e) => {
                tracing::warn!(worker = %name, error = %format!("{e:#}"), "Redis consumer failed; restarting")
            }
        }
        match producer.drop_undecodable().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                removed = n,
                "removed tasks from Redis that are not deliveries"
            ),
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "cannot look for undecodable tasks")
            }
        }
        match producer.release_consumer(&name).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(worker = %name, tasks = n, "gave a stopped consumer's tasks back")
            }
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "cannot give a stopped consumer's tasks back")
            }
        }
        generation += 1;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
