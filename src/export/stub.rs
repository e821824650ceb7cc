//! A reference target speaking the contract of `docs/exports.md`: it
//! accepts every item once, answers `duplicate` for a key it has seen, and
//! counts effects. `copiste bench closure` runs it on a loopback port; it
//! is also handy to try the `http` exporters by hand.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use axum::{Json, Router, extract::State, routing::post};
use serde::Deserialize;
use serde_json::Value;

use super::{ItemResult, ItemStatus};

#[derive(Default)]
struct Accepted {
    keys: HashSet<String>,
    effects: u64,
    duplicates: u64,
}

/// A running stub target; stops when dropped.
pub struct StubTarget {
    addr: SocketAddr,
    state: Arc<Mutex<Accepted>>,
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
    State(state): State<Arc<Mutex<Accepted>>>,
    Json(doc): Json<Document>,
) -> Json<Answer> {
    let mut accepted = match state.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let results = doc
        .items
        .into_iter()
        .map(|item| {
            let status = if accepted.keys.contains(&item.key) {
                accepted.duplicates += 1;
                ItemStatus::Duplicate
            } else {
                accepted.effects += 1;
                accepted.keys.insert(item.key.clone());
                ItemStatus::Accepted
            };
            ItemResult {
                key: item.key,
                status,
                reason: None,
            }
        })
        .collect();
    Json(Answer { results })
}

impl StubTarget {
    /// Serves both `/v1/grades` and `/v1/service-fait` on a free loopback
    /// port.
    pub async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(Accepted::default()));
        let app = Router::new()
            .route("/v1/grades", post(receive))
            .route("/v1/service-fait", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the stub target")?;
        let addr = listener.local_addr().context("the stub's address")?;
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
        let accepted = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        (accepted.effects, accepted.duplicates)
    }
}

impl Drop for StubTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}
