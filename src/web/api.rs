//! The JSON API under `/api/v1/`: one route per operation, the caller's
//! actor taken from its bearer token, answers in JSON and errors as
//! problems. Handlers only translate: every rule and scope check is in the
//! operation they call.

use std::{convert::Infallible, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequestParts, Path, Query, State},
    http::{header, request::Parts},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    WebState,
    problem::{ApiError, Problem},
};
use crate::{
    access::{self, Authenticated, Refused},
    closure::{
        self, PassRequest, UnitRequested, Validation,
        request::{PassInput, UnitsInput},
    },
    domain::Uai,
    download::{
        self, AllZipsInput, Requested, RequestedAll, ZipInput,
        search::{SearchInput, search_candidates},
    },
    jobs::admin::{self, ListInput},
    ledger::JobStatus,
    op::{Actor, OpError},
    render::{
        RequestedOptions,
        copy::{CopyInput, render_copy},
    },
};

type ApiResult<T> = Result<T, ApiError>;

/// The OpenAPI document's frame: title, version, the bearer scheme.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "copiste API",
        description = "Closing exams, following closures and jobs, finding candidates, rendering copies and downloading zips. Every route acts as the actor of its bearer token (admin, an academy's coordinator or an establishment) and answers only within its scope; errors are application/problem+json documents (RFC 9457)."
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem))
)]
pub struct ApiDoc;

/// Declares the bearer token every route takes.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The routes of the API with their OpenAPI document, built from the same
/// list so that every route is documented.
pub fn routes() -> (Router<WebState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(me))
        .routes(routes!(exams))
        .routes(routes!(closure_status, closure_run))
        .routes(routes!(closure_relaunch))
        .routes(routes!(publish))
        .routes(routes!(validate))
        .routes(routes!(candidates))
        .routes(routes!(copy_pdf))
        .routes(routes!(zip_links, zip_request))
        .routes(routes!(zips_request))
        .routes(routes!(jobs_list))
        .routes(routes!(job_show))
        .routes(routes!(job_retry))
        .routes(routes!(job_cancel))
        .routes(routes!(job_events))
        .split_for_parts()
}

/// The actor of a request, from `Authorization: Bearer <token>`.
pub struct Caller(pub Actor);

impl FromRequestParts<WebState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> ApiResult<Self> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(presented) = presented else {
            return Err(Problem::unauthenticated(Refused::Missing).into());
        };
        match access::authenticate(&state.app, presented)
            .await
            .map_err(OpError::Internal)?
        {
            Authenticated::Actor { actor, .. } => {
                super::record_actor(&actor);
                Ok(Self(actor))
            }
            Authenticated::Refused(why) => Err(Problem::unauthenticated(why).into()),
        }
    }
}

/// A JSON body that may be left out (then the default), its decoding
/// errors answered as problems naming what is wrong.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Problem::bad_request(format!("the JSON body does not fit: {e}")).into())
}

fn uai(field: &'static str, s: &str) -> ApiResult<Uai> {
    Uai::parse(s).map_err(|e| OpError::invalid(field, e.to_string()).into())
}

/// Who the caller is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub academy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uai: Option<Uai>,
    pub label: String,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "access",
    responses((status = 200, body = Me, description = "Who the token acts as"), (status = 401, body = Problem)))]
async fn me(Caller(actor): Caller) -> Json<Me> {
    let label = actor.label();
    Json(match actor {
        Actor::Admin(_) => Me {
            role: "admin",
            academy: None,
            uai: None,
            label,
        },
        Actor::Coordinator { academy } => Me {
            role: "coordinator",
            academy: Some(academy),
            uai: None,
            label,
        },
        Actor::Establishment { uai } => Me {
            role: "establishment",
            academy: None,
            uai: Some(uai),
            label,
        },
        Actor::Scheduler => Me {
            role: "scheduler",
            academy: None,
            uai: None,
            label,
        },
    })
}

#[utoipa::path(get, path = "/api/v1/exams", tag = "closure",
    responses((status = 200, body = Vec<crate::db::closure::ExamListed>, description = "The exams with copies in the caller's scope"),
        (status = 401, body = Problem)))]
async fn exams(State(s): State<WebState>, Caller(actor): Caller) -> ApiResult<Response> {
    let exams = closure::status::list_exams(&s.app, &actor).await?;
    Ok(Json(exams).into_response())
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

/// A candidate search's query string.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    pub q: String,
    #[serde(default = "default_limit")]
    pub limit: i64,
    #[serde(default)]
    pub offset: i64,
}

fn default_limit() -> i64 {
    20
}

#[utoipa::path(get, path = "/api/v1/exams/{exam}/establishments/{uai}/candidates", tag = "downloads",
    params(("exam" = String, Path, description = "Exam code"), ("uai" = String, Path, description = "The establishment"), SearchQuery),
    responses((status = 200, body = crate::db::render::SearchPage), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn candidates(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path((exam, establishment)): Path<(String, String)>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let input = SearchInput {
        exam,
        establishment: uai("establishment", &establishment)?,
        query: q.q,
        limit: q.limit,
        offset: q.offset,
    };
    let page = search_candidates(&s.app, &actor, &input).await?;
    Ok(Json(page).into_response())
}

/// The three switches as a query string; each defaults to on.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Switches {
    #[serde(default = "on")]
    pub details: bool,
    #[serde(default = "on")]
    pub appreciation: bool,
    #[serde(default = "on")]
    pub annotations: bool,
}

fn on() -> bool {
    true
}

impl Switches {
    fn requested(&self) -> RequestedOptions {
        RequestedOptions {
            details: self.details,
            appreciation: self.appreciation,
            annotations: self.annotations,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/exams/{exam}/copies/{numero}/pdf", tag = "downloads",
    params(("exam" = String, Path, description = "Exam code"), ("numero" = String, Path, description = "The candidate's numéro"), Switches),
    responses((status = 200, content_type = "application/pdf", body = Vec<u8>, description = "The copy as PDF, served inline"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Not transmitted yet, or E3C switches turned off")))]
async fn copy_pdf(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path((exam, numero)): Path<(String, String)>,
    switches: Result<Query<Switches>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(switches) = switches.map_err(|e| Problem::bad_request(e.body_text()))?;
    let input = CopyInput {
        exam,
        numero,
        options: switches.requested(),
    };
    let pdf = render_copy(&s.app, &actor, &input).await?;
    Ok(super::pdf_response(pdf))
}

/// A zip: its links when ready, or the job building it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ZipAnswer {
    Ready { links: Vec<download::Link> },
    Building { job: Uuid, new: bool },
    Missing,
}

fn zip_input(exam: String, establishment: &str, switches: &Switches) -> ApiResult<ZipInput> {
    Ok(ZipInput {
        exam,
        establishment: uai("establishment", establishment)?,
        options: switches.requested(),
    })
}

#[utoipa::path(post, path = "/api/v1/exams/{exam}/establishments/{uai}/zip", tag = "downloads",
    params(("exam" = String, Path, description = "Exam code"), ("uai" = String, Path, description = "The establishment"), Switches),
    responses((status = 200, body = ZipAnswer, description = "Its links when ready, else the job building it (one job per zip)"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Nothing transmitted yet, or E3C switches turned off")))]
async fn zip_request(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path((exam, establishment)): Path<(String, String)>,
    switches: Result<Query<Switches>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ZipAnswer>> {
    let Query(switches) = switches.map_err(|e| Problem::bad_request(e.body_text()))?;
    let input = zip_input(exam, &establishment, &switches)?;
    Ok(Json(
        match download::request(&s.app, &actor, &input).await? {
            Requested::Ready(links) => ZipAnswer::Ready { links },
            Requested::Building { job, new } => ZipAnswer::Building { job, new },
        },
    ))
}

#[utoipa::path(post, path = "/api/v1/exams/{exam}/zips", tag = "downloads",
    params(("exam" = String, Path, description = "Exam code"), Switches),
    responses((status = 200, body = RequestedAll, description = "The zip of every establishment with transmitted copies in the caller's scope, in one transaction: how many were enqueued, already being built or already ready, and the jobs enqueued"),
        (status = 401, body = Problem), (status = 403, body = Problem, description = "An establishment (it asks for its own zip)"),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "E3C switches turned off")))]
async fn zips_request(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(exam): Path<String>,
    switches: Result<Query<Switches>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<RequestedAll>> {
    let Query(switches) = switches.map_err(|e| Problem::bad_request(e.body_text()))?;
    let input = AllZipsInput {
        exam,
        options: switches.requested(),
    };
    Ok(Json(download::request_all(&s.app, &actor, &input).await?))
}

#[utoipa::path(get, path = "/api/v1/exams/{exam}/establishments/{uai}/zip", tag = "downloads",
    params(("exam" = String, Path, description = "Exam code"), ("uai" = String, Path, description = "The establishment"), Switches),
    responses((status = 200, body = ZipAnswer, description = "Its links when ready, else `missing`"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn zip_links(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path((exam, establishment)): Path<(String, String)>,
    switches: Result<Query<Switches>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ZipAnswer>> {
    let Query(switches) = switches.map_err(|e| Problem::bad_request(e.body_text()))?;
    let input = zip_input(exam, &establishment, &switches)?;
    Ok(Json(
        match download::current_links(&s.app, &actor, &input).await? {
            Some(links) => ZipAnswer::Ready { links },
            None => ZipAnswer::Missing,
        },
    ))
}

/// A page of the newest jobs the caller reaches, and their counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobListAnswer {
    pub jobs: Vec<crate::db::jobs::JobRow>,
    /// Per status, the jobs the filters (but the status) select, each
    /// counted up to 10 000: a status named in `capped` has at least that
    /// many.
    pub counts: std::collections::BTreeMap<String, i64>,
    /// The statuses whose count stopped at 10 000 ("10 000+").
    pub capped: Vec<String>,
    /// Whether jobs remain after this page.
    pub more: bool,
    /// When jobs remain, the `cursor` that asks for the next page (an
    /// opaque string, valid however many jobs arrive meanwhile).
    pub next: Option<String>,
}

/// Filters of the job list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    pub status: Option<String>,
    pub kind: Option<String>,
    /// Jobs whose payload names this exam.
    pub exam: Option<String>,
    /// Jobs whose payload names this establishment.
    pub establishment: Option<String>,
    #[serde(default = "default_jobs_limit")]
    pub limit: i64,
    /// Where the page starts: the previous page's `next`, as given.
    pub cursor: Option<String>,
    /// Deprecated (use `cursor`): jobs to skip, at most 10 000, not with
    /// a cursor.
    #[serde(default)]
    pub offset: i64,
}

fn default_jobs_limit() -> i64 {
    50
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobsQuery),
    responses((status = 200, body = JobListAnswer), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn jobs_list(
    State(s): State<WebState>,
    Caller(actor): Caller,
    query: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let status = q
        .status
        .as_deref()
        .map(JobStatus::parse)
        .transpose()
        .map_err(|e| OpError::invalid("status", e))?;
    let input = ListInput {
        status,
        kind: q.kind,
        exam: q.exam,
        establishment: q
            .establishment
            .as_deref()
            .map(|u| uai("establishment", u))
            .transpose()?,
        limit: q.limit,
        cursor: q.cursor,
        offset: q.offset,
    };
    let list = admin::list(&s.app, &actor, &input).await?;
    Ok(Json(JobListAnswer {
        counts: list
            .counts
            .iter()
            .map(|(s, c)| (s.as_str().to_owned(), c.n))
            .collect(),
        capped: list
            .counts
            .iter()
            .filter(|(_, c)| c.capped)
            .map(|(s, _)| s.as_str().to_owned())
            .collect(),
        jobs: list.jobs,
        more: list.more,
        next: list.next,
    })
    .into_response())
}

fn job_id(id: &str) -> ApiResult<Uuid> {
    Uuid::try_parse(id).map_err(|e| OpError::invalid("id", format!("not a job id: {e}")).into())
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = crate::jobs::admin::JobDetail), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn job_show(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let detail = admin::show(&s.app, &actor, job_id(&id)?).await?;
    Ok(Json(detail).into_response())
}

/// The status a job had before a retry or cancel.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WasAnswer {
    pub was: JobStatus,
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = WasAnswer), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Not dead, failed or cancelled")))]
async fn job_retry(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WasAnswer>> {
    let was = admin::retry(&s.app, &actor, job_id(&id)?).await?;
    Ok(Json(WasAnswer { was }))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = WasAnswer), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Not queued or running")))]
async fn job_cancel(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WasAnswer>> {
    let was = admin::cancel(&s.app, &actor, job_id(&id)?).await?;
    Ok(Json(WasAnswer { was }))
}

/// A job's progress as Server-Sent Events: a `progress` event each time
/// its status or progress changes (read from Postgres every 250 ms, the
/// ledger being the system of record), then a final `done` event with the
/// final status, after which the stream ends.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "`progress` events ({status, done, total, last_error}) as the job moves, then one `done` event"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn job_events(
    State(s): State<WebState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = job_id(&id)?;
    Ok(events(&s, &actor, id).await?)
}

/// The events of job `id` for `actor` (see [`job_events`]); the web pages
/// serve the same stream to their session.
pub async fn events(
    s: &WebState,
    actor: &Actor,
    id: Uuid,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, OpError> {
    // The scope check, once; the stream then reads the row only.
    admin::show(&s.app, actor, id).await?;
    let db = s.app.db.clone();
    let stream = futures::stream::unfold(
        (db, None::<(JobStatus, Option<i64>, Option<i64>)>, false),
        move |(db, last, finished)| async move {
            if finished {
                return None;
            }
            loop {
                let job = match crate::db::jobs::get(&db, id).await {
                    Ok(Some(job)) => job,
                    Ok(None) => {
                        let event = Event::default().event("done").data(r#"{"status":"gone"}"#);
                        return Some((Ok(event), (db, last, true)));
                    }
                    Err(e) => {
                        tracing::warn!(job.id = %id, error = %format!("{e:#}"), "job events: read failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let now = (job.status, job.progress_done, job.progress_total);
                if last != Some(now) {
                    let data = serde_json::json!({
                        "status": job.status,
                        "done": job.progress_done,
                        "total": job.progress_total,
                        "last_error": job.last_error,
                    })
                    .to_string();
                    let name = if job.status.is_final() {
                        "done"
                    } else {
                        "progress"
                    };
                    let event = Event::default().event(name).data(data);
                    return Some((Ok(event), (db, Some(now), job.status.is_final())));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
