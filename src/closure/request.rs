//! Requests: deciding whether a closure, relaunch, harmonisation pass or
//! publication may happen, and enqueueing its job in the same transaction
//! as the decision.
//!
//! A unit's requests are serialised by a row lock on the unit: while a job
//! for the unit is queued or running, another request returns that job (a
//! double click is one job); otherwise a new job is enqueued with key
//! `<kind>:<exam>:<uai>:<generation>` and the generation moves on.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::payload::{Closure, ExportRetry, HarmonisationValidation};
use crate::{
    app::App,
    db::{self, Tx, catalog::ExamRow},
    domain::{ExamKind, JobStatus, Uai},
    ledger::{self, EnqueueOptions, Enqueued, Kind},
    op::{self, Actor, OpError, Refusal},
};

/// What a request did for one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitRequested {
    /// A new job was enqueued.
    Enqueued(Uuid),
    /// A job for the unit was already queued or running: that one.
    AlreadyQueued(Uuid),
    /// A job for the unit was waiting for its retry backoff: it is due now.
    RetryNow(Uuid),
    /// Every item of the unit is accepted: nothing to relaunch.
    NothingToSend,
}

impl UnitRequested {
    /// The job the request resulted in, if any.
    pub fn job(&self) -> Option<Uuid> {
        match self {
            Self::Enqueued(id) | Self::AlreadyQueued(id) | Self::RetryNow(id) => Some(*id),
            Self::NothingToSend => None,
        }
    }
}

impl std::fmt::Display for UnitRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Enqueued(id) => write!(f, "enqueued job {id}"),
            Self::AlreadyQueued(id) => write!(f, "already queued or running as job {id}"),
            Self::RetryNow(id) => write!(f, "job {id} was waiting to retry: due now"),
            Self::NothingToSend => f.write_str("nothing to relaunch: every item is accepted"),
        }
    }
}

/// One unit's answer to a request: done, or refused with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitRequest {
    pub establishment: Uai,
    pub outcome: Result<UnitRequested, Refusal>,
}

/// Which units a closure or relaunch covers: one establishment, or every
/// establishment with copies of the exam that the actor reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitsInput {
    pub exam: String,
    pub establishment: Option<Uai>,
}

impl UnitsInput {
    /// Every unit of `exam` the actor reaches.
    pub fn exam(exam: impl Into<String>) -> Self {
        Self {
            exam: exam.into(),
            establishment: None,
        }
    }

    /// One unit.
    pub fn unit(exam: impl Into<String>, establishment: Uai) -> Self {
        Self {
            exam: exam.into(),
            establishment: Some(establishment),
        }
    }
}

/// The exam named by the caller.
pub(crate) async fn exam_row(app: &App, exam: &str) -> Result<ExamRow, OpError> {
    let exam = op::code("exam", exam)?;
    db::catalog::exam(&app.db, exam)
        .await?
        .ok_or_else(|| OpError::not_found(format!("exam {exam}")))
}

/// The refusal of a published exam, if it is.
pub(crate) fn published_refusal(exam: &ExamRow) -> Option<Refusal> {
    exam.published_at.map(|at| Refusal::Published {
        exam: exam.code.clone(),
        at,
        by: exam.published_by.clone().unwrap_or_else(|| "?".into()),
    })
}

/// The units a request covers: one establishment (which must have copies
/// of the exam, and be reached by the actor) or every establishment with
/// copies of it that the actor reaches.
async fn units(
    app: &App,
    actor: &Actor,
    exam: &str,
    establishment: Option<&Uai>,
    what: &str,
) -> Result<Vec<Uai>, OpError> {
    let scope = actor.scope();
    let establishment = establishment.or(scope.establishment());
    if let Some(uai) = establishment {
        actor.reach(app, uai, what).await?;
    }
    // One unit is looked up alone: the nightly closure asks unit by unit,
    // and listing the exam's establishments each time made its cost grow
    // with the square of the session (2026-12-06, `bench national`).
    match establishment {
        None => Ok(db::catalog::exam_establishments(&app.db, exam, scope.academy()).await?),
        Some(uai) if db::closure::unit_exists(&app.db, exam, uai.as_str()).await? => {
            Ok(vec![uai.clone()])
        }
        Some(uai) => {
            if db::catalog::establishment_exists(&app.db, uai.as_str()).await? {
                Err(OpError::not_found(format!(
                    "exam {exam} in establishment {uai} (it has no copy of it)"
                )))
            } else {
                Err(OpError::not_found(format!("establishment {uai}")))
            }
        }
    }
}

/// Requests the closure of a ponctuel or E3C exam for one establishment
/// or all those the actor reaches (one job each). The exam-wide checks
/// refuse the whole request; an establishment with ungraded copies is
/// refused alone. Open to the unit's establishment, its academy's
/// coordinator, admin and the scheduler (nightly closures).
pub async fn request_closure(
    app: &App,
    actor: &Actor,
    input: &UnitsInput,
) -> Result<Vec<UnitRequest>, OpError> {
    let exam = exam_row(app, &input.exam).await?;
    let what = format!("close exam {}", exam.code);
    // Who asks first: a refusal would tell a stranger about the exam.
    let units = units(app, actor, &exam.code, input.establishment.as_ref(), &what).await?;
    if exam.kind == ExamKind::Harmonised {
        return Err(Refusal::Harmonised(exam.code).into());
    }
    if let Some(r) = published_refusal(&exam) {
        return Err(r.into());
    }
    let mut ungraded = match units.as_slice() {
        // One unit: its own copies only (see `units`).
        [uai] => {
            let numeros = db::closure::unit_ungraded(&app.db, &exam.code, uai.as_str()).await?;
            std::collections::HashMap::from_iter(
                (!numeros.is_empty()).then(|| (uai.to_string(), numeros)),
            )
        }
        _ => db::closure::ungraded_by_establishment(&app.db, &exam.code).await?,
    };
    let by = actor.label();
    // One transaction for every unit: all are enqueued, or none.
    let mut tx = app.db.begin().await?;
    let mut out = Vec::with_capacity(units.len());
    for uai in units {
        let outcome = match ungraded.remove(uai.as_str()) {
            Some(numeros) => Err(Refusal::Ungraded {
                exam: exam.code.clone(),
                establishment: Some(uai.clone()),
                numeros,
            }),
            None => {
                let job = Closure {
                    exam: exam.code.clone(),
                    establishment: uai.clone(),
                };
                Ok(enqueue_unit(&mut tx, &job, &exam.code, &uai, &by).await?)
            }
        };
        out.push(UnitRequest {
            establishment: uai,
            outcome,
        });
    }
    tx.commit().await?;
    Ok(out)
}

/// Requests a relaunch (re-sending what is not accepted, rejected items
/// included) for one establishment or every establishment of the exam the
/// actor reaches. Refused after publication, with nothing sent.
pub async fn request_relaunch(
    app: &App,
    actor: &Actor,
    input: &UnitsInput,
) -> Result<Vec<UnitRequest>, OpError> {
    let exam = exam_row(app, &input.exam).await?;
    let what = format!("relaunch the closure of exam {}", exam.code);
    let units = units(app, actor, &exam.code, input.establishment.as_ref(), &what).await?;
    relaunch_units(app, actor, &exam, units).await
}

/// Relaunches the closure of `exam` in every establishment of `academy`
/// that has copies of it, as [`request_relaunch`] does for each: the
/// academy's coordinator, admin and the scheduler (any academy); refused
/// to an establishment and to another academy's coordinator. Refused
/// after publication, with nothing sent.
pub async fn request_relaunch_in_academy(
    app: &App,
    actor: &Actor,
    exam: &str,
    academy: &str,
) -> Result<Vec<UnitRequest>, OpError> {
    let exam = exam_row(app, exam).await?;
    let what = format!(
        "relaunch the closure of exam {} in academy {academy}",
        exam.code
    );
    match actor {
        Actor::Establishment { .. } => return Err(actor.forbidden(what)),
        Actor::Coordinator { academy: own } if own != academy => {
            return Err(actor.forbidden(what));
        }
        _ => {}
    }
    if !db::catalog::academy_exists(&app.db, academy).await? {
        return Err(OpError::not_found(format!("academy {academy}")));
    }
    let units = db::catalog::exam_establishments(&app.db, &exam.code, Some(academy)).await?;
    relaunch_units(app, actor, &exam, units).await
}

/// Enqueues the relaunch of each of `units` (one transaction): a unit
/// never closed is refused alone, one with nothing left to send needs no
/// job. Refused after publication.
async fn relaunch_units(
    app: &App,
    actor: &Actor,
    exam: &ExamRow,
    units: Vec<Uai>,
) -> Result<Vec<UnitRequest>, OpError> {
    if let Some(r) = published_refusal(exam) {
        return Err(r.into());
    }
    let db = &app.db;
    let by = actor.label();
    let mut tx = db.begin().await?;
    let mut out = Vec::with_capacity(units.len());
    for uai in units {
        let outcome = if !db::closure::has_items(db, &exam.code, uai.as_str()).await? {
            Err(Refusal::NeverClosed {
                exam: exam.code.clone(),
                establishment: uai.clone(),
            })
        } else if db::closure::relaunch_work(db, &exam.code, uai.as_str()).await? == 0 {
            Ok(UnitRequested::NothingToSend)
        } else {
            let job = ExportRetry {
                exam: exam.code.clone(),
                establishment: uai.clone(),
            };
            Ok(enqueue_unit(&mut tx, &job, &exam.code, &uai, &by).await?)
        };
        out.push(UnitRequest {
            establishment: uai,
            outcome,
        });
    }
    tx.commit().await?;
    Ok(out)
}

/// Enqueues `job` for a unit in `tx` unless one is queued or running for
/// it. The unit stays locked until `tx` ends.
async fn enqueue_unit<J: Kind>(
    tx: &mut Tx,
    job: &J,
    exam: &str,
    uai: &Uai,
    by: &str,
) -> anyhow::Result<UnitRequested> {
    let lock = db::closure::lock_unit(tx, exam, uai.as_str()).await?;
    if let Some(active) = &lock.active
        && matches!(active.status, JobStatus::Queued | JobStatus::Running)
    {
        let pulled = active.status == JobStatus::Queued && db::jobs::run_now(tx, active.id).await?;
        return Ok(if pulled {
            UnitRequested::RetryNow(active.id)
        } else {
            UnitRequested::AlreadyQueued(active.id)
        });
    }
    let generation = lock.generation + 1;
    let key = format!("{}:{exam}:{uai}:{generation}", J::NAME);
    let enqueued = ledger::enqueue(tx, job, EnqueueOptions::by(by).key(key)).await?;
    db::closure::set_active_job(tx, exam, uai.as_str(), generation, enqueued.id()).await?;
    Ok(match enqueued {
        Enqueued::Created(id) => UnitRequested::Enqueued(id),
        Enqueued::Existing(id) => UnitRequested::AlreadyQueued(id),
    })
}

/// The kinds of job that send an exam's items to Cyclades and Imag'In:
/// the publication cancels their queued jobs, and none of them runs again
/// after it.
pub const SENDING_KINDS: [&str; 3] = [
    Closure::NAME,
    ExportRetry::NAME,
    HarmonisationValidation::NAME,
];

/// The refusal to run a job again when it sends the items of an exam
/// that Cyclades has published (a job of [`SENDING_KINDS`] whose payload
/// names a published exam); `None` for any other job.
pub async fn published_job_refusal(
    app: &App,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<Option<Refusal>, OpError> {
    if !SENDING_KINDS.contains(&kind) {
        return Ok(None);
    }
    let Some(code) = payload["exam"].as_str() else {
        return Ok(None);
    };
    Ok(db::catalog::exam(&app.db, code)
        .await?
        .as_ref()
        .and_then(published_refusal))
}

/// A recorded publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub at: DateTime<Utc>,
    /// Closure jobs of the exam that were still queued, now cancelled.
    pub cancelled: Vec<Uuid>,
}

/// Records Cyclades' publication of `exam` (who and when). Refused while
/// a closure of the exam is running; queued ones are cancelled. Admin
/// only: the publication is Cyclades', recorded by the operator.
pub async fn publish(app: &App, actor: &Actor, exam: &str) -> Result<Published, OpError> {
    use db::closure::PublishOutcome as P;
    let exam = op::code("exam", exam)?;
    actor.require_admin(&format!("record the publication of exam {exam}"))?;
    match db::closure::publish(&app.db, exam, &actor.label(), &SENDING_KINDS).await? {
        P::Published { at, cancelled } => Ok(Published { at, cancelled }),
        P::UnknownExam => Err(OpError::not_found(format!("exam {exam}"))),
        P::AlreadyPublished { at, .. } => Err(Refusal::AlreadyPublished {
            exam: exam.to_owned(),
            at,
        }
        .into()),
        P::ClosureRunning(units) => Err(Refusal::ClosureRunning {
            exam: exam.to_owned(),
            units,
        }
        .into()),
    }
}

/// Which copies a harmonisation pass validates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// Every copy of the exam (in the academy, if one is named).
    All,
    /// The copies of these candidates (numéros).
    Candidates(Vec<String>),
}

impl Validation {
    /// The candidates of a list of numéros as exam offices write it (a
    /// file or a text box): one per line, blank lines and `#` comments
    /// ignored. Each numéro is checked by the validation itself.
    pub fn from_list(text: &str) -> Self {
        Self::Candidates(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
}

/// What a harmonisation validation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassRequest {
    /// A pass validated `validated` new copies; its job exports them.
    Enqueued {
        pass: i64,
        validated: i64,
        already_validated: i64,
        job: Uuid,
    },
    /// Every selected copy was validated by an earlier pass: nothing new
    /// to send (a relaunch re-sends what was not accepted).
    NothingNew { already_validated: i64 },
}

/// A harmonisation pass asked by a coordinator (or admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassInput {
    pub exam: String,
    /// The academy the pass covers; a coordinator's own when `None`, every
    /// academy of the exam for admin.
    pub academy: Option<String>,
    pub selection: Validation,
}

/// Validates copies of a harmonised exam for the academic coordinator and
/// enqueues the pass that exports them for every establishment concerned.
/// A copy validated before is not validated (nor sent) again. Only the
/// academy's coordinator (for its academy) and admin validate.
pub async fn validate_harmonisation(
    app: &App,
    actor: &Actor,
    input: &PassInput,
) -> Result<PassRequest, OpError> {
    let academy = pass_academy(actor, input)?;
    let academy = academy
        .as_deref()
        .map(|a| op::code("academy", a))
        .transpose()?;
    let exam = exam_row(app, &input.exam).await?;
    let db = &app.db;
    let kind = exam.kind;
    if kind != ExamKind::Harmonised {
        return Err(Refusal::NotHarmonised {
            exam: exam.code,
            kind,
        }
        .into());
    }
    if let Some(r) = published_refusal(&exam) {
        return Err(r.into());
    }
    if let Some(a) = academy
        && !db::catalog::academy_exists(db, a).await?
    {
        return Err(OpError::not_found(format!("academy {a}")));
    }
    let numeros = selected_numeros(&input.selection)?;
    let copies = db::closure::exam_copies(db, &exam.code, academy, numeros).await?;
    check_selected_copies(&exam.code, numeros, &copies)?;
    let fresh: Vec<String> = copies
        .iter()
        .filter(|c| !c.validated)
        .map(|c| c.numero.clone())
        .collect();
    let already_validated = (copies.len() - fresh.len()) as i64;
    if fresh.is_empty() {
        return Ok(PassRequest::NothingNew { already_validated });
    }
    record_pass(app, actor, &exam.code, academy, &fresh, copies.len() as i64).await
}

/// The academy a pass covers: any (or every, when `None`) for admin, a
/// coordinator's own; anyone else, or another academy, is forbidden.
fn pass_academy(actor: &Actor, input: &PassInput) -> Result<Option<String>, OpError> {
    match (actor, input.academy.as_deref()) {
        (Actor::Admin(_), academy) => Ok(academy.map(str::to_owned)),
        (Actor::Coordinator { academy: own }, None) => Ok(Some(own.clone())),
        (Actor::Coordinator { academy: own }, Some(a)) if a == own => Ok(Some(own.clone())),
        _ => Err(actor.forbidden(format!(
            "validate a harmonisation pass of exam {}{}",
            input.exam,
            input
                .academy
                .as_deref()
                .map(|a| format!(" for academy {a}"))
                .unwrap_or_default()
        ))),
    }
}

/// The numéros a selection names (`None`: every copy), each checked; an
/// empty list is invalid.
fn selected_numeros(selection: &Validation) -> Result<Option<&[String]>, OpError> {
    match selection {
        Validation::All => Ok(None),
        Validation::Candidates(n) if n.is_empty() => Err(OpError::invalid(
            "copies",
            "no copy selected for validation",
        )),
        Validation::Candidates(n) => {
            for numero in n {
                op::code("numeros", numero)?;
            }
            Ok(Some(n.as_slice()))
        }
    }
}

/// Checks the copies a pass found against what it asked: every numéro
/// named is found, some copy is selected, and every copy is graded.
fn check_selected_copies(
    exam: &str,
    numeros: Option<&[String]>,
    copies: &[db::closure::CandidateCopy],
) -> Result<(), OpError> {
    if let Some(wanted) = numeros {
        let found: std::collections::HashSet<&str> =
            copies.iter().map(|c| c.numero.as_str()).collect();
        let mut unknown: Vec<String> = wanted
            .iter()
            .filter(|n| !found.contains(n.as_str()))
            .cloned()
            .collect();
        unknown.sort();
        unknown.dedup();
        if !unknown.is_empty() {
            return Err(OpError::not_found(format!(
                "candidates of exam {exam} numbered {}",
                op::list(&unknown)
            )));
        }
    }
    if copies.is_empty() {
        return Err(OpError::invalid(
            "copies",
            "no copy selected for validation",
        ));
    }
    let ungraded: Vec<String> = copies
        .iter()
        .filter(|c| !c.graded)
        .map(|c| c.numero.clone())
        .collect();
    if !ungraded.is_empty() {
        return Err(Refusal::Ungraded {
            exam: exam.to_owned(),
            establishment: None,
            numeros: ungraded,
        }
        .into());
    }
    Ok(())
}

/// Records the pass over the `fresh` copies (not validated yet) of `exam`
/// and enqueues the job that exports them, in one transaction; `selected`
/// is how many copies the pass selected.
async fn record_pass(
    app: &App,
    actor: &Actor,
    exam: &str,
    academy: Option<&str>,
    fresh: &[String],
    selected: i64,
) -> Result<PassRequest, OpError> {
    let by = actor.label();
    let mut tx = app.db.begin().await?;
    let (pass, validated) = db::closure::insert_pass(&mut tx, exam, academy, fresh, &by).await?;
    if validated == 0 {
        // A concurrent pass validated them first.
        drop(tx);
        return Ok(PassRequest::NothingNew {
            already_validated: selected,
        });
    }
    let job = HarmonisationValidation {
        exam: exam.to_owned(),
        academy: academy.map(str::to_owned),
        pass,
    };
    let key = format!("{}:{}:{pass}", HarmonisationValidation::NAME, exam);
    let enqueued = ledger::enqueue(&mut tx, &job, EnqueueOptions::by(by).key(key))
        .await
        .map_err(anyhow::Error::from)?;
    tx.commit().await?;
    Ok(PassRequest::Enqueued {
        pass,
        validated,
        already_validated: selected - validated,
        job: enqueued.id(),
    })
}
