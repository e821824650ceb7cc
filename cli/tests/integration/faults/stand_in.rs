//! A stand-in for Cyclades (`POST /v1/grades`) and Imag'In (`POST
//! /v1/service-fait`) speaking the contract of `docs/exports.md`, served by
//! axum in the test process. It remembers the keys it accepted (a key seen
//! again is answered `duplicate`, with no second effect) and fails on
//! demand: a share of requests gets a 503 without effect, another share
//! takes effect and then gets no answer before the client's timeout.
//! Every effect is recorded, so that a scenario can check that each grade
//! and count took effect exactly once.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use serde_json::{Value, json};

/// How the stand-in misbehaves; shares are in percent of requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Answered 503 at once, without effect.
    pub unavailable_pct: u32,
    /// Take effect, then hang past the client's timeout.
    pub hang_pct: u32,
    /// Added to every answer, after the effect.
    pub latency: Duration,
}

/// One item that took effect.
#[derive(Debug, Clone)]
pub struct Effect {
    pub exam: String,
    pub establishment: String,
    /// The candidate (grades) or the grader (counts).
    pub subject: String,
}

#[derive(Debug, Default)]
pub struct Seen {
    pub requests: u64,
    pub unavailable: u64,
    pub hung: u64,
    /// Key → how many times it took effect (must never exceed 1).
    pub effects: HashMap<String, u32>,
    /// Key → the item as it first took effect.
    pub items: HashMap<String, Effect>,
    pub duplicates: u64,
}

struct Shared {
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    seen: Mutex<Seen>,
}

/// A running stand-in; stops when dropped.
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a hanging request waits before answering (long after any
/// client timeout of the suite).
const HANG: Duration = Duration::from_secs(60);

async fn receive(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults = *lock(&shared.faults);
    let roll = lock(&shared.rng).random_range(0..100u32);
    lock(&shared.seen).requests += 1;
    if roll < faults.unavailable_pct {
        lock(&shared.seen).unavailable += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response();
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let exam = doc["exam"].as_str().unwrap_or_default().to_owned();
    let establishment = doc["establishment"].as_str().unwrap_or_default().to_owned();
    let mut results = Vec::new();
    {
        let mut seen = lock(&shared.seen);
        for item in doc["items"].as_array().into_iter().flatten() {
            let Some(key) = item["key"].as_str() else {
                return (StatusCode::BAD_REQUEST, "an item without a key").into_response();
            };
            let subject = item["candidate"]
                .as_str()
                .or(item["grader"].as_str())
                .unwrap_or_default()
                .to_owned();
            let count = seen.effects.entry(key.to_owned()).or_insert(0);
            if *count > 0 {
                seen.duplicates += 1;
                results.push(json!({"key": key, "status": "duplicate"}));
            } else {
                *count += 1;
                seen.items.insert(
                    key.to_owned(),
                    Effect {
                        exam: exam.clone(),
                        establishment: establishment.clone(),
                        subject,
                    },
                );
                results.push(json!({"key": key, "status": "accepted"}));
            }
        }
    }
    if roll < faults.unavailable_pct + faults.hang_pct {
        lock(&shared.seen).hung += 1;
        tokio::time::sleep(HANG).await;
    } else if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    Json(json!({ "results": results })).into_response()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl StandIn {
    /// Serves both targets on a free loopback port; `seed` fixes which
    /// requests fail.
    pub async fn start(faults: Faults, seed: u64) -> Self {
        let shared = Arc::new(Shared {
            faults: Mutex::new(faults),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            seen: Mutex::new(Seen::default()),
        });
        let app = Router::new()
            .route("/v1/grades", post(receive))
            .route("/v1/service-fait", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The base URL to configure as both exporters' `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The `exporters` settings that point both targets here.
    pub fn exporters(&self, timeout_secs: u64, concurrency: u32) -> Value {
        let target = json!({
            "kind": "http", "base_url": self.base_url(),
            "timeout_secs": timeout_secs, "concurrency": concurrency,
        });
        json!({"cyclades": target.clone(), "imagin": target})
    }

    /// Reads what it saw.
    pub fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&lock(&self.shared.seen))
    }

    /// Items that took effect so far.
    pub fn effects(&self) -> usize {
        self.seen(|s| s.items.len())
    }

    /// Checks exactly-once for `exam`: no key took effect twice; each of
    /// `candidates` has exactly one grade and no one else has any; each
    /// (establishment, grader) has exactly one count. Returns (grades,
    /// counts) that took effect.
    pub fn assert_exactly_once(&self, exam: &str, candidates: &HashSet<String>) -> (usize, usize) {
        self.seen(|seen| {
            let twice: Vec<_> = seen.effects.iter().filter(|(_, n)| **n > 1).collect();
            assert!(twice.is_empty(), "keys that took effect twice: {twice:?}");
            let mut grades: HashMap<&str, Vec<&str>> = HashMap::new();
            let mut counts: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
            for (key, effect) in &seen.items {
                if effect.exam != exam {
                    continue;
                }
                if key.starts_with("c:") {
                    grades.entry(&effect.subject).or_default().push(key);
                } else {
                    counts
                        .entry((&effect.establishment, &effect.subject))
                        .or_default()
                        .push(key);
                }
            }
            let two_grades: Vec<_> = grades.iter().filter(|(_, k)| k.len() > 1).collect();
            assert!(
                two_grades.is_empty(),
                "candidates with two grades: {two_grades:?}"
            );
            let missing: Vec<_> = candidates
                .iter()
                .filter(|c| !grades.contains_key(c.as_str()))
                .collect();
            assert!(
                missing.is_empty(),
                "{} candidates without a grade, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            let strangers: Vec<_> = grades
                .keys()
                .filter(|c| !candidates.contains(**c))
                .collect();
            assert!(
                strangers.is_empty(),
                "grades of unknown candidates: {strangers:?}"
            );
            let two_counts: Vec<_> = counts.iter().filter(|(_, k)| k.len() > 1).collect();
            assert!(
                two_counts.is_empty(),
                "graders counted twice: {two_counts:?}"
            );
            (grades.len(), counts.len())
        })
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}
