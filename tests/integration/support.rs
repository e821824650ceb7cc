//! The harness: a fresh database, object store and Redis namespace per test.

use copiste::{config::Config, db::Db, storage::Storage};
use serde_json::json;
use tempfile::TempDir;

/// A new, empty (unmigrated) database of the configured server: its id
/// (also usable as a Redis namespace) and its URL.
pub async fn fresh_database() -> (String, url::Url) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let base = Config::load_with_overrides(json!({})).expect("base configuration");
    let url = copiste::db::ensure_database(&base.database_url(), &format!("copiste_test_{id}"))
        .await
        .expect("test database");
    (id, url)
}

/// Everything one test needs, isolated from every other test.
pub struct TestApp {
    pub config: Config,
    pub db: Db,
    pub storage: Storage,
    /// Scratch directory; the object store lives in `dir/objects`.
    pub dir: TempDir,
}

impl TestApp {
    /// A migrated fresh database, an empty local store and a unique Redis
    /// namespace; `overrides` is merged over the configuration
    /// (e.g. `json!({"queue": {"window": 50}})`).
    pub async fn with(overrides: serde_json::Value) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let (id, db_url) = fresh_database().await;
        let mut merged = json!({
            "database": {"url": db_url.as_str()},
            "redis": {"namespace": format!("t{}", &id[..12])},
            "storage": {"kind": "local", "root": dir.path().join("objects")},
        });
        merge(&mut merged, overrides);
        let config = Config::load_with_overrides(merged).expect("test configuration");
        let db = Db::connect(&config.database_url(), 10)
            .await
            .expect("connect");
        db.migrate().await.expect("migrate");
        let storage = Storage::open(&config.storage).expect("storage");
        Self {
            config,
            db,
            storage,
            dir,
        }
    }

    /// The defaults of [`TestApp::with`].
    pub async fn new() -> Self {
        Self::with(json!({})).await
    }
}

fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

impl TestApp {
    /// The services a worker needs, over this test's database and store.
    pub fn services(&self) -> copiste::jobs::context::Services {
        copiste::jobs::context::Services::new(
            self.config.clone(),
            self.db.clone(),
            self.storage.clone(),
        )
        .expect("services")
    }

    /// Starts a full worker (consumer, pump, reconciler, heartbeat).
    pub async fn worker(&self) -> copiste::worker::Worker {
        let services = self.services();
        let options = copiste::worker::WorkerOptions::from_config(&services);
        copiste::worker::Worker::start(services, options)
            .await
            .expect("worker starts")
    }

    /// Enqueues one job in its own transaction.
    pub async fn enqueue<J: copiste::jobs::Job>(
        &self,
        job: &J,
        opts: copiste::jobs::EnqueueOptions,
    ) -> uuid::Uuid {
        let mut tx = self.db.begin().await.expect("begin");
        let id = copiste::jobs::enqueue(&mut tx, job, opts)
            .await
            .expect("enqueue")
            .id();
        tx.commit().await.expect("commit");
        id
    }

    /// The job's row.
    pub async fn job(&self, id: uuid::Uuid) -> copiste::db::jobs::JobRow {
        copiste::db::jobs::get(&self.db, id)
            .await
            .expect("read job")
            .expect("job exists")
    }

    /// Waits until the job has `status`, failing the test after `secs`.
    pub async fn wait_status(
        &self,
        id: uuid::Uuid,
        status: &str,
        secs: u64,
    ) -> copiste::db::jobs::JobRow {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let job = self.job(id).await;
            if job.status.as_str() == status {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} still {} after {secs} s (waiting for {status}); last error {:?}",
                job.status,
                job.last_error
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Counts of jobs by status.
    pub async fn counts(&self) -> std::collections::HashMap<String, i64> {
        copiste::db::jobs::count_by_status(&self.db)
            .await
            .expect("counts")
            .into_iter()
            .map(|(s, n)| (s.to_string(), n))
            .collect()
    }

    /// Waits until `n` jobs are in a final status.
    pub async fn wait_finished(&self, n: i64, secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let counts = self.counts().await;
            let done: i64 = ["succeeded", "failed", "dead", "cancelled"]
                .iter()
                .map(|s| counts.get(*s).copied().unwrap_or(0))
                .sum();
            if done >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {done} of {n} jobs finished after {secs} s: {counts:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Fast settings for queue tests: short leases, quick reconciliation.
/// The lease (3 s) outlasts a stall of Postgres on a loaded machine: with
/// 1 s, a 1 s stall of a finish lost the lease and re-ran the job.
pub fn fast_queue() -> serde_json::Value {
    json!({
        "worker": {"lease_secs": 3, "concurrency": 8, "shutdown_grace_secs": 1},
        "queue": {"reconcile_interval_secs": 1, "redeliver_after_secs": 2, "pump_interval_ms": 100},
        "jobs": {"backoff_base_secs": 0.2, "backoff_max_secs": 1.0}
    })
}

/// Logs of the code under test, shown for failing tests (`RUST_LOG`
/// filters; default: warnings).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Every file under `dir`, recursively (none when it does not exist).
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Polls `check` every 50 ms until it returns `Some`, and returns that;
/// fails the test when `within` has passed.
pub async fn eventually<T, F, Fut>(within: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the condition was not met within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

impl TestApp {
    /// How many Redis keys this test's queue namespace has.
    pub async fn redis_keys(&self) -> usize {
        copiste::queue::key_count(&self.config)
            .await
            .expect("count Redis keys")
    }
}
