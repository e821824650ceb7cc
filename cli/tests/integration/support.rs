//! The harness: a fresh database, object store and Redis namespace per test.

use copiste::{config::Config, db::Db, domain::JobStatus, storage::Storage};
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

/// The migrated template every test database is copied from: built once
/// per server and set of migrations (see `copiste::db::migrated_template`).
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// A new database holding every migration, copied from the template: its
/// id (also usable as a Redis namespace), name and URL.
pub async fn migrated_database() -> (String, String, url::Url) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let base = Config::load_with_overrides(json!({})).expect("base configuration");
    let server = base.database_url();
    let template = TEMPLATE
        .get_or_init(|| async {
            copiste::db::migrated_template(&server)
                .await
                .expect("template database")
        })
        .await;
    let name = format!("copiste_test_{id}");
    let url = copiste::db::create_from_template(&server, &name, template)
        .await
        .expect("test database");
    (id, name, url)
}

/// Everything one test needs, isolated from every other test. Its database
/// and Redis keys are removed when it is dropped.
pub struct TestApp {
    pub config: Config,
    pub db: Db,
    pub storage: Storage,
    /// Scratch directory; the object store lives in `dir/objects`.
    pub dir: TempDir,
    db_name: String,
}

impl Drop for TestApp {
    /// Drops the test's database (closing what is still connected) and
    /// its Redis keys, on a thread of its own: `Drop` cannot await.
    fn drop(&mut self) {
        let config = self.config.clone();
        let server = Config::load_with_overrides(json!({}))
            .expect("base configuration")
            .database_url();
        let name = std::mem::take(&mut self.db_name);
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let _ = copiste::db::drop_database(&server, &name).await;
                let _ = copiste::queue::purge(&config).await;
            });
        });
        let _ = cleanup.join();
    }
}

impl TestApp {
    /// A fresh database copied from the migrated template, an empty local store and a unique Redis
    /// namespace; `overrides` is merged over the configuration
    /// (e.g. `json!({"queue": {"window": 50}})`).
    pub async fn with(overrides: serde_json::Value) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let (id, db_name, db_url) = migrated_database().await;
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
        if config.database_url() != db_url {
            // The test named a database of its own (another server): it
            // is not a copy of the template.
            db.migrate().await.expect("migrate");
        }
        let storage = Storage::open(&config.storage).expect("storage");
        Self {
            config,
            db,
            storage,
            dir,
            db_name,
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
    /// The application a worker needs, over this test's database and store.
    pub fn app(&self) -> copiste::app::App {
        copiste::app::App::new(self.config.clone(), self.db.clone(), self.storage.clone())
            .expect("application")
    }

    /// Starts a full worker (consumer, pump, reconciler, heartbeat).
    pub async fn worker(&self) -> copiste::worker::Worker {
        let core = self.app();
        let options = copiste::worker::WorkerOptions::from_config(&core);
        copiste::worker::Worker::start(core, options)
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
        let every = std::time::Duration::from_millis(50);
        eventually_every(
            std::time::Duration::from_secs(secs),
            every,
            move || async move {
                let job = self.job(id).await;
                if job.status.as_str() == status {
                    return Ok(job);
                }
                Err(format!(
                    "job {id} still {} (waiting for {status}); last error {:?}",
                    job.status, job.last_error
                ))
            },
        )
        .await
    }

    /// Counts of jobs by status.
    pub async fn counts(&self) -> std::collections::HashMap<String, i64> {
        copiste::db::jobs::count_all(&self.db)
            .await
            .expect("counts")
            .into_iter()
            .map(|(s, n)| (s.to_string(), n))
            .collect()
    }

    /// Waits until `n` jobs are in a final status.
    pub async fn wait_finished(&self, n: i64, secs: u64) {
        let every = std::time::Duration::from_millis(100);
        eventually_every(
            std::time::Duration::from_secs(secs),
            every,
            move || async move {
                let counts = self.counts().await;
                let done = finished(&counts);
                if done >= n {
                    return Ok(());
                }
                Err(format!("only {done} of {n} jobs finished: {counts:?}"))
            },
        )
        .await
    }
}

/// How many jobs of `counts` (by status) are in a final status.
pub fn finished(counts: &std::collections::HashMap<String, i64>) -> i64 {
    ["succeeded", "failed", "dead", "cancelled"]
        .iter()
        .map(|s| counts.get(*s).copied().unwrap_or(0))
        .sum()
}

/// Rows of `table` read so far in this database (sequential scans and
/// index fetches), as the statistics have them: a backend's counts
/// arrive once it has flushed them (`pg_stat_force_next_flush()`, then
/// the end of a transaction, or its connection closed).
pub async fn rows_read(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
         FROM pg_stat_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .expect("read the table's statistics")
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
    eventually_every(within, std::time::Duration::from_millis(50), || {
        let checked = check();
        async move {
            checked
                .await
                .ok_or_else(|| "the condition was not met".to_owned())
        }
    })
    .await
}

/// The tests' one poller: calls `check` every `every` until it returns
/// `Ok`, and returns that; fails the test once `within` has passed,
/// saying what `check` last saw instead (its `Err`). Each call is also a
/// sample: a `check` may record maxima or samples on its way (in a `Cell`
/// or `RefCell` it borrows, or, before its future, in what it holds).
pub async fn eventually_every<T, F, Fut>(
    within: std::time::Duration,
    every: std::time::Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                std::time::Instant::now() < deadline,
                "{seen} (after {within:?})"
            ),
        }
        tokio::time::sleep(every).await;
    }
}

impl TestApp {
    /// How many jobs are running, or queued and due within a minute (a
    /// retry that backs off longer is not waited for).
    pub async fn busy_jobs(&self) -> i64 {
        let soon = chrono::Utc::now() + chrono::Duration::seconds(60);
        // One statement, so one snapshot: reading the running jobs, then
        // the queued ones, missed a job claimed between the two reads.
        let jobs = copiste::db::jobs::list_page(
            &self.db,
            &copiste::db::jobs::JobFilter::default(),
            None,
            i64::MAX,
            0,
        )
        .await
        .expect("busy jobs");
        jobs.iter()
            .filter(|j| match j.status {
                JobStatus::Running => true,
                JobStatus::Queued => j.run_at <= soon,
                _ => false,
            })
            .count() as i64
    }

    /// How many Redis keys this test's queue namespace has.
    pub async fn redis_keys(&self) -> usize {
        copiste::queue::key_count(&self.config)
            .await
            .expect("count Redis keys")
    }

    /// The tables of this test's database that an explicit `ANALYZE` has
    /// analysed (autovacuum sets another column), once `table` is among
    /// them. Waits up to 30 s: a backend's row counts reach the shared
    /// statistics when it is idle, but when their entry is locked by
    /// other backends (a worker updating the same table) PostgreSQL tries
    /// again only 10 s later, and the keeper sees the growth after that
    /// (a 10 s wait failed once in `.ci/run` with four tests at a time).
    pub async fn analysed_tables(&self, table: &str) -> Vec<String> {
        let pool = sqlx::PgPool::connect(self.config.database_url().as_str())
            .await
            .expect("connect");
        eventually(std::time::Duration::from_secs(30), || async {
            let analysed: Vec<String> = sqlx::query_scalar(
                "SELECT relname::text FROM pg_stat_user_tables
                 WHERE last_analyze IS NOT NULL ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .expect("read the tables' statistics");
            analysed.iter().any(|t| t == table).then_some(analysed)
        })
        .await
    }
}

/// The scans of a generated demo session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scans {
    /// One scan shared by every page (fast).
    Shared,
    /// Real, distinct scans.
    Distinct,
}

/// Generates a demo session in `dir` and imports it into `db` and
/// `storage`: the one way a test gets demo data (a [`TestApp`] through
/// its `import_demo*` methods).
pub async fn import_demo_into(
    db: &copiste::db::Db,
    storage: &copiste::storage::Storage,
    dir: &std::path::Path,
    opts: &copiste_tools::demo_data::DemoDataOptions,
    scans: Scans,
) {
    match scans {
        Scans::Shared => copiste_tools::demo_data::generate_light(dir, opts).map(drop),
        Scans::Distinct => copiste_tools::demo_data::generate(dir, opts, &|_, _| {}).map(drop),
    }
    .expect("dataset");
    copiste::import::import_dir(db, storage, dir, &|_| {})
        .await
        .expect("import");
}

impl TestApp {
    /// Generates the demo session `opts` with `scans` and imports it into
    /// this test's database and store.
    pub async fn import_demo_with(
        &self,
        opts: copiste_tools::demo_data::DemoDataOptions,
        scans: Scans,
    ) {
        let dir = self.dir.path().join("session");
        import_demo_into(&self.db, &self.storage, &dir, &opts, scans).await;
    }

    /// Generates a light demo session (one shared scan; 3 exams of the
    /// three kinds; `establishments` over two academies, `candidates` each,
    /// some absent) and imports it into this test's database and store.
    pub async fn import_demo_seeded(&self, establishments: u32, candidates: u32, seed: u64) {
        let opts = copiste_tools::demo_data::DemoDataOptions {
            establishments,
            candidates,
            pages: 1,
            seed,
        };
        self.import_demo_with(opts, Scans::Shared).await;
    }

    /// [`TestApp::import_demo_seeded`] with a fixed seed.
    pub async fn import_demo(&self, establishments: u32, candidates: u32) {
        self.import_demo_seeded(establishments, candidates, 7).await;
    }
}

impl TestApp {
    /// The numéro of the first candidate (in numéro order) of `uai` with a
    /// copy of `exam`.
    pub async fn first_numero(&self, exam: &str, uai: &copiste::domain::Uai) -> String {
        copiste::db::closure::unit_copies(&self.db, exam, uai.as_str())
            .await
            .expect("copies")
            .into_iter()
            .map(|c| c.numero)
            .min()
            .expect("a candidate")
    }
}

/// Two establishments with copies of an exam, in different academies.
pub struct TwoAcademies {
    /// The first establishment (in UAI order) and its academy.
    pub uai: copiste::domain::Uai,
    pub academy_a: String,
    /// An establishment of another academy, and that academy.
    pub other: copiste::domain::Uai,
    pub academy_b: String,
}

impl TestApp {
    /// The academy of establishment `uai`.
    pub async fn academy_of(&self, uai: &copiste::domain::Uai) -> String {
        copiste::db::catalog::establishment_academy(&self.db, uai.as_str())
            .await
            .expect("academy")
            .expect("a known establishment")
    }

    /// The first establishment with copies of `exam` and one of another
    /// academy (the demo data alternates two academies).
    pub async fn two_academies(&self, exam: &str) -> TwoAcademies {
        let uais = copiste::db::catalog::exam_establishments(&self.db, exam, None)
            .await
            .expect("establishments");
        let uai = uais[0].clone();
        let academy_a = self.academy_of(&uai).await;
        let mut other = None;
        for u in &uais {
            if self.academy_of(u).await != academy_a {
                other = Some(u.clone());
            }
        }
        let other = other.expect("an establishment of the other academy");
        let academy_b = self.academy_of(&other).await;
        TwoAcademies {
            uai,
            academy_a,
            other,
            academy_b,
        }
    }
}

/// A loopback port that refuses connections: bound but not listening, so
/// that a connection to it is refused, and held (keep the socket) so that
/// no other process can take the port while the test runs.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let port = socket.local_addr().expect("address").port();
    (socket, port)
}

impl TestApp {
    /// Enqueues a closure job of (`exam`, `uai`) straight into the ledger,
    /// as `copiste jobs enqueue` would; it runs only if a worker does.
    pub async fn enqueue_closure(&self, exam: &str, uai: &copiste::domain::Uai) -> uuid::Uuid {
        self.enqueue(
            &copiste::closure::payload::Closure {
                exam: exam.into(),
                establishment: uai.clone(),
            },
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await
    }
}
