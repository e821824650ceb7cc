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

use super::Refusal;
use crate::{
    db::{self, Db, Tx, closure::ExamRow},
    domain::{ExamKind, Uai},
    jobs::{
        self, EnqueueOptions, Enqueued, Job, JobStatus, closure::Closure,
        export_retry::ExportRetry, harmonisation_validation::HarmonisationValidation,
    },
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

async fn exam_row(db: &Db, exam: &str) -> anyhow::Result<Result<ExamRow, Refusal>> {
    Ok(db::closure::exam(db, exam)
        .await?
        .ok_or_else(|| Refusal::UnknownExam(exam.to_owned())))
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
/// of the exam) or every establishment with copies of it.
async fn units(
    db: &Db,
    exam: &str,
    establishment: Option<&Uai>,
) -> anyhow::Result<Result<Vec<Uai>, Refusal>> {
    let all = db::closure::exam_establishments(db, exam, None).await?;
    match establishment {
        None => Ok(Ok(all)),
        Some(uai) if all.contains(uai) => Ok(Ok(vec![uai.clone()])),
        Some(uai) => {
            if db::closure::establishment_exists(db, uai.as_str()).await? {
                Ok(Err(Refusal::NoCopies {
                    exam: exam.to_owned(),
                    establishment: uai.clone(),
                }))
            } else {
                Ok(Err(Refusal::UnknownEstablishment(uai.to_string())))
            }
        }
    }
}

/// Requests the closure of a ponctuel or E3C exam for one establishment
/// or all of them (one job each). The exam-wide checks refuse the whole
/// request; an establishment with ungraded copies is refused alone.
pub async fn request_closure(
    db: &Db,
    exam: &str,
    establishment: Option<&Uai>,
    by: &str,
) -> anyhow::Result<Result<Vec<UnitRequest>, Refusal>> {
    let exam = match exam_row(db, exam).await? {
        Ok(e) => e,
        Err(r) => return Ok(Err(r)),
    };
    if exam.kind == ExamKind::Harmonised {
        return Ok(Err(Refusal::Harmonised(exam.code)));
    }
    if let Some(r) = published_refusal(&exam) {
        return Ok(Err(r));
    }
    let units = match units(db, &exam.code, establishment).await? {
        Ok(u) => u,
        Err(r) => return Ok(Err(r)),
    };
    let mut ungraded = db::closure::ungraded_by_establishment(db, &exam.code).await?;
    // One transaction for every unit: all are enqueued, or none.
    let mut tx = db.begin().await?;
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
                Ok(enqueue_unit(&mut tx, &job, &exam.code, &uai, by).await?)
            }
        };
        out.push(UnitRequest {
            establishment: uai,
            outcome,
        });
    }
    tx.commit().await?;
    Ok(Ok(out))
}

/// Requests a relaunch (re-sending what is not accepted, rejected items
/// included) for one establishment or every establishment of the exam.
/// Refused after publication, with nothing sent.
pub async fn request_relaunch(
    db: &Db,
    exam: &str,
    establishment: Option<&Uai>,
    by: &str,
) -> anyhow::Result<Result<Vec<UnitRequest>, Refusal>> {
    let exam = match exam_row(db, exam).await? {
        Ok(e) => e,
        Err(r) => return Ok(Err(r)),
    };
    if let Some(r) = published_refusal(&exam) {
        return Ok(Err(r));
    }
    let units = match units(db, &exam.code, establishment).await? {
        Ok(u) => u,
        Err(r) => return Ok(Err(r)),
    };
    let mut tx = db.begin().await?;
    let mut out = Vec::with_capacity(units.len());
    for uai in units {
        let outcome = if !db::closure::has_items(db, &exam.code, uai.as_str()).await? {
            Err(Refusal::NeverClosed {
                exam: exam.code.clone(),
                establishment: uai.clone(),
            })
        } else if db::closure::unaccepted_items(db, &exam.code, uai.as_str()).await? == 0 {
            Ok(UnitRequested::NothingToSend)
        } else {
            let job = ExportRetry {
                exam: exam.code.clone(),
                establishment: uai.clone(),
            };
            Ok(enqueue_unit(&mut tx, &job, &exam.code, &uai, by).await?)
        };
        out.push(UnitRequest {
            establishment: uai,
            outcome,
        });
    }
    tx.commit().await?;
    Ok(Ok(out))
}

/// Enqueues `job` for a unit in `tx` unless one is queued or running for
/// it. The unit stays locked until `tx` ends.
async fn enqueue_unit<J: Job>(
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
    let enqueued = jobs::enqueue(tx, job, EnqueueOptions::by(by).key(key)).await?;
    db::closure::set_active_job(tx, exam, uai.as_str(), generation, enqueued.id()).await?;
    Ok(match enqueued {
        Enqueued::Created(id) => UnitRequested::Enqueued(id),
        Enqueued::Existing(id) => UnitRequested::AlreadyQueued(id),
    })
}

/// A recorded publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub at: DateTime<Utc>,
    /// Closure jobs of the exam that were still queued, now cancelled.
    pub cancelled: Vec<Uuid>,
}

/// Records Cyclades' publication of `exam` (who and when). Refused while
/// a closure of the exam is running; queued ones are cancelled.
pub async fn publish(db: &Db, exam: &str, by: &str) -> anyhow::Result<Result<Published, Refusal>> {
    use db::closure::PublishRefusal as P;
    let kinds = [
        Closure::NAME,
        ExportRetry::NAME,
        HarmonisationValidation::NAME,
    ];
    Ok(match db::closure::publish(db, exam, by, &kinds).await? {
        Ok((at, cancelled)) => Ok(Published { at, cancelled }),
        Err(P::UnknownExam) => Err(Refusal::UnknownExam(exam.to_owned())),
        Err(P::AlreadyPublished { at, .. }) => Err(Refusal::AlreadyPublished {
            exam: exam.to_owned(),
            at,
        }),
        Err(P::ClosureRunning(units)) => Err(Refusal::ClosureRunning {
            exam: exam.to_owned(),
            units,
        }),
    })
}

/// Which copies a harmonisation pass validates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// Every copy of the exam (in the academy, if one is named).
    All,
    /// The copies of these candidates (numéros).
    Candidates(Vec<String>),
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

/// Validates copies of a harmonised exam for the academic coordinator and
/// enqueues the pass that exports them for every establishment concerned.
/// A copy validated before is not validated (nor sent) again.
pub async fn validate_harmonisation(
    db: &Db,
    exam: &str,
    academy: Option<&str>,
    selection: &Validation,
    by: &str,
) -> anyhow::Result<Result<PassRequest, Refusal>> {
    let exam = match exam_row(db, exam).await? {
        Ok(e) => e,
        Err(r) => return Ok(Err(r)),
    };
    let kind = exam.kind;
    if kind != ExamKind::Harmonised {
        return Ok(Err(Refusal::NotHarmonised {
            exam: exam.code,
            kind,
        }));
    }
    if let Some(r) = published_refusal(&exam) {
        return Ok(Err(r));
    }
    if let Some(a) = academy
        && !db::closure::academy_exists(db, a).await?
    {
        return Ok(Err(Refusal::UnknownAcademy(a.to_owned())));
    }
    let numeros = match selection {
        Validation::All => None,
        Validation::Candidates(n) if n.is_empty() => return Ok(Err(Refusal::EmptySelection)),
        Validation::Candidates(n) => Some(n.as_slice()),
    };
    let copies = db::closure::exam_copies(db, &exam.code, academy, numeros).await?;
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
            return Ok(Err(Refusal::UnknownCandidates {
                exam: exam.code,
                numeros: unknown,
            }));
        }
    }
    if copies.is_empty() {
        return Ok(Err(Refusal::EmptySelection));
    }
    let ungraded: Vec<String> = copies
        .iter()
        .filter(|c| !c.graded)
        .map(|c| c.numero.clone())
        .collect();
    if !ungraded.is_empty() {
        return Ok(Err(Refusal::Ungraded {
            exam: exam.code,
            establishment: None,
            numeros: ungraded,
        }));
    }
    let fresh: Vec<String> = copies
        .iter()
        .filter(|c| !c.validated)
        .map(|c| c.numero.clone())
        .collect();
    let already_validated = (copies.len() - fresh.len()) as i64;
    if fresh.is_empty() {
        return Ok(Ok(PassRequest::NothingNew { already_validated }));
    }
    let mut tx = db.begin().await?;
    let (pass, validated) =
        db::closure::insert_pass(&mut tx, &exam.code, academy, &fresh, by).await?;
    if validated == 0 {
        // A concurrent pass validated them first.
        drop(tx);
        return Ok(Ok(PassRequest::NothingNew {
            already_validated: copies.len() as i64,
        }));
    }
    let job = HarmonisationValidation {
        exam: exam.code.clone(),
        academy: academy.map(str::to_owned),
        pass,
    };
    let key = format!("{}:{}:{pass}", HarmonisationValidation::NAME, exam.code);
    let enqueued = jobs::enqueue(&mut tx, &job, EnqueueOptions::by(by).key(key)).await?;
    tx.commit().await?;
    Ok(Ok(PassRequest::Enqueued {
        pass,
        validated,
        already_validated: copies.len() as i64 - validated,
        job: enqueued.id(),
    }))
}

/// The exam a job works on; an unknown exam is a permanent failure.
pub(crate) async fn unit_exam(
    ctx: &crate::jobs::JobContext,
    exam: &str,
) -> Result<ExamRow, crate::jobs::JobError> {
    use crate::jobs::JobError;
    db::closure::exam(&ctx.services.db, exam)
        .await?
        .ok_or_else(|| JobError::permanent(Refusal::UnknownExam(exam.to_owned())))
}
