//! Downloads: an establishment's zip of graded copies (its links, or the
//! job building it) and every establishment's zips at once (API), and the
//! zip form of the exam page.

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
    routing::post,
};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    WebState,
    api::{ApiResult, Switches, uai},
    pages::{DoneLine, DonePage, PageError, Who, date, form_uai, render},
    problem::Problem,
    session::{Caller, Viewer},
};
use crate::{
    download::{self, AllZipsInput, Requested, RequestedAll, ZipInput},
    op::OpError,
    render::RequestedOptions,
};

/// The API's routes of this resource.
pub(super) fn api() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(zip_links, zip_request))
        .routes(routes!(zips_request))
}

/// The pages of this resource.
pub(super) fn pages() -> Router<WebState> {
    Router::new().route("/examens/{exam}/zip", post(page_zip))
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

#[derive(Deserialize)]
struct ZipForm {
    uai: String,
}

async fn page_zip(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
    Form(form): Form<ZipForm>,
) -> Result<Response, PageError> {
    let uai = form_uai(&actor, Some(&form.uai))?
        .ok_or_else(|| PageError::of(OpError::invalid("establishment", "missing"), &actor))?;
    let input = ZipInput {
        exam: code,
        establishment: uai,
        options: RequestedOptions::default(),
    };
    match download::request(&s.app, &actor, &input)
        .await
        .map_err(|e| PageError::of(e, &actor))?
    {
        // One click = one job: a second click lands on the same job.
        Requested::Building { job, .. } => {
            Ok(Redirect::to(&format!("/travaux/{job}")).into_response())
        }
        Requested::Ready(links) => render(
            DonePage {
                who: Some(Who::of(&actor)),
                title: "Zip prêt",
                lines: links
                    .into_iter()
                    .map(|l| DoneLine {
                        text: format!(
                            "{} ({} octets, jusqu'au {})",
                            l.url,
                            l.bytes,
                            date(l.expires_at)
                        ),
                        job: None,
                    })
                    .collect(),
                back: format!("/examens/{}", input.exam),
            },
            &actor,
        ),
    }
}
