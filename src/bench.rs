//! `copiste bench …`: throughput figures printed next to a baseline
//! measured in the same run on the same services, never asserted by tests.

use std::time::{Duration, Instant};

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
    let services = Services::new(config, db.clone(), storage)?;
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

/// Options of `copiste bench closure`.
#[derive(Debug, Args)]
pub struct ClosureBenchArgs {
    /// Copies of the closed exam.
    #[arg(long, default_value_t = 10_000)]
    pub copies: u32,
    /// Establishments they are spread over (one closure job each).
    #[arg(long, default_value_t = 20)]
    pub establishments: u32,
    /// Requests in flight to the target, for the closure and the baseline.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Jobs run at once by the worker.
    #[arg(long, default_value_t = 8)]
    pub workers: u32,
}

/// The stub's raw capacity: `copies` grade items with fresh keys, in
/// batches of `batch_size`, `concurrency` requests in flight, through the
/// same HTTP client as the exporter. Returns grades per second.
async fn raw_capacity(
    target: &crate::config::ExporterConfig,
    label: &str,
    copies: u32,
    batch_size: usize,
) -> anyhow::Result<f64> {
    use crate::export::{Batch, GradeItem, GradesExporter as _, Target, http::HttpTarget};
    use futures::StreamExt as _;

    let client = HttpTarget::new(Target::Cyclades, target)?;
    let items: Vec<GradeItem> = (0..copies)
        .map(|i| GradeItem {
            key: format!("c:RAW-{label}:{i:08}:v1"),
            candidate: format!("{i:08}"),
            grade: Some(f64::from(i % 80) / 4.0),
            absent: false,
        })
        .collect();
    let batches: Vec<Batch<GradeItem>> = items
        .chunks(batch_size)
        .map(|chunk| Batch {
            session: crate::demo_data::SESSION_CODE.to_owned(),
            exam: format!("RAW-{label}"),
            establishment: "0000000A".to_owned(),
            items: chunk.to_vec(),
        })
        .collect();
    let started = Instant::now();
    let failures = futures::stream::iter(batches.iter())
        .map(|b| client.send_grades(b))
        .buffer_unordered(target.concurrency as usize)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    anyhow::ensure!(failures == 0, "{failures} baseline requests failed");
    let elapsed = started.elapsed();
    let rate = f64::from(copies) / elapsed.as_secs_f64();
    println!(
        "baseline: the {label} stub took {copies} grades in {} requests in {:.2} s = {rate:.0} grades/s",
        batches.len(),
        elapsed.as_secs_f64()
    );
    Ok(rate)
}

/// Runs the closure benchmark: a stub target on a loopback port that
/// remembers keys durably in the bench database (as a real target must),
/// its raw capacity for grade batches, then the closure of a ponctuel exam
/// of `--copies` copies against it. The raw capacity of an in-memory stub
/// is printed for reference.
pub async fn closure(mut config: Config, args: ClosureBenchArgs) -> anyhow::Result<()> {
    use crate::{
        closure as domain,
        config::ExporterKind,
        export::stub::{KeyStore, StubTarget},
    };

    anyhow::ensure!(
        args.copies > 0 && args.establishments > 0 && args.concurrency > 0 && args.workers > 0,
        "--copies, --establishments, --concurrency and --workers must be at least 1"
    );
    anyhow::ensure!(
        args.copies >= args.establishments,
        "--copies must be at least --establishments"
    );
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("copiste_bench_{}", &id[..12]);
    config.database.url = db::ensure_database(&config.database_url(), &name).await?;
    config.database.password = None;
    config.redis.namespace = format!("bench{}", &id[..12]);
    config.worker.concurrency = args.workers;
    config.database.max_connections = args.workers + 6;
    let batch_size = config.exports.batch_size as usize;
    let db = Db::connect(&config.database_url(), config.database.max_connections).await?;
    db.migrate().await?;
    println!(
        "bench closure: {} copies over {} establishments, batches of {batch_size}, {} requests in flight, {} jobs at once, database {name}",
        args.copies, args.establishments, args.concurrency, args.workers
    );

    let memory = StubTarget::start(KeyStore::Memory).await?;
    let stub = StubTarget::start(KeyStore::Postgres(db.clone())).await?;
    let mut target = config.exporters.cyclades.clone();
    target.kind = ExporterKind::Http;
    target.concurrency = args.concurrency;
    target.base_url = memory.base_url().parse().context("the stub's URL")?;
    let memory_rate = raw_capacity(&target, "in-memory", args.copies, batch_size).await?;
    drop(memory);
    target.base_url = stub.base_url().parse().context("the stub's URL")?;
    let raw_rate = raw_capacity(&target, "durable", args.copies, batch_size).await?;
    config.exporters.cyclades = target.clone();
    config.exporters.imagin = target;

    // The dataset: the demo session, with one shared scan.
    let storage_dir = tempfile::tempdir().context("temporary store")?;
    config.storage.root = storage_dir.path().join("objects");
    let storage = Storage::open(&config.storage)?;
    let opts = crate::demo_data::DemoDataOptions {
        establishments: args.establishments,
        candidates: args.copies.div_ceil(args.establishments),
        pages: 1,
        seed: 1,
    };
    let dir = storage_dir.path().join("session");
    let started = Instant::now();
    crate::demo_data::generate_light(&dir, &opts)?;
    let imported = crate::import::import_dir(&db, &storage, &dir, &|_| {}).await?;
    let exam = "BAC26-PHILO";
    let establishments = db::closure::exam_establishments(&db, exam, None)
        .await?
        .len();
    println!(
        "dataset:  {} copies (3 exams, {establishments} establishments) generated and imported in {:.1} s",
        imported.copies.inserted,
        started.elapsed().as_secs_f64()
    );

    let services = Services::new(config, db.clone(), storage)?;
    let worker = Worker::start(services.clone(), WorkerOptions::from_config(&services)).await?;
    let (effects_before, _) = stub.counts();
    let started = Instant::now();
    let units = match domain::request_closure(&db, exam, None, "bench").await? {
        Ok(units) => units,
        Err(refusal) => anyhow::bail!("closure refused: {refusal}"),
    };
    let ids: Vec<uuid::Uuid> = units
        .iter()
        .filter_map(|u| u.outcome.as_ref().ok().and_then(|o| o.job()))
        .collect();
    anyhow::ensure!(ids.len() == units.len(), "some units were refused");
    let requested_in = started.elapsed();
    loop {
        let counts = db::jobs::final_counts(&db, &ids).await?;
        if counts.iter().map(|(_, n)| n).sum::<i64>() >= ids.len() as i64 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the closure did not finish within 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    worker.shutdown(Duration::from_secs(5)).await?;
    let status = match domain::status::exam_status(&db, exam).await? {
        Ok(s) => s,
        Err(refusal) => anyhow::bail!("{refusal}"),
    };
    let closed_copies: i64 = status.units.iter().map(|u| u.cyclades.accepted).sum();
    let all_copies: i64 = status.units.iter().map(|u| u.copies).sum();
    anyhow::ensure!(
        status.count(domain::UnitState::Closed) == status.units.len(),
        "not every unit closed:\n{status}"
    );
    let (effects, duplicates) = stub.counts();
    let rate = closed_copies as f64 / elapsed.as_secs_f64();
    println!(
        "closure:  {closed_copies} of {all_copies} copies closed (grades and counts accepted, {} effects, {duplicates} duplicates) in {:.2} s (requests enqueued in {:.2} s) = {rate:.0} copies/s",
        effects - effects_before,
        elapsed.as_secs_f64(),
        requested_in.as_secs_f64()
    );
    let ratio = rate / raw_rate;
    println!(
        "ratio:    {ratio:.2} of the durable stub's raw capacity (goal >= 0.5) {}; {:.2} of the in-memory stub's",
        if ratio >= 0.5 { "OK" } else { "BELOW GOAL" },
        rate / memory_rate
    );
    crate::queue::purge(&services.config).await?;
    db.close().await;
    Ok(())
}
