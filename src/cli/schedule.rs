//! `copiste scheduler` and `copiste schedules …`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

use crate::{
    db::Db,
    jobs::Enqueued,
    schedule::{self, scheduler::Scheduler},
};

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Directory of the schedule files.
    #[arg(long, default_value = "jobs")]
    pub dir: PathBuf,
}

impl SchedulerArgs {
    /// Runs the scheduler until SIGTERM/SIGINT.
    pub async fn run(self, db: Db) -> anyhow::Result<ExitCode> {
        let schedules = schedule::load_dir(&self.dir)?;
        tracing::info!(
            schedules = schedules.iter().filter(|s| s.enabled).count(),
            dir = %self.dir.display(),
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
    /// Directory of the schedule files.
    #[arg(long, default_value = "jobs")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The schedule's name.
    pub name: String,
    /// Directory of the schedule files.
    #[arg(long, default_value = "jobs")]
    pub dir: PathBuf,
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
    /// Runs the subcommand; `db` is needed by `run` only.
    pub async fn run(
        self,
        db: impl AsyncFnOnce() -> anyhow::Result<Db>,
    ) -> anyhow::Result<ExitCode> {
        match self {
            Self::List(a) => {
                print_schedules(&schedule::load_dir(&a.dir)?);
                Ok(ExitCode::SUCCESS)
            }
            Self::Run(a) => {
                let schedules = schedule::load_dir(&a.dir)?;
                let Some(s) = schedules.iter().find(|s| s.name == a.name) else {
                    let names: Vec<_> = schedules.iter().map(|s| s.name.as_str()).collect();
                    eprintln!(
                        "no schedule named {:?}; known: {}",
                        a.name,
                        names.join(", ")
                    );
                    return Ok(ExitCode::FAILURE);
                };
                let db = db().await?;
                match schedule::scheduler::tick(&db, s, chrono::Utc::now()).await? {
                    Some((slot, Enqueued::Created(id))) => {
                        println!("slot {slot}: enqueued job {id}")
                    }
                    Some((slot, Enqueued::Existing(id))) => {
                        println!("slot {slot}: already enqueued as job {id}")
                    }
                    None => println!("{} has no slot yet", s.name),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
