//! What every operation shares, whichever front door (command line, HTTP
//! API, web page, scheduler) asks for it: who asks ([`Actor`]), how it can
//! fail ([`OpError`]) and the memo's refusals ([`Refusal`]).
//!
//! An operation is one function in its domain module, shaped
//! `op(&App, &Actor, input) -> Result<T, OpError>`. Scope rules (an
//! establishment reaches only its own candidates, copies, zips and links; a
//! coordinator only the establishments of its academy) are applied inside
//! the operation, never by a front door, so that every door gets the same
//! answers.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::{
    app::App,
    db,
    domain::{ExamKind, Uai},
};

/// Who asks for an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The operator: every exam, establishment and job, recorded under the
    /// name given (the command line acts as admin, named by `--by`,
    /// default the login user).
    Admin(String),
    /// An academic coordinator: the establishments of one academy, and the
    /// harmonisation passes of that academy.
    Coordinator { academy: String },
    /// An establishment's exam office: its own candidates, copies, closures,
    /// zips and links.
    Establishment { uai: Uai },
    /// The scheduler: nightly closures, export-retry sweeps and its own
    /// schedules' slots.
    Scheduler,
}

impl Actor {
    /// The operator, recorded as `name`.
    pub fn admin(name: impl Into<String>) -> Self {
        Self::Admin(name.into())
    }

    /// How the actor is recorded as the author of what it asks for (a
    /// job's `created_by`, a publication's `published_by`).
    pub fn label(&self) -> String {
        match self {
            Self::Admin(name) => name.clone(),
            Self::Coordinator { academy } => format!("coordinator:{academy}"),
            Self::Establishment { uai } => format!("establishment:{uai}"),
            Self::Scheduler => "scheduler".to_owned(),
        }
    }

    /// A refusal for this actor and `what` it asked.
    pub fn forbidden(&self, what: impl Into<String>) -> OpError {
        OpError::Forbidden {
            actor: self.to_string(),
            what: what.into(),
        }
    }

    /// Admin only.
    pub fn require_admin(&self, what: &str) -> Result<(), OpError> {
        match self {
            Self::Admin(_) => Ok(()),
            _ => Err(self.forbidden(what)),
        }
    }

    /// Admin or the scheduler (operations on the ledger and schedules).
    pub fn require_operator(&self, what: &str) -> Result<(), OpError> {
        match self {
            Self::Admin(_) | Self::Scheduler => Ok(()),
            _ => Err(self.forbidden(what)),
        }
    }

    /// The establishments the actor is limited to: `None` for every one
    /// (admin, scheduler); a coordinator's are those of its academy.
    pub fn scope(&self) -> Scope<'_> {
        match self {
            Self::Admin(_) | Self::Scheduler => Scope::All,
            Self::Coordinator { academy } => Scope::Academy(academy),
            Self::Establishment { uai } => Scope::Establishment(uai),
        }
    }

    /// Checks that the actor may act for establishment `uai` (an unknown
    /// establishment is reachable by no one but admin and the scheduler,
    /// who learn it does not exist from the operation itself).
    pub async fn reach(&self, app: &App, uai: &Uai, what: &str) -> Result<(), OpError> {
        match self.scope() {
            Scope::All => Ok(()),
            Scope::Establishment(own) if own == uai => Ok(()),
            Scope::Establishment(_) => Err(self.forbidden(what)),
            Scope::Academy(academy) => {
                let of = db::catalog::establishment_academy(&app.db, uai.as_str()).await?;
                if of.as_deref() == Some(academy) {
                    Ok(())
                } else {
                    Err(self.forbidden(what))
                }
            }
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin(name) => write!(f, "admin {name}"),
            Self::Coordinator { academy } => write!(f, "the coordinator of academy {academy}"),
            Self::Establishment { uai } => write!(f, "establishment {uai}"),
            Self::Scheduler => f.write_str("the scheduler"),
        }
    }
}

/// The establishments an actor may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    All,
    Academy(&'a str),
    Establishment(&'a Uai),
}

impl Scope<'_> {
    /// The academy filter of a query, if any.
    pub fn academy(&self) -> Option<&str> {
        match self {
            Self::Academy(a) => Some(a),
            _ => None,
        }
    }

    /// The establishment filter of a query, if any.
    pub fn establishment(&self) -> Option<&Uai> {
        match self {
            Self::Establishment(u) => Some(u),
            _ => None,
        }
    }
}

/// How an operation fails. Each variant is one kind of answer for a front
/// door: the command line maps it to an exit code ([`OpError::exit_code`]),
/// the HTTP API to a status.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The input is wrong: `field` names it, `reason` says why.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Something the input names does not exist.
    #[error("unknown {what}")]
    NotFound { what: String },
    /// The actor may not do this.
    #[error("{actor} may not {what}")]
    Forbidden { actor: String, what: String },
    /// A memo rule refuses the operation; nothing was enqueued or sent.
    #[error(transparent)]
    Refused(Refusal),
    /// The operation collides with the current state (a job that is not in
    /// a state the operation applies to).
    #[error("{what}")]
    Conflict { what: String },
    /// Our failure (database, store, a bug): the caller did nothing wrong.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl OpError {
    /// A wrong input.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// Something named that does not exist.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    /// A collision with the current state.
    pub fn conflict(what: impl Into<String>) -> Self {
        Self::Conflict { what: what.into() }
    }

    /// The command line's exit code: 2 invalid input, 3 not found, 4
    /// forbidden, 5 refused by a rule, 6 conflict, 1 internal.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid { .. } => 2,
            Self::NotFound { .. } => 3,
            Self::Forbidden { .. } => 4,
            Self::Refused(_) => 5,
            Self::Conflict { .. } => 6,
            Self::Internal(_) => 1,
        }
    }
}

impl From<Refusal> for OpError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl From<E3cOptionsFixed> for OpError {
    fn from(r: E3cOptionsFixed) -> Self {
        Self::Refused(Refusal::E3cSwitches(r))
    }
}

/// Why options were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "exam {exam} is E3C: grading details, appreciation and annotations are always rendered; \
     the request turned off {}", off.join(", ")
)]
pub struct E3cOptionsFixed {
    pub exam: String,
    pub off: Vec<&'static str>,
}

/// The memo's refusals: a rule forbids what was asked, whoever asks. Each
/// message names what is wrong; nothing is enqueued, sent or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "exam {0} is harmonised: it is closed by the academic coordinator \
         (copiste harmonisation validate), not by an establishment's closure"
    )]
    Harmonised(String),
    #[error(
        "exam {exam} is {kind}, not harmonised: it is closed per establishment (copiste closure run)"
    )]
    NotHarmonised { exam: String, kind: ExamKind },
    #[error(
        "exam {exam} was published by Cyclades on {at} (recorded by {by}): \
         its closure can no longer be run or relaunched"
    )]
    Published {
        exam: String,
        at: DateTime<Utc>,
        by: String,
    },
    #[error("{} of exam {exam} in {} {} not graded: {}",
        plural(numeros.len(), "copy", "copies"),
        establishment.as_ref().map_or("the selection".to_owned(), |u| u.to_string()),
        if numeros.len() == 1 { "is" } else { "are" },
        list(numeros))]
    Ungraded {
        exam: String,
        establishment: Option<Uai>,
        numeros: Vec<String>,
    },
    #[error("establishment {establishment} was never closed for exam {exam}: run a closure first")]
    NeverClosed { exam: String, establishment: Uai },
    #[error("exam {exam} is already published (on {at})")]
    AlreadyPublished { exam: String, at: DateTime<Utc> },
    #[error("a closure of exam {exam} is running in {}: wait for it to finish (or cancel it) before publishing",
        units.iter().map(|(u, j)| format!("{u} (job {j})")).collect::<Vec<_>>().join(", "))]
    ClosureRunning {
        exam: String,
        units: Vec<(String, uuid::Uuid)>,
    },
    #[error(transparent)]
    E3cSwitches(E3cOptionsFixed),
    #[error(
        "the copy of candidate {numero} for exam {exam} has not been transmitted to Cyclades \
         (its grade is not accepted yet): it cannot be rendered or downloaded"
    )]
    NotTransmitted { exam: String, numero: String },
    #[error("establishment {establishment} has no copy of exam {exam} transmitted to Cyclades yet")]
    NothingTransmitted { exam: String, establishment: Uai },
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A list of names, at most 20 shown.
pub(crate) fn list(names: &[String]) -> String {
    list_then(names, |more| format!(" and {more} more"))
}

/// A list of names, at most 20 shown, then `more(how many are not)`.
pub(crate) fn list_then(names: &[String], more: impl Fn(usize) -> String) -> String {
    const SHOWN: usize = 20;
    let mut out = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        out.push_str(&more(names.len() - SHOWN));
    }
    out
}

/// The longest code a caller may type, in characters.
pub const MAX_CODE_CHARS: usize = 200;

/// Checks that a code the caller typed (an exam code, a candidate number,
/// an academy) is not blank, not absurdly long (at most
/// [`MAX_CODE_CHARS`] characters, as typed) and holds no control
/// character; returns it trimmed.
pub fn code<'a>(field: &'static str, value: &'a str) -> Result<&'a str, OpError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(OpError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_CODE_CHARS {
        return Err(OpError::invalid(field, "is longer than 200 characters"));
    }
    text(field, v)
}

/// Checks that free text (a search, a name) holds no control character
/// (a NUL byte cannot even be stored); returns it as given.
pub fn text<'a>(field: &'static str, value: &'a str) -> Result<&'a str, OpError> {
    if value.chars().any(char::is_control) {
        return Err(OpError::invalid(field, "contains a control character"));
    }
    Ok(value)
}
