//! The `http` implementation of the export targets: one JSON POST per
//! batch to the configured base URL (contract in `docs/exports.md`), with a
//! timeout and a per-target limit of requests in flight.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use url::Url;

use super::{
    Batch, CountItem, ExportError, GradeItem, GradesExporter, ItemResult, ServiceFaitExporter,
    Target, check_results,
};
use crate::config::ExporterConfig;

/// The longest part of an error body quoted in an error message.
const BODY_EXCERPT: usize = 300;

/// A target reached over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpTarget {
    target: Target,
    client: reqwest::Client,
    url: Url,
    permits: Arc<Semaphore>,
}

#[derive(Deserialize)]
struct Answer {
    results: Vec<ItemResult>,
}

impl HttpTarget {
    /// A client for `target` as configured.
    pub fn new(target: Target, config: &ExporterConfig) -> anyhow::Result<Self> {
        let path = match target {
            Target::Cyclades => "v1/grades",
            Target::Imagin => "v1/service-fait",
        };
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let url = base
            .join(path)
            .with_context(|| format!("building the {target} URL from {base}"))?;
        let client = crate::tls::http_client()
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(10)))
            .user_agent(concat!("copiste/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            target,
            client,
            url,
            permits: Arc::new(Semaphore::new(config.concurrency as usize)),
        })
    }

    async fn post<I: Serialize>(
        &self,
        batch: &Batch<I>,
        keys: Vec<&str>,
    ) -> Result<Vec<ItemResult>, ExportError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ExportError::Retryable("the exporter is shutting down".into()))?;
        let target = self.target;
        let response = self
            .client
            .post(self.url.clone())
            .json(batch)
            .send()
            .await
            .inspect_err(|e| {
                let class = if e.is_timeout() { "timeout" } else { "error" };
                metrics::counter!("copiste_export_requests_total", "target" => target.to_string(), "class" => class)
                    .increment(1);
            })
            .map_err(|e| {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                ExportError::Retryable(format!("{target}: {what}: {}", error_chain(&e)))
            })?;
        let status = response.status();
        let class = match status.as_u16() {
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        metrics::counter!("copiste_export_requests_total", "target" => target.to_string(), "class" => class)
            .increment(1);
        if status.is_success() {
            let answer: Answer = response.json().await.map_err(|e| {
                ExportError::Retryable(format!("{target}: unreadable answer: {}", error_chain(&e)))
            })?;
            return check_results(&keys, answer.results)
                .map_err(|e| ExportError::Retryable(format!("{target}: {e}")));
        }
        let body = response.text().await.unwrap_or_default();
        let excerpt: String = body.chars().take(BODY_EXCERPT).collect();
        let message = format!("{target}: HTTP {status}: {}", excerpt.trim());
        if status.as_u16() == 429 || status.is_server_error() {
            Err(ExportError::Retryable(message))
        } else {
            Err(ExportError::Permanent(message))
        }
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl GradesExporter for HttpTarget {
    fn send_grades<'a>(
        &'a self,
        batch: &'a Batch<GradeItem>,
    ) -> BoxFuture<'a, Result<Vec<ItemResult>, ExportError>> {
        let keys = batch.items.iter().map(|i| i.key.as_str()).collect();
        Box::pin(self.post(batch, keys))
    }
}

impl ServiceFaitExporter for HttpTarget {
    fn send_counts<'a>(
        &'a self,
        batch: &'a Batch<CountItem>,
    ) -> BoxFuture<'a, Result<Vec<ItemResult>, ExportError>> {
        let keys = batch.items.iter().map(|i| i.key.as_str()).collect();
        Box::pin(self.post(batch, keys))
    }
}
