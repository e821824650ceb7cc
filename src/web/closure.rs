//! Closure: an exam's closure table (API), closing and relaunching its
//! units, recording its publication and validating harmonisation passes
//! (API and pages).

use axum::{
    Form, Json, Router,
    body::Bytes,
    extract::{Multipart, Path, State},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    WebState,
    api::{ApiResult, body, uai},
    french,
    pages::{DoneLine, DonePage, PageError, Who, form_uai, render},
    problem::Problem,
    session::{Caller, Viewer},
};
use crate::{
    closure::{
        self, PassRequest, UnitRequested, Validation,
        request::{PassInput, UnitsInput},
    },
    domain::Uai,
    op::{Actor, OpError},
};

/// The API's routes of this resource.
pub(super) fn api() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(closure_status, closure_run))
        .routes(routes!(closure_relaunch))
        .routes(routes!(publish))
        .routes(routes!(validate))
}

/// The pages of this resource.
pub(super) fn pages() -> Router<WebState> {
    Router::new()
        .route("/examens/{exam}/cloture", post(page_close))
        .route("/examens/{exam}/relance", post(page_relaunch))
        .route("/examens/{exam}/harmonisation", post(page_harmonise))
}

#[utoipa::path(get, path = "/api/v1/exams/{exam}/closure", tag = "closure",
    params(("exam" = String, Path, description = "Exam code")),
    responses((status = 200, body = crate::closure::status::ExamStatus, description = "The closure of every unit the caller reaches"),
        (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn closure_status(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(exam): Path<String>,
) -> ApiResult<Response> {
    let status = closure::status::exam_status(&s.app, &actor, &exam).await?;
    Ok(Json(status).into_response())
}

/// The body of a closure or relaunch: one establishment, or every one the
/// caller reaches.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitsBody {
    pub establishment: Option<String>,
}

/// One establishment's answer to a closure or relaunch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitAnswer {
    pub establishment: Uai,
    /// `enqueued`, `already_queued`, `retry_now`, `nothing_to_send` or
    /// `refused`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

async fn units(
    s: &WebState,
    actor: &Actor,
    exam: String,
    body: &[u8],
    relaunch: bool,
) -> ApiResult<Json<Vec<UnitAnswer>>> {
    let body: UnitsBody = self::body(body)?;
    let input = UnitsInput {
        exam,
        establishment: body
            .establishment
            .as_deref()
            .map(|u| uai("establishment", u))
            .transpose()?,
    };
    let answers = if relaunch {
        closure::request_relaunch(&s.app, actor, &input).await?
    } else {
        closure::request_closure(&s.app, actor, &input).await?
    };
    Ok(Json(
        answers
            .into_iter()
            .map(|u| {
                let (outcome, job, reason) = match u.outcome {
                    Ok(UnitRequested::Enqueued(id)) => ("enqueued", Some(id), None),
                    Ok(UnitRequested::AlreadyQueued(id)) => ("already_queued", Some(id), None),
                    Ok(UnitRequested::RetryNow(id)) => ("retry_now", Some(id), None),
                    Ok(UnitRequested::NothingToSend) => ("nothing_to_send", None, None),
                    Err(r) => ("refused", None, Some(r.to_string())),
                };
                UnitAnswer {
                    establishment: u.establishment,
                    outcome,
                    job,
                    reason,
                }
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/exams/{exam}/closure", tag = "closure",
    params(("exam" = String, Path, description = "Exam code")), request_body(content = Option<UnitsBody>),
    responses((status = 200, body = Vec<UnitAnswer>, description = "Each unit's answer; a unit may be refused alone"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Refused by a rule (published, harmonised exam)"), (status = 422, body = Problem)))]
async fn closure_run(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(exam): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Vec<UnitAnswer>>> {
    units(&s, &actor, exam, &body, false).await
}

#[utoipa::path(post, path = "/api/v1/exams/{exam}/relaunch", tag = "closure",
    params(("exam" = String, Path, description = "Exam code")), request_body(content = Option<UnitsBody>),
    responses((status = 200, body = Vec<UnitAnswer>, description = "Each unit's answer; a unit never closed is refused alone"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Refused after publication"), (status = 422, body = Problem)))]
async fn closure_relaunch(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(exam): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Vec<UnitAnswer>>> {
    units(&s, &actor, exam, &body, true).await
}

/// A recorded publication.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicationAnswer {
    pub published_at: chrono::DateTime<chrono::Utc>,
    pub cancelled_jobs: Vec<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/exams/{exam}/publication", tag = "closure",
    params(("exam" = String, Path, description = "Exam code")),
    responses((status = 200, body = PublicationAnswer), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Already published, or a closure is running")))]
async fn publish(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(exam): Path<String>,
) -> ApiResult<Json<PublicationAnswer>> {
    let p = closure::publish(&s.app, &actor, &exam).await?;
    Ok(Json(PublicationAnswer {
        published_at: p.at,
        cancelled_jobs: p.cancelled,
    }))
}

/// A harmonisation pass: every copy (`numeros` absent) or the copies of
/// these candidates, for the caller's academy (or `academy`, admin).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassBody {
    pub academy: Option<String>,
    pub numeros: Option<Vec<String>>,
}

/// What a pass did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PassAnswer {
    pub pass: Option<i64>,
    pub validated: i64,
    pub already_validated: i64,
    pub job: Option<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/exams/{exam}/harmonisation-passes", tag = "closure",
    params(("exam" = String, Path, description = "A harmonised exam's code")), request_body(content = Option<PassBody>),
    responses((status = 200, body = PassAnswer), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Not harmonised, published, or ungraded copies"),
        (status = 422, body = Problem)))]
async fn validate(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(exam): Path<String>,
    body: Bytes,
) -> ApiResult<Json<PassAnswer>> {
    let body: PassBody = self::body(&body)?;
    let input = PassInput {
        exam,
        academy: body.academy,
        selection: match body.numeros {
            Some(n) => Validation::Candidates(n),
            None => Validation::All,
        },
    };
    Ok(Json(
        match closure::validate_harmonisation(&s.app, &actor, &input).await? {
            PassRequest::Enqueued {
                pass,
                validated,
                already_validated,
                job,
            } => PassAnswer {
                pass: Some(pass),
                validated,
                already_validated,
                job: Some(job),
            },
            PassRequest::NothingNew { already_validated } => PassAnswer {
                pass: None,
                validated: 0,
                already_validated,
                job: None,
            },
        },
    ))
}

#[derive(Deserialize)]
struct UnitForm {
    establishment: Option<String>,
}

async fn page_units(
    s: &WebState,
    actor: &Actor,
    code: String,
    form: UnitForm,
    relaunch: bool,
) -> Result<Response, PageError> {
    let input = UnitsInput {
        establishment: form_uai(actor, form.establishment.as_deref())?,
        exam: code.clone(),
    };
    let answers = if relaunch {
        closure::request_relaunch(&s.app, actor, &input).await
    } else {
        closure::request_closure(&s.app, actor, &input).await
    }
    .map_err(|e| PageError::of(e, actor))?;
    let lines = answers
        .into_iter()
        .map(|u| {
            let (text, job) = match u.outcome {
                Ok(UnitRequested::Enqueued(id)) => ("travail lancé".to_owned(), Some(id)),
                Ok(UnitRequested::AlreadyQueued(id)) => ("déjà en cours".to_owned(), Some(id)),
                Ok(UnitRequested::RetryNow(id)) => ("relancé maintenant".to_owned(), Some(id)),
                Ok(UnitRequested::NothingToSend) => {
                    ("rien à renvoyer : tout est accepté".to_owned(), None)
                }
                Err(r) => (format!("refusé : {}", french::refusal(&r)), None),
            };
            DoneLine {
                text: format!("{} : {text}", u.establishment),
                job,
            }
        })
        .collect();
    render(
        DonePage {
            who: Some(Who::of(actor)),
            title: if relaunch { "Relance" } else { "Clôture" },
            lines,
            back: format!("/examens/{code}"),
        },
        actor,
    )
}

async fn page_close(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
    Form(form): Form<UnitForm>,
) -> Result<Response, PageError> {
    page_units(&s, &actor, code, form, false).await
}

async fn page_relaunch(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
    Form(form): Form<UnitForm>,
) -> Result<Response, PageError> {
    page_units(&s, &actor, code, form, true).await
}

/// Reads the harmonisation form (multipart, for its file): which copies,
/// and the numéros typed or uploaded as a file (one per line, `#`
/// comments ignored). A file, when one is chosen, wins over the box.
async fn pass_form(mut form: Multipart) -> Result<Validation, OpError> {
    let bad =
        |field: &'static str, e: &dyn std::fmt::Display| OpError::invalid(field, e.to_string());
    let (mut selection, mut typed, mut uploaded) = (None, String::new(), String::new());
    while let Some(field) = form.next_field().await.map_err(|e| bad("form", &e))? {
        match field.name() {
            Some("selection") => {
                selection = Some(field.text().await.map_err(|e| bad("selection", &e))?)
            }
            Some("numeros") => typed = field.text().await.map_err(|e| bad("numeros", &e))?,
            Some("fichier") => {
                let bytes = field.bytes().await.map_err(|e| bad("fichier", &e))?;
                uploaded = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    OpError::invalid(
                        "fichier",
                        "the file is not text (UTF-8): one numéro per line",
                    )
                })?;
            }
            _ => {}
        }
    }
    Ok(match selection.as_deref() {
        Some("list") if !uploaded.trim().is_empty() => Validation::from_list(&uploaded),
        Some("list") => Validation::from_list(&typed),
        Some("all") | None => Validation::All,
        Some(other) => {
            return Err(OpError::invalid(
                "selection",
                format!("{other:?} is neither \"all\" nor \"list\""),
            ));
        }
    })
}

async fn page_harmonise(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
    form: Multipart,
) -> Result<Response, PageError> {
    let selection = pass_form(form)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let input = PassInput {
        exam: code.clone(),
        academy: None,
        selection,
    };
    let line = match closure::validate_harmonisation(&s.app, &actor, &input)
        .await
        .map_err(|e| PageError::of(e, &actor))?
    {
        PassRequest::Enqueued {
            pass,
            validated,
            already_validated,
            job,
        } => DoneLine {
            text: format!(
                "passe {pass} : {validated} copies validées ({already_validated} l'étaient déjà)"
            ),
            job: Some(job),
        },
        PassRequest::NothingNew { already_validated } => DoneLine {
            text: format!("rien de nouveau : les {already_validated} copies étaient déjà validées"),
            job: None,
        },
    };
    render(
        DonePage {
            who: Some(Who::of(&actor)),
            title: "Harmonisation",
            lines: vec![line],
            back: format!("/examens/{code}"),
        },
        &actor,
    )
}
