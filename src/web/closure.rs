//! Closure: an exam's closure table (API), closing and relaunching its
//! units, recording its publication and validating harmonisation passes
//! (API and pages).

use askama::Template;
use axum::{
    Form, Json, Router,
    extract::{Multipart, Path, State},
    response::Response,
    routing::post,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    WebState,
    api::{ApiBody, ApiPath, ApiResult, Code, UaiText, uai},
    french,
    pages::{DoneLine, DonePage, PageError, Who, form_uai, render, urlencoding},
    problem::Problem,
    session::{Caller, Viewer},
};
use crate::{
    closure::{
        self, PassRequest, UnitRequested, Validation,
        request::{PassInput, UnitsInput},
    },
    domain::{ExamKind, ItemState, Uai, UnitState},
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

/// An exam's closure, as the API shows it: every unit (establishment)
/// the caller reaches.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClosureAnswer {
    pub exam: String,
    pub kind: ExamKind,
    /// When Cyclades published the results, as recorded; `null` before.
    pub published_at: Option<DateTime<Utc>>,
    /// Who recorded the publication.
    pub published_by: Option<String>,
    pub units: Vec<UnitClosure>,
}

/// One establishment's closure.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitClosure {
    /// The establishment's UAI.
    pub establishment: String,
    /// The establishment's name.
    pub name: String,
    pub state: UnitState,
    pub copies: i64,
    /// Harmonised exams: copies validated by a pass.
    pub validated: i64,
    pub ungraded: i64,
    /// How many closures, relaunches or passes ran.
    pub runs: i32,
    pub closed_at: Option<DateTime<Utc>>,
    /// The unit's last job, if any.
    pub job: Option<Uuid>,
    pub job_status: Option<super::jobs::api::JobState>,
    /// Grades sent to Cyclades.
    pub cyclades: TargetCounts,
    /// Corrected copies declared to Imag'In.
    pub imagin: TargetCounts,
    /// Why items are not accepted, most frequent first.
    pub errors: Vec<UnitError>,
}

/// Accepted and total items of one target in one unit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TargetCounts {
    pub accepted: i64,
    pub total: i64,
    pub rejected: i64,
    /// Sent or to send, without an answer yet.
    pub pending: i64,
}

/// A reason items of a unit are not accepted, with how many.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitError {
    /// The establishment's UAI.
    pub establishment: String,
    /// `cyclades` or `imagin`.
    pub target: String,
    /// `rejected` (the target refused) or `pending` (no answer yet).
    pub state: ItemState,
    pub message: String,
    pub items: i64,
    /// Which items, the first five in order: candidates' numéros for
    /// Cyclades, graders' codes for Imag'In.
    pub examples: Vec<String>,
}

impl From<closure::status::ExamStatus> for ClosureAnswer {
    fn from(s: closure::status::ExamStatus) -> Self {
        let counts = |t: closure::status::TargetStatus| TargetCounts {
            accepted: t.accepted,
            total: t.total,
            rejected: t.rejected,
            pending: t.pending,
        };
        Self {
            exam: s.exam,
            kind: s.kind,
            published_at: s.published_at,
            published_by: s.published_by,
            units: s
                .units
                .into_iter()
                .map(|u| UnitClosure {
                    establishment: u.establishment,
                    name: u.name,
                    state: u.state,
                    copies: u.copies,
                    validated: u.validated,
                    ungraded: u.ungraded,
                    runs: u.runs,
                    closed_at: u.closed_at,
                    job: u.job,
                    job_status: u.job_status.map(Into::into),
                    cyclades: counts(u.cyclades),
                    imagin: counts(u.imagin),
                    errors: u
                        .errors
                        .into_iter()
                        .map(|e| UnitError {
                            establishment: e.establishment,
                            target: e.target,
                            state: e.state,
                            message: e.message,
                            items: e.items,
                            examples: e.examples,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/exams/{exam}/closure", tag = "closure",
    params(("exam" = Code, Path, description = "Exam code")),
    responses((status = 200, body = ClosureAnswer, description = "The closure of every unit the caller reaches"),
        (status = 404, body = Problem, description = "Unknown exam")))]
async fn closure_status(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(exam): ApiPath<String>,
) -> ApiResult<Json<ClosureAnswer>> {
    let status = closure::status::exam_status(&s.app, &actor, &exam).await?;
    Ok(Json(status.into()))
}

/// The body of a closure or relaunch: one establishment, or every one the
/// caller reaches (the field absent or `null`, or no body at all).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitsBody {
    /// The establishment's UAI; absent or `null`: every establishment
    /// the caller reaches.
    pub establishment: Option<UaiText>,
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
    body: UnitsBody,
    relaunch: bool,
) -> ApiResult<Json<Vec<UnitAnswer>>> {
    let input = UnitsInput {
        exam,
        establishment: body
            .establishment
            .map(|u| uai("establishment", &u.0))
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
    params(("exam" = Code, Path, description = "Exam code")), request_body(content = Option<UnitsBody>, content_type = "application/json", description = "One establishment, or every one the caller reaches (no body, `null` or `{}`)"),
    responses((status = 200, body = Vec<UnitAnswer>, description = "Each unit's answer; a unit may be refused alone"),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Refused by a rule (published, harmonised exam)"), (status = 422, body = Problem)))]
async fn closure_run(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(exam): ApiPath<String>,
    ApiBody(body): ApiBody<UnitsBody>,
) -> ApiResult<Json<Vec<UnitAnswer>>> {
    units(&s, &actor, exam, body, false).await
}

#[utoipa::path(post, path = "/api/v1/exams/{exam}/relaunch", tag = "closure",
    params(("exam" = Code, Path, description = "Exam code")), request_body(content = Option<UnitsBody>, content_type = "application/json", description = "One establishment, or every one the caller reaches (no body, `null` or `{}`)"),
    responses((status = 200, body = Vec<UnitAnswer>, description = "Each unit's answer; a unit never closed is refused alone"),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Refused after publication"), (status = 422, body = Problem)))]
async fn closure_relaunch(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(exam): ApiPath<String>,
    ApiBody(body): ApiBody<UnitsBody>,
) -> ApiResult<Json<Vec<UnitAnswer>>> {
    units(&s, &actor, exam, body, true).await
}

/// A recorded publication.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicationAnswer {
    pub published_at: chrono::DateTime<chrono::Utc>,
    pub cancelled_jobs: Vec<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/exams/{exam}/publication", tag = "closure",
    params(("exam" = Code, Path, description = "Exam code")),
    responses((status = 200, body = PublicationAnswer), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Already published, or a closure is running")))]
async fn publish(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(exam): ApiPath<String>,
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
    /// The academy whose copies are validated: admin names any; a
    /// coordinator only its own (its own when absent).
    pub academy: Option<Code>,
    /// The numéros of the candidates whose copies are validated; absent
    /// or `null`: every copy of the academy.
    #[schema(min_items = 1)]
    pub numeros: Option<Vec<Code>>,
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
    params(("exam" = Code, Path, description = "A harmonised exam's code")), request_body(content = Option<PassBody>, content_type = "application/json", description = "Which copies (no body, `null` or `{}`: every copy of the academy)"),
    responses((status = 200, body = PassAnswer), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Not harmonised, published, or ungraded copies"),
        (status = 422, body = Problem)))]
async fn validate(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(exam): ApiPath<String>,
    ApiBody(body): ApiBody<PassBody>,
) -> ApiResult<Json<PassAnswer>> {
    let input = PassInput {
        exam,
        academy: body.academy.map(|a| a.0),
        selection: match body.numeros {
            Some(n) => Validation::Candidates(n.into_iter().map(|n| n.0).collect()),
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
    /// Set by the confirmation page: the action is confirmed.
    confirme: Option<String>,
}

/// The confirmation asked before an irreversible action: what will be
/// sent, and a form that sends the same request again, confirmed.
#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    who: Option<Who>,
    code: String,
    title: &'static str,
    lines: Vec<String>,
    action: String,
    multipart: bool,
    fields: Vec<(&'static str, String)>,
    button: &'static str,
}

/// The confirmation of a closure or a relaunch: which exam, how many
/// establishments and copies (or items to send again), read from the
/// closure table within the actor's reach.
async fn confirm_units(
    s: &WebState,
    actor: &Actor,
    code: &str,
    establishment: Option<&Uai>,
    relaunch: bool,
) -> Result<Response, PageError> {
    let status = closure::status::exam_status(&s.app, actor, code)
        .await
        .map_err(|e| PageError::of(e, actor))?;
    let units: Vec<_> = status
        .units
        .iter()
        .filter(|u| establishment.is_none_or(|e| e.as_str() == u.establishment))
        .filter(|u| {
            if relaunch {
                !matches!(u.state, UnitState::Open | UnitState::Closing)
            } else {
                u.state == UnitState::Open
            }
        })
        .collect();
    let lines = confirm_lines(&status.exam, &units, relaunch);
    render(
        ConfirmPage {
            who: Some(Who::of(actor)),
            title: if relaunch {
                "Confirmer la relance des envois"
            } else {
                "Confirmer la clôture"
            },
            lines,
            action: format!(
                "/examens/{}/{}",
                urlencoding(&status.exam),
                if relaunch { "relance" } else { "cloture" }
            ),
            multipart: false,
            fields: establishment
                .map(|e| vec![("establishment", e.to_string())])
                .unwrap_or_default(),
            button: if relaunch {
                "Confirmer la relance"
            } else {
                "Confirmer la clôture"
            },
            code: status.exam,
        },
        actor,
    )
}

/// What a closure's or a relaunch's confirmation says of `units` of
/// `exam`: the exam, what will be sent for how many establishments, and
/// which establishments when they are few.
fn confirm_lines(
    exam: &str,
    units: &[&closure::status::UnitStatus],
    relaunch: bool,
) -> Vec<String> {
    let places = french::count(
        i64::try_from(units.len()).unwrap_or(i64::MAX),
        "établissement",
        "établissements",
    );
    let mut lines = vec![format!("Examen : {exam}")];
    if relaunch {
        let grades: i64 = units
            .iter()
            .map(|u| u.cyclades.total - u.cyclades.accepted)
            .sum();
        let counts: i64 = units
            .iter()
            .map(|u| u.imagin.total - u.imagin.accepted)
            .sum();
        lines.push(format!(
            "{} à renvoyer à Cyclades et {} à Imag'In, pour {places}",
            french::count(grades, "note", "notes"),
            french::count(counts, "déclaration", "déclarations")
        ));
    } else {
        let copies: i64 = units.iter().map(|u| u.copies).sum();
        lines.push(format!(
            "{} de {places} : leurs notes seront envoyées à Cyclades et les copies corrigées \
             déclarées à Imag'In",
            french::count(copies, "copie", "copies")
        ));
    }
    if units.len() <= 10 {
        lines.extend(
            units
                .iter()
                .map(|u| format!("{} ({})", u.name, u.establishment)),
        );
    }
    lines
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
    if form.confirme.as_deref() != Some("1") {
        return confirm_units(s, actor, &code, input.establishment.as_ref(), relaunch).await;
    }
    let answers = if relaunch {
        closure::request_relaunch(&s.app, actor, &input).await
    } else {
        closure::request_closure(&s.app, actor, &input).await
    }
    .map_err(|e| PageError::of(e, actor))?;
    let lines = unit_lines(answers);
    render(
        DonePage {
            who: Some(Who::of(actor)),
            title: if relaunch { "Relance" } else { "Clôture" },
            lines,
            back: format!("/examens/{}", urlencoding(&code)),
        },
        actor,
    )
}

/// What a closure or relaunch did for each unit, one line each.
pub(super) fn unit_lines(answers: Vec<closure::request::UnitRequest>) -> Vec<DoneLine> {
    answers
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
        .collect()
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

/// The harmonisation form as sent: the radio, the typed numéros, the
/// file's, and whether the confirmation page sent it.
struct PassForm {
    selection: Option<String>,
    typed: String,
    uploaded: String,
    confirmed: bool,
}

/// Reads the harmonisation form (multipart, for its file).
async fn read_pass_form(mut form: Multipart) -> Result<PassForm, OpError> {
    let bad =
        |field: &'static str, e: &dyn std::fmt::Display| OpError::invalid(field, e.to_string());
    let mut read = PassForm {
        selection: None,
        typed: String::new(),
        uploaded: String::new(),
        confirmed: false,
    };
    while let Some(field) = form.next_field().await.map_err(|e| bad("form", &e))? {
        match field.name() {
            Some("selection") => {
                read.selection = Some(field.text().await.map_err(|e| bad("selection", &e))?)
            }
            Some("numeros") => read.typed = field.text().await.map_err(|e| bad("numeros", &e))?,
            Some("fichier") => {
                let bytes = field.bytes().await.map_err(|e| bad("fichier", &e))?;
                read.uploaded = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    OpError::invalid(
                        "fichier",
                        "the file is not text (UTF-8): one numéro per line",
                    )
                })?;
            }
            Some("confirme") => {
                read.confirmed = field.text().await.map_err(|e| bad("confirme", &e))? == "1"
            }
            _ => {}
        }
    }
    Ok(read)
}

/// Which copies the form selects: the numéros typed or uploaded as a file
/// (one per line, `#` comments ignored) select these copies; "all" the
/// academy's copies only when no numéro is given. A list with "all", or
/// numéros both typed and uploaded, is refused with the reason: never
/// every copy by mistake.
fn pass_selection(form: &PassForm) -> Result<Validation, OpError> {
    let typed = Validation::from_list(&form.typed);
    let uploaded = Validation::from_list(&form.uploaded);
    let given = |v: &Validation| matches!(v, Validation::Candidates(n) if !n.is_empty());
    match (form.selection.as_deref(), given(&typed), given(&uploaded)) {
        (_, true, true) => Err(OpError::invalid(
            "numeros",
            "give the numéros in a file or in the box, not both",
        )),
        (Some("all") | None, true, _) | (Some("all") | None, _, true) => Err(OpError::invalid(
            "selection",
            "a list of numéros and \"all\" cannot be chosen together",
        )),
        (Some("all") | None, false, false) => Ok(Validation::All),
        (Some("list"), _, true) => Ok(uploaded),
        (Some("list"), _, false) => Ok(typed),
        (Some(other), _, _) => Err(OpError::invalid(
            "selection",
            format!("{other:?} is neither \"all\" nor \"list\""),
        )),
    }
}

async fn page_harmonise(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
    form: Multipart,
) -> Result<Response, PageError> {
    let form = read_pass_form(form)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let selection = pass_selection(&form).map_err(|e| PageError::of(e, &actor))?;
    if !form.confirmed {
        return confirm_pass(&s, &actor, &code, &selection).await;
    }
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
            back: format!("/examens/{}", urlencoding(&code)),
        },
        &actor,
    )
}

/// The confirmation of a harmonisation pass: which exam, which copies (the
/// academy's, counted, or the numéros given), sent again as a list or
/// "all".
async fn confirm_pass(
    s: &WebState,
    actor: &Actor,
    code: &str,
    selection: &Validation,
) -> Result<Response, PageError> {
    let status = closure::status::exam_status(&s.app, actor, code)
        .await
        .map_err(|e| PageError::of(e, actor))?;
    let places = french::count(
        i64::try_from(status.units.len()).unwrap_or(i64::MAX),
        "établissement",
        "établissements",
    );
    let mut lines = vec![format!("Examen : {}", status.exam)];
    let fields = match selection {
        Validation::All => {
            let waiting: i64 = status.units.iter().map(|u| u.copies - u.validated).sum();
            lines.push(format!(
                "Toutes les copies de l'académie : {} pas encore validées, dans {places} ; \
                 leurs notes seront envoyées à Cyclades",
                french::count(waiting, "copie", "copies")
            ));
            vec![("selection", "all".to_owned())]
        }
        Validation::Candidates(numeros) => {
            lines.push(format!(
                "Ces copies seulement : {} ; leurs notes seront envoyées à Cyclades",
                french::count(
                    i64::try_from(numeros.len()).unwrap_or(i64::MAX),
                    "numéro",
                    "numéros"
                )
            ));
            lines.push(crate::op::list_then(numeros, |more| {
                format!(" et {more} autres")
            }));
            vec![
                ("selection", "list".to_owned()),
                ("numeros", numeros.join("\n")),
            ]
        }
    };
    render(
        ConfirmPage {
            who: Some(Who::of(actor)),
            title: "Confirmer la passe d'harmonisation",
            lines,
            action: format!("/examens/{}/harmonisation", urlencoding(&status.exam)),
            multipart: true,
            fields,
            button: "Confirmer la validation",
            code: status.exam,
        },
        actor,
    )
}
