//! Exams: the list of the exams in the caller's scope (API and page) and
//! an exam's page (its closure table, with the closure, harmonisation,
//! search and zip forms).

use askama::Template;
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    response::Response,
    routing::get,
};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    WebState,
    api::ApiResult,
    french::{self, kind_label},
    pages::{PageError, Who, date, render, urlencoding},
    session::{Caller, Viewer},
};
use crate::{
    closure::{self, status::UnitQuery},
    domain::{ExamKind, ItemState, JobStatus, Uai, UnitState},
    download::{self, ZipInput},
    jobs::admin,
    op::{Actor, OpError},
    render::RequestedOptions,
};

/// The API's routes of this resource.
pub(super) fn api() -> OpenApiRouter<WebState> {
    OpenApiRouter::new().routes(routes!(exams))
}

/// The pages of this resource.
pub(super) fn pages() -> Router<WebState> {
    Router::new()
        .route("/examens", get(page_exams))
        .route("/examens/{exam}", get(page_exam))
}

/// An exam as the API lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Exam {
    /// The exam's code, e.g. `BAC26-PHILO`.
    pub code: String,
    pub subject: String,
    pub kind: ExamKind,
    /// When Cyclades published its results, as recorded; `null` before.
    pub published_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<crate::db::catalog::ExamListed> for Exam {
    fn from(e: crate::db::catalog::ExamListed) -> Self {
        Self {
            code: e.code,
            subject: e.subject,
            kind: e.kind,
            published_at: e.published_at,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/exams", tag = "closure",
    responses((status = 200, body = Vec<Exam>, description = "The exams with copies in the caller's scope")))]
async fn exams(State(s): State<WebState>, Caller(actor): Caller) -> ApiResult<Json<Vec<Exam>>> {
    let exams = closure::status::list_exams(&s.app, &actor).await?;
    Ok(Json(exams.into_iter().map(Exam::from).collect()))
}

struct ExamLine {
    code: String,
    subject: String,
    kind_label: &'static str,
    published: Option<String>,
    /// Where its closure stands within the viewer's reach.
    progress: String,
}

#[derive(Template)]
#[template(path = "exams.html")]
struct ExamsPage {
    who: Option<Who>,
    exams: Vec<ExamLine>,
}

/// An exam's closure progress in words: `2 clôturés sur 3 · 1 avec
/// erreurs`.
fn progress_words(p: &closure::status::ExamProgress) -> String {
    let units = p.units();
    if units == 0 {
        return "aucune copie".into();
    }
    let mut parts = vec![format!(
        "{} sur {}",
        french::count(p.closed, "clôturé", "clôturés"),
        french::number(units)
    )];
    if p.with_errors > 0 {
        parts.push(format!("{} avec erreurs", french::number(p.with_errors)));
    }
    if p.partially_closed > 0 {
        parts.push(format!("{} en partie", french::number(p.partially_closed)));
    }
    if p.closing > 0 {
        parts.push(format!("{} en cours", french::number(p.closing)));
    }
    if p.open > 0 {
        parts.push(french::count(p.open, "non clôturé", "non clôturés"));
    }
    parts.join(" · ")
}

async fn page_exams(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
) -> Result<Response, PageError> {
    let listed = closure::status::list_exams(&s.app, &actor)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let progress = closure::status::exams_progress(&s.app, &actor)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let page = ExamsPage {
        who: Some(Who::of(&actor)),
        exams: listed
            .into_iter()
            .map(|e| ExamLine {
                progress: progress_words(&progress.get(&e.code).cloned().unwrap_or_default()),
                code: e.code,
                subject: e.subject,
                kind_label: kind_label(e.kind),
                published: e.published_at.map(date),
            })
            .collect(),
    };
    render(page, &actor)
}

struct UnitLine {
    uai: String,
    name: String,
    state: &'static str,
    state_label: &'static str,
    copies: String,
    cyclades: String,
    imagin: String,
    errors: Vec<String>,
    job: Option<Uuid>,
    job_status: String,
}

/// A choice of the search and zip forms: an establishment by its name.
struct Place {
    uai: String,
    name: String,
}

#[derive(Template)]
#[template(path = "exam.html")]
struct ExamPage {
    who: Option<Who>,
    code: String,
    kind_label: &'static str,
    published: Option<String>,
    units: Vec<UnitLine>,
    /// Some unit was never closed: "Lancer la clôture" is offered.
    closable: bool,
    /// Some unit was closed: "Relancer" is offered.
    relaunchable: bool,
    harmonisable: bool,
    own_uai: Option<String>,
    searchable: Vec<Place>,
    /// Admin and coordinators may ask every establishment's zip at once.
    every_zip: bool,
    /// E3C: the zip's switches are fixed.
    fixed: bool,
    /// The establishment's built zip, as buttons.
    buttons: Vec<super::downloads::Button>,
    /// The closure table's filter by state, with each state's count.
    states: Vec<StateLink>,
    /// The first page of the same filter, when this one is not.
    previous: Option<String>,
    /// The next page of the same filter, when there is one.
    next: Option<String>,
}

/// Units whose waiting job's next attempt is looked up for the closure
/// table's words, at most (a job read each).
const NEXT_ATTEMPTS_READ: usize = 20;

/// The closure table's filter and page, from the query string: `etat`, a
/// unit state as stored (`closed_with_errors`…), and `apres`, the UAI
/// after which the page starts (both optional).
#[derive(Deserialize, Default)]
struct ExamForm {
    #[serde(default)]
    etat: String,
    #[serde(default)]
    apres: String,
}

impl ExamForm {
    /// The units the form asks for, or the invalid-input page naming the
    /// field.
    fn query(&self, actor: &Actor) -> Result<UnitQuery, PageError> {
        let state = match self.etat.trim() {
            "" => None,
            s => Some(UnitState::parse(s).ok_or_else(|| {
                PageError::of(
                    OpError::invalid(
                        "etat",
                        format!("{s:?} is not a unit state (open, closing, closed, partially_closed, closed_with_errors, published)"),
                    ),
                    actor,
                )
            })?),
        };
        let after = match self.apres.trim() {
            "" => None,
            a => Some(
                Uai::parse(a)
                    .map_err(|e| PageError::of(OpError::invalid("apres", e.to_string()), actor))?,
            ),
        };
        Ok(UnitQuery { state, after })
    }
}

/// A link of the closure table's state filter.
struct StateLink {
    label: String,
    href: String,
    current: bool,
}

/// The exam page's query string for `state` (none: every state), from
/// the start or after `after`.
fn exam_query(state: Option<UnitState>, after: Option<&str>) -> String {
    let mut q = Vec::new();
    if let Some(s) = state {
        q.push(format!("etat={}", s.as_str()));
    }
    if let Some(a) = after {
        q.push(format!("apres={}", urlencoding(a)));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// "Tous (701)", then each state that has units, as filter links.
fn state_links(counts: &[(UnitState, i64)], current: Option<UnitState>) -> Vec<StateLink> {
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let mut links = vec![StateLink {
        label: format!("tous ({})", french::number(total)),
        href: exam_query(None, None),
        current: current.is_none(),
    }];
    let mut counts = counts.to_vec();
    counts.sort_by_key(|(s, _)| s.as_str());
    links.extend(
        counts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| StateLink {
                label: format!("{} ({})", french::unit_state(s), french::number(n)),
                href: exam_query(Some(s), None),
                current: current == Some(s),
            }),
    );
    links
}

async fn page_exam(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
    Query(form): Query<ExamForm>,
) -> Result<Response, PageError> {
    let query = form.query(&actor)?;
    let closure::status::ExamPage {
        status,
        counts,
        places,
        next,
    } = closure::status::exam_page(&s.app, &actor, &code, &query)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let own_uai = match &actor {
        Actor::Establishment { uai } => Some(uai.clone()),
        _ => None,
    };
    let next_attempt = next_attempts(&s, &actor, &status).await;
    let buttons = own_zip_buttons(&s, &actor, &status, own_uai.as_ref()).await;
    let closing_kind = status.kind != ExamKind::Harmonised;
    let in_state = |wanted: &dyn Fn(UnitState) -> bool| {
        counts.iter().any(|(state, n)| *n > 0 && wanted(*state))
    };
    let page = ExamPage {
        who: Some(Who::of(&actor)),
        kind_label: kind_label(status.kind),
        published: status.published_at.map(date),
        closable: closing_kind && in_state(&|s| s == UnitState::Open),
        relaunchable: closing_kind
            && in_state(&|s| !matches!(s, UnitState::Open | UnitState::Closing)),
        harmonisable: status.kind == ExamKind::Harmonised
            && matches!(actor, Actor::Admin(_) | Actor::Coordinator { .. }),
        own_uai: own_uai.as_ref().map(|u| u.to_string()),
        every_zip: matches!(actor, Actor::Admin(_) | Actor::Coordinator { .. }) && places.len() > 1,
        searchable: places
            .into_iter()
            .map(|(uai, name)| Place { uai, name })
            .collect(),
        fixed: status.kind == ExamKind::E3c,
        buttons,
        // Filters are offered once there is more than one state to tell
        // apart or more than a page.
        states: if counts.iter().filter(|(_, n)| *n > 0).count() > 1
            || next.is_some()
            || query.after.is_some()
        {
            state_links(&counts, query.state)
        } else {
            Vec::new()
        },
        previous: query.after.is_some().then(|| exam_query(query.state, None)),
        next: next.map(|uai| exam_query(query.state, Some(&uai))),
        units: status
            .units
            .iter()
            .map(|u| unit_line(u, status.kind, &next_attempt))
            .collect(),
        code: status.exam,
    };
    render(page, &actor)
}

/// When the waiting units' jobs try again, for the closure table's words
/// (at most [`NEXT_ATTEMPTS_READ`] jobs read).
async fn next_attempts(
    s: &WebState,
    actor: &Actor,
    status: &closure::status::ExamStatus,
) -> HashMap<String, DateTime<Utc>> {
    let mut next_attempt = HashMap::new();
    for u in status
        .units
        .iter()
        .filter(|u| u.job_status == Some(JobStatus::Queued) && !u.errors.is_empty())
        .take(NEXT_ATTEMPTS_READ)
    {
        if let Some(id) = u.job
            && let Ok(detail) = admin::show(&s.app, actor, id).await
            && detail.job.run_at > chrono::Utc::now()
        {
            next_attempt.insert(u.establishment.clone(), detail.job.run_at);
        }
    }
    next_attempt
}

/// An establishment's built zip (all switches on), as buttons: none for
/// anyone else, or before a grade is accepted.
async fn own_zip_buttons(
    s: &WebState,
    actor: &Actor,
    status: &closure::status::ExamStatus,
    own_uai: Option<&Uai>,
) -> Vec<super::downloads::Button> {
    let mut buttons = Vec::new();
    if let Some(uai) = own_uai
        && status.units.iter().any(|u| u.cyclades.accepted > 0)
    {
        let input = ZipInput {
            exam: status.exam.clone(),
            establishment: uai.clone(),
            options: RequestedOptions::default(),
        };
        if let Ok(Some(links)) = download::current_links(&s.app, actor, &input).await {
            buttons = super::downloads::buttons(&s.app, &links);
        }
    }
    buttons
}

/// One line of the closure table.
fn unit_line(
    u: &closure::status::UnitStatus,
    kind: ExamKind,
    next_attempt: &HashMap<String, DateTime<Utc>>,
) -> UnitLine {
    UnitLine {
        uai: u.establishment.clone(),
        name: u.name.clone(),
        state: u.state.as_str(),
        state_label: french::unit_state(u.state),
        copies: if kind == ExamKind::Harmonised {
            format!("{} validées sur {}", u.validated, u.copies)
        } else {
            u.copies.to_string()
        },
        cyclades: format!("{} / {}", u.cyclades.accepted, u.cyclades.total),
        imagin: format!("{} / {}", u.imagin.accepted, u.imagin.total),
        errors: u
            .errors
            .iter()
            .map(|e| {
                french::export_error(
                    &e.target,
                    e.state == ItemState::Rejected,
                    e.items,
                    &e.examples,
                    next_attempt.get(&u.establishment),
                    u.job_status == Some(JobStatus::Running),
                )
            })
            .collect(),
        job: u.job,
        job_status: u
            .job_status
            .map(|s| french::job_status(s).to_owned())
            .unwrap_or_default(),
    }
}
