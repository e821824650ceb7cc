//! `copiste bench …`: throughput figures printed next to a baseline
//! measured in the same run on the same services, never asserted by tests.

mod child;
pub mod national;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

use copiste::{
    app::App,
    config::Config,
    db::{self, Db},
    jobs::{self, EnqueueOptions, noop::Noop},
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
    /// Jobs enqueued per transaction (one statement) by the producer.
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
    /// Sequential jobs for the idle pick-up latency.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: u32,
    /// `copiste worker` processes to compare with one: above 1, the same
    /// load runs through 1 worker process, then through N (child
    /// processes, each running --concurrency jobs at once), instead of the
    /// worker inside the bench and the latency run.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
}

/// Points `config` at a fresh, migrated database `copiste_bench_<id>` of
/// the configured server and a Redis namespace of its own; returns the
/// database and its name.
async fn bench_database(config: &mut Config) -> anyhow::Result<(Db, String)> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("copiste_bench_{}", &id[..12]);
    config.database.url = db::ensure_database(&config.database_url(), &name).await?;
    config.database.password = None;
    config.redis.namespace = format!("bench{}", &id[..12]);
    let db = Db::connect(&config.database_url(), config.database.max_connections).await?;
    db.migrate().await?;
    Ok((db, name))
}

/// Closes the benchmark's pool and drops its database.
async fn drop_bench_database(config: &Config, db: Db, name: &str) -> anyhow::Result<()> {
    db.close().await;
    db::drop_database(&config.database_url(), name).await
}

/// Runs the queue benchmark on a fresh database of the configured server.
pub async fn queue(mut config: Config, args: QueueBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.jobs > 0 && args.concurrency > 0 && args.batch > 0 && args.workers > 0,
        "--jobs, --concurrency, --batch and --workers must be at least 1"
    );
    config.worker.concurrency = args.concurrency;
    config.database.max_connections = args.concurrency + 4;
    let (db, name) = bench_database(&mut config).await?;
    println!(
        "bench queue: {} jobs, concurrency {}, database {name}",
        args.jobs, args.concurrency
    );

    // Baseline: single-row UPDATE transactions, one row per connection.
    let baseline_secs = 5.0;
    let baseline = crate::queries::update_baseline(
        &db,
        args.concurrency,
        Duration::from_secs_f64(baseline_secs),
        true,
    )
    .await?;
    let baseline_rate = baseline as f64 / baseline_secs;
    println!(
        "baseline: {baseline} single-row UPDATE transactions in {baseline_secs:.0} s over {} connections = {baseline_rate:.0} tx/s",
        args.concurrency
    );
    // Not the goal's baseline: what the same transactions do when they
    // do not wait for the disk, as the worker's claims and outcomes.
    let unflushed = crate::queries::update_baseline(
        &db,
        args.concurrency,
        Duration::from_secs_f64(baseline_secs),
        false,
    )
    .await?;
    println!(
        "          the same without waiting for the WAL flush (synchronous_commit = off, as the worker's claims and outcomes) = {:.0} tx/s ({:.0} % of a baseline transaction is waiting for the disk)",
        unflushed as f64 / baseline_secs,
        100.0 * (1.0 - baseline as f64 / unflushed.max(1) as f64)
    );

    let storage_dir = tempfile::tempdir().context("temporary store")?;
    config.storage.root = storage_dir.path().to_path_buf();
    if args.workers > 1 {
        queue_scale_out(&config, &db, &args, baseline_rate).await?;
        copiste::queue::purge(&config).await?;
        return drop_bench_database(&config, db, &name).await;
    }
    let storage = Storage::open(&config.storage)?;
    let app = App::new(config, db.clone(), storage)?;
    let worker = Worker::start(app.clone(), WorkerOptions::from_config(&app)).await?;
    let (elapsed, enqueued_in) = push_noops(&db, &args).await?;
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
            if crate::queries::started(&db, job).await? {
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
    copiste::queue::purge(&app.config).await?;
    drop_bench_database(&app.config, db, &name).await
}

/// Producers, as many as the workers' concurrency, each enqueueing
/// batches of --batch no-op jobs per transaction (one statement); waits
/// until every job of the database is finished. Returns how long it all
/// took and how long the enqueueing took.
async fn push_noops(db: &Db, args: &QueueBenchArgs) -> anyhow::Result<(Duration, Duration)> {
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
                let batch = vec![Noop::default(); n as usize];
                let mut tx = db.begin().await?;
                jobs::enqueue_many(&mut tx, &batch, EnqueueOptions::by("bench")).await?;
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
        if crate::queries::all_finished(db).await? {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "jobs did not finish within 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((started.elapsed(), enqueued_in))
}

/// The same no-op load through 1 `copiste worker` process, then through
/// `--workers` of them; prints both rates side by side.
async fn queue_scale_out(
    config: &Config,
    db: &Db,
    args: &QueueBenchArgs,
    baseline_rate: f64,
) -> anyhow::Result<()> {
    let mut rates = Vec::new();
    for n in [1, args.workers] {
        let workers = WorkerProcesses::start(config, db, n, args.concurrency).await?;
        let (cpu, ticks) = (workers.cpu_secs(), machine_ticks());
        let (elapsed, enqueued_in) = push_noops(db, args).await?;
        let cpu = workers.cpu_secs() - cpu;
        let busy = cores_busy(ticks, machine_ticks(), cores());
        workers.stop().await?;
        let rate = f64::from(args.jobs) / elapsed.as_secs_f64();
        println!(
            "{n} worker process{}: {} no-op jobs in {:.2} s (enqueue took {:.2} s) = {rate:.0} jobs/s, {:.2} of the baseline; the workers used {cpu:.1} CPU s ({:.0} jobs per CPU second), the machine {} of {:.0} cores",
            if n == 1 { "" } else { "es" },
            args.jobs,
            elapsed.as_secs_f64(),
            enqueued_in.as_secs_f64(),
            rate / baseline_rate,
            f64::from(args.jobs) / cpu.max(0.01),
            busy.map_or("?".to_owned(), |b| format!("{b:.1}")),
            cores()
        );
        rates.push(rate);
    }
    println!(
        "scale-out: 1 worker: {:.0} jobs/s | {} workers: {:.0} jobs/s | ratio {:.2}",
        rates[0],
        args.workers,
        rates[1],
        rates[1] / rates[0]
    );
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
    /// Keeps the bench database afterwards (its name is printed), to study
    /// the closure's queries and plans.
    #[arg(long)]
    pub keep_database: bool,
    /// Milliseconds the stub waits before each answer (baseline and
    /// closure alike), as a remote target's network round trip would. 0,
    /// the default, is a target on this machine.
    #[arg(long, default_value_t = 0)]
    pub target_latency_ms: u64,
}

/// Timed rounds of the baseline; it reports their median.
const RAW_ROUNDS: usize = 5;

/// The stub's raw capacity: `copies` grade items with fresh keys, in
/// batches of `batch_size`, `concurrency` requests in flight, through the
/// same HTTP client as the exporter. The requests are the size of the
/// closure's: an exam code as long as `exam`, 12-digit numéros as in the
/// demo dataset, 8-character UAIs. After a warm-up round,
/// [`RAW_ROUNDS`] rounds run, each with fresh keys (another
/// exam code of the same length); returns the median in grades per second.
async fn raw_capacity(
    target: &copiste::config::ExporterConfig,
    label: &str,
    exam: &str,
    copies: u32,
    batch_size: usize,
) -> anyhow::Result<f64> {
    use copiste::export::{Batch, GradeItem, GradesExporter as _, Target, http::HttpTarget};
    use futures::StreamExt as _;

    let client = HttpTarget::new(Target::Cyclades, target)?;
    let concurrency = target.concurrency as usize;
    // Round `r`'s batches: the exam code starts with `R` and the round's
    // digit (`W` for the warm-up), so that no key is another round's or
    // the closure's.
    let batches = |round: char| -> Vec<Batch<GradeItem>> {
        let code: String = ['R', round]
            .into_iter()
            .chain(exam.chars().skip(2))
            .collect();
        let items: Vec<GradeItem> = (0..copies)
            .map(|i| {
                let numero = format!("9999{i:08}");
                GradeItem {
                    key: format!("c:{code}:{numero}:v1"),
                    candidate: numero,
                    grade: Some(f64::from(i % 80) / 4.0),
                    absent: false,
                }
            })
            .collect();
        items
            .chunks(batch_size)
            .map(|chunk| Batch {
                session: crate::demo_data::SESSION_CODE.to_owned(),
                exam: code.clone(),
                establishment: "0000000A".to_owned(),
                items: chunk.to_vec(),
            })
            .collect()
    };
    let send = |batches: Vec<Batch<GradeItem>>| {
        let client = &client;
        async move {
            let failures = futures::stream::iter(batches.iter())
                .map(|b| client.send_grades(b))
                .buffer_unordered(concurrency)
                .filter(|r| futures::future::ready(r.is_err()))
                .count()
                .await;
            anyhow::ensure!(failures == 0, "{failures} baseline requests failed");
            Ok(())
        }
    };
    // A whole round: a shorter one left the first timed round slower.
    send(batches('W')).await?;
    let mut rates = Vec::with_capacity(RAW_ROUNDS);
    let mut requests = 0;
    for round in 0..RAW_ROUNDS {
        let digit = char::from_digit(round as u32, 10).unwrap_or('9');
        let round = batches(digit);
        requests = round.len();
        let started = Instant::now();
        send(round).await?;
        rates.push(f64::from(copies) / started.elapsed().as_secs_f64());
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let rate = sorted[sorted.len() / 2];
    println!(
        "baseline: the {label} stub took {copies} grades in {requests} requests, round by round at {} grades/s: median {rate:.0} grades/s",
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(rate)
}

/// Runs the closure benchmark: a stub target on a loopback port that
/// remembers keys durably in the bench database (as a real target must),
/// its raw capacity for grade batches, then the closure of a ponctuel exam
/// of `--copies` copies against it. The raw capacity of an in-memory stub
/// is printed for reference.
pub async fn closure(mut config: Config, args: ClosureBenchArgs) -> anyhow::Result<()> {
    use crate::stub::{KeyStore, StubTarget};
    use copiste::{closure as domain, config::ExporterKind};

    anyhow::ensure!(
        args.copies > 0 && args.establishments > 0 && args.concurrency > 0 && args.workers > 0,
        "--copies, --establishments, --concurrency and --workers must be at least 1"
    );
    anyhow::ensure!(
        args.copies >= args.establishments,
        "--copies must be at least --establishments"
    );
    config.worker.concurrency = args.workers;
    config.database.max_connections = args.workers + 6;
    let batch_size = config.exports.batch_size as usize;
    let (db, name) = bench_database(&mut config).await?;
    println!(
        "bench closure: {} copies over {} establishments, batches of {batch_size}, {} requests in flight, {} jobs at once, target answering after {} ms, database {name}",
        args.copies, args.establishments, args.concurrency, args.workers, args.target_latency_ms
    );

    let latency = Duration::from_millis(args.target_latency_ms);
    let memory = StubTarget::start(KeyStore::Memory, latency).await?;
    let stub = StubTarget::start(KeyStore::Postgres(db.clone()), latency).await?;
    let mut target = config.exporters.cyclades.clone();
    target.kind = ExporterKind::Http;
    target.concurrency = args.concurrency;
    target.base_url = memory.base_url().parse().context("the stub's URL")?;
    let exam = "BAC26-PHILO";
    let memory_rate = raw_capacity(&target, "in-memory", exam, args.copies, batch_size).await?;
    drop(memory);
    target.base_url = stub.base_url().parse().context("the stub's URL")?;
    let raw_rate = raw_capacity(&target, "durable", exam, args.copies, batch_size).await?;
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
    let imported = copiste::import::import_dir(&db, &storage, &dir, &|_| {}).await?;
    let establishments = db::catalog::exam_establishments(&db, exam, None)
        .await?
        .len();
    println!(
        "dataset:  {} copies (3 exams, {establishments} establishments) generated and imported in {:.1} s",
        imported.copies.inserted,
        started.elapsed().as_secs_f64()
    );

    db.warm_up().await?;
    let app = App::new(config, db.clone(), storage)?;
    let worker = Worker::start(app.clone(), WorkerOptions::from_config(&app)).await?;
    // Warm-up, as for any service measured at its steady state: a few
    // noop jobs register the Redis consumer, and every database
    // connection is opened before the clock starts.
    let mut tx = db.begin().await?;
    let mut warm_up = Vec::new();
    for _ in 0..args.workers {
        let job = jobs::enqueue(&mut tx, &Noop::default(), EnqueueOptions::by("bench")).await?;
        warm_up.push(job.id());
    }
    tx.commit().await?;
    jobs::wait_final(
        &db,
        &warm_up,
        Duration::from_secs(60),
        "the warm-up",
        &|_| {},
    )
    .await?;
    // The closure of the dataset's E3C exam (closed like a ponctuel one)
    // warms the worker as the baseline's first round warms the stub: every
    // statement is prepared on the connections, the ledger's pages are
    // in memory.
    close_exam(&app, "BAC26-E3C-HG").await?;
    let (effects_before, _) = stub.counts();
    let (cpu, ticks) = (cpu_secs("/proc/self/stat"), machine_ticks());
    let started = Instant::now();
    let requested_in = close_exam(&app, exam).await?;
    let elapsed = started.elapsed();
    let cpu = cpu.zip(cpu_secs("/proc/self/stat")).map(|(a, b)| b - a);
    let busy = cores_busy(ticks, machine_ticks(), cores());
    worker.shutdown(Duration::from_secs(5)).await?;
    let status = domain::status::exam_status(&app, &bench_actor(), exam)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
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
    if let Some(cpu) = cpu {
        println!(
            "cpu:      this process (worker and stub) used {cpu:.2} CPU s during the closure = {:.0} copies per CPU second; the machine {} of {:.0} cores",
            closed_copies as f64 / cpu.max(0.01),
            busy.map_or("?".to_owned(), |b| format!("{b:.1}")),
            cores()
        );
    }
    let ratio = rate / raw_rate;
    println!(
        "ratio:    {ratio:.2} of the durable stub's raw capacity (goal >= 0.5) {}; {:.2} of the in-memory stub's",
        if ratio >= 0.5 { "OK" } else { "BELOW GOAL" },
        rate / memory_rate
    );
    copiste::queue::purge(&app.config).await?;
    if args.keep_database {
        println!("database {name} kept");
        db.close().await;
        return Ok(());
    }
    drop_bench_database(&app.config, db, &name).await
}

/// Requests the closure of every establishment of `exam` and waits for
/// its jobs; returns how long the requests took.
async fn close_exam(app: &App, exam: &str) -> anyhow::Result<Duration> {
    let db = &app.db;
    let started = Instant::now();
    let input = copiste::closure::request::UnitsInput::exam(exam);
    let units = copiste::closure::request_closure(app, &bench_actor(), &input)
        .await
        .map_err(|e| anyhow::anyhow!("closure of {exam} refused: {e}"))?;
    let ids: Vec<uuid::Uuid> = units
        .iter()
        .filter_map(|u| u.outcome.as_ref().ok().and_then(|o| o.job()))
        .collect();
    anyhow::ensure!(
        ids.len() == units.len(),
        "some units of {exam} were refused"
    );
    let requested_in = started.elapsed();
    jobs::wait_final(db, &ids, Duration::from_secs(900), "the closure", &|_| {}).await?;
    Ok(requested_in)
}

/// A bench database with one establishment's session imported (generated
/// and imported by child processes) and its ponctuel exam closed, so that
/// every copy is transmitted.
struct TransmittedSession {
    app: App,
    db: Db,
    name: String,
    work: tempfile::TempDir,
    storage: copiste::storage::Storage,
    exam: &'static str,
    uai: copiste::domain::Uai,
}

async fn transmitted_session(
    mut config: Config,
    establishments: u32,
    candidates: u32,
    pages: u32,
    seed: u64,
) -> anyhow::Result<TransmittedSession> {
    use copiste::storage::Storage;
    let (db, name) = bench_database(&mut config).await?;
    let work = tempfile::Builder::new()
        .prefix("copiste-bench-")
        .tempdir_in(std::env::temp_dir())
        .context("temporary directory")?;
    config.storage.root = work.path().join("objects");
    let storage = Storage::open(&config.storage)?;

    let started = Instant::now();
    let dir = work.path().join("session");
    // The generator and the import run in child processes, so that their
    // heaps (which the allocator would keep) are not counted in this
    // process's resident size while zipping.
    let exe = std::env::current_exe().context("locating the copiste binary")?;
    let status = tokio::process::Command::new(&exe)
        .arg("demo-data")
        .arg(&dir)
        .args(["--establishments", &establishments.to_string()])
        .args(["--candidates", &candidates.to_string()])
        .args(["--pages", &pages.to_string()])
        .args(["--seed", &seed.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("running copiste demo-data")?;
    anyhow::ensure!(status.success(), "copiste demo-data failed: {status}");
    let status = tokio::process::Command::new(&exe)
        .arg("import")
        .arg(&dir)
        .env("COPISTE_DATABASE__URL", config.database_url().as_str())
        .env("COPISTE_STORAGE__ROOT", &config.storage.root)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("running copiste import")?;
    anyhow::ensure!(status.success(), "copiste import failed: {status}");
    std::fs::remove_dir_all(&dir).context("removing the generated export")?;
    println!(
        "dataset:  generated and imported (child processes) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Close the exam (outbox) so that its copies are transmitted.
    let exam = "BAC26-PHILO";
    let app = App::new(config, db.clone(), storage.clone())?;
    let worker = Worker::start(app.clone(), WorkerOptions::from_config(&app)).await?;
    let input = copiste::closure::request::UnitsInput::exam(exam);
    let units = copiste::closure::request_closure(&app, &bench_actor(), &input)
        .await
        .map_err(|e| anyhow::anyhow!("closure refused: {e}"))?;
    let ids: Vec<uuid::Uuid> = units
        .iter()
        .filter_map(|u| u.outcome.as_ref().ok().and_then(|o| o.job()))
        .collect();
    jobs::wait_final(&db, &ids, Duration::from_secs(900), "the closure", &|_| {}).await?;
    worker.shutdown(Duration::from_secs(5)).await?;
    let uai = db::catalog::exam_establishments(&db, exam, None)
        .await?
        .into_iter()
        .next()
        .context("no establishment")?;
    Ok(TransmittedSession {
        app,
        db,
        name,
        work,
        storage,
        exam,
        uai,
    })
}

/// Options of `copiste bench render`.
#[derive(Debug, Args)]
pub struct RenderBenchArgs {
    /// Candidates of the establishment.
    #[arg(long, default_value_t = 150)]
    pub candidates: u32,
    /// Scanned pages per copy.
    #[arg(long, default_value_t = 6)]
    pub pages: u32,
    /// Seed of the generated dataset.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `copiste worker` processes to compare with one: above 1, after the
    /// measurements of one zip, every establishment's zip runs as a
    /// `bulk-render` job through 1 worker process, then through N (child
    /// processes).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Establishments of the dataset (default: 1, or 4 per worker process
    /// with --workers above 1).
    #[arg(long)]
    pub establishments: Option<u32>,
    /// Jobs run at once by each worker process (with --workers above 1).
    #[arg(long, default_value_t = 2)]
    pub concurrency: u32,
    /// Measured rounds: each runs the floor, the zip, the whole job and
    /// the raw Python zip once, alternated; figures are their medians.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

/// A run's peak resident size and how much of it the run added, in bytes.
type Rss = (u64, u64);

/// Peak resident memory of this process since the last reset, in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory of this process now, in bytes.
fn current_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak resident memory (Linux: `5` into `clear_refs`).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs the render benchmark: one establishment's zip of PDFs (cover and
/// annotations on) from the local store into the local store, alone and
/// as the whole `bulk-render` job (ledger, in-process worker, claim to
/// download row), against the raw floor (the same scan bytes streamed
/// into a stored zip through the same path) and the same scans zipped raw
/// by Python's `zipfile`, in alternated rounds; and, when installed, the
/// `img2pdf` library in one Python process over all candidates plus a
/// stored zip; with the peak resident memory of each.
pub async fn render(config: Config, args: RenderBenchArgs) -> anyhow::Result<()> {
    use copiste::render::{
        RenderOptions, RequestedOptions,
        zip::{ZipPlan, write_zip},
    };
    let establishments = args.establishments.unwrap_or(if args.workers > 1 {
        4 * args.workers
    } else {
        1
    });
    anyhow::ensure!(
        args.candidates > 0
            && args.pages > 0
            && args.workers > 0
            && args.concurrency > 0
            && establishments > 0,
        "--candidates, --pages, --workers, --concurrency and --establishments must be at least 1"
    );
    println!(
        "bench render: {establishments} establishment(s) x {} candidates x {} pages",
        args.candidates, args.pages
    );
    let TransmittedSession {
        app,
        db,
        name,
        work,
        storage,
        exam,
        uai,
    } = transmitted_session(
        config,
        establishments,
        args.candidates,
        args.pages,
        args.seed,
    )
    .await?;
    println!("store:    {}", storage.describe());
    let rows = db::render::transmitted_copies(&db, exam, uai.as_str()).await?;
    let pages: usize = rows.iter().map(|r| r.page_keys.len()).sum();
    println!(
        "copies:   {} transmitted, {pages} pages; process resident size {:.0} MiB",
        rows.len(),
        current_rss().unwrap_or(0) as f64 / 1048576.0
    );

    let options = RenderOptions::for_exam(
        exam,
        copiste::domain::ExamKind::Ponctuel,
        RequestedOptions::default(),
    )?;
    let progress = |_, _| -> futures::future::BoxFuture<'static, ()> { Box::pin(async {}) };
    // Each run reports the process's peak resident size during the run
    // (the dataset was generated in a child process) and how much of it
    // the run added to the resident size it started from.
    let measure = async |label: &str, raw_scans: bool| -> anyhow::Result<(f64, u64, Option<Rss>)> {
        let resettable = reset_peak_rss();
        let start_rss = current_rss().unwrap_or(0);
        let plan = ZipPlan {
            key_stem: format!("bench/{label}"),
            staging_dir: format!("bench/.staging/{label}"),
            options,
            max_part_bytes: app.config.downloads.max_part_bytes,
        };
        let started = Instant::now();
        let outcome = if raw_scans {
            copiste::render::zip::write_scans_zip(&storage, rows.clone(), &plan, &progress).await?
        } else {
            write_zip(&storage, rows.clone(), &plan, &progress).await?
        };
        let secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            outcome.failures.is_empty(),
            "copies failed: {:?}",
            outcome.failures
        );
        let bytes = outcome.parts.iter().map(|p| p.bytes).sum();
        let peak = peak_rss().map(|peak| (peak, peak.saturating_sub(start_rss)));
        // Each run's zip is deleted before the next: hundreds of MB of
        // dirty pages left behind would be written back to disk during
        // later runs and slow them at random.
        for part in &outcome.parts {
            storage.delete(&part.key).await?;
        }
        Ok((secs, bytes, if resettable { peak } else { None }))
    };
    let mib = |b: Option<Rss>| {
        b.map_or("?".to_owned(), |(peak, added)| {
            format!(
                "{:.0} MiB (+{:.0} MiB)",
                peak as f64 / 1048576.0,
                added as f64 / 1048576.0
            )
        })
    };
    // The whole job: a `bulk-render` job enqueued in the ledger and run by
    // a worker in this process, timed from its claim (`jobs.started_at`)
    // to its download row (`downloads.created_at`), both PostgreSQL's
    // clock; and, for reference, from its enqueue to its final status as
    // the bench sees it.
    let worker = Worker::start(app.clone(), WorkerOptions::from_config(&app)).await?;
    let job = async || -> anyhow::Result<(f64, f64, u64, Option<Rss>)> {
        use copiste::download::BulkRender;
        let resettable = reset_peak_rss();
        let start_rss = current_rss().unwrap_or(0);
        let started = Instant::now();
        let mut tx = db.begin().await?;
        let id = jobs::enqueue(
            &mut tx,
            &BulkRender {
                exam: exam.to_owned(),
                establishment: uai.clone(),
                options,
            },
            EnqueueOptions::by("bench"),
        )
        .await?
        .id();
        tx.commit().await?;
        let counts =
            jobs::wait_final(&db, &[id], Duration::from_secs(900), "the zip job", &|_| {}).await?;
        let wall = started.elapsed().as_secs_f64();
        let peak = peak_rss().map(|peak| (peak, peak.saturating_sub(start_rss)));
        anyhow::ensure!(
            counts
                .iter()
                .all(|(status, _)| *status == copiste::domain::JobStatus::Succeeded),
            "the zip job did not succeed: {counts:?}"
        );
        let row = db::jobs::get(&db, id)
            .await?
            .context("the zip job is gone")?;
        let claimed = row
            .started_at
            .context("a finished job without started_at")?;
        let download = db::render::current_download(&db, exam, uai.as_str(), &options.tag())
            .await?
            .filter(|d| d.job_id == Some(id))
            .context("the zip job wrote no download row")?;
        let secs = (download.created_at - claimed)
            .num_microseconds()
            .context("a job of more than 292 000 years")? as f64
            / 1e6;
        let bytes = row
            .result
            .as_ref()
            .and_then(|r| r["parts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p["bytes"].as_u64())
            .sum();
        // The zip is deleted before the next run (dirty pages).
        for listed in storage.list(copiste::download::DOWNLOADS_PREFIX).await? {
            storage.delete_listed(&listed).await?;
        }
        Ok((secs, wall, bytes, if resettable { peak } else { None }))
    };
    // The same scans zipped raw (stored) by Python's `zipfile`, reading
    // the store's files and writing into the store's folder: the figure
    // of a script, for reference. Timed inside Python (no start-up).
    let python = python_raw_zip(&app.config.storage.root, &rows).await?;
    let python_run = async |round: usize| -> anyhow::Result<Option<f64>> {
        match &python {
            Some(list) => {
                let out = app
                    .config
                    .storage
                    .root
                    .join(format!("bench/python{round}.zip"));
                let secs = run_python_raw_zip(list, &out).await?;
                std::fs::remove_file(&out).context("removing the Python zip")?;
                Ok(Some(secs))
            }
            None => Ok(None),
        }
    };
    // A warm-up pass reads every scan once (page cache) and runs a job
    // (connections opened, statements prepared), then the floor, the
    // render, the job and Python's raw zip alternate; each figure is the
    // median of the rounds.
    measure("warmup", true).await?;
    job().await?;
    let rounds = args.rounds.max(1);
    let mut floors = Vec::new();
    let mut renders = Vec::new();
    let mut job_secs = Vec::new();
    let mut job_walls = Vec::new();
    let mut pythons = Vec::new();
    let (mut floor_bytes, mut zip_bytes, mut job_bytes) = (0, 0, 0);
    let (mut floor_rss, mut rss, mut job_rss) = (None, None, None);
    for round in 0..rounds {
        let (secs, bytes, peak) = measure(&format!("floor{round}"), true).await?;
        floors.push(secs);
        floor_bytes = bytes;
        floor_rss = floor_rss.max(peak);
        let floor_secs = secs;
        let (secs, bytes, peak) = measure(&format!("render{round}"), false).await?;
        renders.push(secs);
        zip_bytes = bytes;
        rss = rss.max(peak);
        let (secs, wall, bytes, peak) = job().await?;
        job_secs.push(secs);
        job_walls.push(wall);
        job_bytes = bytes;
        job_rss = job_rss.max(peak);
        let py = python_run(round).await?;
        if let Some(py) = py {
            pythons.push(py);
        }
        println!(
            "round {}: floor {floor_secs:.3} s, zip {:.3} s, job {secs:.3} s ({:.2} x the floor), python raw {}",
            round + 1,
            renders[round],
            secs / floor_secs,
            py.map_or("-".to_owned(), |p| format!("{p:.3} s"))
        );
    }
    worker.shutdown(Duration::from_secs(5)).await?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    const ROUNDS: &str = "median of the rounds";
    let floor = median(&mut floors);
    let rendered = median(&mut renders);
    let job_median = median(&mut job_secs);
    let job_wall = median(&mut job_walls);
    println!(
        "floor:    scans streamed into a stored zip in {floor:.3} s ({ROUNDS}; {:.0} MB, {:.0} MB/s), peak RSS {}",
        floor_bytes as f64 / 1e6,
        floor_bytes as f64 / 1e6 / floor,
        mib(floor_rss)
    );
    println!(
        "render:   {} PDFs (cover, details, appreciation, annotations) zipped in {rendered:.3} s ({ROUNDS}; {:.0} MB), peak RSS {}",
        rows.len(),
        zip_bytes as f64 / 1e6,
        mib(rss)
    );
    let ratio = rendered / floor;
    println!(
        "ratio:    {ratio:.2} x the floor (goal <= 1.15) {}",
        if ratio <= 1.15 { "OK" } else { "ABOVE GOAL" }
    );
    println!(
        "job:      the bulk-render job, claim to download row, in {job_median:.3} s ({ROUNDS}; {:.0} MB; enqueue to final status {job_wall:.3} s), peak RSS {}",
        job_bytes as f64 / 1e6,
        mib(job_rss)
    );
    let job_ratio = job_median / floor;
    println!(
        "job ratio: {job_ratio:.2} x the floor (goal <= 1.15) {}",
        if job_ratio <= 1.15 {
            "OK"
        } else {
            "ABOVE GOAL"
        }
    );
    if !pythons.is_empty() {
        let py = median(&mut pythons);
        println!(
            "python:   the same scans zipped raw (zipfile, stored) in {py:.3} s ({ROUNDS}); the floor is {:.2} x that, the job {:.2} x",
            floor / py,
            job_median / py
        );
    }
    if let Some((peak, _)) = rss {
        let ok = peak <= 128 * 1024 * 1024;
        println!(
            "memory:   peak RSS of the process while zipping {} (goal <= 128 MiB) {}",
            mib(rss),
            if ok { "OK" } else { "ABOVE GOAL" }
        );
    }
    match img2pdf_pipeline(&storage, &rows, work.path()).await? {
        Some(secs) => {
            let r = rendered / secs;
            println!(
                "img2pdf:  one Python process (img2pdf.convert + zipfile, stored) in {secs:.2} s; copiste takes {r:.2} x that (goal <= 0.8) {}",
                if r <= 0.8 { "OK" } else { "ABOVE GOAL" }
            );
        }
        None => println!("img2pdf:  not installed (pip install img2pdf), comparison skipped"),
    }
    if args.workers > 1 {
        render_scale_out(&app, &args, exam, options).await?;
        copiste::queue::purge(&app.config).await?;
    }
    drop_bench_database(&app.config, db, &name).await
}

/// Every establishment's zip as a `bulk-render` job, through 1 `copiste
/// worker` process, then through `--workers` of them; prints MB/s of zip
/// output and copies/s side by side.
async fn render_scale_out(
    app: &App,
    args: &RenderBenchArgs,
    exam: &str,
    options: copiste::render::RenderOptions,
) -> anyhow::Result<()> {
    use copiste::download::BulkRender;
    let db = &app.db;
    let uais = db::catalog::exam_establishments(db, exam, None).await?;
    let mut rates = Vec::new();
    for n in [1, args.workers] {
        let workers = WorkerProcesses::start(&app.config, db, n, args.concurrency).await?;
        let (cpu, ticks) = (workers.cpu_secs(), machine_ticks());
        let started = Instant::now();
        let mut tx = db.begin().await?;
        let mut ids = Vec::with_capacity(uais.len());
        for uai in &uais {
            let job = BulkRender {
                exam: exam.to_owned(),
                establishment: uai.clone(),
                options,
            };
            ids.push(
                jobs::enqueue(&mut tx, &job, EnqueueOptions::by("bench"))
                    .await?
                    .id(),
            );
        }
        tx.commit().await?;
        let counts =
            jobs::wait_final(db, &ids, Duration::from_secs(900), "the zips", &|_| {}).await?;
        let secs = started.elapsed().as_secs_f64();
        let cpu = workers.cpu_secs() - cpu;
        let busy = cores_busy(ticks, machine_ticks(), cores());
        workers.stop().await?;
        anyhow::ensure!(
            counts
                .iter()
                .all(|(status, _)| *status == copiste::domain::JobStatus::Succeeded),
            "not every zip succeeded: {counts:?}"
        );
        let (mut bytes, mut copies) = (0u64, 0u64);
        for id in &ids {
            let result = db::jobs::get(db, *id)
                .await?
                .and_then(|j| j.result)
                .context("a zip job without a result")?;
            copies += result["copies"].as_u64().unwrap_or(0);
            if let Some(parts) = result["parts"].as_array() {
                bytes += parts
                    .iter()
                    .filter_map(|p| p["bytes"].as_u64())
                    .sum::<u64>();
            }
        }
        // The zips are deleted before the next round (dirty pages).
        for listed in app
            .storage
            .list(copiste::download::DOWNLOADS_PREFIX)
            .await?
        {
            app.storage.delete_listed(&listed).await?;
        }
        let mb = bytes as f64 / 1e6;
        println!(
            "{n} worker process{} ({} jobs at once each): {} zips, {copies} copies, {mb:.0} MB in {secs:.2} s = {:.0} MB/s, {:.0} copies/s; the workers used {cpu:.1} CPU s ({:.0} MB and {:.0} copies per CPU second), the machine {} of {:.0} cores",
            if n == 1 { "" } else { "es" },
            args.concurrency,
            ids.len(),
            mb / secs,
            copies as f64 / secs,
            mb / cpu.max(0.01),
            copies as f64 / cpu.max(0.01),
            busy.map_or("?".to_owned(), |b| format!("{b:.1}")),
            cores()
        );
        rates.push((mb / secs, copies as f64 / secs));
    }
    println!(
        "scale-out: 1 worker: {:.0} MB/s, {:.0} copies/s | {} workers: {:.0} MB/s, {:.0} copies/s | ratio {:.2}",
        rates[0].0,
        rates[0].1,
        args.workers,
        rates[1].0,
        rates[1].1,
        rates[1].0 / rates[0].0
    );
    Ok(())
}

/// What a user would script with the `img2pdf` library: one Python
/// process that converts every candidate's scans (`img2pdf.convert`) and
/// writes each PDF as a stored entry of a zip (`zipfile`), so that the
/// figure measures the work, not one interpreter start per candidate.
/// The scans are read from the store as copiste does; their copy to files
/// is part of the scripted pipeline. `None` when img2pdf is not installed.
async fn img2pdf_pipeline(
    storage: &copiste::storage::Storage,
    rows: &[copiste::db::render::CopyRow],
    work: &std::path::Path,
) -> anyhow::Result<Option<f64>> {
    let installed = tokio::process::Command::new("python3")
        .args(["-c", "import img2pdf"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !installed {
        return Ok(None);
    }
    let dir = work.join("img2pdf");
    std::fs::create_dir_all(&dir).context("img2pdf directory")?;
    let started = Instant::now();
    // One line per candidate: the entry name, then its scans' files,
    // separated by tabs.
    let mut list = String::new();
    for (i, row) in rows.iter().enumerate() {
        if row.page_keys.is_empty() {
            // An absent candidate: nothing to convert.
            continue;
        }
        list.push_str(&format!("{i}.pdf"));
        for (p, key) in row.page_keys.iter().enumerate() {
            let path = dir.join(format!("{i}-{p}.jpg"));
            std::fs::write(&path, storage.get(key).await?).context("writing a scan")?;
            list.push('\t');
            list.push_str(&path.to_string_lossy());
        }
        list.push('\n');
    }
    let list_path = dir.join("candidates.tsv");
    std::fs::write(&list_path, list).context("writing the list of candidates")?;
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(IMG2PDF_SCRIPT)
        .arg(&list_path)
        .arg(dir.join("all.zip"))
        .output()
        .await
        .context("running python3 with img2pdf")?;
    anyhow::ensure!(
        output.status.success(),
        "the img2pdf script failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(Some(started.elapsed().as_secs_f64()))
}

/// Lists the scans of `rows` for [`run_python_raw_zip`] (one line per
/// scan: the entry name, a tab, the store's file) in the local store's
/// root `root`; `None` when `python3` is missing.
async fn python_raw_zip(
    root: &std::path::Path,
    rows: &[copiste::db::render::CopyRow],
) -> anyhow::Result<Option<std::path::PathBuf>> {
    let found = tokio::process::Command::new("python3")
        .args(["-c", "import zipfile"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !found {
        return Ok(None);
    }
    let mut list = String::new();
    for row in rows {
        let stem = copiste::render::zip::entry_name(&row.numero, &row.nom, &row.prenom);
        let stem = stem.trim_end_matches(".pdf");
        for (i, key) in row.page_keys.iter().enumerate() {
            let path = key.split('/').fold(root.to_path_buf(), |p, s| p.join(s));
            list.push_str(&format!("{stem}-{}.jpg\t{}\n", i + 1, path.display()));
        }
    }
    let path = root.join("bench/python-scans.tsv");
    std::fs::create_dir_all(root.join("bench")).context("the bench folder")?;
    std::fs::write(&path, list).context("writing the list of scans")?;
    Ok(Some(path))
}

/// Zips the scans listed in `list` raw (stored) into `out` with Python's
/// `zipfile`; the seconds Python took, interpreter start-up excluded.
async fn run_python_raw_zip(list: &std::path::Path, out: &std::path::Path) -> anyhow::Result<f64> {
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(PYTHON_RAW_SCRIPT)
        .arg(list)
        .arg(out)
        .output()
        .await
        .context("running python3")?;
    anyhow::ensure!(
        output.status.success(),
        "the raw zip script failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("reading the raw zip script's time")
}

/// The raw zip: `python3 -c SCRIPT scans.tsv out.zip`, printing seconds.
const PYTHON_RAW_SCRIPT: &str = r#"
import sys, time, zipfile
started = time.perf_counter()
with open(sys.argv[1]) as lines, zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_STORED) as z:
    for line in lines:
        name, path = line.rstrip("\n").split("\t")
        z.write(path, name)
print(time.perf_counter() - started)
"#;

/// The img2pdf pipeline: `python3 -c SCRIPT candidates.tsv out.zip`.
const IMG2PDF_SCRIPT: &str = r#"
import sys, zipfile, img2pdf
with open(sys.argv[1]) as lines, zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_STORED) as z:
    for line in lines:
        name, *scans = line.rstrip("\n").split("\t")
        z.writestr(name, img2pdf.convert(scans))
"#;

/// The benches act as admin.
fn bench_actor() -> copiste::op::Actor {
    copiste::op::Actor::admin("bench")
}

/// Options of `copiste bench web`.
#[derive(Debug, Args)]
pub struct WebBenchArgs {
    /// Candidates of the establishment.
    #[arg(long, default_value_t = 20)]
    pub candidates: u32,
    /// Scanned pages per copy.
    #[arg(long, default_value_t = 6)]
    pub pages: u32,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Seed of the generated dataset.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Requests per second, 99th percentile latency and bytes per answer of
/// `concurrency` clients asking `url` for `secs`.
async fn load(
    client: &reqwest::Client,
    url: &str,
    credential: &(reqwest::header::HeaderName, String),
    concurrency: usize,
    secs: f64,
) -> anyhow::Result<(f64, Duration, usize)> {
    load_each(client, &[url.to_owned()], credential, concurrency, secs).await
}

/// An access token for `role`, valid an hour, made as the bench.
async fn bench_token(app: &App, role: copiste::access::Role) -> anyhow::Result<String> {
    use copiste::access::{TokenInput, create_token};
    Ok(create_token(
        app,
        &bench_actor(),
        &TokenInput {
            role,
            name: "bench".into(),
            lifetime: Some(chrono::Duration::hours(1)),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?
    .token)
}

/// A second of warm-up, then [`load_each`] for `secs` seconds.
async fn warm_then_load(
    client: &reqwest::Client,
    urls: &[String],
    credential: &(reqwest::header::HeaderName, String),
    concurrency: usize,
    secs: u64,
) -> anyhow::Result<(f64, Duration, usize)> {
    load_each(client, urls, credential, concurrency, 1.0).await?;
    load_each(client, urls, credential, concurrency, secs as f64).await
}

/// Whether a p99 meets its goal, as the benches print it.
fn verdict(p99: Duration, goal_ms: u64) -> &'static str {
    if p99 <= Duration::from_millis(goal_ms) {
        "OK"
    } else {
        "ABOVE GOAL"
    }
}

/// As [`load`], each client asking the URLs in turn (client `i` starts at
/// the `i`-th).
async fn load_each(
    client: &reqwest::Client,
    urls: &[String],
    credential: &(reqwest::header::HeaderName, String),
    concurrency: usize,
    secs: f64,
) -> anyhow::Result<(f64, Duration, usize)> {
    anyhow::ensure!(!urls.is_empty(), "no URL to load");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let urls: std::sync::Arc<[String]> = urls.into();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let (client, urls, credential) = (client.clone(), urls.clone(), credential.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0;
            let mut next = i;
            while Instant::now() < deadline {
                let url = &urls[next % urls.len()];
                next += concurrency;
                let asked = Instant::now();
                let response = client
                    .get(url)
                    .header(credential.0.clone(), &credential.1)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "{url}: {}",
                    response.status()
                );
                bytes = response.bytes().await?.len();
                latencies.push(asked.elapsed());
            }
            anyhow::Ok((latencies, bytes))
        });
    }
    let mut all = Vec::new();
    let mut bytes = 0;
    while let Some(done) = tasks.join_next().await {
        let (latencies, b) = done.context("a load task panicked")??;
        all.extend(latencies);
        bytes = b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let p99 = all
        .get((all.len() * 99 / 100).min(all.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    Ok((all.len() as f64 / elapsed, p99, bytes))
}

/// One copy's PDF through the API against the same bytes served as a
/// static file by the same server, both at `concurrency` requests in
/// flight; prints requests/s, p99 and their ratio (goal >= 0.5).
pub async fn web(config: Config, args: WebBenchArgs) -> anyhow::Result<()> {
    use copiste::{
        access::Role,
        render::{
            RequestedOptions,
            copy::{CopyInput, render_copy},
        },
    };
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    println!(
        "bench web: one copy of {} pages, {} requests in flight, {} s per run",
        args.pages, args.concurrency, args.seconds
    );
    let session = transmitted_session(config, 1, args.candidates, args.pages, args.seed).await?;
    let app = session.app.clone();
    let rows =
        db::render::transmitted_copies(&session.db, session.exam, session.uai.as_str()).await?;
    let numero = rows
        .iter()
        .find(|r| r.page_keys.len() == args.pages as usize)
        .or(rows.first())
        .context("no transmitted copy")?
        .numero
        .clone();
    let token = bench_token(&app, Role::Admin).await?;
    let input = CopyInput {
        exam: session.exam.into(),
        numero: numero.clone(),
        options: RequestedOptions::default(),
    };
    let pdf = render_copy(&app, &bench_actor(), &input)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let file = session.work.path().join("copy.pdf");
    std::fs::write(&file, &pdf).context("writing the static copy")?;
    let router = copiste::web::router(app.clone()).route_service(
        "/bench/copy.pdf",
        tower_http::services::ServeFile::new(&file),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = copiste::tls::http_client()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let api = format!(
        "http://{addr}/api/v1/exams/{}/copies/{numero}/pdf",
        session.exam
    );
    let static_url = format!("http://{addr}/bench/copy.pdf");
    let secs = args.seconds as f64;
    let bearer = (reqwest::header::AUTHORIZATION, format!("Bearer {token}"));
    // Warm-up, then the baseline on both sides of the measured run.
    load(&client, &static_url, &bearer, args.concurrency, 1.0).await?;
    load(&client, &api, &bearer, args.concurrency, 1.0).await?;
    let (static1, static_p99, bytes) =
        load(&client, &static_url, &bearer, args.concurrency, secs).await?;
    let (api_rate, api_p99, api_bytes) =
        load(&client, &api, &bearer, args.concurrency, secs).await?;
    let (static2, _, _) = load(&client, &static_url, &bearer, args.concurrency, secs).await?;
    let baseline = (static1 + static2) / 2.0;
    println!(
        "static:   {baseline:.0} requests/s ({static1:.0} and {static2:.0}), p99 {:.1} ms, {bytes} bytes each",
        static_p99.as_secs_f64() * 1e3
    );
    println!(
        "api:      {api_rate:.0} requests/s, p99 {:.1} ms, {api_bytes} bytes each (token, copy row and scope checked on every request; the PDF rendered once, then from the cache of rendered copies)",
        api_p99.as_secs_f64() * 1e3
    );
    let ratio = api_rate / baseline;
    println!(
        "ratio:    {ratio:.2} of the static file's requests/s (goal >= 0.5) {}",
        if ratio >= 0.5 { "OK" } else { "BELOW GOAL" }
    );
    server.abort();
    drop_bench_database(&app.config, session.db, &session.name).await
}

/// Options of `copiste bench coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorBenchArgs {
    /// Establishments, over two academies (600: 300 per academy).
    #[arg(long, default_value_t = 600)]
    pub establishments: u32,
    /// Candidates per establishment.
    #[arg(long, default_value_t = 4)]
    pub candidates: u32,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds of the measured run.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
}

/// The coordinator's closure page of an exam for an academy of
/// `establishments / 2` establishments, through a logged-in session;
/// prints requests/s and the p99 (goal <= 100 ms).
pub async fn coordinator(mut config: Config, args: CoordinatorBenchArgs) -> anyhow::Result<()> {
    use copiste::access::Role;
    let (db, name) = bench_database(&mut config).await?;
    let work = tempfile::Builder::new()
        .prefix("copiste-bench-")
        .tempdir_in(std::env::temp_dir())
        .context("temporary directory")?;
    config.storage.root = work.path().join("objects");
    let storage = copiste::storage::Storage::open(&config.storage)?;
    let started = Instant::now();
    let dir = work.path().join("session");
    let exe = std::env::current_exe().context("locating the copiste binary")?;
    for (what, command) in [
        (
            "demo-data",
            vec![
                "demo-data".to_owned(),
                dir.display().to_string(),
                "--establishments".into(),
                args.establishments.to_string(),
                "--candidates".into(),
                args.candidates.to_string(),
                "--pages".into(),
                "1".into(),
                "--seed".into(),
                "1".into(),
            ],
        ),
        (
            "import",
            vec!["import".to_owned(), dir.display().to_string()],
        ),
    ] {
        let status = tokio::process::Command::new(&exe)
            .args(&command)
            .env("COPISTE_DATABASE__URL", config.database_url().as_str())
            .env("COPISTE_STORAGE__ROOT", &config.storage.root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .with_context(|| format!("running copiste {what}"))?;
        anyhow::ensure!(status.success(), "copiste {what} failed: {status}");
    }
    println!(
        "dataset:  {} establishments x {} candidates generated and imported in {:.1} s",
        args.establishments,
        args.candidates,
        started.elapsed().as_secs_f64()
    );
    let app = App::new(config, db.clone(), storage)?;
    let exam = "BAC26-PHILO";
    let uai = db::catalog::exam_establishments(&db, exam, None)
        .await?
        .into_iter()
        .next()
        .context("no establishment")?;
    let academy = db::catalog::establishment_academy(&db, uai.as_str())
        .await?
        .context("no academy")?;
    let units = db::catalog::exam_establishments(&db, exam, Some(&academy))
        .await?
        .len();
    let token = bench_token(&app, Role::Coordinator { academy }).await?;
    let router = copiste::web::router(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = copiste::tls::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let login = client
        .post(format!("http://{addr}/connexion"))
        .form(&[("cle", &token)])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no session cookie")?
        .to_owned();
    let session = (reqwest::header::COOKIE, cookie);
    let page = format!("http://{addr}/examens/{exam}");
    let (rate, p99, bytes) =
        warm_then_load(&client, &[page], &session, args.concurrency, args.seconds).await?;
    println!(
        "page:     the coordinator's closure page of {exam} ({units} establishments of its academy, {bytes} bytes): {rate:.0} requests/s, p99 {:.1} ms at {} in flight (goal <= 100 ms) {}",
        p99.as_secs_f64() * 1e3,
        args.concurrency,
        verdict(p99, 100)
    );
    server.abort();
    drop_bench_database(&app.config, db, &name).await
}

/// Options of `copiste bench search`.
#[derive(Debug, Args)]
pub struct SearchBenchArgs {
    /// Candidates of the national catalogue.
    #[arg(long, default_value_t = 700_000)]
    pub candidates: i64,
    /// Establishments they are spread over.
    #[arg(long, default_value_t = 4_600)]
    pub establishments: u32,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds of the measured run.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
}

/// Candidate search at national size: a generated catalogue of
/// `candidates` candidates over `establishments` establishments, searched
/// through the API by `concurrency` clients, each request a random
/// establishment and a random piece of a nom, prénom or numéro typed
/// without accents; prints requests/s and the p99 (goal <= 20 ms).
pub async fn search(mut config: Config, args: SearchBenchArgs) -> anyhow::Result<()> {
    use rand::{Rng as _, SeedableRng as _};

    use copiste::access::Role;
    anyhow::ensure!(
        args.candidates > 0 && args.establishments > 0 && args.concurrency > 0,
        "--candidates, --establishments and --concurrency must be at least 1"
    );
    let (db, name) = bench_database(&mut config).await?;
    let exam = "BENCH-PHILO";
    let uais: Vec<String> = (0..args.establishments)
        .map(|n| copiste::domain::Uai::from_number(100_000 + n).to_string())
        .collect();
    let started = Instant::now();
    crate::queries::national_catalogue(&db, exam, &uais, args.candidates).await?;
    println!(
        "dataset:  {} candidates over {} establishments generated in {:.1} s",
        args.candidates,
        args.establishments,
        started.elapsed().as_secs_f64()
    );
    let work = tempfile::Builder::new()
        .prefix("copiste-bench-")
        .tempdir_in(std::env::temp_dir())
        .context("temporary directory")?;
    config.storage.root = work.path().join("objects");
    let storage = copiste::storage::Storage::open(&config.storage)?;
    let app = App::new(config, db.clone(), storage)?;
    let token = bench_token(&app, Role::Admin).await?;
    // What people type: pieces of names without accents, in any case, or
    // the start of a numéro.
    const TYPED: [&str; 16] = [
        "helene",
        "MART",
        "nguyen",
        "sahin",
        "diaye",
        "lefev",
        "cote",
        "garcia",
        "mael",
        "loic",
        "Da Sil",
        "bel",
        "zoe",
        "N000",
        "anais",
        "ostergaard",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let router = copiste::web::router(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let urls: Vec<String> = (0..4_096)
        .map(|_| {
            let uai = &uais[rng.random_range(0..uais.len())];
            let typed = TYPED[rng.random_range(0..TYPED.len())].replace(' ', "%20");
            format!("http://{addr}/api/v1/exams/{exam}/establishments/{uai}/candidates?q={typed}&limit=20")
        })
        .collect();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = copiste::tls::http_client()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let bearer = (reqwest::header::AUTHORIZATION, format!("Bearer {token}"));
    let (rate, p99, _) =
        warm_then_load(&client, &urls, &bearer, args.concurrency, args.seconds).await?;
    println!(
        "search:   {rate:.0} requests/s, p99 {:.1} ms at {} in flight (goal <= 20 ms) {}",
        p99.as_secs_f64() * 1e3,
        args.concurrency,
        verdict(p99, 20)
    );
    server.abort();
    drop_bench_database(&app.config, db, &name).await
}

/// `copiste worker` processes started from this binary as children, on
/// the bench's database, Redis namespace and store (configured through
/// `COPISTE_*` variables, the rest of the environment inherited). They are
/// killed when this is dropped (an error on the way), and die with the
/// bench if it is killed (Linux: parent-death signal).
struct WorkerProcesses {
    children: Vec<tokio::process::Child>,
}

impl WorkerProcesses {
    /// Starts `n` processes, each running `concurrency` jobs at once, and
    /// waits until each has claimed a job (no-op warm-up jobs).
    async fn start(config: &Config, db: &Db, n: u32, concurrency: u32) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the copiste binary")?;
        let mut processes = Self {
            children: Vec::new(),
        };
        for _ in 0..n {
            let mut command = tokio::process::Command::new(&exe);
            command
                .arg("worker")
                .env("COPISTE_DATABASE__URL", config.database_url().as_str())
                .env(
                    "COPISTE_DATABASE__MAX_CONNECTIONS",
                    (concurrency + 4).to_string(),
                )
                .env("COPISTE_REDIS__URL", config.redis.url.as_str())
                .env("COPISTE_REDIS__NAMESPACE", &config.redis.namespace)
                .env("COPISTE_STORAGE__ROOT", &config.storage.root)
                .env("COPISTE_WORKER__CONCURRENCY", concurrency.to_string())
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true);
            #[cfg(target_os = "linux")]
            // SAFETY: prctl is async-signal-safe and touches only the
            // child's own state, between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            processes
                .children
                .push(command.spawn().context("starting copiste worker")?);
        }
        processes.wait_ready(db).await?;
        Ok(processes)
    }

    /// No-op jobs, a round at a time, until every process has claimed one.
    async fn wait_ready(&mut self, db: &Db) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut seen = std::collections::HashSet::new();
        while seen.len() < self.children.len() {
            for child in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("a copiste worker exited at start: {status}");
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "{} of {} worker processes took jobs within 60 s",
                seen.len(),
                self.children.len()
            );
            let mut tx = db.begin().await?;
            let mut ids = Vec::new();
            for _ in 0..4 * self.children.len() {
                let job =
                    jobs::enqueue(&mut tx, &Noop::default(), EnqueueOptions::by("bench")).await?;
                ids.push(job.id());
            }
            tx.commit().await?;
            jobs::wait_final(db, &ids, Duration::from_secs(60), "the warm-up", &|_| {}).await?;
            for id in ids {
                if let Some(worker) = db::jobs::get(db, id).await?.and_then(|j| j.worker) {
                    seen.insert(worker);
                }
            }
        }
        Ok(())
    }

    /// CPU seconds (user and system) the processes have used so far.
    fn cpu_secs(&self) -> f64 {
        self.children
            .iter()
            .filter_map(|c| c.id())
            .filter_map(|pid| cpu_secs(&format!("/proc/{pid}/stat")))
            .sum()
    }

    /// Stops the processes: SIGTERM, then SIGKILL after 10 s.
    async fn stop(mut self) -> anyhow::Result<()> {
        for child in &self.children {
            if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
                // SAFETY: kill only sends a signal to our own child, which
                // is not reaped yet (its pid cannot have been reused).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                child.start_kill()?;
                child.wait().await?;
            }
        }
        Ok(())
    }
}

/// User and system CPU seconds of the process whose `stat` file is
/// `path` (clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_secs(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The machine's busy and total CPU ticks so far (`/proc/stat`).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// How busy the machine's cores were between two [`machine_ticks`], as
/// a number of cores.
fn cores_busy(before: Option<(u64, u64)>, after: Option<(u64, u64)>, cores: f64) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (before?, after?);
    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64 * cores)
}

/// The machine's cores.
fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}
