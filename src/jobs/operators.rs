//! What operators (admin, coordinators, the scheduler) read and do over
//! many jobs at once: what the jobs list tells of each job beyond its row
//! (the names of its exam and establishment, the later run that replaced
//! a dead one), and the retry of every dead job of a filter.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use uuid::Uuid;

use super::admin::{self, ListInput};
use crate::{
    app::App,
    db::{self, jobs::JobRow},
    domain::JobStatus,
    ledger::Kind as _,
    op::{Actor, OpError, Scope},
};

/// The most dead jobs one bulk retry takes: the newest of its filter.
pub const MAX_BULK: usize = 1_000;

/// Jobs read per statement while gathering a bulk retry's jobs.
const BULK_PAGE: i64 = 250;

/// What the jobs list tells of its jobs beyond their rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobNotes {
    /// The subject of each exam the jobs name, by code.
    pub exams: HashMap<String, String>,
    /// The name of each establishment the jobs name, by UAI.
    pub establishments: HashMap<String, String>,
    /// For a dead job whose unit a later run took over (succeeded, queued
    /// or running), that run's id.
    pub superseded: HashMap<Uuid, Uuid>,
}

/// The kinds that do the same work on a closure unit: a relaunch
/// (`export-retry`) takes over a dead closure, and the other way round.
fn unit_family() -> Vec<String> {
    vec![
        crate::jobs::closure::Closure::NAME.to_owned(),
        crate::jobs::export_retry::ExportRetry::NAME.to_owned(),
    ]
}

/// A payload's text field, if it has one.
fn field<'a>(job: &'a JobRow, name: &str) -> Option<&'a str> {
    job.payload.get(name).and_then(serde_json::Value::as_str)
}

/// What the jobs list tells of `jobs` (a page the actor listed): the
/// names of their exams and establishments, and the later runs that
/// replaced the dead ones. Only jobs within the actor's scope get notes:
/// an establishment's own, a coordinator's academy's (a later run of the
/// same unit is within the same scope as the dead job).
pub async fn notes(app: &App, actor: &Actor, jobs: &[JobRow]) -> Result<JobNotes, OpError> {
    let mut uais: Vec<String> = jobs
        .iter()
        .filter_map(|j| field(j, "establishment").map(str::to_owned))
        .collect();
    uais.sort_unstable();
    uais.dedup();
    let places = db::catalog::establishment_names(&app.db, &uais).await?;
    let scope = actor.scope();
    let reached = |j: &JobRow| match (field(j, "establishment"), field(j, "academy")) {
        (Some(uai), _) => places.get(uai).is_some_and(|(_, academy)| match scope {
            Scope::All => true,
            Scope::Academy(own) => academy == own,
            Scope::Establishment(own) => own.as_str() == uai,
        }),
        (None, academy) => match scope {
            Scope::All => true,
            Scope::Academy(own) => academy == Some(own),
            Scope::Establishment(_) => false,
        },
    };
    let jobs: Vec<&JobRow> = jobs.iter().filter(|j| reached(j)).collect();
    let mut exams: Vec<String> = jobs
        .iter()
        .filter_map(|j| field(j, "exam").map(str::to_owned))
        .collect();
    exams.sort_unstable();
    exams.dedup();
    let dead: Vec<Uuid> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Dead)
        .map(|j| j.id)
        .collect();
    let establishments = jobs
        .iter()
        .filter_map(|j| field(j, "establishment"))
        .filter_map(|uai| {
            places
                .get(uai)
                .map(|(name, _)| (uai.to_owned(), name.clone()))
        })
        .collect();
    Ok(JobNotes {
        exams: db::catalog::exam_subjects(&app.db, &exams).await?,
        establishments,
        superseded: db::jobs::superseded(&app.db, &dead, &unit_family()).await?,
    })
}

/// Admin, the scheduler and coordinators (within their academy); never an
/// establishment.
fn require_operator(actor: &Actor, what: &str) -> Result<(), OpError> {
    match actor {
        Actor::Establishment { .. } => Err(actor.forbidden(what)),
        _ => Ok(()),
    }
}

/// How many dead jobs of one kind and exam a bulk retry takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadGroup {
    pub kind: String,
    pub exam: Option<String>,
    pub jobs: usize,
}

/// The dead jobs a bulk retry of a filter takes: their ids (newest first,
/// at most [`MAX_BULK`]), grouped by kind and exam.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadJobs {
    pub ids: Vec<Uuid>,
    pub groups: Vec<DeadGroup>,
    /// Whether more dead jobs pass the filter than one bulk retry takes.
    pub more: bool,
}

/// The dead jobs of `input`'s filters (its status, cursor, limit and
/// offset are ignored) within the actor's scope, as a bulk retry would
/// take them. Admin, the scheduler and coordinators.
pub async fn dead_jobs(app: &App, actor: &Actor, input: &ListInput) -> Result<DeadJobs, OpError> {
    require_operator(actor, "retry dead jobs")?;
    let scoped = admin::scoped_filter(app, actor, input)
        .await?
        .with_status(JobStatus::Dead);
    let filter = scoped.as_db();
    let mut jobs: Vec<JobRow> = Vec::new();
    let mut after = None;
    while jobs.len() <= MAX_BULK {
        let page = db::jobs::list_page(&app.db, &filter, after, BULK_PAGE, 0).await?;
        let last = page.last().map(|j| db::jobs::After {
            created_at: j.created_at,
            id: j.id,
        });
        let full = page.len() as i64 == BULK_PAGE;
        jobs.extend(page);
        match last {
            Some(last) if full => after = Some(last),
            _ => break,
        }
    }
    let more = jobs.len() > MAX_BULK;
    jobs.truncate(MAX_BULK);
    let mut groups: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for j in &jobs {
        *groups
            .entry((j.kind.clone(), field(j, "exam").map(str::to_owned)))
            .or_default() += 1;
    }
    let mut groups: Vec<DeadGroup> = groups
        .into_iter()
        .map(|((kind, exam), jobs)| DeadGroup { kind, exam, jobs })
        .collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.jobs));
    Ok(DeadJobs {
        ids: jobs.iter().map(|j| j.id).collect(),
        groups,
        more,
    })
}

/// What a bulk retry did: the jobs queued again, and those refused with
/// the operation's answer (a published exam's closure, a job another
/// operator retried meanwhile, one out of the actor's reach).
#[derive(Debug, Default)]
pub struct BulkRetry {
    pub retried: Vec<Uuid>,
    pub refused: Vec<(Uuid, OpError)>,
    /// Whether dead jobs of the filter remain beyond the [`MAX_BULK`]
    /// newest this retry took.
    pub more: bool,
}

/// Retries every dead job of `input`'s filters within the actor's scope
/// (at most [`MAX_BULK`], the newest), each through [`admin::retry`] so
/// that each gets the same answer as alone: a coordinator reaches its
/// academy's jobs only, and a job sending a published exam's items is
/// refused. Admin, the scheduler and coordinators.
pub async fn retry_dead(app: &App, actor: &Actor, input: &ListInput) -> Result<BulkRetry, OpError> {
    let dead = dead_jobs(app, actor, input).await?;
    let mut out = BulkRetry {
        more: dead.more,
        ..BulkRetry::default()
    };
    for id in dead.ids {
        match admin::retry(app, actor, id).await {
            Ok(_) => out.retried.push(id),
            Err(OpError::Internal(e)) => return Err(OpError::Internal(e)),
            Err(refused) => out.refused.push((id, refused)),
        }
    }
    Ok(out)
}
