//! The web pages, in French: server-rendered HTML (askama templates,
//! checked at compile time) that works without JavaScript; `copiste.js`
//! adds live progress, search as you type and refreshes. A browser logs in
//! with an access token and gets a session cookie (HttpOnly,
//! SameSite=Lax, Secure behind https); every form that changes something
//! is a POST, and cross-site POSTs are refused (see [`super::router`]).
//! Like the API, pages only translate: rules and scope are the
//! operations'.

use askama::Template;
use axum::{
    Form, Router,
    extract::{FromRequestParts, Multipart, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    WebState,
    french::{self, kind_label},
};
use crate::{
    access::{self, Authenticated, Login},
    closure::{
        self, PassRequest, UnitRequested, Validation,
        request::{PassInput, UnitsInput},
    },
    domain::{ExamKind, Uai, UnitState},
    download::{
        self, Requested, ZipInput,
        search::{SearchInput, search_candidates},
    },
    jobs::admin::{self, ListInput},
    ledger::JobStatus,
    op::{Actor, OpError},
    render::{
        RenderOptions, RequestedOptions,
        copy::{CopyInput, render_copy},
    },
};

/// The session cookie's name.
pub const COOKIE: &str = "copiste_session";

/// The page routes.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/examens") }))
        .route("/connexion", get(login_page).post(login))
        .route("/deconnexion", post(logout))
        .route("/examens", get(exams))
        .route("/examens/{exam}", get(exam))
        .route("/examens/{exam}/cloture", post(close))
        .route("/examens/{exam}/relance", post(relaunch))
        .route("/examens/{exam}/harmonisation", post(harmonise))
        .route("/examens/{exam}/candidats", get(candidates))
        .route("/examens/{exam}/copies/{numero}", get(copy))
        .route("/examens/{exam}/copies/{numero}/pdf", get(copy_pdf))
        .route("/examens/{exam}/zip", post(zip))
        .route("/travaux", get(jobs))
        .route("/travaux/{id}", get(job))
        .route("/travaux/{id}/evenements", get(job_events))
        .route("/travaux/{id}/relance", post(job_retry))
        .route("/travaux/{id}/annulation", post(job_cancel))
        .route("/static/copiste.js", get(script))
        .route("/static/copiste.css", get(style))
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/copiste.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/copiste.css"),
    )
}

/// Who is logged in, as the header shows it.
pub struct Who {
    pub label: String,
    /// Admin and coordinators: the jobs list is in the menu.
    pub operator: bool,
}

impl Who {
    fn of(actor: &Actor) -> Self {
        Self {
            label: match actor {
                Actor::Admin(_) => "Administration".to_owned(),
                Actor::Coordinator { academy } => format!("Coordination de l'académie {academy}"),
                Actor::Establishment { uai } => format!("Établissement {uai}"),
                Actor::Scheduler => "Planificateur".to_owned(),
            },
            operator: !matches!(actor, Actor::Establishment { .. }),
        }
    }
}

/// A page's failure: rendered as a page with its status.
pub struct PageError(Box<Response>);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        *self.0
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    who: Option<Who>,
    title: &'static str,
    detail: String,
}

fn error_page(
    status: StatusCode,
    who: Option<Who>,
    title: &'static str,
    detail: String,
) -> Response {
    let page = ErrorPage { who, title, detail };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the error page");
            (status, title).into_response()
        }
    }
}

impl PageError {
    fn of(e: OpError, actor: &Actor) -> Self {
        let who = Some(Who::of(actor));
        let detail = e.to_string();
        Self(Box::new(match e {
            OpError::Invalid { field, reason } => error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                who,
                "Demande invalide",
                french::invalid(field, &reason),
            ),
            OpError::NotFound { what } => error_page(
                StatusCode::NOT_FOUND,
                who,
                "Introuvable",
                french::not_found(&what),
            ),
            OpError::Forbidden { .. } => error_page(
                StatusCode::FORBIDDEN,
                who,
                "Accès refusé",
                "Cette page est hors de votre périmètre.".into(),
            ),
            OpError::Refused(r) => {
                error_page(StatusCode::CONFLICT, who, "Refusé", french::refusal(&r))
            }
            OpError::Conflict { .. } => error_page(StatusCode::CONFLICT, who, "Impossible", detail),
            OpError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "page failed");
                error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    who,
                    "Erreur interne",
                    "copiste n'a pas pu répondre ; l'erreur est journalisée.".into(),
                )
            }
        }))
    }
}

fn render(t: impl Template, actor: &Actor) -> Result<Response, PageError> {
    t.render()
        .map(|html| Html(html).into_response())
        .map_err(|e| PageError::of(OpError::Internal(anyhow::anyhow!(e)), actor))
}

/// The actor of a page request, from its session cookie; a browser
/// without a valid session is sent to the login page.
pub struct Viewer(pub Actor);

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

impl FromRequestParts<WebState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        let Some(cookie) = session_cookie(&parts.headers) else {
            return Err(Redirect::to("/connexion").into_response());
        };
        match access::session(&state.app, &cookie).await {
            Ok(Authenticated::Actor { actor, .. }) => Ok(Self(actor)),
            Ok(Authenticated::Refused(_)) => Err(Redirect::to("/connexion").into_response()),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot read the session");
                Err(error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    "Erreur interne",
                    "copiste n'a pas pu répondre ; l'erreur est journalisée.".into(),
                ))
            }
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    who: Option<Who>,
    message: Option<&'static str>,
}

async fn login_page() -> Response {
    match (LoginPage {
        who: None,
        message: None,
    })
    .render()
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    cle: String,
}

async fn login(State(s): State<WebState>, Form(form): Form<LoginForm>) -> Response {
    match access::log_in(&s.app, &form.cle).await {
        Ok(Login::Session { cookie, expires_at }) => {
            let secure = s.app.config.downloads.public_base_url.scheme() == "https";
            let max_age = (expires_at - chrono::Utc::now()).num_seconds().max(0);
            let value = format!(
                "{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
                if secure { "; Secure" } else { "" }
            );
            let mut response = Redirect::to("/examens").into_response();
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Ok(Login::Refused(why)) => {
            tracing::info!(reason = %why, "login refused");
            let page = LoginPage {
                who: None,
                message: Some("Clé d'accès inconnue, révoquée ou expirée."),
            };
            match page.render() {
                Ok(html) => (StatusCode::UNAUTHORIZED, Html(html)).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            }
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "login failed");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "Erreur interne",
                "copiste n'a pas pu répondre ; l'erreur est journalisée.".into(),
            )
        }
    }
}

async fn logout(State(s): State<WebState>, headers: HeaderMap) -> Response {
    if let Some(cookie) = session_cookie(&headers)
        && let Err(e) = access::log_out(&s.app, &cookie).await
    {
        tracing::warn!(error = %format!("{e:#}"), "cannot end the session");
    }
    let mut response = Redirect::to("/connexion").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("copiste_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    response
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

fn date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%d/%m/%Y %H:%M UTC").to_string()
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

async fn exams(State(s): State<WebState>, Viewer(actor): Viewer) -> Result<Response, PageError> {
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

async fn exam(
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

/// One line of an action's answer.
struct DoneLine {
    text: String,
    job: Option<Uuid>,
}

#[derive(Template)]
#[template(path = "done.html")]
struct DonePage {
    who: Option<Who>,
    title: &'static str,
    lines: Vec<DoneLine>,
    back: String,
}

#[derive(Deserialize)]
struct UnitForm {
    establishment: Option<String>,
}

fn form_uai(actor: &Actor, s: Option<&str>) -> Result<Option<Uai>, PageError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => Uai::parse(s)
            .map(Some)
            .map_err(|e| PageError::of(OpError::invalid("establishment", e.to_string()), actor)),
    }
}

async fn units(
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

async fn close(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
    Form(form): Form<UnitForm>,
) -> Result<Response, PageError> {
    units(&s, &actor, code, form, false).await
}

async fn relaunch(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(code): Path<String>,
    Form(form): Form<UnitForm>,
) -> Result<Response, PageError> {
    units(&s, &actor, code, form, true).await
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

async fn harmonise(
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

async fn candidates(
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

async fn copy(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path((code, numero)): Path<(String, String)>,
    Query(form): Query<SwitchesForm>,
) -> Result<Response, PageError> {
    let exam = crate::db::closure::exam(&s.app.db, &code)
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

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn copy_pdf(
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

#[derive(Deserialize)]
struct ZipForm {
    uai: String,
}

async fn zip(
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

struct JobLine {
    id: Uuid,
    short: String,
    kind: String,
    status: String,
    attempts: String,
    progress: String,
    created_by: String,
    error: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    who: Option<Who>,
    statuses: Vec<(&'static str, bool)>,
    kind: String,
    exam: String,
    uai: String,
    jobs: Vec<JobLine>,
    counts: String,
    previous: Option<String>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct JobsForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    exam: String,
    #[serde(default)]
    uai: String,
    /// The cursor of the page: the previous page's `next` (empty: the
    /// newest jobs).
    #[serde(default)]
    apres: String,
}

/// Jobs per page of the jobs list.
const JOBS_PER_PAGE: i64 = 50;

async fn jobs(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Query(form): Query<JobsForm>,
) -> Result<Response, PageError> {
    let status = match form.status.as_str() {
        "" => None,
        s => Some(
            JobStatus::parse(s)
                .map_err(|e| PageError::of(OpError::invalid("status", e), &actor))?,
        ),
    };
    let cursor = Some(form.apres.trim().to_owned()).filter(|c| !c.is_empty());
    let input = ListInput {
        status,
        kind: Some(form.kind.trim().to_owned()).filter(|k| !k.is_empty()),
        exam: Some(form.exam.trim().to_owned()).filter(|k| !k.is_empty()),
        establishment: form_uai(&actor, Some(&form.uai))?,
        limit: JOBS_PER_PAGE,
        cursor: cursor.clone(),
        offset: 0,
    };
    let list = admin::list(&s.app, &actor, &input)
        .await
        .map_err(|e| PageError::of(e, &actor))?;
    render(
        JobsPage {
            who: Some(Who::of(&actor)),
            statuses: JobStatus::ALL
                .iter()
                .map(|s| (s.as_str(), s.as_str() == form.status))
                .collect(),
            counts: list
                .counts
                .iter()
                .map(|(s, n)| format!("{s} : {n}"))
                .collect::<Vec<_>>()
                .join(" · "),
            // Pages are read by key, newest first: the way back is to the
            // newest jobs.
            previous: cursor.is_some().then(|| jobs_query(&form, None)),
            next: list.next.as_deref().map(|c| jobs_query(&form, Some(c))),
            kind: form.kind.clone(),
            exam: form.exam.clone(),
            uai: form.uai.clone(),
            jobs: list
                .jobs
                .into_iter()
                .map(|j| JobLine {
                    short: j.id.simple().to_string()[..8].to_owned(),
                    id: j.id,
                    kind: j.kind,
                    status: j.status.to_string(),
                    attempts: format!("{}/{}", j.attempts, j.max_attempts),
                    progress: match (j.progress_done, j.progress_total) {
                        (Some(d), Some(t)) => format!("{d}/{t}"),
                        _ => String::new(),
                    },
                    created_by: j.created_by,
                    error: j
                        .last_error
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                })
                .collect(),
        },
        &actor,
    )
}

/// The jobs list's query string for page `page` with the same filters.
fn jobs_query(form: &JobsForm, cursor: Option<&str>) -> String {
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
}

struct LinkLine {
    url: String,
    name: String,
    bytes: u64,
    until: String,
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
    last_error: Option<String>,
    events: Vec<EventLine>,
    links: Vec<LinkLine>,
    zip_page: String,
    /// Whether the job may still change: only then does the page follow
    /// its events (a finished job's stream ends at once, and following it
    /// would reload the page forever).
    live: bool,
}

fn parse_job_id(actor: &Actor, id: &str) -> Result<Uuid, PageError> {
    Uuid::try_parse(id).map_err(|e| PageError::of(OpError::invalid("id", e.to_string()), actor))
}

async fn job(
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
    // A finished zip: its links, for whoever reaches its establishment.
    let mut links = Vec::new();
    if j.kind == <download::BulkRender as crate::ledger::Kind>::NAME
        && j.status == JobStatus::Succeeded
        && let Ok(payload) = serde_json::from_value::<download::BulkRender>(j.payload.clone())
    {
        let input = ZipInput {
            exam: payload.exam,
            establishment: payload.establishment,
            options: payload.options.requested(),
        };
        if let Ok(Some(found)) = download::current_links(&s.app, &actor, &input).await {
            links = found
                .into_iter()
                .enumerate()
                .map(|(i, l)| LinkLine {
                    name: format!("partie {}", i + 1),
                    url: l.url,
                    bytes: l.bytes,
                    until: date(l.expires_at),
                })
                .collect();
        }
    }
    render(
        JobPage {
            who: Some(Who::of(&actor)),
            id,
            kind: j.kind.clone(),
            status: j.status.to_string(),
            done,
            total: total.max(1),
            percent,
            attempts: format!("{}/{}", j.attempts, j.max_attempts),
            created_by: j.created_by.clone(),
            last_error: j.last_error.clone(),
            events: detail
                .events
                .iter()
                .map(|e| EventLine {
                    at: e.at.format("%d/%m %H:%M:%S").to_string(),
                    event: e.event.clone(),
                    attempt: e.attempt,
                    detail: e.detail.clone().unwrap_or_default(),
                })
                .collect(),
            links,
            zip_page: format!("/travaux/{id}"),
            live: !j.status.is_final(),
        },
        &actor,
    )
}

async fn job_events(
    State(s): State<WebState>,
    Viewer(actor): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&actor, &id)?;
    super::api::events(&s, &actor, id)
        .await
        .map(IntoResponse::into_response)
        .map_err(|e| PageError::of(e, &actor))
}

async fn job_retry(
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

async fn job_cancel(
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
