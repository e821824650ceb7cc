//! `copiste bench national`: a rehearsal of the national night at a
//! chosen scale, through real `copiste` processes as production runs them.
//!
//! The night, phase by phase: a national-shaped session is generated in
//! the pieced export format ([`crate::demo_data::national`]) and imported
//! by `copiste import`; `copiste worker` processes close the ponctuel and
//! E3C exams when `copiste schedules run nightly-closure` fires the
//! nightly closure, against a stand-in target answering after 20 ms with
//! 1 % of 503s; the harmonised exams are validated in passes by
//! `copiste harmonisation validate`; every establishment's zip of every
//! exam (or of the first `--zip-exams`, where the store has no room for
//! all) is requested by `copiste download request --all` and built;
//! housekeeping runs, as at 03:30; then, as in the morning, a sample of
//! zips is downloaded through `copiste serve` and opened and the pages a
//! national night loads are measured (the largest academy's coordinator
//! page, the admin jobs list, candidate search). Each phase prints one row: wall time, throughput, peak
//! resident memory of every copiste process it ran, the database's and the
//! store's size, and p99 of the pages.
//!
//! The rehearsal fails on any lost or doubled effect: a copy not accepted
//! by the target, a copy or a grader's count accepted twice under two
//! keys, a dead job, a unit not closed, an establishment's zip missing or
//! built twice, a zip whose entries are not its transmitted copies.

use std::{
    fmt::Write as _,
    io::Read as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use clap::Args;

use super::{
    bench_database, bench_token,
    child::{Child, die_with_parent},
    drop_bench_database, load_each,
};
use crate::{
    demo_data::national::{self, EXAMS, NationalOptions, NationalShape},
    queries,
    stub::{KeyStore, StubTarget},
};
use copiste::{access::Role, config::Config, db::Db, domain::ExamKind};

/// Options of `copiste bench national`.
#[derive(Debug, Args)]
pub struct NationalBenchArgs {
    /// 1.0 is the national session (4 600 establishments, 700 000
    /// candidates, 3.5 M copies); 0.01 a smoke run of a few minutes.
    #[arg(long, default_value_t = 0.01)]
    pub scale: f64,
    /// `copiste worker` processes during the closure and the zip night.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// How many of the ten exams the zip night zips for every
    /// establishment, in the order of the session (all by default). The
    /// store takes about 33 KB a zipped copy: at scale 1.0 every exam's
    /// zips need about 115 GB, so a smaller disk zips fewer exams, each
    /// still for every establishment.
    #[arg(long)]
    pub zip_exams: Option<usize>,
    /// Jobs run at once by each worker process.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Distinct small JPEGs the copies' pages are drawn from.
    #[arg(long, default_value_t = 256)]
    pub scan_pool: u32,
    /// Milliseconds the stand-in targets wait before answering.
    #[arg(long, default_value_t = 20)]
    pub target_latency_ms: u64,
    /// One request in this many is answered 503 (100: 1 %).
    #[arg(long, default_value_t = 100)]
    pub fail_one_in: u64,
    /// Zips downloaded through `copiste serve` and opened.
    #[arg(long, default_value_t = 10)]
    pub downloads: i64,
    /// Seconds of load on each page.
    #[arg(long, default_value_t = 5)]
    pub page_seconds: u64,
    /// Requests in flight on the pages.
    #[arg(long, default_value_t = 8)]
    pub page_concurrency: usize,
    /// Directory for the export and the store (default: a temporary
    /// directory under /var/tmp, removed afterwards).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Keeps the database, the export and the store afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Seed of the generated session.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Bytes a copy takes, measured at scale 0.01 (2026-12-06: 60 MB of
/// database, 1.1 GB of store, 22 MB of export for 35 000 copies) and
/// rounded up: in the database (rows, indexes, ledger), in the store
/// (its PDF in its establishment's zip: a cover and one to three small
/// scans of ~17 KB) and in the export (JSON).
const DATABASE_BYTES_PER_COPY: f64 = 2_000.0;
const STORE_BYTES_PER_COPY: f64 = 33_000.0;
const EXPORT_BYTES_PER_COPY: f64 = 1_000.0;

/// The longest a phase may take before the rehearsal gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// One row of the table.
struct Row {
    phase: &'static str,
    wall: Duration,
    throughput: String,
    rss: String,
    database_bytes: i64,
    store_bytes: u64,
    p99: String,
}

/// Runs the rehearsal; see the module's documentation.
pub async fn national(mut config: Config, args: NationalBenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.workers > 0 && args.concurrency > 0 && args.page_concurrency > 0,
        "--workers, --concurrency and --page-concurrency must be at least 1"
    );
    let opts = NationalOptions {
        scale: args.scale,
        scan_pool: args.scan_pool,
        seed: args.seed,
    };
    let shape = NationalShape::draw(&opts)?;
    let zip_exams = args.zip_exams.unwrap_or(EXAMS.len());
    ensure!(
        (1..=EXAMS.len()).contains(&zip_exams),
        "--zip-exams must be between 1 and {} (the session's exams), not {zip_exams}",
        EXAMS.len()
    );
    config.database.max_connections = 8;
    let (db, name) = bench_database(&mut config).await?;
    let work = match &args.work {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Work::Kept(dir.clone())
        }
        None => Work::Temporary(
            tempfile::Builder::new()
                .prefix("copiste-national-")
                .tempdir_in("/var/tmp")
                .context("temporary directory")?,
        ),
    };
    let root = work.path().to_path_buf();
    config.storage.root = root.join("objects");
    println!(
        "bench national: scale {} = {} establishments in {} academies, {} candidates, {} copies of {} exams; {} worker processes x {} jobs; targets answer after {} ms, 1 request in {} gets a 503; database {name}, work {}",
        args.scale,
        shape.establishments.len(),
        national::ACADEMIES,
        shape.candidates(),
        shape.copies(),
        EXAMS.len(),
        args.workers,
        args.concurrency,
        args.target_latency_ms,
        args.fail_one_in,
        root.display()
    );
    // Every candidate sits one exam of each pair, so the exams hold about
    // as many copies each.
    let zipped_copies = shape.copies() * zip_exams as u64 / EXAMS.len() as u64;
    check_room(&db, &root, shape.copies(), zipped_copies).await?;

    let stub = StubTarget::start_failing(
        KeyStore::Memory,
        Duration::from_millis(args.target_latency_ms),
        Some(args.fail_one_in),
    )
    .await?;
    let serve_port = free_port()?;
    let env = ChildEnv::new(&config, &stub.base_url(), serve_port, &root);
    let night = Night {
        env,
        db: db.clone(),
        args: &args,
        root: root.clone(),
        config: &config,
    };
    let result = night.run(&opts, &shape, &stub).await;
    copiste::queue::purge(&config).await?;
    if args.keep {
        println!("kept: database {name}, work {}", root.display());
        work.keep();
        db.close().await;
    } else {
        drop_bench_database(&config, db, &name).await?;
    }
    result
}

/// The work directory: temporary (removed when dropped) or given.
enum Work {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl Work {
    fn path(&self) -> &Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Kept(dir) => dir,
        }
    }

    /// Leaves a temporary directory in place.
    fn keep(self) {
        if let Self::Temporary(dir) = self {
            let _kept = dir.keep();
        }
    }
}

/// The rehearsal's state while it runs its phases.
struct Night<'a> {
    env: ChildEnv,
    db: Db,
    args: &'a NationalBenchArgs,
    root: PathBuf,
    config: &'a Config,
}

impl Night<'_> {
    async fn run(
        &self,
        opts: &NationalOptions,
        shape: &NationalShape,
        stub: &StubTarget,
    ) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        let export = self.root.join("export");

        // 1. The export, written one establishment at a time.
        let started = Instant::now();
        let (dir, o, s) = (export.clone(), opts.clone(), shape.clone());
        let written = tokio::task::spawn_blocking(move || national::write_pieced(&dir, &o, &s))
            .await
            .context("the generator panicked")??;
        rows.push(Row {
            phase: "generate (in the bench)",
            wall: started.elapsed(),
            throughput: format!(
                "{} copies, {}",
                written.copies,
                per_second(written.copies as f64, started.elapsed(), "copies")
            ),
            rss: "-".into(),
            database_bytes: 0,
            store_bytes: dir_bytes(&export),
            p99: "-".into(),
        });
        self.print_last(&rows);

        // 2. The import.
        let started = Instant::now();
        let import = self
            .env
            .run("import", &["import", &export.display().to_string()])
            .await?;
        let figures = queries::national_figures(&self.db).await?;
        ensure!(
            figures.copies as u64 == shape.copies()
                && figures.candidates as u64 == shape.candidates(),
            "the import lost rows: {} copies and {} candidates in the database, {} and {} in the export",
            figures.copies,
            figures.candidates,
            shape.copies(),
            shape.candidates()
        );
        rows.push(self.row(
            "import",
            started,
            per_second(figures.copies as f64, started.elapsed(), "copies"),
            format!("import {}", mib(import)),
            &figures,
        ));
        self.print_last(&rows);

        // 3. The nightly closure of the ponctuel and E3C exams.
        let started = Instant::now();
        let workers = self
            .env
            .start_workers(self.args.workers, self.args.concurrency)?;
        let jobs_dir = self.root.join("jobs");
        std::fs::create_dir_all(&jobs_dir).context("creating the schedules' folder")?;
        std::fs::write(jobs_dir.join("nightly-closure.toml"), NIGHTLY_CLOSURE)
            .context("writing the nightly closure's schedule")?;
        self.env
            .run(
                "schedules run",
                &[
                    "schedules",
                    "run",
                    "nightly-closure",
                    "--dir",
                    &jobs_dir.display().to_string(),
                ],
            )
            .await?;
        self.wait_idle("the nightly closure").await?;
        let rss = stop_all(workers).await?;
        let figures = queries::national_figures(&self.db).await?;
        let closed_exams = EXAMS.iter().filter(|e| e.2 != ExamKind::Harmonised).count();
        let expected = shape.copies() * closed_exams as u64 / EXAMS.len() as u64;
        self.check_effects(stub, "the nightly closure")?;
        ensure!(
            figures.transmitted as u64 == expected,
            "the nightly closure transmitted {} copies, not the {expected} of the ponctuel and E3C exams",
            figures.transmitted
        );
        rows.push(self.row(
            "nightly closure",
            started,
            per_second(figures.transmitted as f64, started.elapsed(), "copies"),
            rss,
            &figures,
        ));
        self.print_last(&rows);

        // 4. Harmonisation: a first pass of half the largest academy's
        // copies, then every copy of every academy.
        let started = Instant::now();
        let before = figures.transmitted;
        let workers = self
            .env
            .start_workers(self.args.workers, self.args.concurrency)?;
        let academy = shape.largest_academy();
        let mut rss_runs = Vec::new();
        for (exam, _, _) in EXAMS.iter().filter(|e| e.2 == ExamKind::Harmonised) {
            let list = self.root.join(format!("{exam}.numeros"));
            let numeros = self.half_of_academy(exam, &academy).await?;
            std::fs::write(&list, numeros.join("\n")).context("writing a list of numéros")?;
            let list = list.display().to_string();
            rss_runs.push(
                self.env
                    .run(
                        "harmonisation validate",
                        &[
                            "harmonisation",
                            "validate",
                            "--exam",
                            exam,
                            "--academy",
                            &academy,
                            "--copies",
                            &list,
                        ],
                    )
                    .await?,
            );
            self.wait_idle("a harmonisation pass").await?;
            rss_runs.push(
                self.env
                    .run(
                        "harmonisation validate",
                        &["harmonisation", "validate", "--exam", exam, "--all"],
                    )
                    .await?,
            );
            self.wait_idle("a harmonisation pass").await?;
        }
        let rss = stop_all(workers).await?;
        let figures = queries::national_figures(&self.db).await?;
        self.check_effects(stub, "the harmonisation")?;
        ensure!(
            figures.transmitted as u64 == shape.copies(),
            "after harmonisation {} copies are transmitted, not all {}",
            figures.transmitted,
            shape.copies()
        );
        rows.push(self.row(
            "harmonisation passes",
            started,
            per_second(
                (figures.transmitted - before) as f64,
                started.elapsed(),
                "copies",
            ),
            format!(
                "{rss}; validate {}",
                mib(rss_runs.iter().copied().max().unwrap_or(0))
            ),
            &figures,
        ));
        self.print_last(&rows);

        // 5. The zip night: every establishment's zip of every exam (or
        // of the first `--zip-exams`).
        let started = Instant::now();
        let zipped: Vec<String> = EXAMS
            .iter()
            .take(self.args.zip_exams.unwrap_or(EXAMS.len()))
            .map(|e| e.0.to_owned())
            .collect();
        let workers = self
            .env
            .start_workers(self.args.workers, self.args.concurrency)?;
        let mut request_rss = 0;
        let mut requested_in = Duration::ZERO;
        for exam in &zipped {
            let asked = Instant::now();
            request_rss = request_rss.max(
                self.env
                    .run(
                        "download request --all",
                        &["download", "request", "--exam", exam, "--all"],
                    )
                    .await?,
            );
            requested_in += asked.elapsed();
        }
        self.wait_idle("the zip night").await?;
        let rss = stop_all(workers).await?;
        let figures = queries::national_figures(&self.db).await?;
        let checks = queries::zip_checks(&self.db, &zipped).await?;
        ensure!(
            checks.units_without_zip == 0,
            "{} (exam, establishment) units with transmitted copies have no zip",
            checks.units_without_zip
        );
        ensure!(
            figures.doubled_downloads == 0,
            "{} (exam, establishment) zips were built twice",
            figures.doubled_downloads
        );
        ensure!(
            figures.download_copies == checks.transmitted,
            "the zips hold {} copies, not the {} transmitted copies of {} exams",
            figures.download_copies,
            checks.transmitted,
            zipped.len()
        );
        rows.push(self.row(
            "zip night",
            started,
            format!(
                "{} zips of {} exams, {}; requests {:.1} s",
                figures.downloads,
                zipped.len(),
                per_second(figures.download_bytes as f64 / 1e6, started.elapsed(), "MB"),
                requested_in.as_secs_f64()
            ),
            format!("{rss}; request {}", mib(request_rss)),
            &figures,
        ));
        self.print_last(&rows);

        // 6. Housekeeping, as at 03:30: after the night, before the
        // morning's pages (it analyses the tables the night wrote).
        let started = Instant::now();
        let workers = self.env.start_workers(1, self.args.concurrency)?;
        std::fs::write(jobs_dir.join("housekeeping.toml"), HOUSEKEEPING)
            .context("writing the housekeeping schedule")?;
        self.env
            .run(
                "schedules run",
                &[
                    "schedules",
                    "run",
                    "housekeeping",
                    "--dir",
                    &jobs_dir.display().to_string(),
                ],
            )
            .await?;
        self.wait_idle("housekeeping").await?;
        let rss = stop_all(workers).await?;
        let (_, _, longest) = queries::job_runs(&self.db, "housekeeping").await?;
        let figures = queries::national_figures(&self.db).await?;
        rows.push(self.row(
            "housekeeping",
            started,
            format!("job ran {:.2} s", longest / 1000.0),
            rss,
            &figures,
        ));
        self.print_last(&rows);

        // 7. Downloads and pages through `copiste serve`, in the morning.
        let serve = self.env.start_serve()?;
        let outcome = self.front_door(&mut rows, &figures).await;
        let serve_rss = stop_all(vec![serve]).await?;
        outcome?;
        if let Some(last) = rows.last_mut() {
            last.rss = serve_rss;
        }
        self.print_last(&rows);

        let (effects, duplicates) = stub.counts();
        let (requests, failed) = stub.requests();
        println!();
        println!("{}", table(&rows));
        println!(
            "effects: {effects} items took effect at the targets, {duplicates} answered duplicate, 0 twice; {failed} of {requests} requests answered 503 and were retried; {} job events; jobs: {}",
            figures.job_events,
            figures
                .jobs
                .iter()
                .map(|(k, s, n)| format!("{k} {s} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("result: OK, nothing lost or doubled");
        Ok(())
    }

    /// The sample of downloads, then the pages under load.
    async fn front_door(
        &self,
        rows: &mut Vec<Row>,
        figures: &queries::NationalFigures,
    ) -> anyhow::Result<()> {
        let base = format!("http://127.0.0.1:{}", self.env.serve_port);
        let client = copiste::tls::http_client()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(self.args.page_concurrency)
            .build()?;
        wait_healthy(&client, &base).await?;

        let started = Instant::now();
        let mut bytes = 0u64;
        let sample = queries::sample_downloads(&self.db, self.args.downloads).await?;
        for (exam, uai, _, copies) in &sample {
            let transmitted = queries::transmitted_count(&self.db, exam, uai).await?;
            ensure!(
                i64::from(*copies) == transmitted,
                "the zip of {exam} for {uai} holds {copies} copies, not the {transmitted} transmitted"
            );
            let links = self.env.links(exam, uai).await?;
            ensure!(!links.is_empty(), "no link for the zip of {exam} for {uai}");
            let mut pdfs = 0;
            for url in links {
                let body = client
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .with_context(|| format!("downloading {url}"))?
                    .bytes()
                    .await?;
                bytes += body.len() as u64;
                pdfs += pdf_entries(&body).with_context(|| format!("opening {url}"))?;
            }
            ensure!(
                pdfs == i64::from(*copies),
                "the zip of {exam} for {uai} has {pdfs} PDFs, not {copies}"
            );
        }
        rows.push(self.row(
            "downloads (sample)",
            started,
            format!(
                "{} zips, {}",
                sample.len(),
                per_second(bytes as f64 / 1e6, started.elapsed(), "MB")
            ),
            String::new(),
            figures,
        ));

        // The pages a national night loads.
        let app = copiste::app::App::new(
            self.config.clone(),
            self.db.clone(),
            copiste::storage::Storage::open(&self.config.storage)?,
        )?;
        let academy = self.largest_academy_code().await?;
        let coordinator = session_cookie(
            &client,
            &base,
            &bench_token(&app, Role::Coordinator { academy }).await?,
        )
        .await?;
        let admin_token = bench_token(&app, Role::Admin).await?;
        let admin = session_cookie(&client, &base, &admin_token).await?;
        let harmonised = EXAMS
            .iter()
            .find(|e| e.2 == ExamKind::Harmonised)
            .map_or("", |e| e.0);
        let search: Vec<String> = sample
            .iter()
            .flat_map(|(exam, uai, _, _)| {
                ["mart", "lea", "26000", "nguyen"].map(|q| {
                    format!(
                        "{base}/api/v1/exams/{exam}/establishments/{uai}/candidates?q={q}&limit=20"
                    )
                })
            })
            .collect();
        let bearer = (
            reqwest::header::AUTHORIZATION,
            format!("Bearer {admin_token}"),
        );
        let secs = self.args.page_seconds as f64;
        let n = self.args.page_concurrency;
        let mut p99s = Vec::new();
        let started = Instant::now();
        for (what, urls, credential, goal) in [
            (
                "coordinator page",
                vec![format!("{base}/examens/{harmonised}")],
                &coordinator,
                100,
            ),
            (
                "admin jobs list",
                vec![format!("{base}/travaux")],
                &admin,
                100,
            ),
            ("candidate search", search, &bearer, 20),
        ] {
            load_each(&client, &urls, credential, n, 1.0).await?;
            let (rate, p99, _) = load_each(&client, &urls, credential, n, secs).await?;
            p99s.push(format!(
                "{what} {:.1} ms ({rate:.0}/s, goal {goal} ms {})",
                p99.as_secs_f64() * 1e3,
                super::verdict(p99, goal)
            ));
        }
        rows.push(self.row(
            "pages under load",
            started,
            format!("{n} in flight"),
            String::new(),
            figures,
        ));
        if let Some(last) = rows.last_mut() {
            last.p99 = p99s.join("; ");
        }
        Ok(())
    }

    /// Fails on an effect taken twice at the targets.
    fn check_effects(&self, stub: &StubTarget, phase: &str) -> anyhow::Result<()> {
        // A grade is keyed by its copy's version; no copy changes during
        // the night, so a copy with two accepted grades took effect twice.
        let doubled = stub.doubled_subjects("c:");
        ensure!(
            doubled == 0,
            "{phase}: {doubled} copies' grades took effect twice at the targets"
        );
        Ok(())
    }

    /// Half the numéros of an academy's candidates of `exam`.
    async fn half_of_academy(&self, exam: &str, academy: &str) -> anyhow::Result<Vec<String>> {
        let numeros = queries::academy_numeros(&self.db, exam, academy).await?;
        Ok(numeros.into_iter().step_by(2).collect())
    }

    async fn largest_academy_code(&self) -> anyhow::Result<String> {
        queries::largest_academy(&self.db)
            .await?
            .context("the session has no academy")
    }

    /// Waits until no job is queued or running, then fails on dead jobs.
    async fn wait_idle(&self, what: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        // The command that enqueued has exited: its jobs are committed.
        while !queries::all_finished(&self.db).await? {
            ensure!(
                started.elapsed() < PHASE_LIMIT,
                "{what} did not finish within {} s",
                PHASE_LIMIT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let figures = queries::national_figures(&self.db).await?;
        let dead: Vec<String> = figures
            .jobs
            .iter()
            .filter(|(_, status, _)| status == "dead" || status == "failed")
            .map(|(kind, status, n)| format!("{n} {kind} {status}"))
            .collect();
        if !dead.is_empty() {
            bail!("{what} left jobs that did not succeed: {}", dead.join(", "));
        }
        Ok(())
    }

    fn row(
        &self,
        phase: &'static str,
        started: Instant,
        throughput: String,
        rss: String,
        figures: &queries::NationalFigures,
    ) -> Row {
        Row {
            phase,
            wall: started.elapsed(),
            throughput,
            rss,
            database_bytes: figures.database_bytes,
            store_bytes: dir_bytes(&self.root.join("objects")),
            p99: "-".into(),
        }
    }

    fn print_last(&self, rows: &[Row]) {
        if let Some(row) = rows.last() {
            println!(
                "{:<24} {:>8.1} s  {}  | rss {} | db {} | store {}",
                row.phase,
                row.wall.as_secs_f64(),
                row.throughput,
                row.rss,
                human(row.database_bytes as f64),
                human(row.store_bytes as f64)
            );
        }
    }
}

/// The nightly closure's schedule, as shipped in `jobs/`.
const NIGHTLY_CLOSURE: &str = r#"name = "nightly-closure"
cron = "0 0 2 * * *"
timezone = "Europe/Paris"
kind = "nightly-closure"
enabled = true
"#;

/// The housekeeping schedule, as shipped in `jobs/`.
const HOUSEKEEPING: &str = r#"name = "housekeeping"
cron = "0 30 3 * * *"
timezone = "Europe/Paris"
kind = "housekeeping"
enabled = true
"#;

/// How the rehearsal's child processes are configured: the bench's
/// database, Redis namespace and store, the stand-in targets, a short
/// retry backoff (seconds instead of minutes: the night is compressed, not
/// its rules), and `copiste serve`'s address and signing key.
struct ChildEnv {
    exe: PathBuf,
    vars: Vec<(&'static str, String)>,
    serve_port: u16,
}

impl ChildEnv {
    fn new(config: &Config, target: &str, serve_port: u16, root: &Path) -> Self {
        let vars = vec![
            ("COPISTE_DATABASE__URL", config.database_url().to_string()),
            ("COPISTE_DATABASE__MAX_CONNECTIONS", "12".into()),
            ("COPISTE_REDIS__URL", config.redis.url.to_string()),
            ("COPISTE_REDIS__NAMESPACE", config.redis.namespace.clone()),
            ("COPISTE_STORAGE__KIND", "local".into()),
            (
                "COPISTE_STORAGE__ROOT",
                root.join("objects").display().to_string(),
            ),
            ("COPISTE_EXPORTERS__CYCLADES__KIND", "http".into()),
            ("COPISTE_EXPORTERS__CYCLADES__BASE_URL", target.to_owned()),
            ("COPISTE_EXPORTERS__IMAGIN__KIND", "http".into()),
            ("COPISTE_EXPORTERS__IMAGIN__BASE_URL", target.to_owned()),
            ("COPISTE_JOBS__BACKOFF_BASE_SECS", "1".into()),
            ("COPISTE_JOBS__BACKOFF_MAX_SECS", "4".into()),
            (
                "COPISTE_DOWNLOADS__PUBLIC_BASE_URL",
                format!("http://127.0.0.1:{serve_port}/"),
            ),
            (
                "COPISTE_DOWNLOADS__SIGNING_KEY",
                "national-rehearsal-signing-key-0123456789".into(),
            ),
            (
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ];
        Self {
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("copiste")),
            vars,
            serve_port,
        }
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(&self.exe);
        command
            .args(args)
            .envs(self.vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("COPISTE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        die_with_parent(&mut command);
        command
    }

    /// Runs a command to its end; fails unless it succeeds. Returns its
    /// peak resident size in bytes.
    async fn run(&self, what: &str, args: &[&str]) -> anyhow::Result<u64> {
        let child = Child::spawn(what, self.command(args))?;
        let (code, rss) = child.wait().await?;
        ensure!(code == 0, "copiste {} exited with {code}", args.join(" "));
        Ok(rss)
    }

    fn start_workers(&self, n: u32, concurrency: u32) -> anyhow::Result<Vec<Child>> {
        (0..n)
            .map(|_| {
                let mut command = self.command(&["worker"]);
                command.env("COPISTE_WORKER__CONCURRENCY", concurrency.to_string());
                Child::spawn("worker", command)
            })
            .collect()
    }

    fn start_serve(&self) -> anyhow::Result<Child> {
        let listen = format!("127.0.0.1:{}", self.serve_port);
        Child::spawn("serve", self.command(&["serve", "--listen", &listen]))
    }

    /// The links of a zip, from `copiste download link --json`.
    async fn links(&self, exam: &str, uai: &str) -> anyhow::Result<Vec<String>> {
        let mut command = self.command(&[
            "download",
            "link",
            "--exam",
            exam,
            "--establishment",
            uai,
            "--json",
        ]);
        command.stdout(Stdio::piped());
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .context("waiting for copiste download link")?
            .context("running copiste download link")?;
        ensure!(
            output.status.success(),
            "copiste download link failed: {}",
            output.status
        );
        let value: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("reading the links")?;
        Ok(value["links"]
            .as_array()
            .map(|links| {
                links
                    .iter()
                    .filter_map(|l| l["url"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Stops every process; returns their peak resident sizes, e.g.
/// `worker 81 MiB, worker 79 MiB`.
async fn stop_all(children: Vec<Child>) -> anyhow::Result<String> {
    let mut sizes = Vec::new();
    for child in children {
        let what = child.what.clone();
        sizes.push(format!("{what} {}", mib(child.stop().await?)));
    }
    Ok(sizes.join(", "))
}

/// Logs in with a token; returns the session cookie as a header.
async fn session_cookie(
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> anyhow::Result<(reqwest::header::HeaderName, String)> {
    let login = client
        .post(format!("{base}/connexion"))
        .header(reqwest::header::ORIGIN, base)
        .form(&[("cle", token)])
        .send()
        .await
        .context("logging in")?;
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .with_context(|| format!("no session cookie at login ({})", login.status()))?
        .to_owned();
    Ok((reqwest::header::COOKIE, cookie))
}

/// Waits until `copiste serve` answers /healthz.
async fn wait_healthy(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "copiste serve did not answer within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PDF entries of a zip part.
fn pdf_entries(bytes: &[u8]) -> anyhow::Result<i64> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).context("not a zip")?;
    let mut pdfs = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let name = entry.name().context("an entry's name")?.into_owned();
        if name.ends_with(".pdf") {
            let mut head = [0u8; 5];
            entry.read_exact(&mut head).context("reading an entry")?;
            ensure!(&head == b"%PDF-", "{name} is not a PDF");
            pdfs += 1;
        }
    }
    Ok(pdfs)
}

/// Refuses to start when the disks of the work directory or of the
/// database cannot hold the session at this scale.
/// `zipped` of the `copies` are zipped.
async fn check_room(db: &Db, work: &Path, copies: u64, zipped: u64) -> anyhow::Result<()> {
    let (copies, zipped) = (copies as f64, zipped as f64);
    let database = copies * DATABASE_BYTES_PER_COPY;
    let files = zipped * STORE_BYTES_PER_COPY + copies * EXPORT_BYTES_PER_COPY;
    let mut needs = vec![(work.to_path_buf(), files)];
    if let Some(dir) = queries::data_directory(db).await {
        needs.push((PathBuf::from(dir), database));
    }
    println!(
        "room:     about {} for the database and {} for the export and the store",
        human(database),
        human(files)
    );
    // Both on one disk: their sum must fit.
    let mut by_disk: Vec<(u64, f64, u64)> = Vec::new();
    for (path, bytes) in needs {
        let Some((device, free)) = disk(&path) else {
            continue;
        };
        match by_disk.iter_mut().find(|(d, _, _)| *d == device) {
            Some(entry) => entry.1 += bytes,
            None => by_disk.push((device, bytes, free)),
        }
    }
    for (_, needed, free) in by_disk {
        ensure!(
            needed * 1.2 < free as f64,
            "not enough room: this scale needs about {} and {} is free",
            human(needed),
            human(free as f64)
        );
    }
    Ok(())
}

/// The device of a path and the bytes free on it.
fn disk(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let device = std::fs::metadata(path).ok()?.dev();
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain data filled by the call for a valid,
    // NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some((device, stat.f_bavail * stat.f_frsize))
}

/// A free loopback port for `copiste serve`.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn per_second(amount: f64, elapsed: Duration, unit: &str) -> String {
    format!("{:.0} {unit}/s", amount / elapsed.as_secs_f64().max(1e-3))
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

fn human(bytes: f64) -> String {
    if bytes >= 1e9 {
        format!("{:.1} GB", bytes / 1e9)
    } else {
        format!("{:.0} MB", bytes / 1e6)
    }
}

/// The rows as a Markdown table, for docs/performance.md.
fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| phase | wall | throughput | peak RSS | Postgres | store | p99 |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.1} s | {} | {} | {} | {} | {} |",
            r.phase,
            r.wall.as_secs_f64(),
            r.throughput,
            if r.rss.is_empty() { "-" } else { &r.rss },
            human(r.database_bytes as f64),
            human(r.store_bytes as f64),
            r.p99
        );
    }
    out
}
