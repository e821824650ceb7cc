//! `closure status`: per establishment, the unit's state, accepted/total
//! per target and why items are not accepted.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::UnitState;
use crate::{
    app::App,
    db,
    domain::{ExamKind, JobStatus, Uai},
    op::{Actor, OpError},
};

/// Accepted and total items of one target in one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    pub accepted: i64,
    pub total: i64,
    pub rejected: i64,
    /// Sent or to send, without an answer yet.
    pub pending: i64,
}

/// One establishment's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitStatus {
    pub establishment: String,
    pub name: String,
    pub state: UnitState,
    pub copies: i64,
    /// Harmonised exams: copies validated by a pass.
    pub validated: i64,
    pub ungraded: i64,
    pub runs: i32,
    pub closed_at: Option<DateTime<Utc>>,
    pub job: Option<uuid::Uuid>,
    pub job_status: Option<JobStatus>,
    pub cyclades: TargetStatus,
    pub imagin: TargetStatus,
    pub errors: Vec<db::closure::ErrorCount>,
}

/// An exam's closure status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExamStatus {
    pub exam: String,
    pub kind: ExamKind,
    pub published_at: Option<DateTime<Utc>>,
    pub published_by: Option<String>,
    pub units: Vec<UnitStatus>,
}

impl ExamStatus {
    /// Units in `state`.
    pub fn count(&self, state: UnitState) -> usize {
        self.units.iter().filter(|u| u.state == state).count()
    }
}

/// Reads the closure status of `exam`: every unit for admin and the
/// scheduler, the academy's for a coordinator, its own for an
/// establishment.
pub async fn exam_status(app: &App, actor: &Actor, exam: &str) -> Result<ExamStatus, OpError> {
    let row = super::request::exam_row(app, exam).await?;
    let db = &app.db;
    let exam = row.code.as_str();
    // The scope is applied by the queries: a coordinator's page reads its
    // academy's units only, an establishment's its own.
    let scope = actor.scope();
    let own = scope.establishment().map(|u| u.as_str());
    let filter = db::closure::UnitFilter {
        academy: scope.academy(),
        uai: own,
        ..Default::default()
    };
    let rows = db::closure::unit_rows(db, exam, filter).await?;
    let errors = if scope.academy().is_none() && own.is_none() {
        // Every unit: the exam's failing items, found by their index.
        db::closure::exam_errors(db, exam).await?
    } else {
        db::closure::errors_of_units(db, exam, &failing_units(&rows)).await?
    };
    Ok(status_of(row, rows, errors))
}

/// The units whose stored counts hold items not accepted: the only ones
/// with errors to tell. Reading those of the units in reach, rather than
/// every failing item of the exam, keeps a coordinator's status within
/// its academy and a page within its hundred units.
fn failing_units(rows: &[db::closure::UnitRow]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.cyclades.unaccepted() + r.imagin.unaccepted() > 0)
        .map(|r| r.establishment.clone())
        .collect()
}

/// Which units of an exam's closure table a page shows.
#[derive(Debug, Clone, Default)]
pub struct UnitQuery {
    /// Only the units in this state (as the table shows it: every unit of
    /// a published exam is published).
    pub state: Option<UnitState>,
    /// The units after this establishment, in UAI order.
    pub after: Option<Uai>,
}

/// One page of an exam's closure table.
#[derive(Debug, Clone)]
pub struct ExamPage {
    /// The exam, with the page's units.
    pub status: ExamStatus,
    /// Every unit in the actor's reach, by state (as shown), whatever the
    /// page's filter.
    pub counts: Vec<(UnitState, i64)>,
    /// Every establishment in the actor's reach with copies of the exam,
    /// as (UAI, name), for the search and zip forms.
    pub places: Vec<(String, String)>,
    /// The last establishment shown, when more units follow.
    pub next: Option<String>,
}

/// Units per page of the closure table: the largest academy has 700
/// establishments, whose table in one page was 389 KB of HTML and the
/// slowest page of a national night (docs/performance.md).
pub const UNITS_PER_PAGE: usize = 100;

/// One page of the closure table of `exam` within the actor's reach (as
/// [`exam_status`]): at most [`UNITS_PER_PAGE`] units that `query` keeps,
/// with the counts by state and the establishments of the whole reach.
/// Errors are read for the units shown only, and only for those whose
/// stored counts hold items not accepted.
pub async fn exam_page(
    app: &App,
    actor: &Actor,
    exam: &str,
    query: &UnitQuery,
) -> Result<ExamPage, OpError> {
    let row = super::request::exam_row(app, exam).await?;
    let db = &app.db;
    let code = row.code.clone();
    let scope = actor.scope();
    let own = scope.establishment().map(|u| u.as_str());
    let published = row.published_at.is_some();
    let filter = db::closure::UnitFilter {
        academy: scope.academy(),
        uai: own,
        // Every unit of a published exam shows as published: its stored
        // state filters nothing then.
        state: query.state.filter(|_| !published),
        after: query.after.as_ref().map(Uai::as_str),
        // One more than shown: whether a next page exists.
        limit: Some(UNITS_PER_PAGE as i64 + 1),
    };
    let (mut rows, places) = tokio::try_join!(
        db::closure::unit_rows(db, &code, filter),
        db::closure::unit_places(db, &code, scope.academy(), own),
    )?;
    // A published exam's units are all published: no other state shows
    // any.
    if published && query.state.is_some_and(|s| s != UnitState::Published) {
        rows.clear();
    }
    let mut counts: Vec<(UnitState, i64)> = Vec::new();
    for place in &places {
        let state = if published {
            UnitState::Published
        } else {
            place.state
        };
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    let next = (rows.len() > UNITS_PER_PAGE).then(|| {
        rows.truncate(UNITS_PER_PAGE);
        rows.last().map(|r| r.establishment.clone())
    });
    let errors = db::closure::errors_of_units(db, &code, &failing_units(&rows)).await?;
    Ok(ExamPage {
        status: status_of(row, rows, errors),
        counts,
        places: places.into_iter().map(|p| (p.uai, p.name)).collect(),
        next: next.flatten(),
    })
}

/// The closure status of an exam from its units' rows and errors.
fn status_of(
    row: db::catalog::ExamRow,
    rows: Vec<db::closure::UnitRow>,
    errors: Vec<db::closure::ErrorCount>,
) -> ExamStatus {
    // Grouped by establishment once: a national exam has 4 600 units and
    // as many groups of errors.
    let mut errors_by_unit: std::collections::HashMap<String, Vec<db::closure::ErrorCount>> =
        std::collections::HashMap::new();
    for error in errors {
        errors_by_unit
            .entry(error.establishment.clone())
            .or_default()
            .push(error);
    }
    let units = rows
        .into_iter()
        .map(|u| {
            let state = if row.published_at.is_some() {
                UnitState::Published
            } else {
                u.state
            };
            UnitStatus {
                errors: errors_by_unit.remove(&u.establishment).unwrap_or_default(),
                establishment: u.establishment,
                name: u.name,
                state,
                copies: u.content.copies,
                validated: u.content.validated,
                ungraded: u.content.ungraded,
                runs: u.runs,
                closed_at: u.closed_at,
                job: u.active_job,
                job_status: u.active_status,
                cyclades: TargetStatus {
                    accepted: u.cyclades.accepted,
                    total: u.content.copies,
                    rejected: u.cyclades.rejected,
                    pending: u.cyclades.pending + u.cyclades.sent,
                },
                imagin: TargetStatus {
                    accepted: u.imagin.accepted,
                    // Graders with corrected copies, and those declared
                    // before who have none left (declared 0).
                    total: u.content.graders.max(
                        u.imagin.pending + u.imagin.sent + u.imagin.accepted + u.imagin.rejected,
                    ),
                    rejected: u.imagin.rejected,
                    pending: u.imagin.pending + u.imagin.sent,
                },
            }
        })
        .collect();
    ExamStatus {
        exam: row.code,
        kind: row.kind,
        published_at: row.published_at,
        published_by: row.published_by,
        units,
    }
}

/// The exams the actor reaches: every exam for admin and the scheduler,
/// those with copies in its academy for a coordinator, in its
/// establishment for an establishment.
pub async fn list_exams(app: &App, actor: &Actor) -> Result<Vec<db::catalog::ExamListed>, OpError> {
    let scope = actor.scope();
    Ok(db::catalog::exams(
        &app.db,
        scope.academy(),
        scope.establishment().map(|u| u.as_str()),
    )
    .await?)
}

/// Where the closure of one exam stands within the actor's reach: how many
/// units are closed, closed with errors or partially, being closed, not
/// closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExamProgress {
    pub closed: i64,
    pub partially_closed: i64,
    pub with_errors: i64,
    pub closing: i64,
    pub open: i64,
}

impl ExamProgress {
    /// Every unit counted.
    pub fn units(&self) -> i64 {
        self.closed + self.partially_closed + self.with_errors + self.closing + self.open
    }
}

/// Per exam code, where its closure stands for the actor: every unit for
/// admin and the scheduler, the academy's for a coordinator, its own for
/// an establishment. Read from the stored counts, one query.
pub async fn exams_progress(
    app: &App,
    actor: &Actor,
) -> Result<std::collections::HashMap<String, ExamProgress>, OpError> {
    let scope = actor.scope();
    progress_of(
        app,
        scope.academy(),
        scope.establishment().map(|u| u.as_str()),
    )
    .await
}

/// Per exam code, the units of `academy` or `uai` (when given) by state.
async fn progress_of(
    app: &App,
    academy: Option<&str>,
    uai: Option<&str>,
) -> Result<std::collections::HashMap<String, ExamProgress>, OpError> {
    let rows = db::closure::exam_unit_counts(&app.db, academy, uai).await?;
    let mut progress: std::collections::HashMap<String, ExamProgress> =
        std::collections::HashMap::new();
    for r in rows {
        let p = progress.entry(r.exam).or_default();
        match r.state {
            UnitState::Closed | UnitState::Published => p.closed += r.units,
            UnitState::PartiallyClosed => p.partially_closed += r.units,
            UnitState::ClosedWithErrors => p.with_errors += r.units,
            UnitState::Closing => p.closing += r.units,
            UnitState::Open => p.open += r.units,
        }
    }
    Ok(progress)
}

/// The academies an actor may look at: every one for admin and the
/// scheduler, its own for a coordinator; none for an establishment
/// (refused).
pub async fn academies(app: &App, actor: &Actor) -> Result<Vec<db::catalog::AcademyRow>, OpError> {
    match actor {
        Actor::Establishment { .. } => Err(actor.forbidden("list the academies")),
        Actor::Coordinator { academy } => {
            Ok(db::catalog::academies(&app.db, Some(academy.as_str())).await?)
        }
        Actor::Admin(_) | Actor::Scheduler => Ok(db::catalog::academies(&app.db, None).await?),
    }
}

/// One exam of an academy's view: where its closure stands in the
/// academy.
#[derive(Debug, Clone)]
pub struct AcademyExam {
    pub exam: db::catalog::ExamListed,
    pub progress: ExamProgress,
}

/// An academy across all its exams.
#[derive(Debug, Clone)]
pub struct AcademyView {
    pub academy: db::catalog::AcademyRow,
    pub exams: Vec<AcademyExam>,
}

/// Where the closure of every exam with copies in `academy` stands there:
/// per exam, its units (establishments) closed, closed with errors, being
/// closed and not closed. Admin and the scheduler for any academy, a
/// coordinator for its own; refused to an establishment.
pub async fn academy_view(app: &App, actor: &Actor, academy: &str) -> Result<AcademyView, OpError> {
    let what = format!("read the closures of academy {academy}");
    match actor {
        Actor::Establishment { .. } => return Err(actor.forbidden(what)),
        Actor::Coordinator { academy: own } if own != academy => {
            return Err(actor.forbidden(what));
        }
        _ => {}
    }
    let academy = crate::op::code("academy", academy)?;
    let row = db::catalog::academies(&app.db, Some(academy))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| OpError::not_found(format!("academy {academy}")))?;
    let mut progress = progress_of(app, Some(academy), None).await?;
    let exams = db::catalog::exams(&app.db, Some(academy), None)
        .await?
        .into_iter()
        .map(|exam| AcademyExam {
            progress: progress.remove(&exam.code).unwrap_or_default(),
            exam,
        })
        .collect();
    Ok(AcademyView {
        academy: row,
        exams,
    })
}

impl std::fmt::Display for ExamStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = format!("exam {} ({})", self.exam, self.kind);
        if let Some(at) = self.published_at {
            let _ = write!(
                out,
                ", published {} by {}",
                at.format("%Y-%m-%d %H:%M UTC"),
                self.published_by.as_deref().unwrap_or("?")
            );
        }
        writeln!(f, "{out}")?;
        writeln!(
            f,
            "{:<9} {:<19} {:>7} {:>15} {:>13}  job",
            "uai", "state", "copies", "cyclades", "imagin"
        )?;
        for u in &self.units {
            let copies = if self.kind == ExamKind::Harmonised {
                format!("{}/{}", u.validated, u.copies)
            } else {
                u.copies.to_string()
            };
            let job = match (&u.job, &u.job_status) {
                (Some(id), Some(s)) => format!("{id} {s}"),
                _ => String::new(),
            };
            writeln!(
                f,
                "{:<9} {:<19} {:>7} {:>15} {:>13}  {job}",
                u.establishment,
                u.state.as_str(),
                copies,
                format!("{}/{}", u.cyclades.accepted, u.cyclades.total),
                format!("{}/{}", u.imagin.accepted, u.imagin.total),
            )?;
            for e in &u.errors {
                let more = if e.items > e.examples.len() as i64 {
                    ", …"
                } else {
                    ""
                };
                writeln!(
                    f,
                    "          {} {} {} ({}{more}): {}",
                    e.target,
                    e.state,
                    e.items,
                    e.examples.join(", "),
                    e.message
                )?;
            }
        }
        Ok(())
    }
}
