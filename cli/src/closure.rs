//! `copiste closure …`, `copiste publish` and `copiste harmonisation …`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use copiste::{
    app::App,
    closure::{
        self, PassRequest, UnitRequest, Validation, request::PassInput, request::UnitsInput, status,
    },
    domain::Uai,
    op::{Actor, OpError},
};

/// Who a request is recorded as made by, unless `--by` says.
pub(crate) fn default_by() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "cli".into())
}

#[derive(Debug, Subcommand)]
pub enum ClosureCommand {
    /// Close a ponctuel or E3C exam for one establishment or all of them
    /// (one job per establishment).
    Run(UnitArgs),
    /// Re-send what was not accepted yet; refused after publication.
    Relaunch(UnitArgs),
    /// Per establishment: state, accepted/total per target, errors.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct UnitArgs {
    /// Exam code.
    #[arg(long)]
    pub exam: String,
    /// One establishment (UAI); every establishment of the exam if absent.
    #[arg(long, value_parser = super::parse_uai)]
    pub establishment: Option<Uai>,
    /// Who asks: $USER when set, else "cli".
    #[arg(long, default_value_t = default_by())]
    pub by: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Exam code.
    #[arg(long)]
    pub exam: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Exam code.
    #[arg(long)]
    pub exam: String,
    /// Who records the publication: $USER when set, else "cli".
    #[arg(long, default_value_t = default_by())]
    pub by: String,
}

#[derive(Debug, Subcommand)]
pub enum HarmonisationCommand {
    /// Validate copies of a harmonised exam and export them for every
    /// establishment concerned (one pass).
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("selection").required(true).args(["all", "copies"])))]
pub struct ValidateArgs {
    /// Exam code (a harmonised exam).
    #[arg(long)]
    pub exam: String,
    /// The coordinator's academy; every academy of the exam if absent.
    #[arg(long)]
    pub academy: Option<String>,
    /// Validate every copy.
    #[arg(long)]
    pub all: bool,
    /// A file of candidate numéros, one per line ('#' starts a comment).
    #[arg(long, value_name = "FILE")]
    pub copies: Option<PathBuf>,
    /// Who validates: $USER when set, else "cli".
    #[arg(long, default_value_t = default_by())]
    pub by: String,
}

fn print_units(units: &[UnitRequest]) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for u in units {
        match &u.outcome {
            Ok(done) => println!("{}  {done}", u.establishment),
            Err(r) => {
                eprintln!("{}  refused: {r}", u.establishment);
                code = ExitCode::from(OpError::Refused(r.clone()).exit_code());
            }
        }
    }
    code
}

impl ClosureCommand {
    /// Runs the subcommand as admin.
    pub async fn run(self, app: &App) -> anyhow::Result<ExitCode> {
        Ok(match self {
            Self::Run(a) => {
                let input = UnitsInput {
                    exam: a.exam,
                    establishment: a.establishment,
                };
                match closure::request_closure(app, &Actor::admin(a.by), &input).await {
                    Ok(units) => print_units(&units),
                    Err(e) => super::op_failed(&e),
                }
            }
            Self::Relaunch(a) => {
                let input = UnitsInput {
                    exam: a.exam,
                    establishment: a.establishment,
                };
                match closure::request_relaunch(app, &Actor::admin(a.by), &input).await {
                    Ok(units) => print_units(&units),
                    Err(e) => super::op_failed(&e),
                }
            }
            Self::Status(a) => {
                match status::exam_status(app, &Actor::admin(default_by()), &a.exam).await {
                    Ok(s) if a.json => {
                        println!("{}", serde_json::to_string_pretty(&s)?);
                        ExitCode::SUCCESS
                    }
                    Ok(s) => {
                        print!("{s}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => super::op_failed(&e),
                }
            }
        })
    }
}

impl PublishArgs {
    /// Records the publication as admin.
    pub async fn run(self, app: &App) -> anyhow::Result<ExitCode> {
        Ok(
            match closure::publish(app, &Actor::admin(&self.by), &self.exam).await {
                Ok(p) => {
                    println!(
                        "exam {} published at {} by {}",
                        self.exam,
                        p.at.format("%Y-%m-%d %H:%M:%S UTC"),
                        self.by
                    );
                    for id in p.cancelled {
                        println!("cancelled queued closure job {id}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => super::op_failed(&e),
            },
        )
    }
}

/// Reads a file of candidate numéros: one per line, blank lines and
/// `#` comments ignored.
pub fn read_numeros(path: &std::path::Path) -> anyhow::Result<Validation> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the copies file {}", path.display()))?;
    let selection = Validation::from_list(&text);
    anyhow::ensure!(
        !matches!(&selection, Validation::Candidates(n) if n.is_empty()),
        "the copies file {} names no candidate",
        path.display()
    );
    Ok(selection)
}

impl HarmonisationCommand {
    /// Runs the subcommand as admin.
    pub async fn run(self, app: &App) -> anyhow::Result<ExitCode> {
        let Self::Validate(a) = self;
        let selection = match &a.copies {
            Some(path) => read_numeros(path)?,
            None => Validation::All,
        };
        let input = PassInput {
            exam: a.exam,
            academy: a.academy,
            selection,
        };
        Ok(
            match closure::validate_harmonisation(app, &Actor::admin(a.by), &input).await {
                Ok(PassRequest::Enqueued {
                    pass,
                    validated,
                    already_validated,
                    job,
                }) => {
                    println!(
                        "pass {pass}: {validated} copies validated ({already_validated} already were); enqueued job {job}"
                    );
                    ExitCode::SUCCESS
                }
                Ok(PassRequest::NothingNew { already_validated }) => {
                    println!(
                        "nothing new: the {already_validated} selected copies were validated by earlier passes \
                         (closure relaunch re-sends what was not accepted)"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => super::op_failed(&e),
            },
        )
    }
}
