//! `copiste bench …`: throughput figures printed next to a baseline
//! measured in the same run on the same services, never asserted by tests.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    config::Config,
    db::{self, Db},
    jobs::{self, EnqueueOptions, context::Services, noop::Noop},
    storage::Storage,
    worker::{Worker, WorkerOptions},
};

/// Options of `copiste bench queue`.
#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// No-op jobs pushed through the whole path.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: u32,
    /// Jobs run at once, and connections of the baseline.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u32,
    /// Jobs enqueued per transaction by the producer.
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
    /// Sequential jobs for the idle pick-up latency.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: u32,
}

/// Runs the queue benchmark on a fresh database of the configured server.
pub async fn queue(mut config: Config, args: QueueBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.jobs > 0 && args.concurrency > 0 && args.batch > 0,
        "--jobs, --concurrency and --batch must be at least 1"
    );
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("copiste_bench_{}", &id[..12]);
    config.database.url = db::ensure_database(&config.database_url(), &name).await?;
    config.database.password = None;
    config.redis.namespace = format!("bench{}", &id[..12]);
    config.worker.concurrency = args.concurrency;
    let connections = args.concurrency + 4;
    config.database.max_connections = connections;
    let db = Db::connect(&config.database_url(), connections).await?;
    db.migrate().await?;
    println!(
        "bench queue: {} jobs, concurrency {}, database {name}",
        args.jobs, args.concurrency
    );

    // Baseline: single-row UPDATE transactions, one row per connection.
    let baseline_secs = 5.0;
    let baseline = db::bench::update_baseline(
        &db,
        args.concurrency,
        Duration::from_secs_f64(baseline_secs),
    )
    .await?;
    let baseline_rate = baseline as f64 / baseline_secs;
    println!(
        "baseline: {baseline} single-row UPDATE transactions in {baseline_secs:.0} s over {} connections = {baseline_rate:.0} tx/s",
        args.concurrency
    );

    let storage_dir = tempfile::tempdir().context("temporary store")?;
    config.storage.root = storage_dir.path().to_path_buf();
    let storage = Storage::open(&config.storage)?;
    let services = Services {
        config: Arc::new(config),
        db: db.clone(),
        storage,
    };
    let worker = Worker::start(services.clone(), WorkerOptions::from_config(&services)).await?;

    // Producers: as many as the workers' concurrency, each enqueueing
    // batches of --batch jobs per transaction.
    let started = Instant::now();
    let mut producers = Vec::new();
    for p in 0..args.concurrency {
        let db = db.clone();
        let share = args.jobs / args.concurrency + u32::from(p < args.jobs % args.concurrency);
        let batch = args.batch;
        producers.push(tokio::spawn(async move {
            let mut remaining = share;
            while remaining > 0 {
                let n = remaining.min(batch);
                let mut tx = db.begin().await?;
                for _ in 0..n {
                    jobs::enqueue(&mut tx, &Noop::default(), EnqueueOptions::by("bench")).await?;
                }
                tx.commit().await?;
                remaining -= n;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for producer in producers {
        producer.await.context("a producer panicked")??;
    }
    let enqueued_in = started.elapsed();
    loop {
        let finished = db::bench::finished_count(&db).await?;
        if finished >= i64::from(args.jobs) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "jobs did not finish within 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let rate = f64::from(args.jobs) / elapsed.as_secs_f64();
    println!(
        "queue:    {} no-op jobs inserted, delivered, claimed and finished in {:.2} s (enqueue took {:.2} s) = {rate:.0} jobs/s",
        args.jobs,
        elapsed.as_secs_f64(),
        enqueued_in.as_secs_f64()
    );
    let ratio = rate / baseline_rate;
    println!(
        "ratio:    {ratio:.2} (goal >= 0.5) {}",
        if ratio >= 0.5 { "OK" } else { "BELOW GOAL" }
    );

    // Idle pick-up latency: one job at a time on an idle queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::with_capacity(args.latency_samples as usize);
    for _ in 0..args.latency_samples {
        let mut tx = db.begin().await?;
        let job = jobs::enqueue(&mut tx, &Noop::default(), EnqueueOptions::by("bench"))
            .await?
            .id();
        tx.commit().await?;
        let committed = Instant::now();
        loop {
            if db::bench::started(&db, job).await? {
                latencies.push(committed.elapsed());
                break;
            }
            anyhow::ensure!(
                committed.elapsed() < Duration::from_secs(30),
                "a job was not picked up within 30 s"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let p99 = pct(0.99);
    println!(
        "latency:  idle pick-up (commit -> claimed) p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms over {} jobs (goal p99 <= 50 ms) {}",
        pct(0.5),
        pct(1.0),
        latencies.len(),
        if p99 <= 50.0 { "OK" } else { "ABOVE GOAL" }
    );
    worker.shutdown(Duration::from_secs(5)).await?;
    crate::queue::purge(&services.config).await?;
    db.close().await;
    Ok(())
}
