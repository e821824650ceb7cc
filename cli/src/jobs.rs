//! `copiste jobs …`: list, show (and follow), retry, cancel, enqueue.

use std::{io::Read as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Subcommand;
use uuid::Uuid;

use copiste::{
    app::App,
    db::{self, Db, jobs::JobRow},
    domain::{JobStatus, Uai},
    jobs::{
        admin::{self, EnqueueInput, JobDetail, JobList, ListInput},
        registry,
    },
    ledger::Enqueued,
    op::{Actor, OpError},
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
        /// Only jobs whose payload names this exam.
        #[arg(long)]
        exam: Option<String>,
        /// Only jobs whose payload names this establishment (UAI).
        #[arg(long, value_parser = super::parse_uai)]
        establishment: Option<Uai>,
        /// At most this many jobs (1 to 10000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The page after this cursor (printed at the end of the previous
        /// page); the newest jobs when absent.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
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

fn who() -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Actor::admin(format!("cli:{user}"))
}

impl JobsCommand {
    /// Runs the subcommand as admin.
    pub async fn run(self, app: &App) -> anyhow::Result<ExitCode> {
        let actor = who();
        let outcome: Result<(), OpError> = match self {
            Self::List {
                status,
                kind,
                exam,
                establishment,
                limit,
                after,
                json,
            } => admin::list(
                app,
                &actor,
                &ListInput {
                    status,
                    kind,
                    exam,
                    establishment,
                    limit,
                    cursor: after,
                    offset: 0,
                },
            )
            .await
            .map(|list| print_list(&list, json))
            .and_then(|r| r.map_err(OpError::Internal)),
            Self::Show { id, json, follow } => {
                if follow {
                    follow_job(&app.db, id).await?;
                }
                admin::show(app, &actor, id)
                    .await
                    .map(|d| print_detail(&d, json))
                    .and_then(|r| r.map_err(OpError::Internal))
            }
            Self::Retry { id } => admin::retry(app, &actor, id)
                .await
                .map(|s| println!("job {id} was {s}; queued again with fresh attempts")),
            Self::Cancel { id } => admin::cancel(app, &actor, id).await.map(|s| match s {
                JobStatus::Running => {
                    println!("job {id} cancelled; its worker stops it at the next heartbeat")
                }
                _ => println!("job {id} cancelled"),
            }),
            Self::Enqueue {
                kind,
                payloads: Some(file),
                ..
            } => match enqueue_file(app, &actor, &kind, &file).await {
                Some(outcome) => outcome,
                None => return Ok(ExitCode::from(2)),
            },
            Self::Enqueue {
                kind, payload, key, ..
            } => enqueue_one(app, &actor, kind, &payload, key).await,
        };
        Ok(match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::op_failed(&e),
        })
    }
}

fn print_list(list: &JobList, json: bool) -> anyhow::Result<()> {
    if json {
        let counts: serde_json::Map<String, serde_json::Value> = list
            .counts
            .iter()
            .map(|(s, c)| (s.as_str().to_owned(), c.n.into()))
            .collect();
        let capped: Vec<&str> = list
            .counts
            .iter()
            .filter(|(_, c)| c.capped)
            .map(|(s, _)| s.as_str())
            .collect();
        let value = serde_json::json!({
            "jobs": list.jobs,
            "counts": counts,
            "capped": capped,
            "next": list.next,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_table(&list.jobs);
        println!();
        println!(
            "all jobs by status (each counted up to {}):",
            admin::COUNT_CAP
        );
        for (s, n) in &list.counts {
            println!("  {:<9}  {:>8}", s.as_str(), n.to_string());
        }
        if let Some(next) = &list.next {
            println!();
            println!("next page: --after {next}");
        }
    }
    Ok(())
}

fn print_detail(detail: &JobDetail, json: bool) -> anyhow::Result<()> {
    if json {
        let value = serde_json::json!({"job": detail.job, "events": detail.events});
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_job(&detail.job);
        println!("history:");
        for e in &detail.events {
            println!(
                "  {}  {:<16} attempt {}  {}  {}",
                e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                e.event,
                e.attempt,
                e.worker.as_deref().unwrap_or_default(),
                e.detail.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Enqueues every payload of `file` as a job of `kind`, in one
/// transaction. `None` when the file cannot be read or a line is not a
/// valid payload (said on standard error).
async fn enqueue_file(
    app: &App,
    actor: &Actor,
    kind: &str,
    file: &std::path::Path,
) -> Option<Result<(), OpError>> {
    let handler = match registry::find(kind).map_err(anyhow::Error::msg) {
        Err(e) => return Some(Err(OpError::invalid("kind", format!("{e:#}")))),
        Ok(handler) => handler,
    };
    let payloads = match read_payloads(file, &handler) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return None;
        }
    };
    let n = payloads.len();
    Some(
        admin::enqueue_many(app, actor, kind, payloads)
            .await
            .map(|_| println!("enqueued {n} {} jobs", handler.name)),
    )
}

/// Enqueues one job of `kind` with the JSON `payload`, printing its id.
async fn enqueue_one(
    app: &App,
    actor: &Actor,
    kind: String,
    payload: &str,
    key: Option<String>,
) -> Result<(), OpError> {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Err(e) => Err(OpError::invalid(
            "payload",
            format!("not valid JSON ({e}): {payload}"),
        )),
        Ok(payload) => admin::enqueue(app, actor, &EnqueueInput { kind, payload, key })
            .await
            .map(|enqueued| match enqueued {
                Enqueued::Created(id) => println!("{id}"),
                Enqueued::Existing(id) => println!("{id} (existing job with this key)"),
            }),
    }
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
