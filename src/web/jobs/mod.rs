//! Jobs: the list of the jobs the caller reaches with their counts, a
//! job's detail, its retry and cancellation, and its progress as
//! Server-Sent Events (API and pages).

pub(super) mod api;
mod bulk;
pub(super) mod events;
mod pages;

use axum::Router;
use axum::routing::{get, post};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::web::WebState;

/// The API's routes of this resource.
pub(super) fn api() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(api::jobs_list))
        .routes(routes!(api::job_show))
        .routes(routes!(api::jobs_retry_dead))
        .routes(routes!(api::job_retry))
        .routes(routes!(api::job_cancel))
        .routes(routes!(events::job_events))
}

/// The pages of this resource.
pub(super) fn pages() -> Router<WebState> {
    Router::new()
        .route("/travaux", get(pages::page_jobs))
        .route("/travaux/relance-groupee", post(bulk::page_bulk_retry))
        .route("/travaux/{id}", get(pages::page_job))
        .route("/travaux/{id}/evenements", get(pages::page_job_events))
        .route("/travaux/{id}/relance", post(pages::page_job_retry))
        .route("/travaux/{id}/annulation", post(pages::page_job_cancel))
}
