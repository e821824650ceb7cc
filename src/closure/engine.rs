//! The engine every closure job runs per unit: read the unit once, mark it
//! closing, send what is to send batch by batch, record each item with the
//! target's answer, and record the unit's new state with a summary.
//!
//! Exactly-once effect: an item's key is fixed by what it carries (a
//! grade's by the copy and its version, a count's by the revision recorded
//! when it changed), so every attempt sends it under the same key. A
//! Cyclades item is written once, when its batch is answered (or fails); a
//! crash after the target applied a batch but before that write leaves the
//! items as they were, so the next run sends them again under the same
//! keys and the target answers `duplicate`. Imag'In counts, whose revision
//! is assigned by the ledger, are marked `sent` before the request.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, anyhow};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    UnitState,
    plan::{GradeToSend, RunMode, UnitPlan, grade_key},
    request::published_refusal,
};
use crate::{
    app::App,
    db::{
        self,
        catalog::ExamRow,
        closure::{CountOutgoing, ErrorCount, SentGrade, StateCounts, UnitContent},
    },
    domain::{ItemState, Uai},
    export::{Batch, CountItem, ExportError, GradeItem, ItemResult, ItemStatus, Target},
    ledger::Progress as ProgressSink,
    op::Refusal,
};

/// One run of the engine: the application, the ledger job the run is
/// recorded under (on the unit, as its running job), and where progress
/// goes.
#[derive(Clone, Copy)]
pub struct UnitRun<'a> {
    pub app: &'a App,
    pub job: uuid::Uuid,
    pub progress: &'a dyn ProgressSink,
}

/// Why a unit's run stopped before recording its summary.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A memo rule forbids the run (published exam, ungraded copies):
    /// running again cannot change that.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Something failed on the way (database, store, a target's
    /// transport); another run may succeed.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
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
    /// Copies neither graded nor absent: nothing of theirs is exported, so
    /// a unit with some is not closed (a grade withdrawn after a closure).
    #[serde(default)]
    pub ungraded: i64,
    /// Reasons items are not accepted, most frequent first.
    pub errors: Vec<ErrorLine>,
}

/// A reason some items of a target are not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorLine {
    pub target: String,
    pub state: ItemState,
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
    ctx: &UnitRun<'_>,
    exam: &ExamRow,
    uai: &Uai,
    mode: RunMode,
) -> Result<UnitSummary, RunError> {
    let db = &ctx.app.db;
    let started = std::time::Instant::now();
    // Read once: the refusal below, the items to send, the Imag'In counts
    // and the summary come from it.
    let copies = db::closure::unit_copies(db, &exam.code, uai.as_str()).await?;
    let plan = UnitPlan::new(copies, mode);
    if mode.refuse_ungraded && !plan.ungraded.is_empty() {
        return Err(RunError::Refused(Refusal::Ungraded {
            exam: exam.code.clone(),
            establishment: Some(uai.clone()),
            numeros: plan.ungraded,
        }));
    }
    if let Some(published) = db::closure::start_run(db, &exam.code, uai.as_str(), ctx.job).await? {
        let mut exam = exam.clone();
        exam.published_at = Some(published);
        return Err(match published_refusal(&exam) {
            Some(refusal) => RunError::Refused(refusal),
            None => RunError::Failed(anyhow!("exam {} has no publication date", exam.code)),
        });
    }
    tracing::debug!(
        exam.code = %exam.code,
        establishment.uai = %uai,
        duration_ms = started.elapsed().as_millis() as u64,
        "unit read and marked closing"
    );
    Ok(send_unit(ctx, exam, uai, mode, plan).await?)
}

async fn send_unit(
    ctx: &UnitRun<'_>,
    exam: &ExamRow,
    uai: &Uai,
    mode: RunMode,
    plan: UnitPlan,
) -> anyhow::Result<UnitSummary> {
    let db = &ctx.app.db;
    let code = exam.code.as_str();
    let started = std::time::Instant::now();
    let counts =
        db::closure::sync_counts(db, code, uai.as_str(), &plan.counts, mode.with_rejected).await?;
    let to_send = (plan.grades.len() + counts.len()) as i64;
    let synced = started.elapsed();
    let progress = Progress::new(ctx, mode.report_progress, to_send);
    let grade_tally = send_targets(ctx, exam, uai, &plan.grades, counts, &progress).await?;
    let sent = progress.finish().await;
    let exporting = started.elapsed() - synced;

    let before_summary = started.elapsed();
    // Every Cyclades item of the unit was either sent by this run (its
    // answer is in the tally) or kept as the run read it.
    let kept = &plan.kept;
    let grade_counts = StateCounts {
        pending: kept.pending + grade_tally.pending,
        sent: kept.sent,
        accepted: kept.accepted + grade_tally.accepted,
        rejected: kept.rejected + grade_tally.rejected,
    };
    let summary = summarise(ctx, exam, uai, mode, sent, &plan.content, grade_counts).await?;
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

/// Sends a unit's grades to Cyclades and its counts to Imag'In in
/// batches, and returns what became of the grades. The two targets are
/// independent: their batches go out side by side, each target's up to
/// its own concurrency (which its exporter also enforces across the
/// process's jobs).
async fn send_targets(
    ctx: &UnitRun<'_>,
    exam: &ExamRow,
    uai: &Uai,
    grades: &[GradeToSend],
    counts: Vec<CountOutgoing>,
    progress: &Progress<'_>,
) -> anyhow::Result<Tally> {
    let batch_size = ctx.app.config.exports.batch_size as usize;
    let exporters = &ctx.app.config.exporters;
    // Built up front: a lazy iterator of closures over borrowed chunks
    // would make the job's future not `Send`.
    let grade_batches: Vec<_> = grades
        .chunks(batch_size)
        .map(|c| Items::grades(&exam.code, c))
        .collect();
    let count_batches = counts
        .chunks(batch_size)
        .map(|c| Items::counts(c.to_vec()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (grade_tally, _) = futures::try_join!(
        send_batches(
            ctx,
            exam,
            uai,
            grade_batches,
            exporters.cyclades.concurrency,
            progress
        ),
        send_batches(
            ctx,
            exam,
            uai,
            count_batches,
            exporters.imagin.concurrency,
            progress
        ),
    )?;
    Ok(grade_tally)
}

/// Sends `batches` of one target, up to `in_flight` at once, and returns
/// what became of their items.
async fn send_batches(
    ctx: &UnitRun<'_>,
    exam: &ExamRow,
    uai: &Uai,
    batches: Vec<Items>,
    in_flight: u32,
    progress: &Progress<'_>,
) -> anyhow::Result<Tally> {
    use futures::{StreamExt as _, TryStreamExt as _};

    let mut answers = futures::stream::iter(batches)
        .map(|items| async move {
            let n = items.len() as i64;
            let tally = send_batch(ctx, exam, uai, items).await?;
            progress.add(n).await;
            anyhow::Ok(tally)
        })
        .buffer_unordered(in_flight.max(1) as usize);
    let mut total = Tally::default();
    while let Some(tally) = answers.try_next().await? {
        total.add(tally);
    }
    Ok(total)
}

/// A run's items sent so far, reported as the job's progress. Reports are
/// written one at a time, so the stored figure never goes back.
struct Progress<'a> {
    ctx: &'a UnitRun<'a>,
    report: bool,
    total: i64,
    sent: tokio::sync::Mutex<i64>,
}

impl<'a> Progress<'a> {
    fn new(ctx: &'a UnitRun<'a>, report: bool, total: i64) -> Self {
        Self {
            ctx,
            report,
            total,
            sent: tokio::sync::Mutex::new(0),
        }
    }

    async fn add(&self, n: i64) {
        let mut sent = self.sent.lock().await;
        *sent += n;
        if self.report {
            let done = *sent as u64;
            self.ctx
                .progress
                .report(done, self.total.max(*sent) as u64)
                .await;
        }
    }

    /// Items sent; reports 0/0 for a run that had nothing to send.
    async fn finish(&self) -> i64 {
        let sent = *self.sent.lock().await;
        if self.report && self.total == 0 {
            self.ctx.progress.report(0, 0).await;
        }
        sent
    }
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

/// A batch's items for one target, with what names them in the ledger.
enum Items {
    /// Grades, with the copy and revision each one carries.
    Grades(Vec<GradeItem>, Vec<SentGrade>),
    /// Counts, with their item ids.
    Counts(Vec<CountItem>, Vec<i64>),
}

impl Items {
    fn grades(exam: &str, chunk: &[GradeToSend]) -> Self {
        let sent = chunk
            .iter()
            .map(|g| SentGrade {
                copy_id: g.copy_id,
                revision: g.revision,
            })
            .collect();
        let items = chunk
            .iter()
            .map(|g| GradeItem {
                key: grade_key(exam, &g.numero, g.revision),
                candidate: g.numero.clone(),
                grade: g.grade,
                absent: g.absent,
            })
            .collect();
        Items::Grades(items, sent)
    }

    fn counts(chunk: Vec<CountOutgoing>) -> anyhow::Result<Self> {
        let ids = chunk.iter().map(|c| c.id).collect();
        let items = chunk
            .into_iter()
            .map(count_item)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Items::Counts(items, ids))
    }

    fn len(&self) -> usize {
        match self {
            Items::Grades(v, _) => v.len(),
            Items::Counts(v, _) => v.len(),
        }
    }

    fn target(&self) -> Target {
        match self {
            Items::Grades(..) => Target::Cyclades,
            Items::Counts(..) => Target::Imagin,
        }
    }

    /// Each key's position in the batch.
    fn positions(&self) -> HashMap<String, usize> {
        let keys: Vec<&String> = match self {
            Items::Grades(v, _) => v.iter().map(|g| &g.key).collect(),
            Items::Counts(v, _) => v.iter().map(|c| &c.key).collect(),
        };
        keys.into_iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i))
            .collect()
    }
}

/// What names a batch's items in the ledger.
enum Sent {
    Grades(Vec<SentGrade>),
    Counts(Vec<i64>),
}

impl Sent {
    fn len(&self) -> usize {
        match self {
            Sent::Grades(v) => v.len(),
            Sent::Counts(v) => v.len(),
        }
    }
}

/// Sends one batch to its target, records its items' answers in the
/// ledger, and returns what became of them. A failure to get an answer is
/// recorded on the items, not returned: the run goes on with the next
/// batch.
async fn send_batch(
    ctx: &UnitRun<'_>,
    exam: &ExamRow,
    uai: &Uai,
    items: Items,
) -> anyhow::Result<Tally> {
    let db = &ctx.app.db;
    let target = items.target();
    let positions = items.positions();
    let sent_at = Utc::now();
    let asked = std::time::Instant::now();
    let (answer, sent) = match items {
        Items::Grades(items, sent) => (
            ctx.app
                .exporters
                .cyclades
                .send_grades(&batch(exam, uai, items))
                .await,
            Sent::Grades(sent),
        ),
        Items::Counts(items, ids) => (
            ctx.app
                .exporters
                .imagin
                .send_counts(&batch(exam, uai, items))
                .await,
            Sent::Counts(ids),
        ),
    };
    let answered = asked.elapsed();
    match answer {
        Ok(results) => {
            let n = results.len();
            let settling = std::time::Instant::now();
            let tally = settle(db, &positions, sent, results, sent_at).await?;
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
                items = sent.len(),
                error = %e,
                "batch not accepted"
            );
            let permanent = matches!(e, ExportError::Permanent(_));
            let error = e.to_string();
            let n = sent.len() as i64;
            match sent {
                Sent::Grades(sent) => {
                    db::closure::fail_grades(db, &sent, &error, permanent, sent_at).await?
                }
                Sent::Counts(ids) => db::closure::fail_counts(db, &ids, &error, permanent).await?,
            }
            Ok(Tally {
                accepted: 0,
                rejected: if permanent { n } else { 0 },
                pending: if permanent { 0 } else { n },
            })
        }
    }
}

/// A request's document for `items` of the unit.
fn batch<T>(exam: &ExamRow, uai: &Uai, items: Vec<T>) -> Batch<T> {
    Batch {
        session: exam.session_code.clone(),
        exam: exam.code.clone(),
        establishment: uai.to_string(),
        items,
    }
}

/// Records a batch's answers, in the order of the results.
async fn settle(
    db: &db::Db,
    positions: &HashMap<String, usize>,
    sent: Sent,
    results: Vec<ItemResult>,
    sent_at: DateTime<Utc>,
) -> anyhow::Result<Tally> {
    let mut order = Vec::with_capacity(results.len());
    // `None`: accepted (or duplicate); the reason of a rejection otherwise.
    let mut reasons = Vec::with_capacity(results.len());
    for r in results {
        // The exporters checked that every key answered was sent.
        let i = *positions
            .get(&r.key)
            .with_context(|| format!("the answer names key {}, which was not sent", r.key))?;
        order.push(i);
        reasons.push(match r.status {
            ItemStatus::Accepted | ItemStatus::Duplicate => None,
            ItemStatus::Rejected => Some(r.reason.unwrap_or_else(|| "rejected".into())),
        });
    }
    match sent {
        Sent::Grades(sent) => {
            let sent: Vec<SentGrade> = order.iter().map(|&i| sent[i]).collect();
            db::closure::settle_grades(db, &sent, &reasons, sent_at).await?
        }
        Sent::Counts(ids) => {
            let ids: Vec<i64> = order.iter().map(|&i| ids[i]).collect();
            db::closure::settle_counts(db, &ids, &reasons).await?
        }
    }
    let rejected = reasons.iter().filter(|r| r.is_some()).count() as i64;
    Ok(Tally {
        accepted: order.len() as i64 - rejected,
        rejected,
        pending: 0,
    })
}

#[derive(Deserialize)]
struct CountDocument {
    grader: String,
    copies: u32,
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
    ctx: &UnitRun<'_>,
    exam: &ExamRow,
    uai: &Uai,
    mode: RunMode,
    sent: i64,
    content: &UnitContent,
    grade_counts: StateCounts,
) -> anyhow::Result<UnitSummary> {
    let db = &ctx.app.db;
    let count_counts = db::closure::count_states(db, &exam.code, uai.as_str()).await?;
    let of = |t: Target| -> StateCounts {
        match t {
            Target::Cyclades => grade_counts.clone(),
            Target::Imagin => count_counts.clone(),
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
    } else if content.ungraded > 0 {
        // Ungraded copies have nothing accepted for them: not closed.
        UnitState::PartiallyClosed
    } else if mode.validated_only && content.validated < content.copies {
        UnitState::PartiallyClosed
    } else {
        UnitState::Closed
    };
    // Errors are only ever on unaccepted items.
    let errors = if unaccepted == 0 {
        Vec::new()
    } else {
        db::closure::errors_of_units(db, &exam.code, &[uai.to_string()]).await?
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
        ungraded: content.ungraded,
        errors,
    })
}
