//! Schedules, the scheduler and the scheduled jobs.

use std::{path::Path, time::Duration};

use chrono::Utc;
use copiste::{
    jobs::{
        EnqueueOptions, Enqueued, housekeeping::Housekeeping, nightly_closure::NightlyClosure,
        noop::Noop,
    },
    schedule::{self, Schedule, scheduler},
};
use serde_json::json;
use sqlx::PgPool;

use crate::support::{TestApp, eventually, eventually_every, fast_queue};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write schedule");
}

async fn pool(app: &TestApp) -> PgPool {
    PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("pool")
}

#[test]
fn the_shipped_schedules_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs");
    let schedules = schedule::load_dir(&dir).expect("jobs/*.toml load");
    let names: Vec<_> = schedules.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "export-retry-sweep",
            "housekeeping",
            "nightly-closure",
            "zip-prebuild"
        ]
    );
    let nightly = &schedules[2];
    assert_eq!(nightly.timezone, chrono_tz::Europe::Paris);
    let next = nightly.next_slots(Utc::now(), 3);
    assert_eq!(next.len(), 3);
    for slot in next {
        let local = slot.with_timezone(&chrono_tz::Europe::Paris);
        assert_eq!(local.format("%H:%M").to_string(), "02:00");
    }
}

#[test]
fn a_bad_file_is_refused_with_its_name_and_field() {
    let cases = [
        (
            "name = \"a\"\ncron = \"every night\"\nkind = \"noop\"\n",
            "cron",
        ),
        (
            "name = \"a\"\ncron = \"0 0 2 * * *\"\ntimezone = \"Europe/Pariss\"\nkind = \"noop\"\n",
            "timezone",
        ),
        (
            "name = \"a\"\ncron = \"0 0 2 * * *\"\nkind = \"teleport\"\n",
            "kind",
        ),
        (
            "name = \"a\"\ncron = \"0 0 2 * * *\"\nkind = \"noop\"\n[params]\nsleep_ms = \"long\"\n",
            "params",
        ),
        (
            "name = \"A B\"\ncron = \"0 0 2 * * *\"\nkind = \"noop\"\n",
            "name",
        ),
        ("cron = \"0 0 2 * * *\"\nkind = \"noop\"\n", "name"),
    ];
    for (text, field) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "bad.toml", text);
        let e = schedule::load_dir(dir.path()).expect_err("refused");
        assert_eq!(e.field, field, "{e}");
        let message = e.to_string();
        assert!(
            message.contains("bad.toml") && message.contains(field),
            "{message}"
        );
    }
}

fn load(dir: &Path) -> Vec<Schedule> {
    schedule::load_dir(dir).expect("schedules")
}

/// Housekeeping analyses the tables the night wrote, whether or not
/// autovacuum runs: only an explicit `ANALYZE` sets `last_analyze`.
#[tokio::test]
async fn housekeeping_analyses_the_tables_the_night_wrote() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let job = app
        .enqueue(&Housekeeping {}, EnqueueOptions::by("test"))
        .await;
    let row = app.wait_status(job, "succeeded", 60).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let result = row.result.expect("result");
    assert_eq!(
        result["tables_analysed"],
        json!(copiste::db::schedule::NIGHT_TABLES),
        "{result}"
    );
    let analysed = app.analysed_tables("grade_exports").await;
    for table in copiste::db::schedule::NIGHT_TABLES {
        assert!(
            analysed.iter().any(|t| t == table),
            "{table} not analysed by housekeeping: {analysed:?}"
        );
    }
}

/// Three schedulers on one ledger, ticking every second: each slot
/// between their start and their stop has exactly one job, with that
/// slot's key. A scheduler enqueueing without the slot's key (which the
/// unique index of keys would then not deduplicate) or skipping a slot
/// fails it.
#[tokio::test]
async fn three_schedulers_make_one_job_per_slot() {
    let app = TestApp::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "tick.toml",
        "name = \"tick\"\ncron = \"* * * * * *\"\ntimezone = \"UTC\"\nkind = \"noop\"\n",
    );
    let tick = load(dir.path()).remove(0);
    let started = Utc::now();
    let mut schedulers = Vec::new();
    for _ in 0..3 {
        schedulers.push(
            scheduler::Scheduler::start(app.db.clone(), load(dir.path()))
                .await
                .expect("scheduler starts"),
        );
    }
    eventually(Duration::from_secs(30), || async {
        (jobs_of_kind(&app, "noop").await.len() >= 3).then_some(())
    })
    .await;
    for s in schedulers {
        s.shutdown().await.expect("stop");
    }
    let stopped = Utc::now();
    let keys: Vec<String> = jobs_of_kind(&app, "noop")
        .await
        .into_iter()
        .map(|j| {
            j.idempotency_key
                .expect("a scheduled job has its slot's key")
        })
        .collect();
    // Every slot from a second before the start (caught up) to a second
    // after the stop (a timer may fire a little early), in time order,
    // and the run of them the jobs hold.
    let mut slots = Vec::new();
    let mut at = tick
        .slot_at_or_before(stopped + chrono::Duration::seconds(1))
        .expect("slot");
    while at >= started - chrono::Duration::seconds(1) {
        slots.push(tick.key(at));
        at = tick
            .slot_at_or_before(at - chrono::Duration::seconds(1))
            .expect("slot");
    }
    slots.reverse();
    let mut held: Vec<usize> = keys
        .iter()
        .map(|k| {
            slots.iter().position(|s| s == k).unwrap_or_else(|| {
                panic!("{k} is no slot between the start and the stop: {slots:?}")
            })
        })
        .collect();
    held.sort_unstable();
    let expected: Vec<usize> = (held[0]..held[0] + held.len()).collect();
    assert_eq!(
        held, expected,
        "one job per slot, none missed, none twice: {keys:?} of {slots:?}"
    );
    assert!(held.len() >= 3, "a tick per second: {keys:?}");
}

#[tokio::test]
async fn a_missed_slot_is_caught_up_once_and_an_old_one_not_at_all() {
    let app = TestApp::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "hourly.toml",
        "name = \"hourly\"\ncron = \"0 0 * * * *\"\ntimezone = \"UTC\"\nkind = \"noop\"\ncatch_up_secs = 3600\n",
    );
    let schedules = load(dir.path());
    let now = Utc::now();
    // A scheduler starts after the last hourly slot: it enqueues it.
    let first = scheduler::Scheduler::start(app.db.clone(), schedules.clone())
        .await
        .expect("start");
    first.shutdown().await.expect("stop");
    let slot = schedules[0].slot_at_or_before(now).expect("slot");
    let keys: Vec<String> = jobs_of_kind(&app, "noop")
        .await
        .into_iter()
        .filter_map(|j| j.idempotency_key)
        .collect();
    assert_eq!(keys, vec![schedules[0].key(slot)]);
    // A restart does not enqueue it again.
    let again = scheduler::Scheduler::start(app.db.clone(), schedules.clone())
        .await
        .expect("restart");
    again.shutdown().await.expect("stop");
    let again = scheduler::catch_up(&app.db, &schedules, now + chrono::Duration::seconds(5))
        .await
        .expect("catch up");
    assert!(
        matches!(again[..], [(_, _, Enqueued::Existing(_))]),
        "{again:?}"
    );
    assert_eq!(app.counts().await.values().sum::<i64>(), 1);

    write(
        dir.path(),
        "hourly.toml",
        "name = \"hourly\"\ncron = \"0 0 * * * *\"\ntimezone = \"UTC\"\nkind = \"noop\"\ncatch_up_secs = 60\n",
    );
    let schedules = load(dir.path());
    let slot = schedules[0].slot_at_or_before(now).expect("slot");
    let late = scheduler::catch_up(&app.db, &schedules, slot + chrono::Duration::minutes(30))
        .await
        .expect("catch up");
    assert!(
        late.is_empty(),
        "a slot older than the window is skipped: {late:?}"
    );
}

async fn session(app: &TestApp) {
    app.import_demo_seeded(3, 6, 11).await;
}

#[tokio::test]
async fn the_nightly_closure_selects_exactly_the_eligible_units() {
    let app = TestApp::with(fast_queue()).await;
    session(&app).await;
    let philo = copiste::db::catalog::exam_establishments(&app.db, "BAC26-PHILO", None)
        .await
        .expect("units");
    // One PHILO unit has an ungraded copy (by hand: no operation withdraws
    // a grade); another is already closed; the E3C exam is published; the
    // harmonised one is never eligible.
    sqlx::query(
        "UPDATE copies SET grade = NULL, absent = false WHERE id = (
           SELECT c.id FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
           WHERE c.exam_code = 'BAC26-PHILO' AND ca.establishment_uai = $1 LIMIT 1)",
    )
    .bind(philo[0].as_str())
    .execute(&pool(&app).await)
    .await
    .expect("ungrade");
    let worker = app.worker().await;
    let closed = crate::ops::request_closure(&app, "BAC26-PHILO", Some(&philo[1]), "test")
        .await
        .expect("request")
        .expect("not refused");
    let job = closed[0].outcome.clone().expect("ok").job().expect("job");
    app.wait_status(job, "succeeded", 30).await;
    crate::ops::publish(&app, "BAC26-E3C-HG", "rectorat")
        .await
        .expect("publish")
        .expect("published");

    let eligible = copiste::db::schedule::units_to_close(&app.db)
        .await
        .expect("eligible");
    assert_eq!(
        eligible,
        vec![("BAC26-PHILO".to_owned(), philo[2].clone())],
        "only the graded, never closed unit of an unpublished ponctuel/E3C exam"
    );
    let mut tx = app.db.begin().await.expect("begin");
    let nightly = copiste::jobs::enqueue(&mut tx, &NightlyClosure {}, EnqueueOptions::by("test"))
        .await
        .expect("enqueue")
        .id();
    tx.commit().await.expect("commit");
    let row = app.wait_status(nightly, "succeeded", 30).await;
    let result = row.result.expect("result");
    assert_eq!(
        result["closures"].as_array().expect("closures").len(),
        1,
        "{result}"
    );
    // The first closure, the nightly job and the closure it enqueued.
    app.wait_finished(3, 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    assert!(
        copiste::db::schedule::units_to_close(&app.db)
            .await
            .expect("eligible")
            .is_empty(),
        "everything eligible was closed"
    );
}

#[tokio::test]
async fn the_sweep_takes_only_due_units_and_never_after_publication() {
    let (_refusing, closed_port) = crate::support::refusing_port();
    let mut config = fast_queue();
    let unreachable = format!("http://127.0.0.1:{closed_port}");
    config["exporters"] = json!({
        "cyclades": {"kind": "http", "base_url": unreachable, "timeout_secs": 1},
        "imagin": {"kind": "http", "base_url": unreachable, "timeout_secs": 1}
    });
    config["jobs"] = json!({"backoff_base_secs": 3600.0, "backoff_max_secs": 7200.0});
    let app = TestApp::with(config).await;
    session(&app).await;
    let worker = app.worker().await;
    let mut jobs = Vec::new();
    for exam in ["BAC26-PHILO", "BAC26-E3C-HG"] {
        for u in crate::ops::request_closure(&app, exam, None, "test")
            .await
            .expect("request")
            .expect("not refused")
        {
            jobs.push(u.outcome.expect("ok").job().expect("job"));
        }
    }
    // Every run fails to connect: the jobs wait for a retry in an hour.
    let queued = copiste::db::jobs::JobFilter {
        status: Some("queued"),
        ..Default::default()
    };
    eventually_every(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let later = Utc::now() + chrono::Duration::minutes(10);
            let waiting = copiste::db::jobs::list_page(&app.db, &queued, None, 10_000, 0)
                .await
                .expect("queued jobs")
                .iter()
                .filter(|j| j.attempts == 1 && j.run_at > later)
                .count();
            if waiting == jobs.len() {
                return Ok(());
            }
            Err(format!(
                "closures did not fail as expected: {waiting} of {} wait for a retry",
                jobs.len()
            ))
        },
    )
    .await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    // While their retries are queued, nothing is due for the sweep.
    let now = Utc::now();
    assert!(
        copiste::db::schedule::units_to_relaunch(&app.db, now)
            .await
            .expect("due")
            .is_empty()
    );
    // The retries die (e.g. attempts exhausted): the sweep takes over, but
    // not for the published exam.
    for job in &jobs {
        copiste::db::jobs::cancel(&app.db, *job, "test")
            .await
            .expect("cancel");
    }
    crate::ops::publish(&app, "BAC26-E3C-HG", "rectorat")
        .await
        .expect("publish")
        .expect("published");
    let due = copiste::db::schedule::units_to_relaunch(&app.db, Utc::now())
        .await
        .expect("due");
    assert_eq!(due.len(), 3, "{due:?}");
    assert!(due.iter().all(|(exam, _)| exam == "BAC26-PHILO"), "{due:?}");
    // The sweep job enqueues exactly those relaunches.
    let worker = app.worker().await;
    let sweep = app
        .enqueue(
            &copiste::jobs::sweep::ExportRetrySweep {
                min_age_secs: Some(0),
            },
            EnqueueOptions::by("test"),
        )
        .await;
    let row = app.wait_status(sweep, "succeeded", 30).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let relaunches = row.result.expect("result")["relaunches"]
        .as_array()
        .expect("relaunches")
        .len();
    assert_eq!(relaunches, 3);
    let mut kinds: Vec<String> = jobs_of_kind(&app, "export-retry")
        .await
        .into_iter()
        .map(|j| j.payload["exam"].as_str().expect("an exam").to_owned())
        .collect();
    kinds.sort();
    assert_eq!(kinds, vec!["BAC26-PHILO"; 3], "none for the published exam");
    let not_yet = copiste::db::schedule::units_to_relaunch(
        &app.db,
        Utc::now() - chrono::Duration::minutes(10),
    )
    .await
    .expect("due");
    assert!(
        not_yet.is_empty(),
        "the backoff has not passed: {not_yet:?}"
    );
}

#[tokio::test]
async fn housekeeping_keeps_redis_flat_and_deletes_expired_downloads() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let warmup = app
        .enqueue(&Noop::default(), EnqueueOptions::by("test"))
        .await;
    app.wait_status(warmup, "succeeded", 30).await;
    copiste::queue::sweep_finished(&app.config)
        .await
        .expect("sweep");
    let before = app.redis_keys().await;

    let mut tx = app.db.begin().await.expect("begin");
    for _ in 0..10_000 {
        copiste::jobs::enqueue(&mut tx, &Noop::default(), EnqueueOptions::by("test"))
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    app.wait_finished(10_001, 300).await;
    // apalis keeps every finished task; the worker removes them every
    // second, so Redis does not grow with the backlog.
    let grown = eventually(Duration::from_secs(10), || async {
        let n = app.redis_keys().await;
        (n <= before + 50).then_some(n)
    })
    .await;

    // An expired download and its object.
    app.storage
        .put("downloads/old/x.zip", bytes::Bytes::from_static(b"PK"))
        .await
        .expect("put");
    session(&app).await;
    let uai = copiste::db::catalog::exam_establishments(&app.db, "BAC26-PHILO", None)
        .await
        .expect("establishments")[0]
        .clone();
    copiste::db::render::insert_download(
        &app.db,
        "BAC26-PHILO",
        uai.as_str(),
        "d1a1n1",
        json!([{"key": "downloads/old/x.zip", "bytes": 2, "sha256": "-"}]),
        1,
        0,
        warmup,
        Utc::now() - chrono::Duration::days(1),
    )
    .await
    .expect("download");

    let job = app
        .enqueue(&Housekeeping {}, EnqueueOptions::by("test"))
        .await;
    let row = app.wait_status(job, "succeeded", 60).await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let result = row.result.expect("result");
    assert_eq!(result["downloads_expired"], json!(1), "{result}");
    assert_eq!(
        app.storage.size("downloads/old/x.zip").await.expect("head"),
        None
    );
    let after = app.redis_keys().await;
    // What remains is the housekeeping job's own delivery (its id in the
    // done set, its metadata and data): a constant, whatever the backlog.
    assert!(
        after <= before + 3,
        "Redis is flat: {before} keys before, {grown} after 10 000 jobs, {after} after housekeeping"
    );
}

/// Every job of `kind`, newest first.
async fn jobs_of_kind(app: &TestApp, kind: &str) -> Vec<copiste::db::jobs::JobRow> {
    copiste::db::jobs::list_page(
        &app.db,
        &copiste::db::jobs::JobFilter {
            kind: Some(kind),
            ..Default::default()
        },
        None,
        10_000,
        0,
    )
    .await
    .expect("jobs")
}
