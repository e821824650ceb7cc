//! Downloads: an establishment's zip of graded copies (its links, or the
//! job building it) and every establishment's zips at once (API), and the
//! zip form of the exam page.

use askama::Template;
use axum::{
    Form, Json, Router,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    routing::post,
};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    WebState,
    api::{ApiPath, ApiQuery, ApiResult, Code, Switches, UaiText, uai},
    french,
    pages::{DoneLine, DonePage, PageError, Who, form_uai, render, urlencoding},
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
    /// Built: one link per part.
    Ready { links: Vec<ZipLink> },
    /// A job is building it; `new` when this request enqueued it.
    Building { job: Uuid, new: bool },
    /// Not built, and no job building it.
    Missing,
}

/// A link to one part of a built zip.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ZipLink {
    pub url: String,
    pub bytes: u64,
    /// The part's SHA-256, in hexadecimal.
    pub sha256: String,
    /// When the link stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

fn links(links: Vec<download::Link>) -> Vec<ZipLink> {
    links
        .into_iter()
        .map(|l| ZipLink {
            url: l.url,
            bytes: l.bytes,
            sha256: l.sha256,
            expires_at: l.expires_at,
        })
        .collect()
}

/// The answer to a request for every establishment's zip of an exam.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AllZipsAnswer {
    pub exam: String,
    /// The switches' tag, e.g. `d1a1n1`.
    pub options: String,
    /// Establishments with transmitted copies within the caller's scope.
    pub establishments: u64,
    pub enqueued: u64,
    pub already_building: u64,
    pub already_ready: u64,
    /// The jobs enqueued, one per establishment, in UAI order.
    pub jobs: Vec<ZipJobAnswer>,
}

/// One zip job enqueued for an establishment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ZipJobAnswer {
    /// The establishment's UAI.
    pub establishment: String,
    pub job: Uuid,
}

impl From<RequestedAll> for AllZipsAnswer {
    fn from(a: RequestedAll) -> Self {
        let n = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Self {
            exam: a.exam,
            options: a.options,
            establishments: n(a.establishments),
            enqueued: n(a.enqueued),
            already_building: n(a.already_building),
            already_ready: n(a.already_ready),
            jobs: a
                .jobs
                .into_iter()
                .map(|j| ZipJobAnswer {
                    establishment: j.establishment.to_string(),
                    job: j.job,
                })
                .collect(),
        }
    }
}

fn zip_input(exam: String, establishment: &str, switches: &Switches) -> ApiResult<ZipInput> {
    Ok(ZipInput {
        exam,
        establishment: uai("establishment", establishment)?,
        options: switches.requested(),
    })
}

#[utoipa::path(post, path = "/api/v1/exams/{exam}/establishments/{uai}/zip", tag = "downloads",
    params(("exam" = Code, Path, description = "Exam code"), ("uai" = UaiText, Path, description = "The establishment"), Switches),
    responses((status = 200, body = ZipAnswer, description = "Its links when ready, else the job building it (one job per zip)"),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Nothing transmitted yet, or E3C switches turned off")))]
async fn zip_request(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath((exam, establishment)): ApiPath<(String, String)>,
    ApiQuery(switches): ApiQuery<Switches>,
) -> ApiResult<Json<ZipAnswer>> {
    let input = zip_input(exam, &establishment, &switches)?;
    Ok(Json(
        match download::request(&s.app, &actor, &input).await? {
            Requested::Ready(found) => ZipAnswer::Ready {
                links: links(found),
            },
            Requested::Building { job, new } => ZipAnswer::Building { job, new },
        },
    ))
}

#[utoipa::path(post, path = "/api/v1/exams/{exam}/zips", tag = "downloads",
    params(("exam" = Code, Path, description = "Exam code"), Switches),
    responses((status = 200, body = AllZipsAnswer, description = "The zip of every establishment with transmitted copies in the caller's scope, in one transaction: how many were enqueued, already being built or already ready, and the jobs enqueued"),
        (status = 403, body = Problem, description = "An establishment (it asks for its own zip)"),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "E3C switches turned off")))]
async fn zips_request(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(exam): ApiPath<String>,
    ApiQuery(switches): ApiQuery<Switches>,
) -> ApiResult<Json<AllZipsAnswer>> {
    let input = AllZipsInput {
        exam,
        options: switches.requested(),
    };
    Ok(Json(
        download::request_all(&s.app, &actor, &input).await?.into(),
    ))
}

#[utoipa::path(get, path = "/api/v1/exams/{exam}/establishments/{uai}/zip", tag = "downloads",
    params(("exam" = Code, Path, description = "Exam code"), ("uai" = UaiText, Path, description = "The establishment"), Switches),
    responses((status = 200, body = ZipAnswer, description = "Its links when ready, else `missing`"),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn zip_links(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath((exam, establishment)): ApiPath<(String, String)>,
    ApiQuery(switches): ApiQuery<Switches>,
) -> ApiResult<Json<ZipAnswer>> {
    let input = zip_input(exam, &establishment, &switches)?;
    Ok(Json(
        match download::current_links(&s.app, &actor, &input).await? {
            Some(found) => ZipAnswer::Ready {
                links: links(found),
            },
            None => ZipAnswer::Missing,
        },
    ))
}

/// A built zip's part as a page offers it: a button whose label says
/// its size and until when it can be downloaded.
pub(super) struct Button {
    pub(super) href: String,
    pub(super) label: String,
}

/// The download buttons of a zip's parts. On the local store, the links
/// are served by copiste itself: a button points at the server that drew
/// the page (a path), whatever `downloads.public_base_url` says; an
/// object store's links are kept as they are.
pub(super) fn buttons(app: &crate::app::App, links: &[download::Link]) -> Vec<Button> {
    let local = app.config.storage.kind == crate::config::StorageKind::Local;
    links
        .iter()
        .enumerate()
        .map(|(i, l)| Button {
            href: match url::Url::parse(&l.url) {
                Ok(u) if local && u.path().starts_with("/downloads/") => u.path().to_owned(),
                _ => l.url.clone(),
            },
            label: french::download_label(i, links.len(), l.bytes, &l.expires_at),
        })
        .collect()
}

/// The zip form: the establishment, and the three switches (a form sends
/// the checked ones only; `switches` tells a sent form from a bare post).
#[derive(Deserialize)]
struct ZipForm {
    uai: String,
    details: Option<bool>,
    appreciation: Option<bool>,
    annotations: Option<bool>,
    switches: Option<String>,
}

impl ZipForm {
    fn requested(&self) -> RequestedOptions {
        let sent = self.switches.is_some();
        let on = |v: Option<bool>| v.unwrap_or(!sent);
        RequestedOptions {
            details: on(self.details),
            appreciation: on(self.appreciation),
            annotations: on(self.annotations),
        }
    }
}

#[derive(Template)]
#[template(path = "zip.html")]
struct ZipReadyPage {
    who: Option<Who>,
    code: String,
    uai: String,
    buttons: Vec<Button>,
}

async fn page_zip(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
    Form(form): Form<ZipForm>,
) -> Result<Response, PageError> {
    if form.uai == "tous" {
        let all = download::request_all(
            &s.app,
            &actor,
            &AllZipsInput {
                exam: code.clone(),
                options: form.requested(),
            },
        )
        .await
        .map_err(|e| PageError::of(e, &actor))?;
        let n = |n: usize| french::number(i64::try_from(n).unwrap_or(i64::MAX));
        return render(
            DonePage {
                who: Some(Who::of(&actor)),
                title: "Zips de tous les établissements",
                lines: vec![DoneLine {
                    text: format!(
                        "{} avec des copies transmises : {} zips lancés, {} déjà en préparation, \
                         {} déjà prêts",
                        french::count(
                            i64::try_from(all.establishments).unwrap_or(i64::MAX),
                            "établissement",
                            "établissements"
                        ),
                        n(all.enqueued),
                        n(all.already_building),
                        n(all.already_ready)
                    ),
                    job: None,
                }],
                back: format!("/examens/{}", urlencoding(&code)),
            },
            &actor,
        );
    }
    let uai = form_uai(&actor, Some(&form.uai))?
        .ok_or_else(|| PageError::of(OpError::invalid("establishment", "missing"), &actor))?;
    let input = ZipInput {
        exam: code,
        establishment: uai,
        options: form.requested(),
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
            ZipReadyPage {
                who: Some(Who::of(&actor)),
                buttons: buttons(&s.app, &links),
                uai: input.establishment.to_string(),
                code: input.exam,
            },
            &actor,
        ),
    }
}
