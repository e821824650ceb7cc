//! `copiste scheduler` and `copiste schedules …`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use copiste::{
    app::App,
    config::Config,
    db::Db,
    ledger::Enqueued,
    op::Actor,
    schedule::{self, scheduler::Scheduler},
};

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Directory of the schedule files (default: the setting
    /// scheduler.dir, i.e. COPISTE_SCHEDULER__DIR or "jobs").
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz on this address (off unless
    /// given).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The schedules of `--dir`, or of the setting `scheduler.dir` without it;
/// a missing directory is named with where it came from.
fn load(dir: Option<&Path>, config: &Config) -> anyhow::Result<(PathBuf, Vec<schedule::Schedule>)> {
    let (dir, origin) = match dir {
        Some(d) => (d.to_path_buf(), "--dir"),
        None => (
            config.scheduler.dir.clone(),
            "the setting scheduler.dir (COPISTE_SCHEDULER__DIR)",
        ),
    };
    if !dir.is_dir() {
        let shown = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
        anyhow::bail!(
            "the schedules' directory {} does not exist or is not a directory; it comes from {origin}{}",
            shown.display(),
            if dir.is_relative() {
                ", a relative path being taken from the working directory"
            } else {
                ""
            }
        );
    }
    let schedules = schedule::load_dir(&dir)
        .with_context(|| format!("loading the schedules of {}", dir.display()))?;
    Ok((dir, schedules))
}

impl SchedulerArgs {
    /// Runs the scheduler until SIGTERM/SIGINT.
    pub async fn run(self, config: &Config, db: Db) -> anyhow::Result<ExitCode> {
        let (dir, schedules) = load(self.dir.as_deref(), config)?;
        let _metrics = match self.metrics_listen {
            Some(addr) => {
                let storage = copiste::storage::Storage::open(&config.storage)?;
                let app = App::new(config.clone(), db.clone(), storage)?;
                Some(copiste::telemetry::listen(addr, app).await?)
            }
            None => None,
        };
        tracing::info!(
            schedules = schedules.iter().filter(|s| s.enabled).count(),
            dir = %dir.display(),
            "scheduler starting"
        );
        let scheduler = Scheduler::start(db, schedules).await?;
        super::shutdown_signal().await;
        scheduler.shutdown().await?;
        tracing::info!("scheduler stopped");
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule with its next three fire times (its zone and UTC).
    List(DirArgs),
    /// Enqueue the current slot of a schedule now (operators).
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct DirArgs {
    /// Directory of the schedule files (default: the setting
    /// scheduler.dir, i.e. COPISTE_SCHEDULER__DIR or "jobs").
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The schedule's name.
    pub name: String,
    /// Directory of the schedule files (default: the setting
    /// scheduler.dir, i.e. COPISTE_SCHEDULER__DIR or "jobs").
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Prints each schedule and its next three fire times.
pub fn print_schedules(schedules: &[schedule::Schedule]) {
    let now = chrono::Utc::now();
    for s in schedules {
        println!(
            "{} ({}, `{}` {}{}):",
            s.name,
            s.kind,
            s.cron_text,
            s.timezone,
            if s.enabled { "" } else { ", disabled" }
        );
        for slot in s.next_slots(now, 3) {
            println!(
                "  {}  =  {}",
                slot.with_timezone(&s.timezone)
                    .format("%Y-%m-%d %H:%M:%S %Z"),
                slot.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
    }
}

impl SchedulesCommand {
    /// Runs the subcommand as admin; `app` is needed by `run` only.
    pub async fn run(
        self,
        config: &Config,
        app: impl AsyncFnOnce() -> anyhow::Result<App>,
    ) -> anyhow::Result<ExitCode> {
        match self {
            Self::List(a) => {
                print_schedules(&load(a.dir.as_deref(), config)?.1);
                Ok(ExitCode::SUCCESS)
            }
            Self::Run(a) => {
                let (_, schedules) = load(a.dir.as_deref(), config)?;
                let app = app().await?;
                let actor = Actor::admin(super::closure::default_by());
                match schedule::scheduler::run_slot(
                    &app,
                    &actor,
                    &schedules,
                    &a.name,
                    chrono::Utc::now(),
                )
                .await
                {
                    Ok(Some((slot, Enqueued::Created(id)))) => {
                        println!("slot {slot}: enqueued job {id}")
                    }
                    Ok(Some((slot, Enqueued::Existing(id)))) => {
                        println!("slot {slot}: already enqueued as job {id}")
                    }
                    Ok(None) => println!("{} has no slot yet", a.name),
                    Err(e) => return Ok(super::op_failed(&e)),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
