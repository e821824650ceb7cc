//! `copiste jobs …`: list, show (and follow), retry, cancel, enqueue.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use uuid::Uuid;

use crate::{
    db::{self, Db, jobs::JobRow},
    jobs::{EnqueueOptions, JobStatus, registry},
};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The newest jobs, optionally filtered.
    List {
        /// Only jobs with this status (queued, running, succeeded, failed, dead, cancelled).
        #[arg(long, value_parser = JobStatus::parse)]
        status: Option<JobStatus>,
        /// Only jobs of this kind (e.g. noop).
        #[arg(long)]
        kind: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One job with its history.
    Show {
        id: Uuid,
        #[arg(long)]
        json: bool,
        /// Follow progress until the job is final.
        #[arg(long)]
        follow: bool,
    },
    /// Queue a dead, failed or cancelled job again with fresh attempts.
    Retry { id: Uuid },
    /// Cancel a queued or running job.
    Cancel { id: Uuid },
    /// Enqueue a job by kind with a JSON payload (operators, tests).
    Enqueue {
        kind: String,
        /// The payload as JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// An idempotency key: enqueueing twice with it makes one job.
        #[arg(long)]
        key: Option<String>,
    },
}

fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

impl JobsCommand {
    pub async fn run(self, db: &Db) -> anyhow::Result<ExitCode> {
        match self {
            Self::List {
                status,
                kind,
                limit,
                json,
            } => {
                anyhow::ensure!(limit > 0, "--limit must be at least 1");
                let rows =
                    db::jobs::list(db, status.map(|s| s.as_str()), kind.as_deref(), limit).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    print_table(&rows);
                }
            }
            Self::Show { id, json, follow } => {
                if follow {
                    follow_job(db, id).await?;
                }
                let job = db::jobs::get(db, id)
                    .await?
                    .with_context(|| format!("no job {id}"))?;
                let events = db::jobs::events(db, id).await?;
                if json {
                    let value = serde_json::json!({"job": job, "events": events});
                    println!("{}", serde_json::to_string_pretty(&value)?);
                } else {
                    print_job(&job);
                    println!("history:");
                    for e in events {
                        println!(
                            "  {}  {:<16} attempt {}  {}  {}",
                            e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                            e.event,
                            e.attempt,
                            e.worker.unwrap_or_default(),
                            e.detail.unwrap_or_default()
                        );
                    }
                }
            }
            Self::Retry { id } => match db::jobs::retry_by_hand(db, id, &who()).await? {
                None => bail!("no job {id}"),
                Some(s) if matches!(s.as_str(), "dead" | "failed" | "cancelled") => {
                    println!("job {id} was {s}; queued again with fresh attempts");
                }
                Some(s) => {
                    bail!("job {id} is {s}; only dead, failed or cancelled jobs can be retried")
                }
            },
            Self::Cancel { id } => match db::jobs::cancel(db, id, &who()).await? {
                None => bail!("no job {id}"),
                Some(s) if s == "queued" => println!("job {id} cancelled"),
                Some(s) if s == "running" => {
                    println!("job {id} cancelled; its worker stops it at the next heartbeat")
                }
                Some(s) => bail!("job {id} is {s}; only queued or running jobs can be cancelled"),
            },
            Self::Enqueue { kind, payload, key } => {
                let handler = registry::find(&kind).map_err(anyhow::Error::msg)?;
                let payload: serde_json::Value = serde_json::from_str(&payload)
                    .with_context(|| format!("--payload is not valid JSON: {payload}"))?;
                let mut opts = EnqueueOptions::by(who());
                opts.idempotency_key = key;
                let mut tx = db.begin().await?;
                let enqueued = crate::jobs::enqueue_raw(
                    &mut tx,
                    handler.name,
                    payload,
                    handler.max_attempts,
                    handler.priority,
                    opts,
                )
                .await?;
                tx.commit().await?;
                match enqueued {
                    crate::jobs::Enqueued::Created(id) => println!("{id}"),
                    crate::jobs::Enqueued::Existing(id) => {
                        println!("{id} (existing job with this key)")
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

async fn follow_job(db: &Db, id: Uuid) -> anyhow::Result<()> {
    let bar = super::progress_bar("job");
    loop {
        let job = db::jobs::get(db, id)
            .await?
            .with_context(|| format!("no job {id}"))?;
        if let (Some(done), Some(total)) = (job.progress_done, job.progress_total) {
            bar.set_length(total.max(0) as u64);
            bar.set_position(done.max(0) as u64);
        }
        bar.set_message(job.status.clone());
        if JobStatus::parse(&job.status).is_ok_and(JobStatus::is_final) {
            bar.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn progress(job: &JobRow) -> String {
    match (job.progress_done, job.progress_total) {
        (Some(d), Some(t)) => format!("{d}/{t}"),
        _ => "-".into(),
    }
}

fn print_table(rows: &[JobRow]) {
    println!(
        "{:<36}  {:<22}  {:<9}  {:>8}  {:>9}  {:<19}  error",
        "id", "kind", "status", "attempts", "progress", "created"
    );
    for job in rows {
        println!(
            "{:<36}  {:<22}  {:<9}  {:>8}  {:>9}  {:<19}  {}",
            job.id,
            job.kind,
            job.status,
            format!("{}/{}", job.attempts, job.max_attempts),
            progress(job),
            job.created_at.format("%Y-%m-%d %H:%M:%S"),
            job.last_error
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        );
    }
}

fn print_job(job: &JobRow) {
    println!("id:          {}", job.id);
    println!("kind:        {}", job.kind);
    println!("status:      {}", job.status);
    println!("attempts:    {}/{}", job.attempts, job.max_attempts);
    println!("progress:    {}", progress(job));
    println!("priority:    {}", job.priority);
    println!("run at:      {}", job.run_at);
    println!("created:     {} by {}", job.created_at, job.created_by);
    if let Some(key) = &job.idempotency_key {
        println!("key:         {key}");
    }
    if let Some(w) = &job.worker {
        println!("worker:      {w}");
    }
    if let Some(t) = job.started_at {
        println!("started:     {t}");
    }
    if let Some(t) = job.finished_at {
        println!("finished:    {t}");
    }
    println!("payload:     {}", job.payload);
    if let Some(r) = &job.result {
        println!("result:      {r}");
    }
    if let Some(e) = &job.last_error {
        println!("last error:  {e}");
    }
}
