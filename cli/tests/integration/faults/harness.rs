//! The suite's harness: throwaway PostgreSQL and Redis per scenario (so
//! that stopping, restarting or flushing them disturbs nothing else),
//! `copiste worker` processes configured by `COPISTE_*` variables, job
//! counts read from the ledger, and the report lines.

use std::{
    cell::RefCell,
    collections::HashMap,
    io::Write as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use copiste::{config::Config, local_services::LocalServices};
use serde_json::{Value, json};

use crate::support::{TestApp, eventually_every, fast_queue, finished};

/// One scenario's world: its own PostgreSQL and Redis, a migrated
/// database (the server's `postgres` database) with its store, and the
/// environment that makes a `copiste worker` use them.
pub struct Suite {
    pub app: TestApp,
    pub pg: LocalServices,
    pub redis: LocalServices,
    env: Vec<(String, String)>,
    workers_started: u32,
}

impl Suite {
    /// Starts the services and configures everything with the queue
    /// settings of the in-process tests (`fast_queue`) and `settings` over
    /// them.
    pub async fn start(settings: Value) -> Self {
        let base = Config::load_with_overrides(json!({})).expect("base configuration");
        let pg = copiste::local_services::throwaway_postgres(&base)
            .await
            .expect("throwaway PostgreSQL");
        let redis = copiste::local_services::throwaway_redis(&base)
            .await
            .expect("throwaway Redis");
        let mut all = fast_queue();
        merge(&mut all, settings);
        merge(
            &mut all,
            json!({
                "database": {"url": pg.database_url.as_str()},
                "redis": {"url": redis.redis_url.as_str()},
            }),
        );
        let app = TestApp::with(all.clone()).await;
        let mut env = Vec::new();
        flatten("COPISTE", &all, &mut env);
        env.push((
            "COPISTE_REDIS__NAMESPACE".into(),
            app.config.redis.namespace.clone(),
        ));
        env.push(("COPISTE_STORAGE__KIND".into(), "local".into()));
        env.push((
            "COPISTE_STORAGE__ROOT".into(),
            app.config.storage.root.display().to_string(),
        ));
        Self {
            app,
            pg,
            redis,
            env,
            workers_started: 0,
        }
    }

    /// Starts a `copiste worker` process; its log goes to
    /// `worker-<n>.log` in the scenario's directory.
    pub fn worker(&mut self) -> WorkerProcess {
        self.spawn(&["worker"])
    }

    /// Starts `copiste ARGS…` (a worker, a server) as a child process on
    /// the suite's services; its log goes to `worker-<n>.log`.
    pub fn spawn(&mut self, args: &[&str]) -> WorkerProcess {
        self.workers_started += 1;
        let log = self
            .app
            .dir
            .path()
            .join(format!("worker-{}.log", self.workers_started));
        let out = std::fs::File::create(&log).expect("worker log");
        let err = out.try_clone().expect("worker log");
        let child = Command::new(env!("CARGO_BIN_EXE_copiste"))
            .args(args)
            .env_remove("COPISTE_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.app.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start copiste");
        WorkerProcess {
            child,
            log,
            exited: None,
        }
    }

    /// Counts of the ledger's jobs by status.
    pub async fn counts(&self) -> HashMap<String, i64> {
        self.app.counts().await
    }

    /// Jobs in `status` (0 when none).
    pub async fn count(&self, status: &str) -> i64 {
        self.counts().await.get(status).copied().unwrap_or(0)
    }

    /// Waits until `n` jobs are final, failing after `within`; the last
    /// counts on the way.
    pub async fn wait_final(&self, n: i64, within: Duration, workers: &mut [&mut WorkerProcess]) {
        let workers = RefCell::new(workers);
        eventually_every(within, Duration::from_millis(200), || async {
            let counts = self.counts().await;
            let done = finished(&counts);
            if done >= n {
                return Ok(());
            }
            assert_alive(&mut workers.borrow_mut());
            Err(format!("only {done} of {n} jobs final: {counts:?}"))
        })
        .await
    }

    /// Redis' DBSIZE (the suite's Redis holds only this scenario's keys).
    pub async fn dbsize(&self) -> u64 {
        let client = redis::Client::open(self.redis.redis_url.as_str()).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis");
        redis::cmd("DBSIZE")
            .query_async(&mut conn)
            .await
            .expect("DBSIZE")
    }

    /// Sends one command to the suite's Redis.
    pub async fn redis_cmd(&self, cmd: &redis::Cmd) -> redis::Value {
        let client = redis::Client::open(self.redis.redis_url.as_str()).expect("client");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis");
        cmd.query_async(&mut conn).await.expect("Redis command")
    }
}

/// A `copiste worker` child process.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
    exited: Option<std::process::ExitStatus>,
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash: nothing is released.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after
    /// `within`); whether it exited by itself with success.
    pub fn terminate(&mut self, within: Duration) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        // Not a wait that fails the test: past `within`, SIGKILL.
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            Err(_) => false,
        }
    }

    /// Fails the test, showing the end of the log, when the process ended.
    pub fn assert_alive(&mut self) {
        if !self.alive() {
            panic!(
                "worker {} exited ({:?}); its log ends with:\n{}",
                self.pid(),
                self.exited,
                self.log_tail(40)
            );
        }
    }

    /// Its resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Fails the test, showing the end of its log, when one of `workers`
/// ended.
pub fn assert_alive(workers: &mut [&mut WorkerProcess]) {
    for w in workers.iter_mut() {
        w.assert_alive();
    }
}

/// Prints `faults | scenario | figures`, appends it to the suite's
/// summary file and prints the table so far.
pub fn report(scenario: &str, figures: &str) {
    let line = format!("faults | {scenario} | {figures}");
    println!("{line}");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults-summary.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(f, "{line}");
    }
    if let Ok(all) = std::fs::read_to_string(&path) {
        println!("summary so far ({}):\n{all}", path.display());
    }
}

/// Seconds with one decimal.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// `{"queue": {"window": 50}}` → `COPISTE_QUEUE__WINDOW=50`.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let sep = if prefix == "COPISTE" { "_" } else { "__" };
                flatten(&format!("{prefix}{sep}{}", k.to_uppercase()), v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        Value::Null => {}
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// The copies of `exam`: numéro and establishment, in numéro order.
async fn copies_of(app: &TestApp, exam: &str) -> Vec<copiste::db::closure::CandidateCopy> {
    copiste::db::closure::exam_copies(&app.db, exam, None, None)
        .await
        .expect("copies")
}

/// The candidates (numéros) with a copy of `exam`.
pub async fn candidates_of(app: &TestApp, exam: &str) -> std::collections::HashSet<String> {
    copies_of(app, exam)
        .await
        .into_iter()
        .map(|c| c.numero)
        .collect()
}

/// Waits until every closure job has ended, relaunches the units of
/// `exam` that are not closed, and again, until every unit is closed.
/// Returns the relaunch rounds it took.
pub async fn close_every_unit(
    suite: &Suite,
    exam: &str,
    within: Duration,
    workers: &mut [&mut WorkerProcess],
) -> u32 {
    use copiste::closure::UnitState;
    let deadline = Instant::now() + within;
    let workers = RefCell::new(workers);
    let mut rounds = 0;
    // Relaunches between its waits, bounded by its rounds: not a wait.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        eventually_every(left, Duration::from_millis(200), || async {
            if suite.app.busy_jobs().await == 0 {
                return Ok(());
            }
            assert_alive(&mut workers.borrow_mut());
            Err(format!(
                "closure jobs of {exam} still busy, {within:?} in all: {:?}",
                suite.counts().await
            ))
        })
        .await;
        let status = crate::ops::exam_status(&suite.app, exam)
            .await
            .expect("status")
            .expect("known exam");
        if status.count(UnitState::Closed) == status.units.len() {
            return rounds;
        }
        rounds += 1;
        assert!(
            rounds <= 30 && Instant::now() < deadline,
            "not every unit closed after {rounds} relaunches:\n{status}"
        );
        crate::ops::request_relaunch(&suite.app, exam, None, "faults")
            .await
            .expect("relaunch")
            .expect("relaunch not refused");
    }
}

/// Asserts that every unit of `exam` is closed with every item accepted.
pub async fn assert_all_closed(app: &TestApp, exam: &str) -> usize {
    use copiste::closure::UnitState;
    let status = crate::ops::exam_status(app, exam)
        .await
        .expect("status")
        .expect("known exam");
    for u in &status.units {
        assert_eq!(u.state, UnitState::Closed, "{status}");
        assert_eq!(u.cyclades.accepted, u.cyclades.total, "{status}");
        assert_eq!(u.imagin.accepted, u.imagin.total, "{status}");
    }
    status.units.len()
}

impl Suite {
    /// Runs `copiste <args>` with the workers' environment and waits for
    /// it; fails the test unless it succeeds. Its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_copiste"))
            .args(args)
            .env_remove("COPISTE_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.app.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run copiste");
        assert!(
            out.status.success(),
            "copiste {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until job `id` has `status`, failing after `within` or when a
    /// worker exits.
    pub async fn wait_job(
        &self,
        id: uuid::Uuid,
        status: &str,
        within: Duration,
        workers: &mut [&mut WorkerProcess],
    ) -> copiste::db::jobs::JobRow {
        let workers = RefCell::new(workers);
        eventually_every(within, Duration::from_millis(50), || async {
            let seen = match copiste::db::jobs::get(&self.app.db, id).await {
                Ok(Some(job)) if job.status.as_str() == status => return Ok(job),
                Ok(Some(job)) => format!(
                    "job {id} still {} (waiting for {status}); last error {:?}",
                    job.status, job.last_error
                ),
                Ok(None) => format!("no job {id}"),
                // The ledger may be restarting: read again.
                Err(e) => format!("job {id} unread (waiting for {status}): {e:#}"),
            };
            assert_alive(&mut workers.borrow_mut());
            Err(seen)
        })
        .await
    }
}

/// The establishment with the most copies of `exam`.
pub async fn busiest_establishment(app: &TestApp, exam: &str) -> copiste::domain::Uai {
    let mut copies: HashMap<String, usize> = HashMap::new();
    for c in copies_of(app, exam).await {
        *copies.entry(c.establishment).or_default() += 1;
    }
    // The most copies; the first UAI among equals.
    let (uai, _) = copies
        .into_iter()
        .min_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)))
        .expect("an establishment");
    copiste::domain::Uai::parse(&uai).expect("uai")
}

/// Closes `exam` for every establishment (the outbox exporters of the
/// default configuration) with the running `workers`.
pub async fn close_exam(suite: &Suite, exam: &str, workers: &mut [&mut WorkerProcess]) {
    let before = {
        let counts = suite.counts().await;
        ["succeeded", "failed", "dead", "cancelled"]
            .iter()
            .map(|s| counts.get(*s).copied().unwrap_or(0))
            .sum::<i64>()
    };
    let units = crate::ops::request_closure(&suite.app, exam, None, "faults")
        .await
        .expect("request")
        .expect("not refused");
    suite
        .wait_final(
            before + units.len() as i64,
            Duration::from_secs(60),
            workers,
        )
        .await;
    assert_all_closed_in(&suite.app, exam).await;
}

async fn assert_all_closed_in(app: &TestApp, exam: &str) {
    use copiste::closure::UnitState;
    let status = crate::ops::exam_status(app, exam)
        .await
        .expect("status")
        .expect("known exam");
    assert!(
        status.units.iter().all(|u| u.state == UnitState::Closed),
        "{status}"
    );
}

/// The `bulk-render` payload of `exam`'s zip for `uai` with the default
/// options.
pub fn zip_job(exam: &str, uai: &copiste::domain::Uai) -> copiste::jobs::bulk_render::BulkRender {
    copiste::jobs::bulk_render::BulkRender {
        exam: exam.into(),
        establishment: uai.clone(),
        options: copiste::render::RenderOptions::for_exam(
            exam,
            copiste::domain::ExamKind::Ponctuel,
            copiste::render::RequestedOptions::default(),
        )
        .expect("options"),
    }
}

/// The parts a finished `bulk-render` job recorded in its result.
/// Builds the zip of (`exam`, `uai`) once without interruption (the
/// baseline of the zip scenarios): its parts and their SHA-256 as stored.
pub async fn baseline_zip(
    suite: &Suite,
    exam: &str,
    uai: &copiste::domain::Uai,
    workers: &mut [&mut WorkerProcess],
) -> (Vec<copiste::render::zip::Part>, Vec<String>) {
    let id = suite
        .app
        .enqueue(
            &zip_job(exam, uai),
            copiste::jobs::EnqueueOptions::by("faults"),
        )
        .await;
    let job = suite
        .wait_job(id, "succeeded", Duration::from_secs(60), workers)
        .await;
    let parts = result_parts(&job);
    let digests = stored_digests(&suite.app, &parts).await;
    (parts, digests)
}

pub fn result_parts(job: &copiste::db::jobs::JobRow) -> Vec<copiste::render::zip::Part> {
    let result = job.result.as_ref().expect("a result");
    serde_json::from_value(result["parts"].clone()).expect("parts")
}

/// How many parts job `id` has recorded in its checkpoint (0 when none
/// or when the ledger does not answer).
pub async fn staged_parts(app: &TestApp, id: uuid::Uuid) -> usize {
    match copiste::db::jobs::checkpoint(&app.db, id).await {
        Ok(Some(checkpoint)) => checkpoint["parts"].as_array().map_or(0, Vec::len),
        _ => 0,
    }
}

/// How many chunks of its part in progress job `id` has recorded in its
/// checkpoint, and the upload's id (0 and none when there is none or the
/// ledger does not answer).
pub async fn recorded_chunks(app: &TestApp, id: uuid::Uuid) -> (usize, Option<String>) {
    match copiste::db::jobs::checkpoint(&app.db, id).await {
        Ok(Some(checkpoint)) => {
            let upload = &checkpoint["upload"];
            (
                upload["chunks"].as_array().map_or(0, Vec::len),
                upload["upload_id"].as_str().map(str::to_owned),
            )
        }
        _ => (0, None),
    }
}

/// The SHA-256 of each stored part, read back from the store; checks
/// each against its record (digest and size).
pub async fn stored_digests(app: &TestApp, parts: &[copiste::render::zip::Part]) -> Vec<String> {
    use sha2::Digest as _;
    let mut out = Vec::new();
    for part in parts {
        let bytes = app.storage.get(&part.key).await.expect("part");
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        assert_eq!(sha, part.sha256, "{} is what was recorded", part.key);
        assert_eq!(bytes.len() as u64, part.bytes, "{}", part.key);
        out.push(sha);
    }
    out
}
