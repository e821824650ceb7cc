//! What operators see of a running process: Prometheus metrics, liveness
//! and readiness.
//!
//! Every role records through the `metrics` facade (`metrics::counter!`
//! and friends, next to the work they count); this module installs the
//! process' recorder (metrics-exporter-prometheus, without its own HTTP
//! server: copiste's axum router serves the text) and answers:
//!
//! - `GET /metrics`: the Prometheus text format;
//! - `GET /healthz`: 200 as long as the process answers;
//! - `GET /readyz`: 200 when PostgreSQL, Redis and the object store each
//!   answer within 1 s, else 503 naming those that did not.
//!
//! `serve` adds these routes to its router; `worker` and `scheduler`
//! serve them on a listener of their own (`--metrics-listen`). The ledger's
//! counts (jobs by kind and state, the oldest queued job, export items)
//! are read every [`SAMPLE_EVERY`] by one task, never per scrape.

use std::{
    net::SocketAddr,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{app::App, db, queue, storage::StorageError};

/// How often the ledger's counts are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// How long each dependency has to answer `/readyz`.
pub const READY_WITHIN: Duration = Duration::from_secs(1);

/// The process' recorder, installed by the first caller; a failure is
/// kept so that every caller sees it.
static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process' recorder once and describes copiste's metrics;
/// later calls, concurrent ones included, return the same handle.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                1800.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .map_err(|e| format!("histogram buckets: {e}"))?
                .install_recorder()
                .map_err(|e| format!("installing the metrics recorder: {e}"))?;
            describe();
            Ok(handle)
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("copiste_jobs", "Jobs in the ledger by kind and state.");
    describe_gauge!(
        "copiste_oldest_queued_job_age_seconds",
        Unit::Seconds,
        "How long the oldest due, queued job has waited."
    );
    describe_gauge!(
        "copiste_export_items",
        "Export items (grades to Cyclades, counts to Imag'In) by target and state."
    );
    describe_counter!(
        "copiste_job_runs_total",
        "Job runs by kind and outcome (succeeded, failed, retry, dead, interrupted)."
    );
    describe_histogram!(
        "copiste_job_run_duration_seconds",
        Unit::Seconds,
        "Duration of job runs by kind."
    );
    describe_gauge!(
        "copiste_queue_waiting_ids",
        "Job ids waiting in Redis, as the pump last counted them."
    );
    describe_counter!(
        "copiste_pump_batches_total",
        "Batches of ids the pump pushed to Redis."
    );
    describe_counter!(
        "copiste_pump_pushed_ids_total",
        "Job ids the pump pushed to Redis."
    );
    describe_counter!(
        "copiste_export_requests_total",
        "Requests to each export target by answer class (2xx, 4xx, 5xx, timeout, error)."
    );
    describe_counter!(
        "copiste_zip_bytes_total",
        Unit::Bytes,
        "Bytes of zips built."
    );
    describe_counter!("copiste_zip_entries_total", "Entries (copies) put in zips.");
    describe_counter!(
        "copiste_unit_summary_corrections_total",
        "Rows of the closure table's unit summaries that housekeeping found wrong and recounted (should stay 0)."
    );
    describe_counter!(
        "copiste_zip_chunks_resumed_total",
        "Chunks of a zip part that an earlier run uploaded, kept by the run that finished the zip."
    );
    describe_counter!(
        "copiste_zip_upload_restarts_total",
        "Recorded zip uploads that could not be continued (gone, or other bytes): their part was uploaded again."
    );
    describe_histogram!(
        "copiste_zip_duration_seconds",
        Unit::Seconds,
        "Duration of zip builds."
    );
    describe_counter!(
        "copiste_http_requests_total",
        "HTTP requests by route and status."
    );
    describe_histogram!(
        "copiste_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route."
    );
    describe_counter!(
        "copiste_schedule_slots_total",
        "Schedule slots by schedule and outcome (fired, already, caught_up, missed)."
    );
}

/// The routes `/metrics`, `/healthz` and `/readyz`.
pub fn routes(app: App, handle: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        handle.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(app)
}

/// What `probe` answered, or why it did not answer within [`READY_WITHIN`].
async fn within<T>(probe: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(READY_WITHIN, probe)
        .await
        .map_err(|_| "no answer within 1 s".to_owned())
}

/// Which dependencies did not answer within [`READY_WITHIN`], with why.
pub async fn unready(app: &App) -> Vec<(&'static str, String)> {
    let postgres = async {
        within(app.db.ping())
            .await
            .and_then(|answer| answer.map_err(|e| format!("{e:#}")))
            .err()
            .map(|why| ("postgres", why))
    };
    let redis = async {
        let url = app.config.redis_url();
        (!queue::answers(&url, READY_WITHIN).await)
            .then(|| ("redis", "no answer to PING within 1 s".to_owned()))
    };
    let store = async {
        // Any answer about an object proves the store reachable.
        within(app.storage.get("readyz/probe"))
            .await
            .and_then(|answer| match answer {
                Ok(_) | Err(StorageError::NotFound(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            })
            .err()
            .map(|why| ("object store", why))
    };
    let (p, r, s) = tokio::join!(postgres, redis, store);
    [p, r, s].into_iter().flatten().collect()
}

async fn ready(State(app): State<App>) -> Response {
    let failing = unready(&app).await;
    if failing.is_empty() {
        return (StatusCode::OK, "ready: postgres, redis, object store\n").into_response();
    }
    let lines: String = failing
        .iter()
        .map(|(what, why)| format!("{what}: {why}\n"))
        .collect();
    tracing::warn!(failing = %lines.trim_end(), "not ready");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready\n{lines}"),
    )
        .into_response()
}

/// Counts every HTTP request by its route (the router's pattern, never
/// the raw path) and status, with its latency.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("copiste_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("copiste_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Reads the ledger's counts every [`SAMPLE_EVERY`] into gauges, until the
/// process ends.
pub fn spawn_ledger_sampler(app: App) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: std::collections::HashSet<(String, String, String)> = Default::default();
        loop {
            tick.tick().await;
            match db::metrics::ledger_counts(&app.db).await {
                Ok(counts) => {
                    let mut now = std::collections::HashSet::new();
                    for c in &counts.jobs {
                        metrics::gauge!("copiste_jobs", "kind" => c.kind.clone(), "state" => c.state.clone())
                            .set(c.n as f64);
                        now.insert(("jobs".to_owned(), c.kind.clone(), c.state.clone()));
                    }
                    for c in &counts.exports {
                        metrics::gauge!("copiste_export_items", "target" => c.kind.clone(), "state" => c.state.clone())
                            .set(c.n as f64);
                        now.insert(("exports".to_owned(), c.kind.clone(), c.state.clone()));
                    }
                    // A state that emptied reads 0, not its last count.
                    for (what, kind, state) in seen.difference(&now) {
                        if what == "jobs" {
                            metrics::gauge!("copiste_jobs", "kind" => kind.clone(), "state" => state.clone()).set(0.0);
                        } else {
                            metrics::gauge!("copiste_export_items", "target" => kind.clone(), "state" => state.clone()).set(0.0);
                        }
                    }
                    seen.extend(now);
                    metrics::gauge!("copiste_oldest_queued_job_age_seconds")
                        .set(counts.oldest_queued_secs);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read the ledger's counts")
                }
            }
        }
    })
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` for `worker` and
/// `scheduler` (`--metrics-listen`), with the ledger sampler, until the
/// process ends.
pub async fn listen(addr: SocketAddr, app: App) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let handle = install()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics on {addr}"))?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let sampler = spawn_ledger_sampler(app.clone());
    let router = routes(app, handle);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
        sampler.abort();
    }))
}

/// `copiste probe URL`: whether `url` answers 2xx within `within` (the
/// image's HEALTHCHECK, with no curl in the image).
pub async fn probe(url: &str, within: Duration) -> anyhow::Result<()> {
    let client = crate::tls::http_client()
        .timeout(within)
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("{url} does not answer"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "{url} answered {status}: {}",
        body.trim()
    );
    Ok(())
}
