//! What every web page shares. The pages are in French: server-rendered
//! HTML (askama templates, checked at compile time) that works without
//! JavaScript; `copiste.js` adds live progress, search as you type and
//! refreshes. A browser logs in with an access token and gets a session
//! cookie ([`super::session`]); every form that changes something is a
//! POST, and cross-site POSTs are refused (see [`super::router`]). Each
//! resource's pages are in its own module, beside its API routes. Like the
//! API, pages only translate: rules and scope are the operations'.

use askama::Template;
use axum::{
    Router,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use uuid::Uuid;

use super::{WebState, academy, closure, copies, downloads, exams, french, jobs, session};
use crate::{
    domain::Uai,
    op::{Actor, OpError},
};

/// The page routes.
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/examens") }))
        .merge(session::pages())
        .merge(exams::pages())
        .merge(closure::pages())
        .merge(copies::pages())
        .merge(downloads::pages())
        .merge(jobs::pages())
        .merge(academy::pages())
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
    pub(super) fn of(actor: &Actor) -> Self {
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

/// A page telling what went wrong, with its status.
pub(super) fn error_page(
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
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                title,
            )
                .into_response()
        }
    }
}

impl PageError {
    pub(super) fn of(e: OpError, actor: &Actor) -> Self {
        let who = Some(Who::of(actor));
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
            OpError::Conflict { what } => error_page(
                StatusCode::CONFLICT,
                who,
                "Impossible",
                french::conflict(&what),
            ),
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

/// A page's HTML, or the error page when it cannot be drawn.
pub(super) fn render(t: impl Template, actor: &Actor) -> Result<Response, PageError> {
    t.render()
        .map(|html| Html(html).into_response())
        .map_err(|e| PageError::of(OpError::Internal(anyhow::anyhow!(e)), actor))
}

/// A date as the pages show it: Paris time, `13/12/2026 à 04:35`.
pub(super) fn date(at: chrono::DateTime<chrono::Utc>) -> String {
    french::date_time(&at)
}

/// One line of an action's answer.
pub(super) struct DoneLine {
    pub(super) text: String,
    pub(super) job: Option<Uuid>,
}

#[derive(Template)]
#[template(path = "done.html")]
pub(super) struct DonePage {
    pub(super) who: Option<Who>,
    pub(super) title: &'static str,
    pub(super) lines: Vec<DoneLine>,
    pub(super) back: String,
}

/// A form's UAI field: none when left empty, an invalid-input page when
/// it is not a UAI.
pub(super) fn form_uai(actor: &Actor, s: Option<&str>) -> Result<Option<Uai>, PageError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => Uai::parse(s)
            .map(Some)
            .map_err(|e| PageError::of(OpError::invalid("establishment", e.to_string()), actor)),
    }
}

/// `s` percent-encoded for a path segment or a query string.
pub(super) fn urlencoding(s: &str) -> String {
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
