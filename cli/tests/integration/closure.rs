//! Closure, relaunch, publication and harmonisation against a local HTTP
//! stub of Cyclades and Imag'In that fails on demand and counts effects
//! (first acceptances of a key), not requests.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use copiste::{
    closure::{self, PassRequest, UnitRequested, UnitState, Validation, status::ExamStatus},
    domain::Uai,
    op::{Actor, OpError, Refusal},
};
use serde_json::{Value, json};
use sqlx::PgPool;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

use crate::support::{TestApp, eventually_every, fast_queue, refusing_port, rows_read, walk};

const PHILO: &str = "BAC26-PHILO";
const MATHS_H: &str = "BAC26-MATHS-H";
const E3C: &str = "BAC26-E3C-HG";

/// How the stub misbehaves.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    /// Requests numbered n (from 0) with `n % 10` in this list get a 503
    /// without any effect.
    fail_503: Vec<u64>,
    /// Requests numbered n with `n % 10` in this list take effect, then
    /// answer after the client's timeout.
    slow_after_effect: Vec<u64>,
    /// Every answer is delayed this long, after the effect.
    hold: Duration,
    /// Candidates (numéros) whose grade is rejected.
    reject: HashSet<String>,
}

/// What the stub saw.
#[derive(Debug, Default)]
struct Seen {
    /// Key → how many times it took effect (must never exceed 1).
    effects: HashMap<String, u32>,
    /// Key → the item as received the first time.
    items: HashMap<String, Value>,
    /// Subject → every content that took effect for it, whatever its key:
    /// a candidate's grade (`c:<exam>:<numéro>`) or a grader's count
    /// (`i:<exam>:<uai>:<grader>`), read from the batch and the item.
    effects_by_subject: HashMap<String, Vec<Value>>,
    duplicates: u64,
}

#[derive(Clone, Default)]
struct StubState {
    behaviour: Arc<Mutex<Behaviour>>,
    seen: Arc<Mutex<Seen>>,
    requests: Arc<AtomicU64>,
    /// Each request's establishment, as it arrived.
    arrivals: Arc<Mutex<Vec<(String, std::time::Instant)>>>,
}

impl Respond for StubState {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let behaviour = self.behaviour.lock().expect("behaviour").clone();
        if behaviour.fail_503.contains(&(n % 10)) {
            return ResponseTemplate::new(503).set_body_string("try again later");
        }
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return ResponseTemplate::new(400).set_body_string("not JSON");
        };
        self.arrivals.lock().expect("arrivals").push((
            body["establishment"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            std::time::Instant::now(),
        ));
        let mut results = Vec::new();
        let mut seen = self.seen.lock().expect("seen");
        for item in body["items"].as_array().into_iter().flatten() {
            let key = item["key"].as_str().unwrap_or_default().to_owned();
            let candidate = item["candidate"].as_str().unwrap_or_default();
            if behaviour.reject.contains(candidate) {
                results
                    .push(json!({"key": key, "status": "rejected", "reason": "unknown candidate"}));
                continue;
            }
            let count = seen.effects.entry(key.clone()).or_insert(0);
            if *count > 0 {
                seen.duplicates += 1;
                results.push(json!({"key": key, "status": "duplicate"}));
            } else {
                *count += 1;
                seen.items.insert(key.clone(), item.clone());
                let (subject, content) = subject_and_content(&body, item);
                seen.effects_by_subject
                    .entry(subject)
                    .or_default()
                    .push(content);
                results.push(json!({"key": key, "status": "accepted"}));
            }
        }
        let mut delay = behaviour.hold;
        if behaviour.slow_after_effect.contains(&(n % 10)) {
            delay += Duration::from_millis(1500);
        }
        ResponseTemplate::new(200)
            .set_body_json(json!({ "results": results }))
            .set_delay(delay)
    }
}

struct Stub {
    server: MockServer,
    state: StubState,
}

impl Stub {
    async fn start() -> Self {
        let server = MockServer::start().await;
        let state = StubState::default();
        Mock::given(method("POST"))
            .respond_with(state.clone())
            .mount(&server)
            .await;
        Self { server, state }
    }

    fn behave(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.state.behaviour.lock().expect("behaviour"));
    }

    fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Keys that took effect, of one target (`c:` Cyclades, `i:` Imag'In).
    fn effects(&self, prefix: &str) -> HashMap<String, u32> {
        let seen = self.state.seen.lock().expect("seen");
        seen.effects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn item(&self, key: &str) -> Option<Value> {
        self.state
            .seen
            .lock()
            .expect("seen")
            .items
            .get(key)
            .cloned()
    }

    /// When each establishment's first request arrived.
    fn first_arrivals(&self) -> HashMap<String, std::time::Instant> {
        let mut first = HashMap::new();
        for (uai, at) in self.state.arrivals.lock().expect("arrivals").iter() {
            first.entry(uai.clone()).or_insert(*at);
        }
        first
    }

    fn duplicates(&self) -> u64 {
        self.state.seen.lock().expect("seen").duplicates
    }

    /// Asserts that nothing took effect twice. The stub answers a known
    /// key `duplicate`, so a key cannot; what can is the same grade (or
    /// count) sent again under another key, whatever that key looks like:
    /// a candidate (or a grader's count) with the same content taking
    /// effect twice. A copy changed since its grade was sent rightly takes
    /// effect again, with its new content.
    fn assert_exactly_once(&self) {
        let seen = self.state.seen.lock().expect("seen");
        let doubled = doubled_effects(&seen.effects_by_subject);
        assert!(
            doubled.is_empty(),
            "the same content took effect twice: {doubled:?}"
        );
    }
}

/// What one item of a batch is about, read from its content and never
/// from its key — a candidate's grade `c:<exam>:<numéro>` or a grader's
/// count `i:<exam>:<uai>:<grader>` — and its content without the key.
fn subject_and_content(batch: &Value, item: &Value) -> (String, Value) {
    let exam = batch["exam"].as_str().unwrap_or_default();
    let subject = match (item["candidate"].as_str(), item["grader"].as_str()) {
        (Some(candidate), _) => format!("c:{exam}:{candidate}"),
        (None, Some(grader)) => {
            let uai = batch["establishment"].as_str().unwrap_or_default();
            format!("i:{exam}:{uai}:{grader}")
        }
        (None, None) => format!("?:{item}"),
    };
    let mut content = item.clone();
    if let Some(fields) = content.as_object_mut() {
        fields.remove("key");
    }
    (subject, content)
}

/// The subjects for which the same content took effect twice.
fn doubled_effects(by_subject: &HashMap<String, Vec<Value>>) -> Vec<String> {
    let mut doubled: Vec<String> = by_subject
        .iter()
        .filter(|(_, contents)| {
            contents
                .iter()
                .enumerate()
                .any(|(i, a)| contents[i + 1..].contains(a))
        })
        .map(|(subject, _)| subject.clone())
        .collect();
    doubled.sort();
    doubled
}

#[test]
fn a_grade_sent_again_under_a_new_key_is_a_doubled_effect() {
    let batch = json!({"session": "BAC-2026", "exam": "BAC26-PHILO", "establishment": "0750001A"});
    let record = |items: &[(&str, f64)]| {
        let mut by_subject: HashMap<String, Vec<Value>> = HashMap::new();
        for (key, grade) in items {
            let item =
                json!({"key": key, "candidate": "26000001", "grade": grade, "absent": false});
            let (subject, content) = subject_and_content(&batch, &item);
            by_subject.entry(subject).or_default().push(content);
        }
        doubled_effects(&by_subject)
    };
    // The same grade under two keys that share nothing: doubled.
    assert_eq!(
        record(&[("c:BAC26-PHILO:26000001:v1", 12.5), ("retry-7f3a", 12.5)]),
        vec!["c:BAC26-PHILO:26000001"]
    );
    // A changed copy sent again with its new grade: not doubled.
    assert!(
        record(&[
            ("c:BAC26-PHILO:26000001:v1", 12.5),
            ("c:BAC26-PHILO:26000001:v2", 14.0)
        ])
        .is_empty()
    );
    // Two candidates with the same grade: not doubled.
    let mut by_subject: HashMap<String, Vec<Value>> = HashMap::new();
    for candidate in ["26000001", "26000002"] {
        let item =
            json!({"key": candidate, "candidate": candidate, "grade": 10.0, "absent": false});
        let (subject, content) = subject_and_content(&batch, &item);
        by_subject.entry(subject).or_default().push(content);
    }
    assert!(doubled_effects(&by_subject).is_empty());
}

/// A test app whose exporters are the stub, with small batches, a short
/// client timeout and a retry backoff long enough that only relaunches
/// retry within a test.
async fn app_with_stub(stub: &Stub, extra: Value) -> TestApp {
    let mut config = fast_queue();
    let uri = stub.server.uri();
    let overrides = json!({
        "exporters": {
            "cyclades": {"kind": "http", "base_url": uri, "timeout_secs": 1, "concurrency": 4},
            "imagin": {"kind": "http", "base_url": uri, "timeout_secs": 1, "concurrency": 4}
        },
        "exports": {"batch_size": 5},
        "jobs": {"backoff_base_secs": 3600.0, "backoff_max_secs": 7200.0}
    });
    merge(&mut config, overrides);
    merge(&mut config, extra);
    let app = TestApp::with(config).await;
    load_session(&app).await;
    app
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

/// Imports the demo session: 3 establishments of 12 candidates, every
/// exam kind, some absent candidates.
async fn load_session(app: &TestApp) {
    app.import_demo_seeded(3, 12, 7).await;
}

async fn pool(app: &TestApp) -> PgPool {
    PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("pool")
}

async fn status(app: &TestApp, exam: &str) -> ExamStatus {
    crate::ops::exam_status(app, exam)
        .await
        .expect("status")
        .expect("known exam")
}

/// The line of establishment `uai` in `s`.
fn unit_of<'a>(s: &'a ExamStatus, uai: &Uai) -> &'a closure::status::UnitStatus {
    s.units
        .iter()
        .find(|u| u.establishment == uai.as_str())
        .unwrap_or_else(|| panic!("no unit {uai} in:\n{s}"))
}

/// Waits until no closure job of the test is running or due: each has
/// finished or waits for a backoff retry.
async fn settle(app: &TestApp, secs: u64) {
    let every = Duration::from_millis(50);
    eventually_every(Duration::from_secs(secs), every, || async {
        match app.busy_jobs().await {
            0 => Ok(()),
            busy => Err(format!("{busy} jobs still running or due")),
        }
    })
    .await
}

fn jobs_of(units: &[closure::UnitRequest]) -> Vec<uuid::Uuid> {
    units
        .iter()
        .map(|u| {
            u.outcome
                .as_ref()
                .expect("unit not refused")
                .job()
                .expect("a job")
        })
        .collect()
}

/// Every (candidate) of `exam` whose grade is accepted by the stub.
fn accepted_candidates(stub: &Stub, exam: &str) -> HashSet<String> {
    stub.effects(&format!("c:{exam}:"))
        .keys()
        .filter_map(|k| stub.item(k))
        .map(|item| item["candidate"].as_str().expect("candidate").to_owned())
        .collect()
}

async fn copies_of(app: &TestApp, exam: &str) -> i64 {
    exam_numeros(app, exam).await.len() as i64
}

/// The numéros of the candidates with a copy of `exam`, in order.
async fn exam_numeros(app: &TestApp, exam: &str) -> Vec<String> {
    copiste::db::closure::exam_copies(&app.db, exam, None, None)
        .await
        .expect("copies")
        .into_iter()
        .map(|c| c.numero)
        .collect()
}

/// Every copy of `exam`, unit by unit.
async fn unit_copies_of(app: &TestApp, exam: &str) -> Vec<copiste::db::closure::UnitCopy> {
    let mut all = Vec::new();
    for uai in copiste::db::catalog::exam_establishments(&app.db, exam, None)
        .await
        .expect("establishments")
    {
        all.extend(unit_copies(app, exam, &uai).await);
    }
    all
}

/// The copies of (`exam`, `uai`), in copy order.
async fn unit_copies(app: &TestApp, exam: &str, uai: &Uai) -> Vec<copiste::db::closure::UnitCopy> {
    copiste::db::closure::unit_copies(&app.db, exam, uai.as_str())
        .await
        .expect("unit copies")
}

#[tokio::test]
async fn flaky_cyclades_ends_closed_with_errors_and_relaunches_converge_with_one_effect_per_grade()
{
    let stub = Stub::start().await;
    stub.behave(|b| {
        b.fail_503 = vec![1, 4, 7];
        b.slow_after_effect = vec![2];
    });
    let app = app_with_stub(&stub, json!({})).await;
    let worker = app.worker().await;

    let units = crate::ops::request_closure(&app, PHILO, None, "test")
        .await
        .expect("request")
        .expect("not refused");
    assert_eq!(units.len(), 3);
    settle(&app, 60).await;
    let first = status(&app, PHILO).await;
    assert!(
        first.count(UnitState::ClosedWithErrors) > 0,
        "30% of 503 and some timeouts should leave errors: {first}"
    );
    let shown = first.units.iter().flat_map(|u| &u.errors).any(|e| {
        e.state == copiste::domain::ItemState::Pending
            && (e.message.contains("503") || e.message.contains("timed out"))
    });
    assert!(shown, "the errors are shown: {first}");

    // Relaunches between checks, bounded by its rounds: not a wait.
    let mut rounds = 0;
    loop {
        let s = status(&app, PHILO).await;
        if s.count(UnitState::Closed) == 3 {
            break;
        }
        rounds += 1;
        assert!(rounds <= 30, "no convergence after 30 relaunches: {s}");
        crate::ops::request_relaunch(&app, PHILO, None, "test")
            .await
            .expect("relaunch")
            .expect("not refused");
        settle(&app, 60).await;
    }
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    stub.assert_exactly_once();
    let copies = copies_of(&app, PHILO).await;
    assert_eq!(accepted_candidates(&stub, PHILO).len() as i64, copies);
    assert!(
        stub.duplicates() > 0,
        "timeouts after effect must have caused duplicates"
    );
    let s = status(&app, PHILO).await;
    for u in &s.units {
        assert_eq!(u.cyclades.accepted, u.cyclades.total, "{s}");
        assert_eq!(u.imagin.accepted, u.imagin.total, "{s}");
        assert!(u.errors.is_empty(), "{s}");
    }
}

/// An app whose targets wait long for answers and send a unit's grades in
/// one batch: for tests that act while the stub holds its answer.
async fn app_with_held_answers(stub: &Stub) -> TestApp {
    app_with_stub(
        stub,
        json!({"exporters": {"cyclades": {"timeout_secs": 30}, "imagin": {"timeout_secs": 30}},
               "exports": {"batch_size": 500}}),
    )
    .await
}

/// Waits until the stub has applied a first batch of grades.
async fn first_grades_applied(stub: &Stub) {
    eventually_every(
        Duration::from_secs(20),
        Duration::from_millis(10),
        || async {
            if stub.effects("c:").is_empty() {
                return Err("the stub never got the batch".to_owned());
            }
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn worker_killed_after_the_target_accepted_resends_the_same_keys_without_second_effect() {
    let stub = Stub::start().await;
    // The stub applies each batch at once but answers 3 s later.
    stub.behave(|b| b.hold = Duration::from_secs(3));
    let app = app_with_held_answers(&stub).await;
    let uai = first_establishment(&app, PHILO).await;
    let worker = app.worker().await;
    let units = crate::ops::request_closure(&app, PHILO, Some(&uai), "test")
        .await
        .expect("request")
        .expect("not refused");
    let job = jobs_of(&units)[0];

    first_grades_applied(&stub).await;
    let accepted_before = stub.effects("c:").len();
    worker.kill();
    stub.behave(|b| b.hold = Duration::ZERO);

    let worker = app.worker().await;
    let row = app.wait_status(job, "succeeded", 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    assert_eq!(row.attempts, 2, "the killed run counts as an attempt");
    stub.assert_exactly_once();
    assert!(
        stub.duplicates() >= accepted_before as u64,
        "the resent batch was answered duplicate ({} duplicates, {accepted_before} accepted before the kill)",
        stub.duplicates()
    );
    let s = status(&app, PHILO).await;
    let unit = unit_of(&s, &uai);
    assert_eq!(unit.state, UnitState::Closed, "{s}");
    assert_eq!(unit.cyclades.accepted, unit.cyclades.total);
}

async fn first_establishment(app: &TestApp, exam: &str) -> Uai {
    let all = copiste::db::catalog::exam_establishments(&app.db, exam, None)
        .await
        .expect("establishments");
    all[0].clone()
}

/// The numéros of the candidates of (`exam`, `uai`) not absent, in order.
async fn numeros_of(app: &TestApp, exam: &str, uai: &Uai) -> Vec<String> {
    let mut numeros: Vec<String> = unit_copies(app, exam, uai)
        .await
        .into_iter()
        .filter(|c| !c.absent)
        .map(|c| c.numero)
        .collect();
    numeros.sort();
    numeros
}

#[tokio::test]
async fn a_rejected_item_shows_its_reason_and_does_not_block_the_others() {
    let stub = Stub::start().await;
    let app = app_with_stub(&stub, json!({})).await;
    let uai = first_establishment(&app, PHILO).await;
    let numeros = numeros_of(&app, PHILO, &uai).await;
    let unknown = numeros[0].clone();
    stub.behave(|b| {
        b.reject.insert(unknown.clone());
    });
    let worker = app.worker().await;
    let units = crate::ops::request_closure(&app, PHILO, Some(&uai), "test")
        .await
        .expect("request")
        .expect("not refused");
    let job = app.wait_status(jobs_of(&units)[0], "failed", 30).await;
    assert!(
        job.result
            .expect("result")
            .to_string()
            .contains("unknown candidate"),
        "the job's partial result names the reason"
    );

    let s = status(&app, PHILO).await;
    let unit = unit_of(&s, &uai);
    assert_eq!(unit.state, UnitState::ClosedWithErrors);
    assert_eq!(unit.cyclades.rejected, 1);
    assert_eq!(unit.cyclades.accepted, unit.cyclades.total - 1);
    assert_eq!(unit.imagin.accepted, unit.imagin.total);
    assert_eq!(unit.errors.len(), 1, "{s}");
    assert_eq!(unit.errors[0].message, "unknown candidate");
    assert_eq!(unit.errors[0].state, copiste::domain::ItemState::Rejected);
    assert_eq!(
        unit.errors[0].examples,
        vec![unknown.clone()],
        "which candidate"
    );
    assert!(format!("{s}").contains("unknown candidate"));
    // The establishment's own status (read unit by unit) names it too.
    let own = closure::status::exam_status(
        &app.app(),
        &copiste::op::Actor::Establishment { uai: uai.clone() },
        PHILO,
    )
    .await
    .expect("the establishment's status");
    assert_eq!(
        unit_of(&own, &uai).errors[0].examples,
        vec![unknown.clone()]
    );

    // Once Cyclades knows the candidate, a relaunch re-sends only that one.
    stub.behave(|b| b.reject.clear());
    let before = stub.requests();
    let units = crate::ops::request_relaunch(&app, PHILO, Some(&uai), "test")
        .await
        .expect("relaunch")
        .expect("not refused");
    app.wait_status(jobs_of(&units)[0], "succeeded", 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    assert_eq!(stub.requests() - before, 1, "one batch of one item");
    assert!(accepted_candidates(&stub, PHILO).contains(&unknown));
    stub.assert_exactly_once();
    let s = status(&app, PHILO).await;
    assert_eq!(s.count(UnitState::Closed), 1, "{s}");
}

#[tokio::test]
async fn publication_is_refused_during_a_closure_and_relaunch_is_refused_after_it() {
    let stub = Stub::start().await;
    stub.behave(|b| b.hold = Duration::from_millis(1500));
    let app = app_with_stub(
        &stub,
        json!({"exporters": {"cyclades": {"timeout_secs": 30}, "imagin": {"timeout_secs": 30}}}),
    )
    .await;
    let uai = first_establishment(&app, PHILO).await;
    let unknown = numeros_of(&app, PHILO, &uai).await[0].clone();
    stub.behave(|b| {
        b.reject.insert(unknown);
    });
    let worker = app.worker().await;
    let units = crate::ops::request_closure(&app, PHILO, Some(&uai), "test")
        .await
        .expect("request")
        .expect("not refused");
    let job = jobs_of(&units)[0];
    app.wait_status(job, "running", 20).await;
    let refused = crate::ops::publish(&app, PHILO, "rectorat")
        .await
        .expect("publish");
    match refused {
        Err(OpError::Refused(Refusal::ClosureRunning { units, .. })) => {
            assert_eq!(units, vec![(uai.to_string(), job)]);
        }
        other => panic!("publication during a closure: {other:?}"),
    }
    app.wait_status(job, "failed", 60).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    let published = crate::ops::publish(&app, PHILO, "rectorat")
        .await
        .expect("publish")
        .expect("publication recorded");
    assert!(published.cancelled.is_empty());
    let exam = copiste::db::catalog::exam(&app.db, PHILO)
        .await
        .expect("exam")
        .expect("exists");
    assert_eq!(exam.published_by.as_deref(), Some("rectorat"));

    let before = stub.requests();
    let jobs_before = app.counts().await.values().sum::<i64>();
    let relaunch = crate::ops::request_relaunch(&app, PHILO, Some(&uai), "test")
        .await
        .expect("relaunch");
    let refusal = relaunch.expect_err("relaunch after publication");
    assert!(matches!(
        refusal,
        OpError::Refused(Refusal::Published { .. })
    ));
    assert!(refusal.to_string().contains("published"), "{refusal}");
    let closure_again = crate::ops::request_closure(&app, PHILO, None, "test")
        .await
        .expect("closure");
    assert!(matches!(
        closure_again,
        Err(OpError::Refused(Refusal::Published { .. }))
    ));
    assert_eq!(stub.requests(), before, "nothing sent");
    assert_eq!(
        app.counts().await.values().sum::<i64>(),
        jobs_before,
        "no job"
    );
    let s = status(&app, PHILO).await;
    assert!(
        s.units.iter().all(|u| u.state == UnitState::Published),
        "{s}"
    );
    assert!(matches!(
        crate::ops::publish(&app, PHILO, "rectorat")
            .await
            .expect("publish"),
        Err(OpError::Refused(Refusal::AlreadyPublished { .. }))
    ));
}

#[tokio::test]
async fn a_queued_closure_is_cancelled_by_publication_and_a_double_click_is_one_job() {
    let stub = Stub::start().await;
    let app = app_with_stub(&stub, json!({})).await;
    let uai = first_establishment(&app, PHILO).await;
    // No worker: the jobs stay queued.
    let first = crate::ops::request_closure(&app, PHILO, Some(&uai), "test")
        .await
        .expect("request")
        .expect("not refused");
    let second = crate::ops::request_closure(&app, PHILO, Some(&uai), "test")
        .await
        .expect("request")
        .expect("not refused");
    let job = jobs_of(&first)[0];
    assert!(matches!(first[0].outcome, Ok(UnitRequested::Enqueued(_))));
    assert_eq!(second[0].outcome, Ok(UnitRequested::AlreadyQueued(job)));

    let published = crate::ops::publish(&app, PHILO, "rectorat")
        .await
        .expect("publish")
        .expect("recorded");
    assert_eq!(published.cancelled, vec![job]);
    assert_eq!(app.job(job).await.status.as_str(), "cancelled");
    assert_eq!(stub.requests(), 0);
}

#[tokio::test]
async fn harmonisation_in_two_passes_sends_each_copy_once_and_establishments_cannot_close() {
    let stub = Stub::start().await;
    let app = app_with_stub(&stub, json!({})).await;
    let uai = first_establishment(&app, MATHS_H).await;

    // The establishment itself asks, for its own unit.
    let establishment = Actor::Establishment { uai: uai.clone() };
    let refusal = closure::request_closure(
        &app.app(),
        &establishment,
        &closure::request::UnitsInput {
            exam: MATHS_H.to_owned(),
            establishment: Some(uai.clone()),
        },
    )
    .await
    .expect_err("harmonised exams are not closed by establishments");
    assert!(matches!(refusal, OpError::Refused(Refusal::Harmonised(_))));
    assert!(
        refusal.to_string().contains("academic coordinator"),
        "{refusal}"
    );

    // Pass 1: a few copies of each establishment.
    let all = exam_numeros(&app, MATHS_H).await;
    let first_half: Vec<String> = all.iter().step_by(2).cloned().collect();
    let worker = app.worker().await;
    let pass1 = crate::ops::validate_harmonisation(
        &app,
        MATHS_H,
        None,
        &Validation::Candidates(first_half.clone()),
        "coordinator",
    )
    .await
    .expect("validate")
    .expect("not refused");
    let PassRequest::Enqueued { job, validated, .. } = pass1 else {
        panic!("pass 1 enqueued nothing: {pass1:?}")
    };
    assert_eq!(validated as usize, first_half.len());
    app.wait_status(job, "succeeded", 30).await;
    let s = status(&app, MATHS_H).await;
    assert_eq!(
        s.units.iter().map(|u| u.cyclades.accepted).sum::<i64>() as usize,
        first_half.len(),
        "{s}"
    );
    assert!(
        s.units
            .iter()
            .all(|u| u.state == UnitState::PartiallyClosed),
        "{s}"
    );

    // Validating the same copies again sends nothing.
    let requests = stub.requests();
    let again = crate::ops::validate_harmonisation(
        &app,
        MATHS_H,
        None,
        &Validation::Candidates(first_half.clone()),
        "coordinator",
    )
    .await
    .expect("validate")
    .expect("not refused");
    assert_eq!(
        again,
        PassRequest::NothingNew {
            already_validated: first_half.len() as i64
        }
    );
    assert_eq!(stub.requests(), requests);

    // Pass 2: everything.
    let pass2 =
        crate::ops::validate_harmonisation(&app, MATHS_H, None, &Validation::All, "coordinator")
            .await
            .expect("validate")
            .expect("not refused");
    let PassRequest::Enqueued {
        job,
        validated,
        already_validated,
        ..
    } = pass2
    else {
        panic!("pass 2 enqueued nothing: {pass2:?}")
    };
    assert_eq!(validated as usize, all.len() - first_half.len());
    assert_eq!(already_validated as usize, first_half.len());
    app.wait_status(job, "succeeded", 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    stub.assert_exactly_once();
    assert_eq!(accepted_candidates(&stub, MATHS_H).len(), all.len());
    let s = status(&app, MATHS_H).await;
    assert_eq!(s.count(UnitState::Closed), s.units.len(), "{s}");
    // Imag'In's last word per grader is the total of corrected copies.
    let mut totals: HashMap<String, i64> = HashMap::new();
    for c in unit_copies_of(&app, MATHS_H).await {
        if c.grade.is_some() && !c.absent {
            *totals.entry(c.grader.expect("grader")).or_default() += 1;
        }
    }
    let mut last: HashMap<String, (u32, i64)> = HashMap::new();
    for key in stub.effects(&format!("i:{MATHS_H}:")).keys() {
        let item = stub.item(key).expect("item");
        let revision: u32 = key.rsplit(":r").next().expect("rev").parse().expect("rev");
        let grader = item["grader"].as_str().expect("grader").to_owned();
        let establishment = key.split(':').nth(2).expect("uai").to_owned();
        let copies = item["copies"].as_i64().expect("copies");
        let slot = format!("{grader}@{establishment}");
        if last.get(&slot).is_none_or(|(r, _)| *r < revision) {
            last.insert(slot, (revision, copies));
        }
    }
    let mut per_grader: HashMap<String, i64> = HashMap::new();
    for (slot, (_, copies)) in last {
        let grader = slot.split('@').next().expect("grader").to_owned();
        *per_grader.entry(grader).or_default() += copies;
    }
    assert_eq!(per_grader, totals);
}

/// A pass over an academy runs its units side by side: with every answer
/// held 600 ms, units run one after the other would reach the target at
/// least that far apart; side by side, the three establishments' first
/// requests arrive together. Every copy is still sent once.
#[tokio::test]
async fn a_harmonisation_pass_runs_the_academys_units_side_by_side() {
    let stub = Stub::start().await;
    let app = app_with_stub(&stub, json!({})).await;
    stub.behave(|b| b.hold = Duration::from_millis(600));
    let worker = app.worker().await;
    let pass = crate::ops::validate_harmonisation(&app, MATHS_H, None, &Validation::All, "test")
        .await
        .expect("validate")
        .expect("not refused");
    let PassRequest::Enqueued { job, .. } = pass else {
        panic!("the pass enqueued nothing: {pass:?}")
    };
    app.wait_status(job, "succeeded", 60).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    stub.assert_exactly_once();
    let all = exam_numeros(&app, MATHS_H).await;
    assert_eq!(accepted_candidates(&stub, MATHS_H).len(), all.len());
    let mut first: Vec<std::time::Instant> = stub.first_arrivals().into_values().collect();
    first.sort();
    assert_eq!(first.len(), 3, "three establishments sent to");
    let spread = first[2] - first[0];
    assert!(
        spread < Duration::from_millis(300),
        "the units' first requests came {spread:?} apart: one unit at a time"
    );
}

#[tokio::test]
async fn e3c_closes_like_ponctuel_and_absent_candidates_are_exported_as_absent() {
    let stub = Stub::start().await;
    let app = app_with_stub(&stub, json!({})).await;
    let worker = app.worker().await;
    let units = crate::ops::request_closure(&app, E3C, None, "test")
        .await
        .expect("request")
        .expect("not refused");
    for job in jobs_of(&units) {
        app.wait_status(job, "succeeded", 30).await;
    }
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let s = status(&app, E3C).await;
    assert_eq!(s.count(UnitState::Closed), s.units.len(), "{s}");

    let mut absent: Vec<String> = unit_copies_of(&app, E3C)
        .await
        .into_iter()
        .filter(|c| c.absent)
        .map(|c| c.numero)
        .collect();
    absent.sort();
    assert!(!absent.is_empty(), "the dataset has absent candidates");
    let sent: HashMap<String, Value> = stub
        .effects(&format!("c:{E3C}:"))
        .keys()
        .filter_map(|k| stub.item(k))
        .map(|i| (i["candidate"].as_str().expect("candidate").to_owned(), i))
        .collect();
    assert_eq!(sent.len() as i64, copies_of(&app, E3C).await);
    for numero in &absent {
        let item = &sent[numero];
        assert_eq!(item["absent"], json!(true), "{item}");
        assert_eq!(item["grade"], Value::Null, "{item}");
    }
    let present = sent.values().filter(|i| i["absent"] == json!(false));
    for item in present {
        assert!(item["grade"].is_number(), "{item}");
    }
}

#[tokio::test]
async fn ungraded_copies_refuse_their_establishment_with_the_list_and_unknown_names_are_refused() {
    let stub = Stub::start().await;
    let app = app_with_stub(&stub, json!({})).await;
    let uai = first_establishment(&app, PHILO).await;
    let numero = numeros_of(&app, PHILO, &uai).await[0].clone();
    // An ungraded copy: no operation withdraws a grade.
    sqlx::query(
        "UPDATE copies SET grade = NULL FROM candidates ca
         WHERE ca.id = copies.candidate_id AND ca.numero = $1 AND copies.exam_code = $2",
    )
    .bind(&numero)
    .bind(PHILO)
    .execute(&pool(&app).await)
    .await
    .expect("ungrade");

    let units = crate::ops::request_closure(&app, PHILO, None, "test")
        .await
        .expect("request")
        .expect("exam-level checks pass");
    let refused: Vec<_> = units.iter().filter(|u| u.outcome.is_err()).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].establishment, uai);
    let message = refused[0].outcome.clone().expect_err("refused").to_string();
    assert!(
        message.contains(&numero) && message.contains("not graded"),
        "{message}"
    );
    assert_eq!(units.iter().filter(|u| u.outcome.is_ok()).count(), 2);

    for (exam, want) in [("NOPE", "unknown exam NOPE")] {
        let r = crate::ops::request_closure(&app, exam, None, "test")
            .await
            .expect("request");
        assert_eq!(r.expect_err("refused").to_string(), want);
    }
    let stranger = Uai::from_number(1_234_567);
    let r = crate::ops::request_closure(&app, PHILO, Some(&stranger), "test")
        .await
        .expect("request");
    assert_eq!(
        r.expect_err("refused").to_string(),
        format!("unknown establishment {stranger}")
    );
    let r = crate::ops::validate_harmonisation(
        &app,
        MATHS_H,
        None,
        &Validation::Candidates(vec!["NOBODY".into()]),
        "coordinator",
    )
    .await
    .expect("validate");
    assert!(
        r.expect_err("refused").to_string().contains("NOBODY"),
        "unknown candidates are named"
    );
    let r = crate::ops::validate_harmonisation(&app, PHILO, None, &Validation::All, "c")
        .await
        .expect("validate");
    assert!(matches!(
        r,
        Err(OpError::Refused(Refusal::NotHarmonised { .. }))
    ));
    let r = crate::ops::request_relaunch(&app, E3C, None, "test")
        .await
        .expect("relaunch")
        .expect("exam-level checks pass");
    assert!(
        r.iter()
            .all(|u| matches!(u.outcome, Err(Refusal::NeverClosed { .. }))),
        "relaunch before any closure: {r:?}"
    );
}

#[tokio::test]
async fn the_outbox_writes_every_item_once_as_files() {
    let app = TestApp::with(json!({"exports": {"batch_size": 7}})).await;
    load_session(&app).await;
    let worker = app.worker().await;
    let units = crate::ops::request_closure(&app, PHILO, None, "test")
        .await
        .expect("request")
        .expect("not refused");
    for job in jobs_of(&units) {
        app.wait_status(job, "succeeded", 30).await;
    }
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    let root = app.dir.path().join("objects/exports/cyclades");
    let mut keys = HashSet::new();
    let mut files = 0;
    for entry in walk(&root) {
        files += 1;
        let doc: Value =
            serde_json::from_slice(&std::fs::read(&entry).expect("read")).expect("json");
        assert_eq!(doc["exam"], json!(PHILO));
        assert!(doc["items"].as_array().expect("items").len() <= 7);
        for item in doc["items"].as_array().expect("items") {
            assert!(keys.insert(item["key"].as_str().expect("key").to_owned()));
        }
    }
    assert!(files >= 3, "one file per batch at least per establishment");
    assert_eq!(keys.len() as i64, copies_of(&app, PHILO).await);
    assert!(!walk(&app.dir.path().join("objects/exports/imagin")).is_empty());
    let r = crate::ops::request_relaunch(&app, PHILO, None, "test")
        .await
        .expect("relaunch")
        .expect("not refused");
    assert!(
        r.iter()
            .all(|u| u.outcome == Ok(UnitRequested::NothingToSend))
    );
}

/// Found by the fault suite (a worker killed 20 times): a closure job
/// buried after its run had created only part of the unit's items left
/// the unit `closing` with every existing item accepted, and a relaunch
/// answered "nothing to relaunch" forever.
#[tokio::test]
async fn a_relaunch_finishes_a_unit_whose_run_died_before_creating_every_item() {
    let app = TestApp::new().await;
    load_session(&app).await;
    let worker = app.worker().await;
    let units = crate::ops::request_closure(&app, PHILO, None, "test")
        .await
        .expect("request")
        .expect("not refused");
    for job in jobs_of(&units) {
        app.wait_status(job, "succeeded", 30).await;
    }
    let uai = first_establishment(&app, PHILO).await;
    let copies = unit_of(&status(&app, PHILO).await, &uai).copies;
    // What the killed run left (broken by hand): three copies without an
    // item, the unit `closing`, its job dead.
    let pool = pool(&app).await;
    sqlx::query(
        "DELETE FROM grade_exports WHERE copy_id IN (
             SELECT c.id FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
             WHERE c.exam_code = $1 AND ca.establishment_uai = $2 ORDER BY c.id LIMIT 3)",
    )
    .bind(PHILO)
    .bind(uai.as_str())
    .execute(&pool)
    .await
    .expect("delete items");
    sqlx::query(
        "WITH u AS (UPDATE closure_units SET state = 'closing'
                    WHERE exam_code = $1 AND establishment_uai = $2 RETURNING active_job_id)
         UPDATE jobs SET status = 'dead' FROM u WHERE jobs.id = u.active_job_id",
    )
    .bind(PHILO)
    .bind(uai.as_str())
    .execute(&pool)
    .await
    .expect("bury the run");
    let before = unit_of(&status(&app, PHILO).await, &uai).cyclades.accepted;
    assert_eq!(before, copies - 3);

    let r = crate::ops::request_relaunch(&app, PHILO, Some(&uai), "test")
        .await
        .expect("relaunch")
        .expect("not refused");
    let job = match &r[0].outcome {
        Ok(UnitRequested::Enqueued(job)) => *job,
        other => panic!("the relaunch must send the missing items: {other:?}"),
    };
    app.wait_status(job, "succeeded", 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let unit = status(&app, PHILO).await;
    let unit = unit_of(&unit, &uai);
    assert_eq!(unit.state, UnitState::Closed, "{unit:?}");
    assert_eq!(unit.cyclades.accepted, copies);
}

#[tokio::test]
async fn a_refused_batch_rejects_its_items_and_an_unreachable_target_leaves_them_pending() {
    // Cyclades refuses every document (422); Imag'In does not listen.
    let cyclades = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422).set_body_string("session BAC-2026 is closed"))
        .mount(&cyclades)
        .await;
    let (_refusing, closed_port) = refusing_port();
    let mut config = fast_queue();
    merge(
        &mut config,
        json!({
            "exporters": {
                "cyclades": {"kind": "http", "base_url": cyclades.uri(), "timeout_secs": 2},
                "imagin": {"kind": "http", "base_url": format!("http://127.0.0.1:{closed_port}"), "timeout_secs": 2}
            },
            "jobs": {"backoff_base_secs": 3600.0, "backoff_max_secs": 7200.0}
        }),
    );
    let app = TestApp::with(config).await;
    load_session(&app).await;
    let uai = first_establishment(&app, PHILO).await;
    let worker = app.worker().await;
    let units = crate::ops::request_closure(&app, PHILO, Some(&uai), "test")
        .await
        .expect("request")
        .expect("not refused");
    let job = jobs_of(&units)[0];
    settle(&app, 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    let row = app.job(job).await;
    assert_eq!(row.status.as_str(), "queued", "retried later with backoff");
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("could not connect")),
        "{:?}",
        row.last_error
    );
    let s = status(&app, PHILO).await;
    let unit = &s.units[0];
    assert_eq!(unit.state, UnitState::ClosedWithErrors, "{s}");
    assert_eq!(unit.cyclades.rejected, unit.cyclades.total, "{s}");
    assert_eq!(unit.imagin.pending, unit.imagin.total, "{s}");
    let messages: Vec<&str> = unit.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("422") && m.contains("session BAC-2026 is closed")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("could not connect")),
        "{messages:?}"
    );
}

#[tokio::test]
async fn a_changed_copy_is_sent_again_under_a_new_key_and_a_grader_left_without_copies_is_declared_zero()
 {
    let stub = Stub::start().await;
    let app = app_with_stub(&stub, json!({})).await;
    let uai = first_establishment(&app, PHILO).await;
    let worker = app.worker().await;
    let close = || async {
        let units = crate::ops::request_closure(&app, PHILO, Some(&uai), "test")
            .await
            .expect("request")
            .expect("not refused");
        app.wait_status(jobs_of(&units)[0], "succeeded", 30).await;
    };
    close().await;
    let grades_before = stub.effects("c:").len();
    let counts_before = stub.effects("i:").len();

    // A new export of the session marks every copy of one grader absent:
    // each copy gets its next version.
    // The grader with the fewest graded copies (the first by code among
    // equals).
    let mut graded: HashMap<String, i64> = HashMap::new();
    for c in unit_copies(&app, PHILO, &uai).await {
        if let (Some(grader), Some(_), false) = (c.grader, c.grade, c.absent) {
            *graded.entry(grader).or_default() += 1;
        }
    }
    let (grader, _) = graded
        .into_iter()
        .min_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)))
        .expect("a grader");
    // The export's change, written as the import would (no operation
    // changes one copy).
    let db = pool(&app).await;
    let changed: Vec<String> = sqlx::query_scalar(
        "UPDATE copies c SET absent = true, grade = NULL, version = c.version + 1
         FROM candidates ca
         WHERE ca.id = c.candidate_id AND c.exam_code = $1 AND ca.establishment_uai = $2
           AND c.grader_code = $3 AND c.grade IS NOT NULL
         RETURNING ca.numero",
    )
    .bind(PHILO)
    .bind(uai.as_str())
    .bind(&grader)
    .fetch_all(&db)
    .await
    .expect("changed copies");
    assert!(!changed.is_empty());

    close().await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    stub.assert_exactly_once();
    assert_eq!(
        stub.effects("c:").len(),
        grades_before + changed.len(),
        "only the changed copies are sent again"
    );
    for numero in &changed {
        let item = stub
            .item(&format!("c:{PHILO}:{numero}:v2"))
            .expect("the changed copy is sent under its new key");
        assert_eq!(item["absent"], json!(true), "{item}");
        assert_eq!(item["grade"], Value::Null, "{item}");
    }
    assert_eq!(
        stub.effects("i:").len(),
        counts_before + 1,
        "only the changed count is sent again"
    );
    let count = stub
        .item(&format!("i:{PHILO}:{uai}:{grader}:r2"))
        .expect("the grader's count is sent under its next revision");
    assert_eq!(count["copies"], json!(0), "{count}");
    let s = status(&app, PHILO).await;
    let unit = unit_of(&s, &uai);
    assert_eq!(unit.state, UnitState::Closed, "{s}");
    assert_eq!(unit.cyclades.accepted, unit.cyclades.total, "{s}");
    assert_eq!(
        unit.imagin.accepted, unit.imagin.total,
        "the grader declared 0 counts in the total: {s}"
    );
}

#[tokio::test]
async fn a_copy_changed_while_its_grade_is_in_flight_is_recorded_at_the_version_sent_and_sent_again()
 {
    let stub = Stub::start().await;
    // The stub applies each batch at once and answers a second later.
    stub.behave(|b| b.hold = Duration::from_secs(1));
    let app = app_with_held_answers(&stub).await;
    let uai = first_establishment(&app, PHILO).await;
    let worker = app.worker().await;
    let close = || async {
        let units = crate::ops::request_closure(&app, PHILO, Some(&uai), "test")
            .await
            .expect("request")
            .expect("not refused");
        jobs_of(&units)[0]
    };
    let first = close().await;
    first_grades_applied(&stub).await;
    // A new grade lands while the answer is on its way (written as an
    // import would: no operation changes one copy).
    let db = pool(&app).await;
    let (copy, numero): (i64, String) = sqlx::query_as(
        "UPDATE copies c SET grade = 19.5, absent = false, version = c.version + 1
         FROM candidates ca
         WHERE c.id = (SELECT c2.id FROM copies c2 JOIN candidates ca2 ON ca2.id = c2.candidate_id
                       WHERE c2.exam_code = $1 AND ca2.establishment_uai = $2
                       ORDER BY c2.id LIMIT 1)
           AND ca.id = c.candidate_id
         RETURNING c.id, ca.numero",
    )
    .bind(PHILO)
    .bind(uai.as_str())
    .fetch_one(&db)
    .await
    .expect("a changed copy");
    let row = app.wait_status(first, "succeeded", 30).await;
    // Grades and counts went out side by side; the progress ends complete.
    assert!(
        matches!((row.progress_done, row.progress_total), (Some(d), Some(t)) if d == t && d > 1),
        "progress {:?}/{:?}",
        row.progress_done,
        row.progress_total
    );

    let item = unit_copies(&app, PHILO, &uai)
        .await
        .into_iter()
        .find(|c| c.copy_id == copy)
        .expect("the copy");
    assert_eq!(
        (item.item_revision, item.item_state),
        (Some(1), Some(copiste::domain::ItemState::Accepted)),
        "the item records the version that was sent, not the one read after"
    );
    let grades_before = stub.effects("c:").len();

    stub.behave(|b| b.hold = Duration::ZERO);
    let second = close().await;
    app.wait_status(second, "succeeded", 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    stub.assert_exactly_once();
    assert_eq!(
        stub.effects("c:").len(),
        grades_before + 1,
        "only the changed copy is sent again"
    );
    let item = stub
        .item(&format!("c:{PHILO}:{numero}:v2"))
        .expect("the changed copy is sent under its new key");
    assert_eq!(item["grade"], json!(19.5), "{item}");
    let s = status(&app, PHILO).await;
    let unit = unit_of(&s, &uai);
    assert_eq!(unit.state, UnitState::Closed, "{s}");
    assert_eq!(unit.cyclades.accepted, unit.cyclades.total, "{s}");
}

/// Withdraws the grade of candidate `numero`'s copy of `exam` (a new
/// version of the copy, neither graded nor absent), as a new import would:
/// no operation changes one copy.
async fn withdraw_grade(app: &TestApp, exam: &str, numero: &str) {
    sqlx::query(
        "UPDATE copies SET grade = NULL, absent = false, version = copies.version + 1
         FROM candidates ca
         WHERE ca.id = copies.candidate_id AND ca.numero = $1 AND copies.exam_code = $2",
    )
    .bind(numero)
    .bind(exam)
    .execute(&pool(app).await)
    .await
    .expect("withdraw a grade");
}

/// Enqueues `job`, waits until it is dead and returns its error.
async fn dead_with<J: copiste::jobs::Job>(app: &TestApp, job: &J) -> String {
    let id = app
        .enqueue(job, copiste::jobs::EnqueueOptions::by("test"))
        .await;
    app.wait_status(id, "dead", 30)
        .await
        .last_error
        .unwrap_or_default()
}

#[tokio::test]
async fn jobs_enqueued_by_hand_keep_the_closure_rules_never_closed_and_ungraded() {
    use copiste::jobs::{closure::Closure, export_retry::ExportRetry};
    let stub = Stub::start().await;
    let app = app_with_stub(&stub, json!({})).await;
    let uai = first_establishment(&app, PHILO).await;
    let numero = numeros_of(&app, PHILO, &uai).await[0].clone();
    withdraw_grade(&app, PHILO, &numero).await;
    let worker = app.worker().await;

    // As `copiste jobs enqueue export-retry` would: the unit was never
    // closed and one of its copies is ungraded.
    let error = dead_with(
        &app,
        &ExportRetry {
            exam: PHILO.into(),
            establishment: uai.clone(),
        },
    )
    .await;
    assert!(
        error.contains("never closed") && error.contains(uai.as_str()),
        "{error}"
    );
    let error = dead_with(
        &app,
        &Closure {
            exam: PHILO.into(),
            establishment: uai.clone(),
        },
    )
    .await;
    assert!(
        error.contains(&numero) && error.contains("not graded"),
        "{error}"
    );
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    assert!(stub.effects("c:").is_empty(), "nothing was sent");
    assert_eq!(stub.requests(), 0);
    let s = status(&app, PHILO).await;
    assert_eq!(unit_of(&s, &uai).state, UnitState::Open, "{s}");
}

#[tokio::test]
async fn a_relaunch_of_a_unit_with_a_withdrawn_grade_counts_it_and_does_not_report_closed() {
    use copiste::jobs::{EnqueueOptions, export_retry::ExportRetry};
    let stub = Stub::start().await;
    let app = app_with_stub(&stub, json!({})).await;
    let uai = first_establishment(&app, PHILO).await;
    let worker = app.worker().await;
    let units = crate::ops::request_closure(&app, PHILO, Some(&uai), "test")
        .await
        .expect("request")
        .expect("not refused");
    app.wait_status(jobs_of(&units)[0], "succeeded", 30).await;

    // A grade withdrawn after the closure, then a relaunch enqueued by hand.
    let numero = numeros_of(&app, PHILO, &uai).await[0].clone();
    withdraw_grade(&app, PHILO, &numero).await;
    let retry = app
        .enqueue(
            &ExportRetry {
                exam: PHILO.into(),
                establishment: uai.clone(),
            },
            EnqueueOptions::by("test"),
        )
        .await;
    let row = app.wait_status(retry, "failed", 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    let unit = &row.result.expect("a result")["units"][0];
    assert_eq!(unit["ungraded"], json!(1), "{unit}");
    assert_eq!(unit["state"], json!("partially_closed"), "{unit}");
    let s = status(&app, PHILO).await;
    let line = unit_of(&s, &uai);
    assert_eq!(line.state, UnitState::PartiallyClosed, "{s}");
    assert_eq!(line.ungraded, 1, "{s}");
    stub.assert_exactly_once();
}

#[tokio::test]
async fn a_closure_dead_of_unanswered_items_does_not_promise_a_retry() {
    use copiste::jobs::{EnqueueOptions, closure::Closure};
    // Neither target listens.
    let (_refusing, closed_port) = refusing_port();
    let nowhere = format!("http://127.0.0.1:{closed_port}");
    let mut config = fast_queue();
    merge(
        &mut config,
        json!({
            "exporters": {
                "cyclades": {"kind": "http", "base_url": nowhere, "timeout_secs": 2},
                "imagin": {"kind": "http", "base_url": nowhere, "timeout_secs": 2}
            }
        }),
    );
    let app = TestApp::with(config).await;
    load_session(&app).await;
    let uai = first_establishment(&app, PHILO).await;
    let worker = app.worker().await;
    let mut opts = EnqueueOptions::by("test");
    opts.max_attempts = Some(1);
    let job = app
        .enqueue(
            &Closure {
                exam: PHILO.into(),
                establishment: uai,
            },
            opts,
        )
        .await;
    let row = app.wait_status(job, "dead", 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let error = row.last_error.unwrap_or_default();
    assert!(error.contains("not answered yet"), "{error}");
    assert!(
        !error.contains("retrying"),
        "a dead job promises a retry: {error}"
    );
}

/// The nightly closure asks unit by unit. Each request must read its
/// unit's copies, not the exam's: before, every request listed the exam's
/// establishments and every ungraded copy of the exam, so a night cost
/// the square of the session (at 1/10 of a national session, ~1 s per
/// unit and 3 000 units).
#[tokio::test]
async fn closing_one_unit_reads_that_unit_not_the_whole_exam() {
    let test = TestApp::new().await;
    test.import_demo(30, 6).await;
    let pool = pool(&test).await;
    let exam_copies = copies_of(&test, PHILO).await;
    let uai = first_establishment(&test, PHILO).await;
    let unit_copies = unit_copies(&test, PHILO, &uai).await.len() as i64;
    assert!(
        exam_copies >= 20 * unit_copies,
        "{exam_copies} vs {unit_copies}"
    );

    // One connection, whose statistics are flushed on demand.
    let db = copiste::db::Db::connect(&test.config.database_url(), 1)
        .await
        .expect("connect");
    let app = copiste::app::App::new(test.config.clone(), db.clone(), test.storage.clone())
        .expect("application");
    let flush = || async {
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(db.pg_pool())
            .await
            .expect("flush");
        // The flush happens when that statement's transaction ends.
        sqlx::query("SELECT 1")
            .execute(db.pg_pool())
            .await
            .expect("ping");
    };
    flush().await;
    let before = rows_read(&pool, "copies").await;
    let asked = closure::request_closure(
        &app,
        &Actor::Scheduler,
        &closure::request::UnitsInput {
            exam: PHILO.to_owned(),
            establishment: Some(uai.clone()),
        },
    )
    .await
    .expect("request");
    assert_eq!(asked.len(), 1);
    flush().await;
    let read = rows_read(&pool, "copies").await - before;
    assert!(
        read <= 4 * unit_copies,
        "closing one unit of {unit_copies} copies read {read} rows of copies (the exam has {exam_copies})"
    );
}

/// The jobs that send an exam's items never send once Cyclades has
/// published it: those queued at the publication are cancelled by it, and
/// those enqueued after it (by hand, as `copiste jobs enqueue` does) run
/// and die of the publication's refusal, without one request to a target.
#[tokio::test]
async fn sending_jobs_queued_at_or_enqueued_after_the_publication_send_nothing() {
    use copiste::jobs::{
        EnqueueOptions, closure::Closure, export_retry::ExportRetry,
        harmonisation_validation::HarmonisationValidation,
    };
    let stub = Stub::start().await;
    let app = app_with_stub(&stub, json!({})).await;
    let uai = first_establishment(&app, PHILO).await;
    // The unit is closed first, so that a relaunch has something to send.
    let worker = app.worker().await;
    let units = crate::ops::request_closure(&app, PHILO, Some(&uai), "test")
        .await
        .expect("request")
        .expect("not refused");
    app.wait_status(jobs_of(&units)[0], "succeeded", 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let requests = stub.requests();

    // Queued, no worker running: a closure, a relaunch and a pass.
    let closure = Closure {
        exam: PHILO.into(),
        establishment: uai.clone(),
    };
    let retry = ExportRetry {
        exam: PHILO.into(),
        establishment: uai.clone(),
    };
    let queued_closure = app.enqueue(&closure, EnqueueOptions::by("test")).await;
    let queued_retry = app.enqueue(&retry, EnqueueOptions::by("test")).await;
    let pass = crate::ops::validate_harmonisation(&app, MATHS_H, None, &Validation::All, "test")
        .await
        .expect("validate")
        .expect("not refused");
    let PassRequest::Enqueued {
        job: queued_pass, ..
    } = pass
    else {
        panic!("the pass enqueued nothing: {pass:?}")
    };
    let pass_id = app.job(queued_pass).await.payload["pass"]
        .as_i64()
        .expect("the pass's id");

    let philo = crate::ops::publish(&app, PHILO, "test")
        .await
        .expect("publish")
        .expect("recorded");
    let maths = crate::ops::publish(&app, MATHS_H, "test")
        .await
        .expect("publish")
        .expect("recorded");
    let mut cancelled = philo.cancelled.clone();
    cancelled.extend(&maths.cancelled);
    cancelled.sort();
    let mut expected = vec![queued_closure, queued_retry, queued_pass];
    expected.sort();
    assert_eq!(cancelled, expected);

    // Enqueued by hand after the publication: refused at run time.
    let worker = app.worker().await;
    for id in [queued_closure, queued_retry, queued_pass] {
        assert_eq!(app.job(id).await.status.as_str(), "cancelled");
    }
    let errors = [
        dead_with(&app, &closure).await,
        dead_with(&app, &retry).await,
        dead_with(
            &app,
            &HarmonisationValidation {
                exam: MATHS_H.into(),
                academy: None,
                pass: pass_id,
            },
        )
        .await,
    ];
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    for (error, exam) in errors.iter().zip([PHILO, PHILO, MATHS_H]) {
        assert!(
            error.contains(&format!("exam {exam} was published by Cyclades")),
            "{error}"
        );
    }
    assert_eq!(stub.requests(), requests, "a request after the publication");
    stub.assert_exactly_once();
}
