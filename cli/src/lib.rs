//! The command line of the `copiste` binary: one clap subcommand per role
//! or admin task. Each command parses its arguments, builds what it needs
//! and calls the library (or the tools crate); nothing here is logic worth testing on its own.

mod closure;
pub mod demo;
mod download;
mod jobs;
mod render;
mod schedule;
mod serve;
mod tokens;

pub use schedule::print_schedules;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use copiste::{
    app::App,
    config::Config,
    db::Db,
    op::OpError,
    storage::Storage,
    worker::{Worker, WorkerOptions},
};

/// The exit codes of every command, shown by `--help` (and in README).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  internal error (database, store, a bug): nothing the caller did wrong
  2  invalid input (the message names the field)
  3  not found (an exam, establishment, candidate, job or schedule)
  4  forbidden for who asks
  5  refused by a rule (published exam, harmonised exam, ungraded copies, E3C switches…)
  6  conflict with the current state (e.g. retrying a job that is running)";

/// copiste: close graded exams, export grades, render and deliver copies.
#[derive(Debug, Parser)]
#[command(name = "copiste", version, about, long_about = None, propagate_version = true,
          after_help = EXIT_CODES)]
pub struct Cli {
    /// A configuration file merged over the defaults (environment
    /// variables COPISTE_… still win).
    #[arg(long, global = true, env = "COPISTE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on standard error (default: the setting log.format,
    /// i.e. COPISTE_LOG__FORMAT, or text).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

pub use copiste::config::LogFormat;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations.
    Migrate,
    /// Print the effective configuration (secrets redacted).
    Config,
    /// Import a session export (manifest.json + JPEG scans).
    Import(ImportArgs),
    /// Write a synthetic session export in the import format.
    DemoData(DemoDataArgs),
    /// Run a worker: deliver, claim and run jobs until SIGTERM/SIGINT.
    Worker(WorkerArgs),
    /// Inspect and manage jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Close exams: run, relaunch and follow closures.
    #[command(subcommand)]
    Closure(closure::ClosureCommand),
    /// Record Cyclades' publication of an exam's results.
    Publish(closure::PublishArgs),
    /// Make, list and revoke the access tokens of the HTTP API and pages.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Harmonised exams: the academic coordinator's validations.
    #[command(subcommand)]
    Harmonisation(closure::HarmonisationCommand),
    /// Render transmitted copies.
    #[command(subcommand)]
    Render(render::RenderCommand),
    /// Find candidates.
    #[command(subcommand)]
    Candidates(render::CandidatesCommand),
    /// Zips of an establishment's copies, and their links.
    #[command(subcommand)]
    Download(download::DownloadCommand),
    /// Serve the web pages, the JSON API (/api/v1/, /api/openapi.json), the
    /// local store's download links (/downloads/{token}), /metrics, /healthz
    /// and /readyz.
    Serve(serve::ServeArgs),
    /// Run the scheduler: enqueue each schedule's slots until SIGTERM.
    Scheduler(schedule::SchedulerArgs),
    /// Exit 0 when a URL answers 2xx (the container's health check).
    Probe(ProbeArgs),
    /// Inspect schedules, or run one now.
    #[command(subcommand)]
    Schedules(schedule::SchedulesCommand),
    /// Run the demo end to end on the configured (or throwaway) services.
    Demo(DemoArgs),
    /// Benchmarks (use a release build).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a command with PostgreSQL and Redis available, starting
    /// throwaway ones if the configured ones do not answer.
    WithServices(WithServicesArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Directory holding manifest.json and the scans it names.
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoDataArgs {
    /// Output directory (must not exist or be empty).
    pub out_dir: PathBuf,
    /// Establishments.
    #[arg(long, default_value_t = 3)]
    pub establishments: u32,
    /// Candidates per establishment.
    #[arg(long, default_value_t = 20)]
    pub candidates: u32,
    /// Scanned pages per copy.
    #[arg(long, default_value_t = 4)]
    pub pages: u32,
    /// Random seed: the same seed writes the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Jobs run at once (default: worker.concurrency).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Serve /metrics, /healthz and /readyz on this address (off unless
    /// given).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to ask, e.g. http://127.0.0.1:8080/healthz.
    pub url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Noop jobs pushed through the queue.
    #[arg(long, default_value_t = 200)]
    pub jobs: u32,
    /// Candidates per establishment in the generated dataset.
    #[arg(long, default_value_t = 8)]
    pub candidates: u32,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// No-op jobs/s through insert, delivery, claim and finish, against
    /// single-row UPDATE transactions/s on the same database; with
    /// --workers N, through 1 then N worker processes.
    Queue(copiste_tools::bench::QueueBenchArgs),
    /// Copies closed/s against a local stub target, against the stub's
    /// raw capacity for the same requests.
    Closure(copiste_tools::bench::ClosureBenchArgs),
    /// One establishment's zip of PDFs against the raw floor (scans into
    /// a stored zip) and img2pdf, with peak memory; with --workers N,
    /// every establishment's zip as a job through 1 then N worker
    /// processes.
    Render(copiste_tools::bench::RenderBenchArgs),
    /// One copy's PDF through the HTTP API, against the same bytes served
    /// as a static file by the same server (requests/s, p99).
    Web(copiste_tools::bench::WebBenchArgs),
    /// The coordinator's closure page for an academy of 300 establishments
    /// (p99 through a logged-in session).
    Coordinator(copiste_tools::bench::CoordinatorBenchArgs),
    /// Candidate search through the API in a national catalogue (700 000
    /// candidates by default): requests/s and p99.
    Search(copiste_tools::bench::SearchBenchArgs),
    /// A rehearsal of the national night at a scale (1.0: 3.5 M copies)
    /// through real copiste processes: import, nightly closure,
    /// harmonisation, zips, downloads, pages; fails on any lost or
    /// doubled effect.
    National(copiste_tools::bench::national::NationalBenchArgs),
}

#[derive(Debug, Args)]
pub struct WithServicesArgs {
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

impl Cli {
    /// Whether the command is a long-running role (worker, scheduler,
    /// server…) rather than one that prints and exits.
    pub fn is_long_running(&self) -> bool {
        matches!(
            self.command,
            Command::Worker(_)
                | Command::Scheduler(_)
                | Command::Serve(_)
                | Command::Demo(_)
                | Command::Bench(_)
                | Command::WithServices(_)
        )
    }

    /// Reads the configuration: the defaults, `--config` and the
    /// environment. `main` reads it once, before logging starts (the log
    /// format is a setting), and hands it to [`Cli::run`].
    pub fn load_config(&self) -> Result<Config, copiste::config::ConfigError> {
        Config::load(self.config.as_deref())
    }

    /// The log format: `--log-format`, else the setting `log.format`
    /// (text when the configuration cannot be read: running the command
    /// then reports why).
    pub fn log_format(&self, config: Option<&Config>) -> LogFormat {
        self.log_format
            .or(config.map(|c| c.log.format))
            .unwrap_or(LogFormat::Text)
    }

    /// Runs the parsed command with the configuration [`Cli::load_config`]
    /// read.
    pub async fn run(
        self,
        config: Result<Config, copiste::config::ConfigError>,
    ) -> anyhow::Result<ExitCode> {
        let config = config?;
        match self.command {
            Command::Migrate => {
                let db = connect(&config).await?;
                db.migrate().await?;
                println!("migrations applied");
            }
            Command::Config => print!("{}", config.to_redacted_toml()),
            Command::Import(args) => import(config, args).await?,
            Command::DemoData(args) => demo_data(args)?,
            Command::Worker(args) => worker(config, args).await?,
            Command::Jobs(cmd) => {
                let app = app(config).await?;
                return cmd.run(&app).await;
            }
            Command::Closure(cmd) => {
                let app = app(config).await?;
                return cmd.run(&app).await;
            }
            Command::Publish(args) => {
                let app = app(config).await?;
                return args.run(&app).await;
            }
            Command::Tokens(cmd) => {
                let app = app(config).await?;
                return cmd.run(&app).await;
            }
            Command::Harmonisation(cmd) => {
                let app = app(config).await?;
                return cmd.run(&app).await;
            }
            Command::Render(cmd) => {
                let app = app(config).await?;
                return cmd.run(&app).await;
            }
            Command::Candidates(cmd) => {
                let app = app(config).await?;
                return cmd.run(&app).await;
            }
            Command::Download(cmd) => {
                let app = app(config).await?;
                return cmd.run(&app).await;
            }
            Command::Serve(args) => {
                let app = app(config).await?;
                return args.run(&app).await;
            }
            Command::Probe(args) => {
                return Ok(
                    match copiste::telemetry::probe(&args.url, Duration::from_secs(args.timeout))
                        .await
                    {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("{e:#}");
                            ExitCode::FAILURE
                        }
                    },
                );
            }
            Command::Scheduler(args) => {
                let db = connect(&config).await?;
                return args.run(&config, db).await;
            }
            Command::Schedules(cmd) => {
                return cmd.run(&config, async || app(config.clone()).await).await;
            }
            Command::Demo(args) => demo::run(config, args.jobs, args.candidates).await?,
            Command::Bench(command) => bench(config, command).await?,
            Command::WithServices(args) => return with_services(config, args).await,
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `copiste import DIR`: imports the export with the configured limits,
/// drawing a progress bar.
async fn import(config: Config, args: ImportArgs) -> anyhow::Result<()> {
    let options = copiste::import::ImportOptions::from_config(&config.import);
    let app = app(config).await?;
    let summary = copiste::import::import_dir_with(
        &app.db,
        &app.storage,
        &args.dir,
        &options,
        &copiste::import::progress_bar(),
    )
    .await?;
    println!("{summary}");
    Ok(())
}

/// `copiste demo-data`: writes a synthetic export.
fn demo_data(args: DemoDataArgs) -> anyhow::Result<()> {
    let opts = copiste_tools::demo_data::DemoDataOptions {
        establishments: args.establishments,
        candidates: args.candidates,
        pages: args.pages,
        seed: args.seed,
    };
    let progress = copiste_tools::demo_data::Progress::stderr();
    let summary = copiste_tools::demo_data::generate(&args.out_dir, &opts, &|done, total| {
        progress.update(done, total);
    });
    progress.finish();
    let summary = summary?;
    println!(
        "wrote {} establishments, {} candidates, {} copies, {} scans ({} MB) to {}",
        summary.establishments,
        summary.candidates,
        summary.copies,
        summary.scans,
        summary.bytes / 1_000_000,
        args.out_dir.display()
    );
    Ok(())
}

/// `copiste worker`: runs jobs until a signal, then stops within the
/// grace period.
async fn worker(config: Config, args: WorkerArgs) -> anyhow::Result<()> {
    let app = app(config).await?;
    let mut options = WorkerOptions::from_config(&app);
    if let Some(c) = args.concurrency {
        anyhow::ensure!(c > 0, "--concurrency must be at least 1");
        options.concurrency = c as usize;
    }
    let grace = Duration::from_secs(app.config.worker.shutdown_grace_secs);
    let _metrics = match args.metrics_listen {
        Some(addr) => Some(copiste::telemetry::listen(addr, app.clone()).await?),
        None => None,
    };
    let worker = Worker::start(app, options).await?;
    shutdown_signal().await;
    tracing::info!(
        grace_s = grace.as_secs(),
        "stopping: running jobs may finish"
    );
    worker.shutdown(grace).await?;
    Ok(())
}

/// `copiste bench …`: runs one benchmark.
async fn bench(config: Config, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Queue(args) => copiste_tools::bench::queue(config, args).await,
        BenchCommand::Closure(args) => copiste_tools::bench::closure(config, args).await,
        BenchCommand::Render(args) => copiste_tools::bench::render(config, args).await,
        BenchCommand::Web(args) => copiste_tools::bench::web(config, args).await,
        BenchCommand::Coordinator(args) => copiste_tools::bench::coordinator(config, args).await,
        BenchCommand::Search(args) => copiste_tools::bench::search(config, args).await,
        BenchCommand::National(args) => {
            copiste_tools::bench::national::national(config, args).await
        }
    }
}

/// The command line's answer to an operation's error: the message on
/// standard error and the error's exit code (see [`EXIT_CODES`]).
pub fn op_failed(e: &OpError) -> ExitCode {
    match e {
        OpError::Refused(r) => eprintln!("refused: {r}"),
        OpError::Internal(e) => eprintln!("error: {e:#}"),
        other => eprintln!("error: {other}"),
    }
    ExitCode::from(e.exit_code())
}

/// Parses a UAI argument (clap value parser).
fn parse_uai(s: &str) -> Result<copiste::domain::Uai, String> {
    copiste::domain::Uai::parse(s).map_err(|e| e.to_string())
}

/// Connects to the configured database.
pub async fn connect(config: &Config) -> anyhow::Result<Db> {
    Db::connect(&config.database_url(), config.database.max_connections).await
}

/// The database, store and configuration every job-running command needs.
pub async fn app(config: Config) -> anyhow::Result<App> {
    let db = connect(&config).await?;
    let storage = Storage::open(&config.storage)?;
    App::new(config, db, storage)
}

/// A progress bar on standard error, hidden when it is not a terminal.
pub fn progress_bar(what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {what} {{bar:40}} {{pos}}/{{len}} ({{eta}})"
    )) {
        bar.set_style(style);
    }
    bar
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn with_services(config: Config, args: WithServicesArgs) -> anyhow::Result<ExitCode> {
    let local = copiste::local_services::ensure(&config).await?;
    let (program, rest) = args
        .command
        .split_first()
        .context("with-services needs a command to run")?;
    let status = tokio::process::Command::new(program)
        .args(rest)
        .envs(local.env())
        .status()
        .await
        .with_context(|| format!("running {program}"))?;
    drop(local);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Sets up logging on standard error (`RUST_LOG` filters, default info),
/// in colour only when standard error is a terminal.
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,apalis=warn,apalis_core=warn,apalis_redis=warn,sqlx=warn,tokio_cron_scheduler=warn",
        )
    });
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
