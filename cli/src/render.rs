//! `copiste render …` and `copiste candidates …`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use copiste::{
    app::App,
    domain::Uai,
    download::search::{SearchInput, search_candidates},
    op::Actor,
    render::{
        RequestedOptions,
        copy::{CopyInput, render_copy},
    },
};

/// The three switches, on unless turned off.
#[derive(Debug, Clone, Copy, Args)]
pub struct Switches {
    /// Leave out the grading details.
    #[arg(long)]
    pub no_details: bool,
    /// Leave out the appreciation.
    #[arg(long)]
    pub no_appreciation: bool,
    /// Leave out the annotations.
    #[arg(long)]
    pub no_annotations: bool,
}

impl Switches {
    /// The request these switches make.
    pub fn requested(self) -> RequestedOptions {
        RequestedOptions {
            details: !self.no_details,
            appreciation: !self.no_appreciation,
            annotations: !self.no_annotations,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RenderCommand {
    /// Render one transmitted copy as a PDF.
    Copy(RenderCopyArgs),
}

#[derive(Debug, Args)]
pub struct RenderCopyArgs {
    /// Exam code.
    #[arg(long)]
    pub exam: String,
    /// The candidate's numéro.
    #[arg(long)]
    pub candidate: String,
    #[command(flatten)]
    pub switches: Switches,
    /// Where to write the PDF.
    #[arg(short, long, value_name = "FILE.pdf")]
    pub output: PathBuf,
}

impl RenderCommand {
    /// Runs the subcommand.
    pub async fn run(self, app: &App) -> anyhow::Result<ExitCode> {
        let Self::Copy(a) = self;
        let input = CopyInput {
            exam: a.exam,
            numero: a.candidate,
            options: a.switches.requested(),
        };
        let actor = Actor::admin(super::closure::default_by());
        match render_copy(app, &actor, &input).await {
            Ok(pdf) => {
                std::fs::write(&a.output, &pdf)
                    .with_context(|| format!("writing {}", a.output.display()))?;
                println!("wrote {} ({} bytes)", a.output.display(), pdf.len());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(super::op_failed(&e)),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CandidatesCommand {
    /// Find candidates by nom, prénom or numéro (case- and
    /// accent-insensitive), with whether their copy is downloadable.
    Search(SearchArgs),
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Exam code.
    #[arg(long)]
    pub exam: String,
    /// The establishment (UAI).
    #[arg(long, value_parser = super::parse_uai)]
    pub establishment: Uai,
    /// Words to find, e.g. "helene martin" or a numéro.
    #[arg(required = true, num_args = 1..)]
    pub query: Vec<String>,
    /// Show at most this many candidates.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub limit: i64,
    /// Skip this many candidates first (the next page: the previous
    /// offset plus the limit).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub offset: i64,
    /// Print JSON: `{"total", "offset", "limit", "more", "candidates": […]}`.
    #[arg(long)]
    pub json: bool,
}

impl CandidatesCommand {
    /// Runs the subcommand.
    pub async fn run(self, app: &App) -> anyhow::Result<ExitCode> {
        let Self::Search(a) = self;
        let input = SearchInput {
            exam: a.exam.clone(),
            establishment: a.establishment.clone(),
            query: a.query.join(" "),
            limit: a.limit,
            offset: a.offset,
        };
        let actor = Actor::admin(super::closure::default_by());
        let page = match search_candidates(app, &actor, &input).await {
            Ok(page) => page,
            Err(e) => return Ok(super::op_failed(&e)),
        };
        if a.json {
            println!("{}", serde_json::to_string_pretty(&page)?);
        } else if page.total == 0 {
            println!("no candidate of {} in {} matches", a.exam, a.establishment);
        } else {
            for f in &page.candidates {
                let grade = match (f.absent, f.grade) {
                    (true, _) => "absent".to_owned(),
                    (false, Some(g)) => format!("{g}/20"),
                    (false, None) => "not graded".to_owned(),
                };
                println!(
                    "{:<12} {:<24} {:<20} {:<10} {}",
                    f.numero,
                    f.nom,
                    f.prenom,
                    grade,
                    if f.downloadable {
                        "downloadable"
                    } else {
                        "not transmitted yet"
                    }
                );
            }
            let shown = page.candidates.len() as i64;
            if page.more || page.offset > 0 {
                let first = if shown == 0 { 0 } else { page.offset + 1 };
                println!(
                    "candidates {first}-{} of {} matching{}",
                    page.offset + shown,
                    page.total,
                    if page.more {
                        format!("; --offset {} shows the next ones", page.offset + shown)
                    } else {
                        String::new()
                    }
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
