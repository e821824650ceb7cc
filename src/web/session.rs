//! Who asks: the API's bearer token ([`Caller`], and `/api/v1/me`) and
//! the pages' session ([`Viewer`], the login and logout pages). A browser
//! logs in with an access token and gets a session cookie (HttpOnly,
//! SameSite=Lax, Secure behind https).

use askama::Template;
use axum::{
    Form, Json, Router,
    extract::{FromRequestParts, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    WebState,
    api::ApiResult,
    pages::{Who, error_page, urlencoding},
    problem::{ApiError, Problem},
};
use crate::{
    access::{self, Authenticated, Login, Refused},
    domain::Uai,
    op::{Actor, OpError},
};

/// The API's routes of this resource.
pub(super) fn api() -> OpenApiRouter<WebState> {
    OpenApiRouter::new().routes(routes!(me))
}

/// The pages of this resource.
pub(super) fn pages() -> Router<WebState> {
    Router::new()
        .route("/connexion", get(login_page).post(login))
        .route("/deconnexion", post(logout))
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
    responses((status = 200, body = Me, description = "Who the token acts as")))]
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

/// The session cookie's name.
pub const COOKIE: &str = "copiste_session";

/// The actor of a page request, from its session cookie; a browser
/// without a valid session is sent to the login page, which brings it
/// back to the page it asked for (`suite`) and says why when its key was
/// revoked or expired (`motif`).
pub struct Viewer(pub Actor);

/// The login page's address that leads back to `parts`' page (a GET's own
/// address; for a form, the page it was sent from is unknown: the exam
/// list), with why the session ended.
fn to_login(parts: &Parts, why: Option<&Refused>) -> Response {
    let mut query = Vec::new();
    if parts.method == axum::http::Method::GET
        && let Some(target) = parts.uri.path_and_query().map(|p| p.as_str())
        && target != "/examens"
    {
        query.push(format!("suite={}", urlencoding(target)));
    }
    match why {
        Some(Refused::Revoked) => query.push("motif=revoquee".into()),
        Some(Refused::Expired) => query.push("motif=expiree".into()),
        _ => {}
    }
    let to = if query.is_empty() {
        "/connexion".to_owned()
    } else {
        format!("/connexion?{}", query.join("&"))
    };
    Redirect::to(&to).into_response()
}

/// Where a login leads: a page of copiste (a path, never another site),
/// the exam list otherwise.
fn next_page(suite: Option<&str>) -> String {
    suite
        .filter(|s| s.starts_with('/') && !s.starts_with("//") && !s.contains('\\'))
        .filter(|s| !s.starts_with("/connexion") && !s.starts_with("/deconnexion"))
        .unwrap_or("/examens")
        .to_owned()
}

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
            return Err(to_login(parts, None));
        };
        match access::session(&state.app, &cookie).await {
            Ok(Authenticated::Actor { actor, .. }) => Ok(Self(actor)),
            Ok(Authenticated::Refused(why)) => Err(to_login(parts, Some(&why))),
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
    suite: String,
}

/// The login page's query: where to go next, and why the last session
/// ended.
#[derive(Deserialize)]
struct LoginQuery {
    suite: Option<String>,
    motif: Option<String>,
}

/// The login page with `status`, or the internal error page when its
/// template cannot be drawn.
fn login_response(status: StatusCode, page: &LoginPage) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the login page");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "Erreur interne",
                "copiste n'a pas pu répondre ; l'erreur est journalisée.".into(),
            )
        }
    }
}

async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    let message = match query.motif.as_deref() {
        Some("revoquee") => Some(
            "Votre clé d'accès a été révoquée : la session est fermée. Demandez une nouvelle clé \
             à l'administration de copiste.",
        ),
        Some("expiree") => {
            Some("Votre clé d'accès a expiré : la session est fermée. Demandez une nouvelle clé.")
        }
        _ => None,
    };
    login_response(
        StatusCode::OK,
        &LoginPage {
            who: None,
            message,
            suite: next_page(query.suite.as_deref()),
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    cle: String,
    suite: Option<String>,
}

async fn login(State(s): State<WebState>, Form(form): Form<LoginForm>) -> Response {
    let suite = next_page(form.suite.as_deref());
    match access::log_in(&s.app, &form.cle).await {
        Ok(Login::Session { cookie, expires_at }) => {
            let secure = s.app.config.downloads.public_base_url.scheme() == "https";
            let max_age = (expires_at - chrono::Utc::now()).num_seconds().max(0);
            let value = format!(
                "{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
                if secure { "; Secure" } else { "" }
            );
            let mut response = Redirect::to(&suite).into_response();
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Ok(Login::Refused(why)) => {
            tracing::info!(reason = %why, "login refused");
            let page = LoginPage {
                who: None,
                message: Some(match why {
                    Refused::Revoked => "Cette clé d'accès a été révoquée.",
                    Refused::Expired => "Cette clé d'accès a expiré.",
                    _ => "Clé d'accès inconnue, révoquée ou expirée.",
                }),
                suite,
            };
            login_response(StatusCode::UNAUTHORIZED, &page)
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
