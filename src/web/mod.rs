//! `copiste serve`: the HTTP front door. One module per resource, each
//! with its routes of the JSON API under `/api/v1/` and its web pages:
//! [`session`] (who asks: bearer token or session), [`exams`],
//! [`closure`], [`copies`], [`downloads`], [`jobs`] and [`academy`] (the
//! operators' view of an academy, pages only). Besides, what
//! every API route shares ([`api`]: the OpenAPI document), what every page
//! shares ([`pages`]), errors as problem documents ([`problem`]), the
//! pages' French ([`french`]), their error pages ([`errors`]) and
//! protective headers ([`headers`]), and the download links of the local store
//! (`/downloads/{token}`). Every request acts as the actor of its bearer
//! token or of its session; what it may do is decided by the operations,
//! as for the command line.

pub mod academy;
pub mod api;
pub mod closure;
pub mod copies;
pub mod downloads;
pub mod errors;
pub mod exams;
pub mod french;
pub mod headers;
pub mod jobs;
pub mod pages;
pub mod problem;
pub mod session;

use std::time::Duration;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{StatusCode, header},
};
use tower_http::{
    compression::{
        CompressionLayer, Predicate as _,
        predicate::{DefaultPredicate, NotForContentType},
    },
    csrf::CsrfLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::app::App;

/// What every handler gets.
#[derive(Clone, Debug)]
pub struct WebState {
    pub app: App,
}

/// The largest request body accepted (a harmonisation pass's list of
/// numéros is the largest input).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The whole router: the pages, the API, and the download links when the
/// links' signing key is set, behind the HTTP layers (request id, traces
/// without credentials, timeout, compression but for PDFs, zips and event
/// streams, refusal of cross-site posts, body limit).
pub fn router(app: App) -> Router {
    let downloads =
        app.config.downloads.signing_key.as_ref().map(|key| {
            crate::download::serve::router(app.storage.clone(), key.expose().as_bytes())
        });
    let (api, mut doc) = api::routes();
    doc.paths
        .paths
        .insert("/api/openapi.json".to_owned(), openapi_path());
    let doc = std::sync::Arc::new(doc);
    let state_app = app.clone();
    let state = WebState { app };
    let pages = pages::routes().with_state(state.clone());
    let api = api
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .with_state(state);
    let router = match downloads {
        Some(d) => api.merge(pages).merge(d),
        None => api.merge(pages),
    };
    // /metrics, /healthz and /readyz; without a recorder (one per
    // process, installed by `serve`) the metrics are not recorded.
    let router = match crate::telemetry::install() {
        Ok(handle) => router.merge(crate::telemetry::routes(state_app, handle)),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no metrics");
            router
        }
    };
    with_layers(router)
}

/// `router` behind the HTTP layers: a panic as a French page, metrics,
/// body limit, refusal of cross-site posts, timeout, French error pages,
/// protective headers, compression but for PDFs, zips and event streams,
/// traces without credentials, request ids.
fn with_layers(router: Router) -> Router {
    // PDFs and zips are compressed already; event streams must not wait
    // for a compressor's buffer.
    let compress = DefaultPredicate::new()
        .and(NotForContentType::const_new("application/pdf"))
        .and(NotForContentType::const_new("application/zip"))
        .and(NotForContentType::const_new("text/event-stream"));
    router
        // A panic in a handler is a French page with status 500.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            errors::panic_page,
        ))
        .layer(axum::middleware::from_fn(crate::telemetry::track_http))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A cross-site POST (a form of another site) is refused; the API's
        // own clients send no Origin or Sec-Fetch-Site and pass.
        .layer(CsrfLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(60),
        ))
        // Errors the handlers do not write (unknown address, extractors'
        // refusals, cross-site forms, timeouts) as French pages, then
        // every answer with its protective headers; both read answers
        // before they are compressed.
        .layer(axum::middleware::from_fn(errors::styled))
        .layer(axum::middleware::from_fn(headers::protect))
        .layer(CompressionLayer::new().compress_when(compress))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The OpenAPI document's own path: served to anyone, no token needed.
fn openapi_path() -> utoipa::openapi::path::PathItem {
    utoipa::openapi::path::PathItem::new(
        utoipa::openapi::HttpMethod::Get,
        utoipa::openapi::path::OperationBuilder::new()
            .summary(Some("This document"))
            .operation_id(Some("openapi"))
            .tag("access")
            // Served to anyone: no token needed.
            .securities(Some(Vec::new()))
            .response(
                "200",
                utoipa::openapi::ResponseBuilder::new()
                    .description("The OpenAPI 3.1 document of this API")
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(
                                utoipa::openapi::schema::ObjectBuilder::new()
                                    .schema_type(utoipa::openapi::schema::Type::Object),
                            ))
                            .build(),
                    ),
            )
            .build(),
    )
}

/// The span of one HTTP request: its method, route pattern and request
/// id, and the actor once its token or session is checked (recorded by
/// the extractors). Never its headers: credentials stay out of the logs.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        request.id = %id,
        http.method = %request.method(),
        http.path = %request.uri().path(),
        actor = tracing::field::Empty,
    )
}

/// Serves `router` on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: std::net::SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!(%addr, "serving");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

/// Records who asks on the current request's span.
pub fn record_actor(actor: &crate::op::Actor) {
    tracing::Span::current().record("actor", tracing::field::display(actor.label()));
}

/// A copy's PDF as both doors serve it: inline, never sniffed as another
/// type, framed only by copiste's own pages, never cached by a proxy.
pub fn pdf_response(pdf: bytes::Bytes) -> axum::response::Response {
    use axum::{http::HeaderValue, response::IntoResponse as _};
    let mut response = pdf.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "application/pdf"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'self'"),
        (header::CACHE_CONTROL, "private, no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
