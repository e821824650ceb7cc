//! What every route of the JSON API under `/api/v1/` shares: the OpenAPI
//! document's frame, the list of the resources' routes (each resource's
//! routes are in its own module: [`super::session`], [`super::exams`],
//! [`super::closure`], [`super::copies`], [`super::downloads`],
//! [`super::jobs`]), and the readers of bodies, UAIs and render switches.
//! Handlers only translate: every rule and scope check is in the operation
//! they call.

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{StatusCode, header, request::Parts},
};
use serde::{Deserialize, de::DeserializeOwned};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use super::{
    WebState, closure, copies, downloads, exams, jobs,
    problem::{ApiError, Problem},
    session,
};
use crate::{
    domain::{Uai, UaiError},
    op::OpError,
    render::RequestedOptions,
};

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
    components(schemas(
        Problem,
        jobs::events::JobProgress,
        jobs::events::StreamEvent,
        Code,
        UaiText,
        SearchText,
        CursorText,
        KindName
    ))
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
/// list so that every route is documented, and completed with the
/// answers every route may give ([`complete`]).
pub fn routes() -> (Router<WebState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(session::api())
        .merge(exams::api())
        .merge(closure::api())
        .merge(copies::api())
        .merge(downloads::api())
        .merge(jobs::api())
        .split_for_parts();
    complete(&mut doc);
    link(&mut doc);
    (router, doc)
}

/// Links from the answer of a GET: its path, the operations it leads
/// to, and their parameters (name, where in the request or answer).
type LinksFrom<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);

/// The links between operations (OpenAPI links): from the exam list to
/// every operation on an exam, from an exam's closure to every operation
/// on one of its establishments, from the jobs list to every operation on
/// a job. A client (and schemathesis' stateful tests) follows them from
/// what one answer gives to the next request.
fn link(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, link::LinkBuilder};
    let exam_ops = [
        "closure_status",
        "closure_run",
        "closure_relaunch",
        "publish",
        "validate",
        "zips_request",
    ];
    let unit_ops = ["candidates", "zip_links", "zip_request"];
    let job_ops = ["job_show", "job_retry", "job_cancel", "job_events"];
    let links: [LinksFrom; 3] = [
        (
            "/api/v1/exams",
            &exam_ops,
            &[("exam", "$response.body#/0/code")],
        ),
        (
            "/api/v1/exams/{exam}/closure",
            &unit_ops,
            &[
                ("exam", "$request.path.exam"),
                ("uai", "$response.body#/units/0/establishment"),
            ],
        ),
        (
            "/api/v1/jobs",
            &job_ops,
            &[("id", "$response.body#/jobs/0/id")],
        ),
    ];
    for (path, targets, parameters) in links {
        let Some(RefOr::T(response)) = doc
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| item.get.as_mut())
            .and_then(|op| op.responses.responses.get_mut("200"))
        else {
            continue;
        };
        for target in targets {
            let mut link = LinkBuilder::new().operation_id(*target);
            for (name, value) in parameters {
                link = link.parameter(*name, *value);
            }
            response
                .links
                .insert((*target).to_owned(), RefOr::T(link.build()));
        }
    }
}

/// Completes every operation's answers with the problems any route may
/// give besides its own: 401 (no valid token), 403 for a post (a
/// cross-site form), 422 when it takes parameters or a body (one that
/// does not decode), 413 and 415 when it takes a body (too large, not
/// JSON), 500 (copiste's failure) and 503 (no answer within the timeout);
/// and every error answer is declared as `application/problem+json`.
fn complete(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in &mut doc.paths.paths {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        if let Some(op) = item.get.as_mut() {
            complete_operation(op, false);
        }
        if let Some(op) = item.post.as_mut() {
            complete_operation(op, true);
        }
    }
}

/// Completes one operation's answers (see [`complete`]); `post` when it
/// is a POST.
fn complete_operation(op: &mut utoipa::openapi::path::Operation, post: bool) {
    use utoipa::openapi::RefOr;
    let has_input =
        op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some();
    let has_body = op.request_body.is_some();
    for (status, response) in &mut op.responses.responses {
        let RefOr::T(response) = response else {
            continue;
        };
        if response.description.is_empty() {
            default_description(status).clone_into(&mut response.description);
        }
        if (status.starts_with('4') || status.starts_with('5'))
            && let Some(content) = response.content.shift_remove("application/json")
        {
            response.content.insert(PROBLEM_JSON.to_owned(), content);
        }
    }
    add_problem(
        op,
        "401",
        "No token, or an unknown, revoked or expired one (/problems/unauthenticated)",
    );
    if post {
        add_problem(
            op,
            "403",
            "Outside the caller's scope, or a form posted by another site (/problems/forbidden)",
        );
    }
    if has_input {
        add_problem(
            op,
            "422",
            "A parameter or body that does not fit (/problems/invalid; `field` names it when known)",
        );
    }
    if has_body {
        add_problem(op, "413", "A body larger than 2 MiB (/problems/too-large)");
        add_problem(
            op,
            "415",
            "A body that is not application/json (/problems/unsupported-media-type)",
        );
    }
    add_problem(op, "500", "copiste's failure, logged (/problems/internal)");
    add_problem(
        op,
        "503",
        "No answer within 60 seconds (/problems/unavailable)",
    );
}

/// Declares the problem document `op` answers with `status`, unless the
/// operation declares that status itself; a 401 also names its
/// `WWW-Authenticate` header.
fn add_problem(op: &mut utoipa::openapi::path::Operation, status: &str, description: &str) {
    use utoipa::openapi::{
        ContentBuilder, Ref, RefOr, ResponseBuilder,
        header::HeaderBuilder,
        schema::{ObjectBuilder, Type},
    };
    let problem = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, problem);
    if status == "401" {
        response = response.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some("`Bearer`"))
                .build(),
        );
    }
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::T(response.build()));
}

/// What an answer of `status` means, when its route does not say.
fn default_description(status: &str) -> &'static str {
    match status {
        "200" => "Done",
        "401" => "No token, or an unknown, revoked or expired one (/problems/unauthenticated)",
        "403" => "Outside the caller's scope (/problems/forbidden)",
        "404" => "Unknown exam, establishment, candidate, copy or job (/problems/not-found)",
        "409" => {
            "Refused by a rule or by the current state (/problems/refused, /problems/conflict)"
        }
        "422" => "Invalid input (/problems/invalid)",
        _ => "An answer",
    }
}

/// The media type of every error answer (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A query string read as `T`; a query that does not fit is an
/// invalid-input problem (422) naming what is wrong.
pub(super) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e| Problem::bad_request(e.body_text()).into())
    }
}

/// The path's parameters read as `T`; a path that does not decode (bad
/// percent-encoding, not UTF-8) is an invalid-input problem (422).
pub(super) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| Self(p))
            .map_err(|e| {
                if e.status().is_server_error() {
                    OpError::Internal(anyhow::anyhow!("path parameters: {}", e.body_text())).into()
                } else {
                    Problem::bad_request(e.body_text()).into()
                }
            })
    }
}

/// A JSON body that may be left out: no body, an empty one or `null` is
/// the default (every field absent). A body that is not
/// `application/json` is refused (415), one that does not fit `T` is an
/// invalid-input problem (422), one too large 413.
pub(super) struct ApiBody<T>(pub T);

impl<T: DeserializeOwned + Default + Send, S: Send + Sync> FromRequest<S> for ApiBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> ApiResult<Self> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .map(|v| v == "application/json" || v.ends_with("+json"));
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| Problem::of_status(e.status(), e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if json != Some(true) {
            return Err(Problem::of_status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON (Content-Type: application/json)".into(),
            )
            .into());
        }
        serde_json::from_slice::<Option<T>>(&bytes)
            .map(|b| Self(b.unwrap_or_default()))
            .map_err(|e| Problem::bad_request(format!("the JSON body does not fit: {e}")).into())
    }
}

/// A UAI of the request, or a problem naming `field`: invalid input
/// (422) when it is not of a UAI's form, not found (404) when it is but
/// its check letter is wrong (no establishment has it).
pub(super) fn uai(field: &'static str, s: &str) -> ApiResult<Uai> {
    Uai::parse(s).map_err(|e| match e {
        UaiError::CheckLetter { .. } => {
            OpError::not_found(format!("establishment {} ({e})", s.trim())).into()
        }
        _ => OpError::invalid(field, e.to_string()).into(),
    })
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

/// The form of a code the caller types (an exam code, a candidate's
/// numéro, an academy), as [`crate::op::code`] accepts it: not blank, no
/// control character, at most [`crate::op::MAX_CODE_CHARS`] characters.
const CODE_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// The form of a UAI, as [`Uai::parse`] reads it: 7 digits and a letter,
/// surrounding spaces ignored (a UAI of this form whose check letter is
/// wrong names no establishment: 404).
const UAI_PATTERN: &str = r"^\s*[0-9]{7}[A-Za-z]\s*$";

/// Free text (a search): no control character.
const TEXT_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

/// A string schema with a pattern and bounds.
fn string_schema(
    pattern: &str,
    min: Option<usize>,
    max: Option<usize>,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(min)
        .max_length(max)
        .description(Some(description))
        .into()
}

/// A code the caller types: an exam code, a candidate's numéro, an
/// academy ([`CODE_PATTERN`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Code(pub String);

impl utoipa::PartialSchema for Code {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            CODE_PATTERN,
            Some(1),
            Some(crate::op::MAX_CODE_CHARS),
            "A code: not blank, no control character, at most 200 characters.",
        )
    }
}

impl utoipa::ToSchema for Code {}

/// A UAI as the caller types it ([`UAI_PATTERN`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct UaiText(pub String);

impl utoipa::PartialSchema for UaiText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            UAI_PATTERN,
            None,
            None,
            "An establishment's UAI: 7 digits and a letter (case and surrounding spaces ignored); one whose check letter is wrong names no establishment (404).",
        )
    }
}

impl utoipa::ToSchema for UaiText {}

/// Free text: a search ([`TEXT_PATTERN`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct SearchText(pub String);

impl utoipa::PartialSchema for SearchText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            TEXT_PATTERN,
            None,
            None,
            "Words of a nom, prénom or numéro, without control characters; at least one letter or digit once accents and punctuation are removed (else 422).",
        )
    }
}

impl utoipa::ToSchema for SearchText {}

/// A cursor of the jobs list ([`crate::jobs::admin::CURSOR_PATTERN`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct CursorText(pub String);

impl utoipa::PartialSchema for CursorText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            crate::jobs::admin::CURSOR_PATTERN,
            None,
            None,
            "Where a page of the jobs list starts: a page's `next`, given back as is (32 characters of base64url).",
        )
    }
}

impl utoipa::ToSchema for CursorText {}

/// The name of a registered job kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct KindName(pub String);

impl utoipa::PartialSchema for KindName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(
                crate::jobs::registry::all()
                    .into_iter()
                    .map(|h| h.name)
                    .collect::<Vec<_>>(),
            ))
            .description(Some("A job kind registered in this build."))
            .into()
    }
}

impl utoipa::ToSchema for KindName {}

/// A PDF's bytes, as an answer's body.
pub struct PdfBytes;

impl utoipa::PartialSchema for PdfBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/pdf")
            .description(Some("A PDF document."))
            .into()
    }
}

impl utoipa::ToSchema for PdfBytes {}
