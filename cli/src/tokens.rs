//! `copiste tokens …`: make, list and revoke access tokens (admin).

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use uuid::Uuid;

use copiste::{
    access::{self, Role, TokenInput},
    app::App,
    domain::Uai,
    op::{Actor, OpError},
};

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token and print it, once: only its hash is kept.
    Create(CreateArgs),
    /// Every token (never its secret), newest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once.
    Revoke { id: Uuid },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Admin,
    Coordinator,
    Establishment,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Whom the token acts as.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// The coordinator's academy (with --role coordinator).
    #[arg(long, conflicts_with = "uai")]
    pub academy: Option<String>,
    /// The establishment (with --role establishment).
    #[arg(long, value_parser = super::parse_uai)]
    pub uai: Option<Uai>,
    /// Who holds it, e.g. "Lycée Hoche, examens".
    #[arg(long)]
    pub name: String,
    /// Lifetime, e.g. 90d, 12h, 30m; no expiry when absent.
    #[arg(long, value_parser = access::parse_lifetime)]
    pub expires_in: Option<chrono::Duration>,
}

impl CreateArgs {
    fn role(&self) -> Result<Role, OpError> {
        match (self.role, &self.academy, &self.uai) {
            (RoleArg::Admin, None, None) => Ok(Role::Admin),
            (RoleArg::Coordinator, Some(academy), None) => Ok(Role::Coordinator {
                academy: academy.clone(),
            }),
            (RoleArg::Establishment, None, Some(uai)) => {
                Ok(Role::Establishment { uai: uai.clone() })
            }
            (RoleArg::Admin, ..) => Err(OpError::invalid(
                "role",
                "an admin token takes neither --academy nor --uai",
            )),
            (RoleArg::Coordinator, ..) => Err(OpError::invalid(
                "academy",
                "a coordinator token needs --academy (and no --uai)",
            )),
            (RoleArg::Establishment, ..) => Err(OpError::invalid(
                "uai",
                "an establishment token needs --uai (and no --academy)",
            )),
        }
    }
}

impl TokensCommand {
    /// Runs the subcommand as admin.
    pub async fn run(self, app: &App) -> anyhow::Result<ExitCode> {
        let actor = Actor::admin(super::closure::default_by());
        let outcome = match self {
            Self::Create(a) => match a.role() {
                Err(e) => Err(e),
                Ok(role) => {
                    let input = TokenInput {
                        role,
                        name: a.name,
                        lifetime: a.expires_in,
                    };
                    access::create_token(app, &actor, &input).await.map(|t| {
                        println!("{}", t.token);
                        eprintln!(
                            "token {} made{}; it is shown only now: keep it secret",
                            t.id,
                            t.expires_at
                                .map(|at| format!(
                                    ", valid until {}",
                                    at.format("%Y-%m-%d %H:%M UTC")
                                ))
                                .unwrap_or_default()
                        );
                    })
                }
            },
            Self::List { json } => access::list_tokens(app, &actor).await.map(|tokens| {
                if json {
                    match serde_json::to_string_pretty(&tokens) {
                        Ok(s) => println!("{s}"),
                        Err(e) => eprintln!("error: {e}"),
                    }
                } else {
                    for t in tokens {
                        let state = match (t.revoked_at, t.expires_at) {
                            (Some(at), _) => format!("revoked {}", at.format("%Y-%m-%d")),
                            (None, Some(at)) if at <= chrono::Utc::now() => {
                                format!("expired {}", at.format("%Y-%m-%d"))
                            }
                            (None, Some(at)) => format!("until {}", at.format("%Y-%m-%d")),
                            (None, None) => "no expiry".to_owned(),
                        };
                        println!(
                            "{}  {:<13} {:<10} {:<24} {}",
                            t.id,
                            t.role,
                            t.scope.as_deref().unwrap_or("-"),
                            state,
                            t.name
                        );
                    }
                }
            }),
            Self::Revoke { id } => access::revoke_token(app, &actor, id)
                .await
                .map(|()| println!("token {id} revoked")),
        };
        Ok(match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::op_failed(&e),
        })
    }
}
