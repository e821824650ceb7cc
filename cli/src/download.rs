//! `copiste download …`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::render::Switches;
use copiste::{
    app::App,
    domain::Uai,
    download::{self, AllZipsInput, Link, Requested, RequestedAll, ZipInput},
    op::Actor,
};

#[derive(Debug, Subcommand)]
pub enum DownloadCommand {
    /// Ask for the zip of an establishment's transmitted copies of an exam
    /// (prints the links when one is ready, else the job building it), or
    /// with `--all` for the zip of every establishment with transmitted
    /// copies, in one transaction (prints how many were enqueued, already
    /// being built or already ready).
    Request(RequestArgs),
    /// Print the links of the current zip; each expires
    /// `downloads.link_ttl_secs` from now, but not after the zip does.
    Link(DownloadArgs),
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Exam code.
    #[arg(long)]
    pub exam: String,
    /// The establishment (UAI).
    #[arg(long, value_parser = super::parse_uai)]
    pub establishment: Uai,
    #[command(flatten)]
    pub switches: Switches,
    /// Print JSON: `{"status": "ready", "links": [{"url", "bytes", "sha256",
    /// "expires_at"}…]}`, or `{"status": "building", "job", "new"}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["establishment", "all"])))]
pub struct RequestArgs {
    /// Exam code.
    #[arg(long)]
    pub exam: String,
    /// The establishment (UAI).
    #[arg(long, value_parser = super::parse_uai)]
    pub establishment: Option<Uai>,
    /// Every establishment with transmitted copies of the exam.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub switches: Switches,
    /// Print JSON: `{"status": "ready", "links": [{"url", "bytes", "sha256",
    /// "expires_at"}…]}`, or `{"status": "building", "job", "new"}`; with
    /// `--all`, `{"exam", "options", "establishments", "enqueued",
    /// "already_building", "already_ready", "jobs": [{"establishment",
    /// "job"}…]}`.
    #[arg(long)]
    pub json: bool,
}

fn print_all(answer: &RequestedAll, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
        return Ok(());
    }
    println!(
        "exam {} ({}): {} establishments with transmitted copies; {} zips enqueued, {} already being built, {} already ready",
        answer.exam,
        answer.options,
        answer.establishments,
        answer.enqueued,
        answer.already_building,
        answer.already_ready
    );
    Ok(())
}

impl DownloadArgs {
    fn input(&self) -> ZipInput {
        ZipInput {
            exam: self.exam.clone(),
            establishment: self.establishment.clone(),
            options: self.switches.requested(),
        }
    }
}

fn print_links(links: &[Link], json: bool) -> anyhow::Result<()> {
    if json {
        let value = serde_json::json!({"status": "ready", "links": links});
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    for l in links {
        println!(
            "{}  ({} bytes, sha256 {}, until {})",
            l.url,
            l.bytes,
            l.sha256,
            l.expires_at.format("%Y-%m-%d %H:%M UTC")
        );
    }
    Ok(())
}

fn print_building(job: uuid::Uuid, new: bool, json: bool) -> anyhow::Result<()> {
    if json {
        let value = serde_json::json!({"status": "building", "job": job, "new": new});
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if new {
        println!("enqueued job {job}; `copiste jobs show {job} --follow` shows its progress");
    } else {
        println!("already being built by job {job}");
    }
    Ok(())
}

impl DownloadCommand {
    /// Runs the subcommand.
    pub async fn run(self, app: &App) -> anyhow::Result<ExitCode> {
        let actor = Actor::admin(super::closure::default_by());
        match self {
            Self::Request(a) if a.all => {
                let input = AllZipsInput {
                    exam: a.exam.clone(),
                    options: a.switches.requested(),
                };
                match download::request_all(app, &actor, &input).await {
                    Ok(answer) => print_all(&answer, a.json)?,
                    Err(e) => return Ok(super::op_failed(&e)),
                }
            }
            Self::Request(a) => {
                let Some(establishment) = a.establishment else {
                    anyhow::bail!("--establishment or --all is required");
                };
                let input = ZipInput {
                    exam: a.exam,
                    establishment,
                    options: a.switches.requested(),
                };
                match download::request(app, &actor, &input).await {
                    Ok(Requested::Ready(links)) => print_links(&links, a.json)?,
                    Ok(Requested::Building { job, new }) => print_building(job, new, a.json)?,
                    Err(e) => return Ok(super::op_failed(&e)),
                }
            }
            Self::Link(a) => match download::current_links(app, &actor, &a.input()).await {
                Ok(Some(links)) => print_links(&links, a.json)?,
                Ok(None) => {
                    eprintln!(
                        "no zip of {} for {} is ready with these options: `copiste download request` builds one",
                        a.exam, a.establishment
                    );
                    return Ok(ExitCode::from(
                        copiste::op::OpError::not_found("").exit_code(),
                    ));
                }
                Err(e) => return Ok(super::op_failed(&e)),
            },
        }
        Ok(ExitCode::SUCCESS)
    }
}
