//! The jobs' pages: the list with its filters and counts, a job's page,
//! its retry and cancellation.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::events::events;
use crate::db::jobs::{EventRow, JobRow};
use crate::domain::JobStatus;
use crate::download;
use crate::download::ZipInput;
use crate::jobs::admin;
use crate::jobs::admin::{JobList, ListInput};
use crate::jobs::operators::{self, JobNotes};
use crate::op::{Actor, OpError};
use crate::web::pages::{PageError, Who, date, form_uai, render, urlencoding};
use crate::web::session::Viewer;
use crate::web::{WebState, french};

/// One line of the jobs list.
struct JobLine {
    id: Uuid,
    short: String,
    kind: String,
    exam: String,
    /// The exam's subject, when known.
    subject: String,
    establishment: String,
    /// The establishment's name, when known.
    place: String,
    status: String,
    /// The later run that replaced this dead job.
    replaced_by: Option<Uuid>,
    attempts: String,
    /// Done/total, or when a job waiting for its backoff tries again.
    progress: String,
    created_by: String,
    created_at: String,
}

/// One status's count, linking to the list of that status.
struct CountLink {
    label: &'static str,
    count: String,
    href: String,
    current: bool,
}

/// An option of a filter's list: its value, French label and whether it
/// is chosen.
struct Choice {
    value: &'static str,
    label: String,
    selected: bool,
}

/// The button retrying the dead jobs of the current filters.
struct BulkButton {
    kind: String,
    exam: String,
    uai: String,
    label: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    who: Option<Who>,
    statuses: Vec<Choice>,
    kinds: Vec<Choice>,
    exam: String,
    uai: String,
    jobs: Vec<JobLine>,
    counts: Vec<CountLink>,
    bulk: Option<BulkButton>,
    previous: Option<String>,
    next: Option<String>,
}

/// A job's short reference: the last 8 hex digits of its id, the random
/// ones of a UUIDv7 (its first ones are the time it was made, the same
/// for every job made within a minute).
pub(super) fn short_ref(id: &Uuid) -> String {
    let hex = id.simple().to_string();
    format!("…{}", &hex[hex.len() - 8..])
}

/// A payload's text field (`exam`, `establishment`), empty when absent.
fn payload_text(payload: &serde_json::Value, field: &str) -> String {
    payload
        .get(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

#[derive(Deserialize, Clone)]
pub(super) struct JobsForm {
    #[serde(default)]
    pub(super) status: String,
    #[serde(default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) exam: String,
    #[serde(default)]
    pub(super) uai: String,
    /// The cursor of the page: the previous page's `next` (empty: the
    /// newest jobs).
    #[serde(default)]
    pub(super) apres: String,
}

/// Jobs per page of the jobs list.
const JOBS_PER_PAGE: i64 = 50;

/// The listing a form of the jobs list asks for (`status` as given, or
/// none), or the invalid-input page.
pub(super) fn list_input(
    actor: &Actor,
    form: &JobsForm,
    status: bool,
) -> Result<ListInput, PageError> {
    let status = match form.status.as_str() {
        "" => None,
        _ if !status => None,
        s => Some(
            JobStatus::parse(s).map_err(|e| PageError::of(OpError::invalid("status", e), actor))?,
        ),
    };
    Ok(ListInput {
        status,
        kind: Some(form.kind.trim().to_owned()).filter(|k| !k.is_empty()),
        exam: Some(form.exam.trim().to_owned()).filter(|k| !k.is_empty()),
        establishment: form_uai(actor, Some(&form.uai))?,
        limit: JOBS_PER_PAGE,
        cursor: Some(form.apres.trim().to_owned()).filter(|c| !c.is_empty()),
        offset: 0,
    })
}

pub(super) async fn page_jobs(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Query(form): Query<JobsForm>,
) -> Result<Response, PageError> {
    let input = list_input(&actor, &form, true)?;
    let list = admin::list(&s.app, &actor, &input)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let notes = operators::notes(&s.app, &actor, &list.jobs)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    render(
        JobsPage {
            who: Some(Who::of(&actor)),
            statuses: status_choices(&form),
            kinds: kind_choices(&form),
            counts: count_links(&list, &form),
            bulk: bulk_button(&actor, &list, &form),
            // Pages are read by key, newest first: the way back is to the
            // newest jobs.
            previous: input.cursor.is_some().then(|| jobs_query(&form, None)),
            next: list.next.as_deref().map(|c| jobs_query(&form, Some(c))),
            exam: form.exam.clone(),
            uai: form.uai.clone(),
            jobs: list.jobs.iter().map(|j| job_line(j, &notes)).collect(),
        },
        &actor,
    )
}

/// The status filter's options.
fn status_choices(form: &JobsForm) -> Vec<Choice> {
    JobStatus::ALL
        .iter()
        .map(|s| Choice {
            value: s.as_str(),
            label: french::job_status(*s).to_owned(),
            selected: s.as_str() == form.status,
        })
        .collect()
}

/// The kind filter's options.
fn kind_choices(form: &JobsForm) -> Vec<Choice> {
    french::JOB_KINDS
        .iter()
        .map(|k| Choice {
            value: k,
            label: french::job_kind(k),
            selected: *k == form.kind,
        })
        .collect()
}

/// Each status's count, linking to the list of that status with the
/// other filters kept.
fn count_links(list: &JobList, form: &JobsForm) -> Vec<CountLink> {
    list.counts
        .iter()
        .map(|(s, n)| CountLink {
            label: french::job_status(*s),
            count: n.to_string(),
            href: jobs_query(
                &JobsForm {
                    status: s.as_str().to_owned(),
                    apres: String::new(),
                    ..form.clone()
                },
                None,
            ),
            current: s.as_str() == form.status,
        })
        .collect()
}

/// The bulk retry's button: for operators, when the filters (all states,
/// or the dead ones) hold dead jobs.
fn bulk_button(actor: &Actor, list: &JobList, form: &JobsForm) -> Option<BulkButton> {
    let dead = list
        .counts
        .iter()
        .find(|(s, _)| *s == JobStatus::Dead)
        .map(|(_, n)| *n)?;
    let shown = form.status.is_empty() || form.status == JobStatus::Dead.as_str();
    (!matches!(actor, Actor::Establishment { .. }) && shown && dead.n > 0).then(|| BulkButton {
        kind: form.kind.clone(),
        exam: form.exam.clone(),
        uai: form.uai.clone(),
        label: format!(
            "Relancer les travaux en échec de ce filtre ({}{})",
            french::number(dead.n),
            if dead.capped { " et plus" } else { "" }
        ),
    })
}

/// One line of the jobs list, with what the notes tell of it.
fn job_line(j: &JobRow, notes: &JobNotes) -> JobLine {
    let exam = payload_text(&j.payload, "exam");
    let establishment = payload_text(&j.payload, "establishment");
    // A job waiting for its backoff says when it tries again instead of a
    // progress figure.
    let backoff = j.status == JobStatus::Queued && j.attempts > 0 && j.run_at > Utc::now();
    JobLine {
        short: short_ref(&j.id),
        id: j.id,
        kind: french::job_kind(&j.kind),
        subject: notes.exams.get(&exam).cloned().unwrap_or_default(),
        place: notes
            .establishments
            .get(&establishment)
            .cloned()
            .unwrap_or_default(),
        exam,
        establishment,
        status: if backoff {
            french::job_status(j.status).to_owned()
        } else {
            french::job_state(j.status, j.attempts, &j.run_at)
        },
        replaced_by: notes.superseded.get(&j.id).copied(),
        attempts: format!("{}/{}", j.attempts, j.max_attempts),
        progress: match (j.progress_done, j.progress_total) {
            _ if backoff => format!("nouvel essai à {}", french::time(&j.run_at)),
            (Some(d), Some(t)) => format!("{d}/{t}"),
            _ => String::new(),
        },
        created_by: french::actor(&j.created_by),
        created_at: date(j.created_at),
    }
}

/// The jobs list's query string for page `page` with the same filters.
pub(super) fn jobs_query(form: &JobsForm, cursor: Option<&str>) -> String {
    format!(
        "?status={}&kind={}&exam={}&uai={}&apres={}",
        urlencoding(&form.status),
        urlencoding(&form.kind),
        urlencoding(&form.exam),
        urlencoding(&form.uai),
        urlencoding(cursor.unwrap_or_default())
    )
}

struct EventLine {
    at: String,
    event: String,
    attempt: i32,
    detail: String,
    raw: Option<String>,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    who: Option<Who>,
    id: Uuid,
    kind: String,
    status: String,
    done: i64,
    total: i64,
    percent: i64,
    attempts: String,
    created_by: String,
    created_at: String,
    exam: String,
    establishment: String,
    /// The establishment's name, when known.
    place: String,
    /// The later run that replaced this dead job.
    replaced_by: Option<Uuid>,
    /// The raw error, for admins only.
    last_error: Option<String>,
    events: Vec<EventLine>,
    buttons: Vec<crate::web::downloads::Button>,
    zip_page: String,
    /// Whether the viewer may retry it now (an operator, a finished job
    /// that did not succeed).
    retry: bool,
    /// Whether the viewer may cancel it now (an operator, a job not
    /// finished).
    cancel: bool,
    /// Whether the job may still change: only then does the page follow
    /// its events (a finished job's stream ends at once, and following it
    /// would reload the page forever).
    live: bool,
}

fn parse_job_id(actor: &Actor, id: &str) -> Result<Uuid, PageError> {
    Uuid::try_parse(id).map_err(|e| PageError::of(OpError::invalid("id", e.to_string()), actor))
}

pub(super) async fn page_job(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&actor, &id)?;
    let detail = admin::show(&s.app, &actor, id)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let j = &detail.job;
    let (done, total) = (j.progress_done.unwrap_or(0), j.progress_total.unwrap_or(0));
    let percent = if total > 0 {
        100 * done / total
    } else if j.status == JobStatus::Succeeded {
        100
    } else {
        0
    };
    let buttons = finished_zip_buttons(&s, &actor, j).await;
    let notes = operators::notes(&s.app, &actor, std::slice::from_ref(j))
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let admin = matches!(actor, Actor::Admin(_));
    let operator = !matches!(actor, Actor::Establishment { .. });
    // A job sending a published exam's items is never retried: no button.
    let retry = operator
        && matches!(
            j.status,
            JobStatus::Dead | JobStatus::Failed | JobStatus::Cancelled
        )
        && crate::closure::request::published_job_refusal(&s.app, &j.kind, &j.payload)
            .await
            .map_err(|e| PageError::of(e, &actor))?
            .is_none();
    render(
        JobPage {
            who: Some(Who::of(&actor)),
            id,
            kind: french::job_kind(&j.kind),
            status: french::job_state(j.status, j.attempts, &j.run_at),
            done,
            total: total.max(1),
            percent,
            attempts: format!("{}/{}", j.attempts, j.max_attempts),
            created_by: french::actor(&j.created_by),
            created_at: date(j.created_at),
            exam: payload_text(&j.payload, "exam"),
            establishment: payload_text(&j.payload, "establishment"),
            place: notes
                .establishments
                .get(&payload_text(&j.payload, "establishment"))
                .cloned()
                .unwrap_or_default(),
            replaced_by: notes.superseded.get(&j.id).copied(),
            last_error: j.last_error.clone().filter(|_| admin),
            events: detail.events.iter().map(|e| event_line(e, admin)).collect(),
            buttons,
            retry,
            cancel: operator && matches!(j.status, JobStatus::Queued | JobStatus::Running),
            zip_page: format!("/travaux/{id}"),
            live: !j.status.is_final(),
        },
        &actor,
    )
}

/// A finished zip's buttons, for whoever reaches its establishment; none
/// for another job.
async fn finished_zip_buttons(
    s: &WebState,
    actor: &Actor,
    j: &JobRow,
) -> Vec<crate::web::downloads::Button> {
    let mut buttons = Vec::new();
    if j.kind == <download::BulkRender as crate::ledger::Kind>::NAME
        && j.status == JobStatus::Succeeded
        && let Ok(payload) = serde_json::from_value::<download::BulkRender>(j.payload.clone())
    {
        let input = ZipInput {
            exam: payload.exam,
            establishment: payload.establishment,
            options: payload.options.requested(),
        };
        if let Ok(Some(found)) = download::current_links(&s.app, actor, &input).await {
            buttons = crate::web::downloads::buttons(&s.app, &found);
        }
    }
    buttons
}

/// One line of a job's history, in French; the workers' own words for
/// admins only.
fn event_line(e: &EventRow, admin: bool) -> EventLine {
    EventLine {
        at: french::date_time_seconds(&e.at),
        event: french::job_event(&e.event).to_owned(),
        attempt: e.attempt,
        detail: e
            .detail
            .as_deref()
            .and_then(french::event_detail)
            .unwrap_or_default(),
        raw: e
            .detail
            .clone()
            .filter(|d| admin && french::event_detail(d).is_none()),
    }
}

pub(super) async fn page_job_events(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&actor, &id)?;
    events(&s, &actor, id)
        .await
        .map(IntoResponse::into_response)
        .map_err(|e| PageError::of(e, &actor))
}

pub(super) async fn page_job_retry(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&actor, &id)?;
    admin::retry(&s.app, &actor, id)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    Ok(Redirect::to(&format!("/travaux/{id}")).into_response())
}

pub(super) async fn page_job_cancel(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&actor, &id)?;
    admin::cancel(&s.app, &actor, id)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    Ok(Redirect::to(&format!("/travaux/{id}")).into_response())
}
