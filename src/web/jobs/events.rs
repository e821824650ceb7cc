//! A job's progress as Server-Sent Events, for the API and the pages.

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use std::convert::Infallible;
use std::time::Duration;
use uuid::Uuid;

use super::api::job_id;
use crate::domain::JobStatus;
use crate::jobs::admin;
use crate::op::{Actor, OpError};
use crate::web::WebState;
use crate::web::api::{ApiPath, ApiResult};
use crate::web::problem::Problem;
use crate::web::session::Caller;

/// The data of an event of a job's stream (`progress` while the job may
/// still move, then one `done`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobProgress {
    /// The job's status, or `gone` when the job was deleted meanwhile.
    pub status: ProgressStatus,
    pub done: Option<i64>,
    pub total: Option<i64>,
    pub last_error: Option<String>,
}

/// A job's status in its stream: its status, or `gone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProgressStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
    /// The job no longer exists.
    Gone,
}

impl From<JobStatus> for ProgressStatus {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Queued => Self::Queued,
            JobStatus::Running => Self::Running,
            JobStatus::Succeeded => Self::Succeeded,
            JobStatus::Failed => Self::Failed,
            JobStatus::Dead => Self::Dead,
            JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// One event of a job's stream, as the document describes it: its name
/// and its data, a [`JobProgress`] as JSON.
pub struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{
            Ref,
            schema::{ObjectBuilder, Type},
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An event of the stream: `progress` each time the job moves, then one `done`; its data is a JobProgress document.",
            ))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["progress", "done"])),
            )
            .required("event")
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json")
                    .content_schema(Some(Ref::from_schema_name("JobProgress"))),
            )
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for StreamEvent {}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs", params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, content_type = "text/event-stream", body = StreamEvent,
            description = "Server-Sent Events: a `progress` event each time the job moves, then one `done` event, each with a JobProgress document as its data; read from PostgreSQL"),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn job_events(
    State(s): State<WebState>,
    Caller(actor): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = job_id(&id)?;
    Ok(events(&s, &actor, id).await?)
}

/// The events of job `id` for `actor` (see [`job_events`]); the web pages
/// serve the same stream to their session.
pub async fn events(
    s: &WebState,
    actor: &Actor,
    id: Uuid,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, OpError> {
    // The scope check, once; the stream then reads the row only.
    admin::show(&s.app, actor, id).await?;
    let db = s.app.db.clone();
    let stream = futures::stream::unfold(
        (db, None::<(JobStatus, Option<i64>, Option<i64>)>, false),
        move |(db, last, finished)| async move {
            if finished {
                return None;
            }
            loop {
                let job = match crate::db::jobs::get(&db, id).await {
                    Ok(Some(job)) => job,
                    Ok(None) => {
                        let event = progress_event(
                            "done",
                            &JobProgress {
                                status: ProgressStatus::Gone,
                                done: None,
                                total: None,
                                last_error: None,
                            },
                        );
                        return Some((Ok(event), (db, last, true)));
                    }
                    Err(e) => {
                        tracing::warn!(job.id = %id, error = %format!("{e:#}"), "job events: read failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let now = (job.status, job.progress_done, job.progress_total);
                if last != Some(now) {
                    let name = if job.status.is_final() {
                        "done"
                    } else {
                        "progress"
                    };
                    let event = progress_event(
                        name,
                        &JobProgress {
                            status: job.status.into(),
                            done: job.progress_done,
                            total: job.progress_total,
                            last_error: job.last_error,
                        },
                    );
                    return Some((Ok(event), (db, Some(now), job.status.is_final())));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One event of a job's stream: its name and its [`JobProgress`] as
/// JSON data.
fn progress_event(name: &'static str, progress: &JobProgress) -> Event {
    match Event::default().event(name).json_data(progress) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(error = %e, "job events: cannot write an event");
            Event::default().event(name)
        }
    }
}
