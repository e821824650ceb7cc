//! Copies: finding candidates (API and page) and a copy's PDF with its
//! switches (API, and the page that shows it).

use askama::Template;
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderValue, header},
    response::Response,
    routing::get,
};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    WebState,
    api::{ApiPath, ApiQuery, ApiResult, Code, PdfBytes, SearchText, Switches, UaiText, uai},
    pages::{PageError, Who, form_uai, render, urlencoding},
    problem::Problem,
    session::{Caller, Viewer},
};
use crate::{
    domain::ExamKind,
    download::search::{SearchInput, search_candidates},
    op::OpError,
    render::{
        RenderOptions, RequestedOptions,
        copy::{CopyInput, render_copy},
    },
};

/// The API's routes of this resource.
pub(super) fn api() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(candidates))
        .routes(routes!(copy_pdf))
}

/// The pages of this resource.
pub(super) fn pages() -> Router<WebState> {
    Router::new()
        .route("/examens/{exam}/candidats", get(page_candidates))
        .route("/examens/{exam}/copies/{numero}", get(page_copy))
        .route("/examens/{exam}/copies/{numero}/pdf", get(page_copy_pdf))
}

/// A candidate search's query string.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// What to look for in the nom, prénom or numéro.
    pub q: SearchText,
    /// Candidates per page.
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 10000, default = 20)]
    pub limit: i64,
    /// Candidates skipped before the page.
    #[serde(default)]
    #[param(minimum = 0, default = 0)]
    pub offset: i64,
}

fn default_limit() -> i64 {
    20
}

/// A page of a candidate search.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CandidatesAnswer {
    /// How many candidates match in all.
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
    /// Whether matches remain after this page.
    pub more: bool,
    pub candidates: Vec<Candidate>,
}

/// A candidate found, with their copy's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    pub numero: String,
    pub nom: String,
    pub prenom: String,
    pub absent: bool,
    /// Out of 20; `null` when not graded.
    pub grade: Option<f64>,
    /// Transmitted to Cyclades, hence downloadable.
    pub downloadable: bool,
}

impl From<crate::db::render::SearchPage> for CandidatesAnswer {
    fn from(p: crate::db::render::SearchPage) -> Self {
        Self {
            total: p.total,
            offset: p.offset,
            limit: p.limit,
            more: p.more,
            candidates: p
                .candidates
                .into_iter()
                .map(|c| Candidate {
                    numero: c.numero,
                    nom: c.nom,
                    prenom: c.prenom,
                    absent: c.absent,
                    grade: c.grade,
                    downloadable: c.downloadable,
                })
                .collect(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/exams/{exam}/establishments/{uai}/candidates", tag = "downloads",
    params(("exam" = Code, Path, description = "Exam code"), ("uai" = UaiText, Path, description = "The establishment"), SearchQuery),
    responses((status = 200, body = CandidatesAnswer), (status = 403, body = Problem),
        (status = 404, body = Problem, description = "Unknown exam or establishment"),
        (status = 422, body = Problem, description = "A parameter that does not fit, or a search without a letter or digit")))]
async fn candidates(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath((exam, establishment)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<CandidatesAnswer>> {
    let input = SearchInput {
        exam,
        establishment: uai("establishment", &establishment)?,
        query: q.q.0,
        limit: q.limit,
        offset: q.offset,
    };
    let page = search_candidates(&s.app, &actor, &input).await?;
    Ok(Json(page.into()))
}

#[utoipa::path(get, path = "/api/v1/exams/{exam}/copies/{numero}/pdf", tag = "downloads",
    params(("exam" = Code, Path, description = "Exam code"), ("numero" = Code, Path, description = "The candidate's numéro"), Switches),
    responses((status = 200, content_type = "application/pdf", body = PdfBytes, description = "The copy as PDF, served inline"),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Not transmitted yet, or E3C switches turned off")))]
async fn copy_pdf(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath((exam, numero)): ApiPath<(String, String)>,
    ApiQuery(switches): ApiQuery<Switches>,
) -> ApiResult<Response> {
    let input = CopyInput {
        exam,
        numero,
        options: switches.requested(),
    };
    let pdf = render_copy(&s.app, &actor, &input).await?;
    Ok(super::pdf_response(pdf))
}

struct CandidateLine {
    numero: String,
    nom: String,
    prenom: String,
    grade: String,
    downloadable: bool,
}

#[derive(Template)]
#[template(path = "candidates.html")]
struct CandidatesPage {
    who: Option<Who>,
    code: String,
    uai: String,
    query: String,
    total: i64,
    candidates: Vec<CandidateLine>,
}

#[derive(Deserialize)]
struct SearchForm {
    uai: String,
    #[serde(default)]
    q: String,
}

async fn page_candidates(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
    Query(form): Query<SearchForm>,
) -> Result<Response, PageError> {
    let uai = form_uai(&actor, Some(&form.uai))?
        .ok_or_else(|| PageError::of(OpError::invalid("establishment", "missing"), &actor))?;
    let input = SearchInput {
        exam: code.clone(),
        establishment: uai.clone(),
        query: form.q.clone(),
        limit: 50,
        offset: 0,
    };
    let page = search_candidates(&s.app, &actor, &input)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    render(
        CandidatesPage {
            who: Some(Who::of(&actor)),
            code,
            uai: uai.to_string(),
            query: form.q,
            total: page.total,
            candidates: page
                .candidates
                .into_iter()
                .map(|c| CandidateLine {
                    grade: match (c.absent, c.grade) {
                        (true, _) => "absent".to_owned(),
                        (false, Some(g)) => format!("{g}/20"),
                        (false, None) => "non notée".to_owned(),
                    },
                    numero: c.numero,
                    nom: c.nom,
                    prenom: c.prenom,
                    downloadable: c.downloadable,
                })
                .collect(),
        },
        &actor,
    )
}

/// The switches of a copy page. A form sends the checked ones only: the
/// hidden `switches` field tells a submitted form (unchecked = off) from a
/// first visit (everything on).
#[derive(Deserialize)]
struct SwitchesForm {
    details: Option<bool>,
    appreciation: Option<bool>,
    annotations: Option<bool>,
    switches: Option<String>,
    download: Option<String>,
}

impl SwitchesForm {
    fn requested(&self) -> RequestedOptions {
        let submitted = self.switches.is_some();
        let on = |v: Option<bool>| v.unwrap_or(!submitted);
        RequestedOptions {
            details: on(self.details),
            appreciation: on(self.appreciation),
            annotations: on(self.annotations),
        }
    }

    fn query(&self, r: RequestedOptions) -> String {
        format!(
            "details={}&appreciation={}&annotations={}",
            r.details, r.appreciation, r.annotations
        )
    }
}

#[derive(Template)]
#[template(path = "copy.html")]
struct CopyPage {
    who: Option<Who>,
    code: String,
    numero: String,
    details: bool,
    appreciation: bool,
    annotations: bool,
    fixed: bool,
    pdf: String,
}

async fn page_copy(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path((code, numero)): Path<(String, String)>,
    Query(form): Query<SwitchesForm>,
) -> Result<Response, PageError> {
    let exam = crate::db::catalog::exam(&s.app.db, &code)
        .await
        .map_err(|e| PageError::of(OpError::Internal(e), &actor))?
        .ok_or_else(|| PageError::of(OpError::not_found(format!("exam {code}")), &actor))?;
    let fixed = exam.kind == ExamKind::E3c;
    let requested = if fixed {
        RequestedOptions::default()
    } else {
        form.requested()
    };
    // The rules answer here, before the viewer shows an empty frame.
    RenderOptions::for_exam(&code, exam.kind, requested)
        .map_err(|e| PageError::of(e.into(), &actor))?;
    // Scope and existence too: another establishment's copy is a 403
    // page, an unknown numéro a 404 page, never a viewer around an error.
    // The copy rendered here is kept by the render cache for the viewer's
    // request that follows.
    render_copy(
        &s.app,
        &actor,
        &CopyInput {
            exam: code.clone(),
            numero: numero.clone(),
            options: requested,
        },
    )
    .await
    .map_err(|e| PageError::of(e, &actor))?;
    let pdf = format!(
        "/examens/{}/copies/{}/pdf?{}",
        urlencoding(&code),
        urlencoding(&numero),
        form.query(requested)
    );
    render(
        CopyPage {
            who: Some(Who::of(&actor)),
            code,
            numero,
            details: requested.details,
            appreciation: requested.appreciation,
            annotations: requested.annotations,
            fixed,
            pdf,
        },
        &actor,
    )
}

async fn page_copy_pdf(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path((code, numero)): Path<(String, String)>,
    Query(form): Query<SwitchesForm>,
) -> Result<Response, PageError> {
    let input = CopyInput {
        exam: code,
        numero: numero.clone(),
        options: RequestedOptions {
            details: form.details.unwrap_or(true),
            appreciation: form.appreciation.unwrap_or(true),
            annotations: form.annotations.unwrap_or(true),
        },
    };
    let pdf = render_copy(&s.app, &actor, &input)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    let mut response = super::pdf_response(pdf);
    let headers = response.headers_mut();
    let disposition = if form.download.is_some() {
        "attachment"
    } else {
        "inline"
    };
    let name: String = numero
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("{disposition}; filename=\"copie-{name}.pdf\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
