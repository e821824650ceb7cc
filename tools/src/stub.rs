//! A reference target speaking the contract of `docs/exports.md`: it
//! accepts every item once, answers `duplicate` for a key it has seen, and
//! counts effects. It remembers keys in memory, or durably in a Postgres
//! table as a real target must (a key accepted before a restart is still a
//! duplicate after it). It can also answer after a fixed delay, as a
//! remote target does after its network round trip. `copiste bench
//! closure` runs it on a loopback port.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use axum::{Json, Router, extract::State, routing::post, serve::ListenerExt as _};
use serde::Deserialize;
use serde_json::Value;

use copiste::db::Db;
use copiste::export::{ItemResult, ItemStatus};

use crate::queries;

/// Where the stub remembers the keys it accepted.
#[derive(Clone, Debug)]
pub enum KeyStore {
    /// In memory: the fastest possible target, forgetful across restarts.
    Memory,
    /// In a table of this (bench) database, written before answering.
    Postgres(Db),
}

#[derive(Default)]
struct Accepted {
    keys: HashSet<String>,
    effects: u64,
    duplicates: u64,
    /// Effects per subject (a key without its last `:` part, i.e. the
    /// copy or the grader a grade or a count is about): a subject with
    /// two effects took effect twice under two keys.
    subjects: std::collections::HashMap<String, u32>,
    /// Requests answered so far, and those answered 503.
    requests: u64,
    failed: u64,
}

#[derive(Clone)]
struct StubState {
    store: KeyStore,
    /// Added to every answer, after the keys are recorded.
    latency: Duration,
    /// Every `n`-th request is answered 503 at once, without effect.
    fail_one_in: Option<u64>,
    accepted: Arc<Mutex<Accepted>>,
}

/// A running stub target; stops when dropped.
pub struct StubTarget {
    addr: SocketAddr,
    state: StubState,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Deserialize)]
struct Document {
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    key: String,
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

#[derive(serde::Serialize)]
struct Answer {
    results: Vec<ItemResult>,
}

async fn receive(
    State(state): State<StubState>,
    Json(doc): Json<Document>,
) -> Result<Json<Answer>, (axum::http::StatusCode, String)> {
    let keys: Vec<String> = doc.items.into_iter().map(|i| i.key).collect();
    if let Some(n) = state.fail_one_in {
        let mut accepted = lock(&state.accepted);
        accepted.requests += 1;
        if accepted.requests.is_multiple_of(n) {
            accepted.failed += 1;
            return Err((
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the stand-in target is unavailable (on purpose)".to_owned(),
            ));
        }
    }
    let fresh: Vec<bool> = match &state.store {
        KeyStore::Postgres(db) => {
            let started = std::time::Instant::now();
            let fresh = queries::accept_stub_keys(db, &keys).await.map_err(|e| {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    format!("{e:#}"),
                )
            })?;
            tracing::debug!(
                items = keys.len(),
                duration_ms = started.elapsed().as_millis() as u64,
                "stub recorded keys"
            );
            fresh
        }
        KeyStore::Memory => {
            let mut accepted = lock(&state.accepted);
            keys.iter()
                .map(|k| accepted.keys.insert(k.clone()))
                .collect()
        }
    };
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    let mut accepted = lock(&state.accepted);
    let results = keys
        .into_iter()
        .zip(fresh)
        .map(|(key, fresh)| {
            let status = if fresh {
                accepted.effects += 1;
                let subject = key.rsplit_once(':').map_or(key.as_str(), |(s, _)| s);
                *accepted.subjects.entry(subject.to_owned()).or_default() += 1;
                ItemStatus::Accepted
            } else {
                accepted.duplicates += 1;
                ItemStatus::Duplicate
            };
            ItemResult {
                key,
                status,
                reason: None,
            }
        })
        .collect();
    Ok(Json(Answer { results }))
}

fn lock(m: &Mutex<Accepted>) -> std::sync::MutexGuard<'_, Accepted> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl StubTarget {
    /// Serves both `/v1/grades` and `/v1/service-fait` on a free loopback
    /// port, remembering keys in `store` and answering each request
    /// `latency` after its keys are recorded.
    pub async fn start(store: KeyStore, latency: Duration) -> anyhow::Result<Self> {
        Self::start_failing(store, latency, None).await
    }

    /// As [`StubTarget::start`], answering every `fail_one_in`-th request
    /// 503 at once without effect (e.g. `Some(100)`: 1 % of requests).
    pub async fn start_failing(
        store: KeyStore,
        latency: Duration,
        fail_one_in: Option<u64>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(fail_one_in != Some(0), "fail_one_in must be at least 1");
        if let KeyStore::Postgres(db) = &store {
            queries::create_stub_keys(db).await?;
        }
        let state = StubState {
            store,
            latency,
            fail_one_in,
            accepted: Arc::new(Mutex::new(Accepted::default())),
        };
        let app = Router::new()
            .route("/v1/grades", post(receive))
            .route("/v1/service-fait", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the stub target")?;
        let addr = listener.local_addr().context("the stub's address")?;
        // Answers are written in more than one segment: without NODELAY,
        // Nagle's algorithm and delayed ACKs add ~40 ms to each of them.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the stub target stopped");
            }
        });
        Ok(Self { addr, state, task })
    }

    /// The base URL to configure as an exporter's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Items that took effect, and items answered `duplicate`.
    pub fn counts(&self) -> (u64, u64) {
        let accepted = lock(&self.state.accepted);
        (accepted.effects, accepted.duplicates)
    }

    /// Subjects whose key starts with `prefix` that took effect more than
    /// once, under different keys. For grades (`c:`) of copies that never
    /// changed, 0 is exactly once; a grader's count (`i:`) rightly takes
    /// effect again under a new revision when it changes (a second
    /// harmonisation pass).
    pub fn doubled_subjects(&self, prefix: &str) -> usize {
        lock(&self.state.accepted)
            .subjects
            .iter()
            .filter(|(k, n)| k.starts_with(prefix) && **n > 1)
            .count()
    }

    /// Subjects that took effect whose key starts with `prefix` (`c:` for
    /// grades).
    pub fn subjects_with_prefix(&self, prefix: &str) -> usize {
        lock(&self.state.accepted)
            .subjects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count()
    }

    /// Requests received, and those answered 503 on purpose.
    pub fn requests(&self) -> (u64, u64) {
        let accepted = lock(&self.state.accepted);
        (accepted.requests, accepted.failed)
    }
}

impl Drop for StubTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}
