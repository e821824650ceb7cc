//! What every route of the JSON API under `/api/v1/` shares: the OpenAPI
//! document's frame, the list of the resources' routes (each resource's
//! routes are in its own module: [`super::session`], [`super::exams`],
//! [`super::closure`], [`super::copies`], [`super::downloads`],
//! [`super::jobs`]), and the readers of bodies, UAIs and render switches.
//! Handlers only translate: every rule and scope check is in the operation
//! they call.

use axum::Router;
use serde::Deserialize;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use super::{
    WebState, closure, copies, downloads, exams, jobs,
    problem::{ApiError, Problem},
    session,
};
use crate::{domain::Uai, op::OpError, render::RequestedOptions};

/// What every API handler returns.
pub(super) type ApiResult<T> = Result<T, ApiError>;

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
        .merge(session::api())
        .merge(exams::api())
        .merge(closure::api())
        .merge(copies::api())
        .merge(downloads::api())
        .merge(jobs::api())
        .split_for_parts()
}

/// A JSON body that may be left out (then the default), its decoding
/// errors answered as problems naming what is wrong.
pub(super) fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Problem::bad_request(format!("the JSON body does not fit: {e}")).into())
}

/// A UAI of the request, or an invalid-input problem naming `field`.
pub(super) fn uai(field: &'static str, s: &str) -> ApiResult<Uai> {
    Uai::parse(s).map_err(|e| OpError::invalid(field, e.to_string()).into())
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
    pub(super) fn requested(&self) -> RequestedOptions {
        RequestedOptions {
            details: self.details,
            appreciation: self.appreciation,
            annotations: self.annotations,
        }
    }
}
