//! `copiste jobs …`: list, show (and follow), retry, cancel, enqueue.

use std::{io::Read as _, path::PathBuf, process::ExitCode, time::Duration};

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
    /// Enqueue a job by kind with a JSON payload, or many from a file
    /// (operators, tests). Payloads are checked against the kind first.
    Enqueue {
        kind: String,
        /// The payload as JSON.
        #[arg(long, default_value = "{}", conflicts_with = "payloads")]
        payload: String,
        /// A file of payloads, one JSON object per line ('-' for standard
        /// input): every line is checked, then all are enqueued in one
        /// transaction, or none.
        #[arg(long, value_name = "FILE")]
        payloads: Option<PathBuf>,
        /// An idempotency key: enqueueing twice with it makes one job.
        #[arg(long, conflicts_with = "payloads")]
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
                let counts = status_counts(db).await?;
                if json {
                    let counts: serde_json::Map<String, serde_json::Value> = counts
                        .iter()
                        .map(|(s, n)| (s.as_str().to_owned(), (*n).into()))
                        .collect();
                    let value = serde_json::json!({"jobs": rows, "counts": counts});
                    println!("{}", serde_json::to_string_pretty(&value)?);
                } else {
                    print_table(&rows);
                    println!();
                    println!("all jobs by status:");
                    for (s, n) in &counts {
                        println!("  {:<9}  {n:>8}", s.as_str());
                    }
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
                Some(s @ (JobStatus::Dead | JobStatus::Failed | JobStatus::Cancelled)) => {
                    println!("job {id} was {s}; queued again with fresh attempts");
                }
                Some(s) => {
                    bail!("job {id} is {s}; only dead, failed or cancelled jobs can be retried")
                }
            },
            Self::Cancel { id } => match db::jobs::cancel(db, id, &who()).await? {
                None => bail!("no job {id}"),
                Some(JobStatus::Queued) => println!("job {id} cancelled"),
                Some(JobStatus::Running) => {
                    println!("job {id} cancelled; its worker stops it at the next heartbeat")
                }
                Some(s) => bail!("job {id} is {s}; only queued or running jobs can be cancelled"),
            },
            Self::Enqueue {
                kind,
                payloads: Some(file),
                ..
            } => {
                let handler = registry::find(&kind).map_err(anyhow::Error::msg)?;
                let payloads = read_payloads(&file, &handler)?;
                let n = payloads.len();
                let mut tx = db.begin().await?;
                handler
                    .enqueue_many(&mut tx, payloads, EnqueueOptions::by(who()))
                    .await?;
                tx.commit().await?;
                println!("enqueued {n} {} jobs", handler.name);
            }
            Self::Enqueue {
                kind, payload, key, ..
            } => {
                let handler = registry::find(&kind).map_err(anyhow::Error::msg)?;
                let payload: serde_json::Value = serde_json::from_str(&payload)
                    .with_context(|| format!("--payload is not valid JSON: {payload}"))?;
                handler
                    .check(payload.clone())
                    .map_err(|e| anyhow::anyhow!("--payload: {e}"))?;
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

/// Every status with its number of jobs, over the whole ledger.
async fn status_counts(db: &Db) -> anyhow::Result<Vec<(JobStatus, i64)>> {
    let counts: std::collections::HashMap<JobStatus, i64> =
        db::jobs::count_by_status(db).await?.into_iter().collect();
    Ok(JobStatus::ALL
        .into_iter()
        .map(|s| (s, counts.get(&s).copied().unwrap_or(0)))
        .collect())
}

/// Reads a file of JSON payloads, one per line (blank lines skipped;
/// `-` is standard input), and checks each against `handler`'s kind. Every
/// bad line is reported (up to 20), with its number.
fn read_payloads(
    file: &std::path::Path,
    handler: &registry::Handler,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let (name, text) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading payloads from standard input")?;
        ("standard input".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading payloads from {}", file.display()))?;
        (file.display().to_string(), text)
    };
    let mut payloads = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let checked = serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(|p| handler.check(p.clone()).map(|()| p));
        match checked {
            Ok(p) => payloads.push(p),
            Err(e) => errors.push(format!("{name} line {}: {e}", i + 1)),
        }
    }
    if !errors.is_empty() {
        const SHOWN: usize = 20;
        let more = errors.len().saturating_sub(SHOWN);
        let mut message = errors
            .into_iter()
            .take(SHOWN)
            .collect::<Vec<_>>()
            .join("\n");
        if more > 0 {
            message.push_str(&format!("\n… and {more} more bad lines"));
        }
        anyhow::bail!("nothing enqueued: {message}");
    }
    anyhow::ensure!(!payloads.is_empty(), "{name} holds no payload");
    Ok(payloads)
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
        bar.set_message(job.status.as_str());
        if job.status.is_final() {
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
