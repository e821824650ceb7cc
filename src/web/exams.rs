//! Exams: the list of the exams in the caller's scope (API and page) and
//! an exam's page (its closure table, with the closure, harmonisation,
//! search and zip forms).

use askama::Template;
use axum::{
    Json, Router,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::get,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    WebState,
    api::ApiResult,
    french::kind_label,
    pages::{PageError, Who, date, render},
    problem::Problem,
    session::{Caller, Viewer},
};
use crate::{
    closure,
    domain::{ExamKind, UnitState},
    op::Actor,
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

#[utoipa::path(get, path = "/api/v1/exams", tag = "closure",
    responses((status = 200, body = Vec<crate::db::closure::ExamListed>, description = "The exams with copies in the caller's scope"),
        (status = 401, body = Problem)))]
async fn exams(State(s): State<WebState>, Caller(actor): Caller) -> ApiResult<Response> {
    let exams = closure::status::list_exams(&s.app, &actor).await?;
    Ok(Json(exams).into_response())
}

fn state_label(state: UnitState) -> &'static str {
    match state {
        UnitState::Open => "non clôturé",
        UnitState::Closing => "clôture en cours",
        UnitState::Closed => "clôturé",
        UnitState::PartiallyClosed => "partiellement clôturé",
        UnitState::ClosedWithErrors => "clôturé avec erreurs",
        UnitState::Published => "publié",
    }
}

struct ExamLine {
    code: String,
    subject: String,
    kind_label: &'static str,
    published: Option<String>,
}

#[derive(Template)]
#[template(path = "exams.html")]
struct ExamsPage {
    who: Option<Who>,
    exams: Vec<ExamLine>,
}

async fn page_exams(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
) -> Result<Response, PageError> {
    let listed = closure::status::list_exams(&s.app, &actor)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let page = ExamsPage {
        who: Some(Who::of(&actor)),
        exams: listed
            .into_iter()
            .map(|e| ExamLine {
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

#[derive(Template)]
#[template(path = "exam.html")]
struct ExamPage {
    who: Option<Who>,
    code: String,
    kind_label: &'static str,
    published: Option<String>,
    units: Vec<UnitLine>,
    closable: bool,
    harmonisable: bool,
    own_uai: Option<String>,
    searchable: Vec<String>,
}

async fn page_exam(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
) -> Result<Response, PageError> {
    let status = closure::status::exam_status(&s.app, &actor, &code)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let own_uai = match &actor {
        Actor::Establishment { uai } => Some(uai.to_string()),
        _ => None,
    };
    let searchable: Vec<String> = status
        .units
        .iter()
        .map(|u| u.establishment.clone())
        .collect();
    let page = ExamPage {
        who: Some(Who::of(&actor)),
        kind_label: kind_label(status.kind),
        published: status.published_at.map(date),
        closable: status.kind != ExamKind::Harmonised && !status.units.is_empty(),
        harmonisable: status.kind == ExamKind::Harmonised
            && matches!(actor, Actor::Admin(_) | Actor::Coordinator { .. }),
        own_uai,
        searchable,
        units: status
            .units
            .iter()
            .map(|u| UnitLine {
                uai: u.establishment.clone(),
                name: u.name.clone(),
                state: u.state.as_str(),
                state_label: state_label(u.state),
                copies: if status.kind == ExamKind::Harmonised {
                    format!("{} validées / {}", u.validated, u.copies)
                } else {
                    u.copies.to_string()
                },
                cyclades: format!("{} / {}", u.cyclades.accepted, u.cyclades.total),
                imagin: format!("{} / {}", u.imagin.accepted, u.imagin.total),
                errors: u
                    .errors
                    .iter()
                    .map(|e| format!("{} ({}, {}) : {}", e.target, e.state, e.items, e.message))
                    .collect(),
                job: u.job,
                job_status: u.job_status.map(|s| s.to_string()).unwrap_or_default(),
            })
            .collect(),
        code: status.exam,
    };
    render(page, &actor)
}
