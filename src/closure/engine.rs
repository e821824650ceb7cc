//! The engine every closure job runs per unit: mark it closing, bring its
//! export items up to date with the copies, send what is to send batch by
//! batch, settle each item with the target's answer, and record the unit's
//! new state with a summary.
//!
//! Exactly-once effect: an item's key is fixed before it is sent and is
//! kept across attempts; an item is marked `sent` before the request and
//! settled after the answer. A crash in between leaves it `sent`, so the
//! next run sends it again under the same key and the target answers
//! `duplicate`.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow};
use serde::{Deserialize, Serialize};

use super::{Refusal, UnitState, request::published_refusal};
use crate::{
    db::{
        self,
        closure::{CountOutgoing, ErrorCount, ExamRow, GradeOutgoing, StateCounts, UnitContent},
    },
    domain::Uai,
    export::{Batch, CountItem, ExportError, GradeItem, ItemResult, ItemStatus, Target},
    jobs::{JobContext, JobError},
};

/// How a run treats a unit's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMode {
    /// Send rejected items again too (a relaunch asked by a person).
    pub with_rejected: bool,
    /// Only validated copies are exported (harmonised exams).
    pub validated_only: bool,
    /// Report progress as items sent out of items to send.
    pub report_progress: bool,
    /// Refuse the unit, listing them, if some of its copies are neither
    /// graded nor absent (an establishment's closure).
    pub refuse_ungraded: bool,
}

/// One target's figures in a summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSummary {
    pub accepted: i64,
    pub rejected: i64,
    /// Not answered yet (a retryable failure).
    pub pending: i64,
    /// Items the unit should have: copies (Cyclades) or graders with
    /// corrected copies (Imag'In).
    pub total: i64,
}

/// The result of a run on one unit, stored on the unit and in the job's
/// result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSummary {
    pub exam: String,
    pub establishment: String,
    pub state: UnitState,
    pub sent: i64,
    pub targets: BTreeMap<String, TargetSummary>,
    /// Reasons items are not accepted, most frequent first.
    pub errors: Vec<ErrorLine>,
}

/// A reason some items of a target are not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorLine {
    pub target: String,
    pub state: String,
    pub message: String,
    pub items: i64,
}

impl UnitSummary {
    /// Whether items were left unanswered, which another attempt may fix.
    pub fn retryable(&self) -> bool {
        self.targets.values().any(|t| t.pending > 0)
    }

    /// Items not accepted, over both targets.
    pub fn unaccepted(&self) -> i64 {
        self.targets.values().map(|t| t.pending + t.rejected).sum()
    }
}

/// Checks that a unit's exam may still be closed (and, if `mode` says so,
/// that every copy is graded or absent), marks the unit closing, and runs
/// it. A published exam or an ungraded copy is a permanent failure with
/// the reason.
pub async fn run_unit(
    ctx: &JobContext,
    exam: &ExamRow,
    uai: &Uai,
    mode: RunMode,
) -> Result<UnitSummary, JobError> {
    let db = &ctx.services.db;
    // Read once: the refusal below, the Imag'In counts and the summary's
    // totals use it.
    let (content, graders) = db::closure::unit_content(db, &exam.code, uai.as_str())
        .await
        .map_err(JobError::Retryable)?;
    if mode.refuse_ungraded && content.ungraded > 0 {
        let numeros = db::closure::ungraded(db, &exam.code, uai.as_str())
            .await
            .map_err(JobError::Retryable)?;
        return Err(JobError::permanent(Refusal::Ungraded {
            exam: exam.code.clone(),
            establishment: Some(uai.clone()),
            numeros,
        }));
    }
    if let Some(published) = db::closure::start_run(db, &exam.code, uai.as_str(), ctx.job_id)
        .await
        .map_err(JobError::Retryable)?
    {
        let mut exam = exam.clone();
        exam.published_at = Some(published);
        let refusal = published_refusal(&exam).unwrap_or(Refusal::UnknownExam(exam.code.clone()));
        return Err(JobError::permanent(refusal));
    }
    let counts: Vec<(String, i64)> = graders
        .into_iter()
        .map(|g| {
            let n = if mode.validated_only {
                g.validated
            } else {
                g.corrected
            };
            (g.grader, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    send_unit(ctx, exam, uai, mode, content, counts)
        .await
        .map_err(JobError::Retryable)
}

async fn send_unit(
    ctx: &JobContext,
    exam: &ExamRow,
    uai: &Uai,
    mode: RunMode,
    content: UnitContent,
    counts: Vec<(String, i64)>,
) -> anyhow::Result<UnitSummary> {
    let db = &ctx.services.db;
    let code = exam.code.as_str();
    let started = std::time::Instant::now();
    let grades = db::closure::sync_grades(
        db,
        code,
        uai.as_str(),
        mode.validated_only,
        mode.with_rejected,
    )
    .await?;
    let counts =
        db::closure::sync_counts(db, code, uai.as_str(), &counts, mode.with_rejected).await?;
    let grades_taken = grades.len() as i64;
    let to_send = (grades.len() + counts.len()) as i64;
    let mut grade_tally = Tally::default();
    let batch_size = ctx.services.config.exports.batch_size as usize;
    let synced = started.elapsed();
    let mut sent = 0i64;
    let mut exporting = std::time::Duration::ZERO;
    let mut grades = grades.into_iter().peekable();
    let mut counts = counts.into_iter().peekable();
    loop {
        let (ids, items) = if grades.peek().is_some() {
            let chunk: Vec<_> = grades.by_ref().take(batch_size).collect();
            let ids = chunk.iter().map(|g| g.copy_id).collect();
            (
                ids,
                Items::Grades(chunk.into_iter().map(grade_item).collect()),
            )
        } else if counts.peek().is_some() {
            let chunk: Vec<_> = counts.by_ref().take(batch_size).collect();
            let ids = chunk.iter().map(|c| c.id).collect();
            let items = chunk
                .into_iter()
                .map(count_item)
                .collect::<anyhow::Result<Vec<_>>>()?;
            (ids, Items::Counts(items))
        } else {
            break;
        };
        let n = items.len() as i64;
        let target = items.target();
        let request = std::time::Instant::now();
        let tally = send_batch(ctx, exam, uai, ids, items).await?;
        if target == Target::Cyclades {
            grade_tally.add(tally);
        }
        exporting += request.elapsed();
        sent += n;
        if mode.report_progress {
            ctx.progress(sent as u64, to_send.max(sent) as u64).await;
        }
    }
    if mode.report_progress && to_send == 0 {
        ctx.progress(0, 0).await;
    }

    let before_summary = started.elapsed();
    // When this run took every item the unit can have (a first closure,
    // or a relaunch of a unit where nothing was accepted), its answers are
    // the whole Cyclades picture: no need to read it back.
    let complete = !mode.validated_only && grades_taken == content.copies - content.ungraded;
    let grade_counts = complete.then_some(grade_tally);
    let summary = summarise(ctx, exam, uai, mode, sent, &content, grade_counts).await?;
    db::closure::finish_run(
        db,
        code,
        uai.as_str(),
        summary.state.as_str(),
        serde_json::to_value(&summary).context("serialising the summary")?,
        summary.retryable(),
    )
    .await?;
    tracing::info!(
        exam.code = code,
        establishment.uai = %uai,
        state = %summary.state,
        sent,
        unaccepted = summary.unaccepted(),
        sync_ms = synced.as_millis() as u64,
        send_ms = exporting.as_millis() as u64,
        duration_ms = started.elapsed().as_millis() as u64,
        summary_ms = (started.elapsed() - before_summary).as_millis() as u64,
        "unit run finished"
    );
    Ok(summary)
}

/// What became of the items a run sent to one target.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    accepted: i64,
    rejected: i64,
    /// No answer (a retryable failure).
    pending: i64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.pending += other.pending;
    }
}

/// A batch's items, for one target.
enum Items {
    Grades(Vec<GradeItem>),
    Counts(Vec<CountItem>),
}

impl Items {
    fn len(&self) -> usize {
        match self {
            Items::Grades(v) => v.len(),
            Items::Counts(v) => v.len(),
        }
    }

    fn target(&self) -> Target {
        match self {
            Items::Grades(_) => Target::Cyclades,
            Items::Counts(_) => Target::Imagin,
        }
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Items::Grades(v) => v.iter().map(|g| g.key.clone()).collect(),
            Items::Counts(v) => v.iter().map(|c| c.key.clone()).collect(),
        }
    }
}

/// Sends one batch to its target and settles its items, named in the
/// ledger by `ids` (copies for grades, item ids for counts, in the order
/// of `items`), and returns what became of them. A failure to get an
/// answer is recorded on the items, not returned: the run goes on with the
/// next batch.
async fn send_batch(
    ctx: &JobContext,
    exam: &ExamRow,
    uai: &Uai,
    ids: Vec<i64>,
    items: Items,
) -> anyhow::Result<Tally> {
    let db = &ctx.services.db;
    let target = items.target();
    let id_of: std::collections::HashMap<String, i64> =
        items.keys().into_iter().zip(ids.iter().copied()).collect();
    let asked = std::time::Instant::now();
    let answer = match items {
        Items::Grades(items) => {
            let batch = Batch {
                session: exam.session_code.clone(),
                exam: exam.code.clone(),
                establishment: uai.to_string(),
                items,
            };
            ctx.services.exporters.cyclades.send_grades(&batch).await
        }
        Items::Counts(items) => {
            let batch = Batch {
                session: exam.session_code.clone(),
                exam: exam.code.clone(),
                establishment: uai.to_string(),
                items,
            };
            ctx.services.exporters.imagin.send_counts(&batch).await
        }
    };
    let answered = asked.elapsed();
    match answer {
        Ok(results) => {
            let n = results.len();
            let settling = std::time::Instant::now();
            let tally = settle(db, target, &id_of, results).await?;
            tracing::debug!(
                target = %target,
                items = n,
                request_ms = answered.as_millis() as u64,
                settle_ms = settling.elapsed().as_millis() as u64,
                "batch settled"
            );
            Ok(tally)
        }
        Err(e) => {
            tracing::warn!(
                exam.code = %exam.code,
                establishment.uai = %uai,
                target = %target,
                items = ids.len(),
                error = %e,
                "batch not accepted"
            );
            let permanent = matches!(e, ExportError::Permanent(_));
            match target {
                Target::Cyclades => {
                    db::closure::fail_grades(db, &ids, &e.to_string(), permanent).await?
                }
                Target::Imagin => {
                    db::closure::fail_counts(db, &ids, &e.to_string(), permanent).await?
                }
            }
            let n = ids.len() as i64;
            Ok(Tally {
                accepted: 0,
                rejected: if permanent { n } else { 0 },
                pending: if permanent { 0 } else { n },
            })
        }
    }
}

async fn settle(
    db: &db::Db,
    target: Target,
    id_of: &std::collections::HashMap<String, i64>,
    results: Vec<ItemResult>,
) -> anyhow::Result<Tally> {
    let mut ids = Vec::with_capacity(results.len());
    // `None`: accepted (or duplicate); the reason of a rejection otherwise.
    let mut reasons = Vec::with_capacity(results.len());
    for r in results {
        // The exporters checked that every key answered was sent.
        let id = *id_of
            .get(&r.key)
            .with_context(|| format!("the answer names key {}, which was not sent", r.key))?;
        ids.push(id);
        reasons.push(match r.status {
            ItemStatus::Accepted | ItemStatus::Duplicate => None,
            ItemStatus::Rejected => Some(r.reason.unwrap_or_else(|| "rejected".into())),
        });
    }
    match target {
        Target::Cyclades => db::closure::settle_grades(db, &ids, &reasons).await?,
        Target::Imagin => db::closure::settle_counts(db, &ids, &reasons).await?,
    }
    let rejected = reasons.iter().filter(|r| r.is_some()).count() as i64;
    Ok(Tally {
        accepted: ids.len() as i64 - rejected,
        rejected,
        pending: 0,
    })
}

#[derive(Deserialize)]
struct CountDocument {
    grader: String,
    copies: u32,
}

fn grade_item(g: GradeOutgoing) -> GradeItem {
    GradeItem {
        key: g.key,
        candidate: g.numero,
        grade: g.grade,
        absent: g.absent,
    }
}

fn count_item(o: CountOutgoing) -> anyhow::Result<CountItem> {
    let d: CountDocument = serde_json::from_value(o.document)
        .map_err(|e| anyhow!("export item {} has an invalid document: {e}", o.key))?;
    Ok(CountItem {
        key: o.key,
        grader: d.grader,
        copies: d.copies,
    })
}

async fn summarise(
    ctx: &JobContext,
    exam: &ExamRow,
    uai: &Uai,
    mode: RunMode,
    sent: i64,
    content: &UnitContent,
    grade_counts: Option<Tally>,
) -> anyhow::Result<UnitSummary> {
    let db = &ctx.services.db;
    let counts =
        db::closure::unit_counts(db, &exam.code, uai.as_str(), grade_counts.is_none()).await?;
    let of = |t: Target| -> StateCounts {
        match (t, grade_counts) {
            (Target::Cyclades, Some(tally)) => StateCounts {
                pending: tally.pending,
                sent: 0,
                accepted: tally.accepted,
                rejected: tally.rejected,
            },
            _ => counts
                .iter()
                .find(|(name, _)| name == t.as_str())
                .map(|(_, c)| c.clone())
                .unwrap_or_default(),
        }
    };
    let mut targets = BTreeMap::new();
    for t in Target::ALL {
        let c = of(t);
        let total = match t {
            Target::Cyclades => content.copies,
            // Graders with corrected copies, and those declared before who
            // have none left (declared 0).
            Target::Imagin => content
                .graders
                .max(c.pending + c.sent + c.accepted + c.rejected),
        };
        targets.insert(
            t.as_str().to_owned(),
            TargetSummary {
                accepted: c.accepted,
                rejected: c.rejected,
                pending: c.pending + c.sent,
                total,
            },
        );
    }
    let unaccepted: i64 = targets.values().map(|t| t.pending + t.rejected).sum();
    let state = if unaccepted > 0 {
        UnitState::ClosedWithErrors
    } else if mode.validated_only && content.validated < content.copies {
        UnitState::PartiallyClosed
    } else {
        UnitState::Closed
    };
    // Errors are only ever on unaccepted items.
    let errors = if unaccepted == 0 {
        Vec::new()
    } else {
        db::closure::errors(db, &exam.code, Some(uai.as_str())).await?
    };
    let errors = errors
        .into_iter()
        .map(|e: ErrorCount| ErrorLine {
            target: e.target,
            state: e.state,
            message: e.message,
            items: e.items,
        })
        .collect();
    Ok(UnitSummary {
        exam: exam.code.clone(),
        establishment: uai.to_string(),
        state,
        sent,
        targets,
        errors,
    })
}

/// The job's verdict on a set of unit runs: success when every item is
/// accepted; a retryable error when some got no answer (the ledger retries
/// with backoff); a partial result when only rejections remain.
pub fn verdict(summaries: Vec<UnitSummary>) -> Result<crate::jobs::Outcome, JobError> {
    let result = serde_json::json!({ "units": summaries });
    let pending: i64 = summaries
        .iter()
        .flat_map(|s| s.targets.values())
        .map(|t| t.pending)
        .sum();
    let rejected: i64 = summaries
        .iter()
        .flat_map(|s| s.targets.values())
        .map(|t| t.rejected)
        .sum();
    if pending > 0 {
        let first = summaries
            .iter()
            .flat_map(|s| s.errors.iter())
            .find(|e| e.state == "pending")
            .map(|e| format!(" (first error: {})", e.message))
            .unwrap_or_default();
        return Err(JobError::Retryable(anyhow!(
            "closed with errors: {pending} items not answered yet{first}, {rejected} rejected; retrying with backoff"
        )));
    }
    if rejected > 0 {
        return Ok(crate::jobs::Outcome::Failed(result));
    }
    Ok(crate::jobs::Outcome::Succeeded(result))
}
