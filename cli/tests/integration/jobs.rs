//! The job ledger and its delivery through Redis.

use std::{cell::Cell, collections::HashSet, time::Duration};

use copiste::{
    db,
    domain::JobStatus,
    jobs::{
        EnqueueOptions,
        noop::{Noop, NoopFailure},
    },
    queue::Producer,
    worker::DeliveryOutcome,
};
use serde_json::json;

use crate::support::{TestApp, eventually, eventually_every, fast_queue};

fn by() -> EnqueueOptions {
    EnqueueOptions::by("test")
}

/// A noop job that sleeps `ms` milliseconds.
fn sleeping(ms: u64) -> Noop {
    Noop {
        sleep_ms: ms,
        ..Noop::default()
    }
}

/// A noop job that fails on every attempt in the given way.
fn failing(fail: NoopFailure) -> Noop {
    Noop {
        fail,
        ..Noop::default()
    }
}

#[tokio::test]
async fn twenty_concurrent_identical_enqueues_make_one_job() {
    let app = TestApp::new().await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let db = app.db.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin().await.expect("begin");
            let enqueued =
                copiste::jobs::enqueue(&mut tx, &Noop::default(), by().key("double-click"))
                    .await
                    .expect("enqueue");
            tx.commit().await.expect("commit");
            enqueued
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for task in tasks {
        let enqueued = task.await.expect("task");
        if matches!(enqueued, copiste::jobs::Enqueued::Created(_)) {
            created += 1;
        }
        ids.insert(enqueued.id());
    }
    assert_eq!(ids.len(), 1, "one job id for every enqueue");
    assert_eq!(created, 1, "exactly one enqueue created the row");
    assert_eq!(app.counts().await.values().sum::<i64>(), 1);
}

#[tokio::test]
async fn an_enqueue_with_a_known_key_returns_the_job_whatever_its_state() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let id = app.enqueue(&Noop::default(), by().key("k1")).await;
    app.wait_status(id, "succeeded", 20).await;
    let again = app.enqueue(&Noop::default(), by().key("k1")).await;
    assert_eq!(again, id);
    assert_eq!(app.counts().await.values().sum::<i64>(), 1);
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn a_rolled_back_enqueue_leaves_no_job() {
    let app = TestApp::new().await;
    let mut tx = app.db.begin().await.expect("begin");
    copiste::jobs::enqueue(&mut tx, &Noop::default(), by())
        .await
        .expect("enqueue");
    drop(tx);
    assert!(app.counts().await.is_empty());
}

#[tokio::test]
async fn a_batch_enqueue_writes_every_job_in_one_go_and_refuses_a_key() {
    let app = TestApp::new().await;
    let jobs = vec![Noop::default(); 50];
    let mut tx = app.db.begin().await.expect("begin");
    let e = copiste::jobs::enqueue_many(&mut tx, &jobs, by().key("one-key"))
        .await
        .expect_err("a batch with a key");
    assert!(e.to_string().contains("idempotency key"), "{e}");
    let ids = copiste::jobs::enqueue_many(&mut tx, &jobs, by())
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    assert_eq!(ids.len(), 50);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 50);
    assert_eq!(app.counts().await.get("queued"), Some(&50));
    for id in [ids[0], ids[49]] {
        let job = db::jobs::get(&app.db, id).await.expect("get").expect("job");
        assert_eq!(job.kind, "noop");
        assert_eq!(job.created_by, "test");
        assert_eq!(
            db::jobs::count_events(&app.db, id, "enqueued")
                .await
                .expect("events"),
            1
        );
    }
    // Rolled back: nothing.
    let mut tx = app.db.begin().await.expect("begin");
    copiste::jobs::enqueue_many(&mut tx, &jobs, by())
        .await
        .expect("enqueue");
    drop(tx);
    assert_eq!(app.counts().await.values().sum::<i64>(), 50);
}

#[tokio::test]
async fn a_worker_runs_at_most_its_concurrency_at_once() {
    let mut settings = fast_queue();
    settings["worker"]["concurrency"] = json!(2);
    let app = TestApp::with(settings).await;
    let mut tx = app.db.begin().await.expect("begin");
    let ids = copiste::jobs::enqueue_many(&mut tx, &vec![sleeping(100); 12], by())
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    let worker = app.worker().await;
    // Sampled every 5 ms while waiting.
    let most = Cell::new(0);
    eventually_every(
        Duration::from_secs(60),
        Duration::from_millis(5),
        || async {
            let counts = app.counts().await;
            if counts.get("succeeded") == Some(&12) {
                return Ok(());
            }
            most.set(most.get().max(worker.runner().running_count()));
            Err(format!("jobs did not finish: {counts:?}"))
        },
    )
    .await;
    let most = most.get();
    assert!(most <= 2, "{most} jobs ran at once with a concurrency of 2");
    assert!(most >= 1, "no running job was ever seen");
    for id in ids {
        assert_eq!(app.job(id).await.attempts, 1);
    }
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn the_same_id_delivered_five_times_runs_once() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let job = Noop {
        sleep_ms: 500,
        ..Noop::default()
    };
    let id = app.enqueue(&job, by()).await;
    // Four more deliveries through Redis and one straight to the runner.
    let producer = Producer::connect(&app.config).await.expect("producer");
    producer.push(&[id, id, id, id]).await.expect("push");
    let direct = worker.runner().deliver(id).await;
    let job = app.wait_status(id, "succeeded", 20).await;
    assert_eq!(job.attempts, 1);
    assert_eq!(
        db::jobs::count_events(&app.db, id, "started")
            .await
            .expect("events"),
        1
    );
    assert_eq!(
        db::jobs::count_events(&app.db, id, "succeeded")
            .await
            .expect("events"),
        1
    );
    // Whichever delivery won, the others were refused by the claim: the
    // direct one either ran the job (and recorded its success) or found
    // it taken, never ran it a second time nor failed.
    assert!(
        matches!(
            direct,
            DeliveryOutcome::NotClaimed | DeliveryOutcome::Recorded(JobStatus::Succeeded)
        ),
        "the direct delivery: {direct:?}"
    );
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn a_job_of_a_killed_worker_runs_again_after_its_lease_expires() {
    let app = TestApp::with(fast_queue()).await;
    let first = app.worker().await;
    let id = app.enqueue(&sleeping(2500), by()).await;
    app.wait_status(id, "running", 20).await;
    first.kill();
    let second = app.worker().await;
    let job = app.wait_status(id, "succeeded", 30).await;
    assert_eq!(job.attempts, 2, "the crashed attempt counts");
    assert_eq!(
        db::jobs::count_events(&app.db, id, "lease_expired")
            .await
            .expect("events"),
        1
    );
    assert_eq!(job.result, Some(json!({"attempt": 2, "slept_ms": 2500})));
    second
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn crashes_count_towards_max_attempts() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let mut opts = by();
    opts.max_attempts = Some(1);
    let id = app.enqueue(&sleeping(10_000), opts).await;
    app.wait_status(id, "running", 20).await;
    worker.kill();
    let reconciler = app.worker().await;
    let job = app.wait_status(id, "dead", 30).await;
    assert_eq!(job.attempts, 1);
    let error = job.last_error.expect("error kept");
    assert!(
        error.contains("lease") && error.contains("expired"),
        "{error}"
    );
    reconciler
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn retryable_failures_back_off_then_die_after_max_attempts() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let mut opts = by();
    opts.max_attempts = Some(3);
    let id = app.enqueue(&failing(NoopFailure::Retryable), opts).await;
    let job = app.wait_status(id, "dead", 30).await;
    assert_eq!(job.attempts, 3);
    let error = job.last_error.expect("error kept");
    assert!(
        error.contains("attempts exhausted (3/3)") && error.contains("attempt 3"),
        "{error}"
    );
    let events = db::jobs::events(&app.db, id).await.expect("events");
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "enqueued",
            "started",
            "retry_scheduled",
            "started",
            "retry_scheduled",
            "started",
            "dead"
        ]
    );
    // Backoff: base 0.2 s then 0.4 s, each within +/-25 % jitter, as
    // scheduled (the event says when the next attempt is due, written by
    // the statement that recorded it: no delivery time in it); and no
    // attempt started before it was due.
    let due = |i: usize| {
        let detail = events[i].detail.as_deref().expect("a retry says when");
        let at = detail
            .strip_prefix("at ")
            .and_then(|d| d.split_once(": "))
            .map(|(at, _)| at)
            .expect("'at <time>: <error>'");
        chrono::DateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f%#z")
            .unwrap_or_else(|e| panic!("{at}: {e}"))
            .with_timezone(&chrono::Utc)
    };
    for (retry, base_ms) in [(2, 200), (4, 400)] {
        let delay = (due(retry) - events[retry].at).num_milliseconds();
        assert!(
            (base_ms * 3 / 4..=base_ms * 5 / 4).contains(&delay),
            "retry {retry} scheduled {delay} ms later, for a {base_ms} ms backoff"
        );
        assert!(
            events[retry + 1].at >= due(retry),
            "attempt started at {} before it was due at {}",
            events[retry + 1].at,
            due(retry)
        );
    }
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

/// A job that fails twice then succeeds: three attempts, and the job
/// shows no error (its events keep the earlier attempts' errors).
#[tokio::test]
async fn a_retryable_failure_then_success() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let id = app
        .enqueue(
            &Noop {
                fail: NoopFailure::Retryable,
                fail_attempts: 2,
                ..Noop::default()
            },
            by(),
        )
        .await;
    let job = app.wait_status(id, "succeeded", 30).await;
    assert_eq!(job.attempts, 3);
    assert_eq!(
        job.last_error, None,
        "a succeeded job shows no earlier error"
    );
    assert_eq!(
        db::jobs::count_events(&app.db, id, "retry_scheduled")
            .await
            .expect("events"),
        2
    );
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn permanent_failures_and_panics() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let permanent = app.enqueue(&failing(NoopFailure::Permanent), by()).await;
    let partial = app.enqueue(&failing(NoopFailure::Partial), by()).await;
    let mut opts = by();
    opts.max_attempts = Some(2);
    let panics = app.enqueue(&failing(NoopFailure::Panic), opts).await;
    let job = app.wait_status(permanent, "dead", 20).await;
    assert_eq!(job.attempts, 1, "permanent errors are not retried");
    assert!(job.last_error.expect("error").contains("permanent failure"));
    let job = app.wait_status(partial, "failed", 20).await;
    assert_eq!(job.result, Some(json!({"partial": true})));
    let job = app.wait_status(panics, "dead", 20).await;
    assert_eq!(job.attempts, 2, "a panic is retried like a crash");
    assert!(job.last_error.expect("error").contains("panicked"));
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn an_unknown_kind_is_dead_with_the_reason() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let mut tx = app.db.begin().await.expect("begin");
    let id = copiste::jobs::enqueue_raw(&mut tx, "no-such-kind", json!({}), 3, 0, by())
        .await
        .expect("enqueue")
        .id();
    tx.commit().await.expect("commit");
    let job = app.wait_status(id, "dead", 20).await;
    assert!(
        job.last_error
            .expect("error")
            .contains("unknown job kind \"no-such-kind\"")
    );
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn retry_by_hand_and_cancel() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    // A dead job retried by hand runs again with fresh attempts.
    let id = app.enqueue(&failing(NoopFailure::Permanent), by()).await;
    app.wait_status(id, "dead", 20).await;
    assert_eq!(
        db::jobs::retry_by_hand(&app.db, id, "test")
            .await
            .expect("retry")
            .map(|s| s.as_str()),
        Some("dead")
    );
    app.wait_status(id, "dead", 20).await;
    assert_eq!(
        db::jobs::count_events(&app.db, id, "started")
            .await
            .expect("events"),
        2
    );
    assert_eq!(
        db::jobs::count_events(&app.db, id, "retried_by_hand")
            .await
            .expect("events"),
        1
    );
    // A succeeded job cannot be retried.
    let ok = app.enqueue(&Noop::default(), by()).await;
    app.wait_status(ok, "succeeded", 20).await;
    assert_eq!(
        db::jobs::retry_by_hand(&app.db, ok, "test")
            .await
            .expect("retry")
            .map(|s| s.as_str()),
        Some("succeeded")
    );
    assert_eq!(app.job(ok).await.status.as_str(), "succeeded");

    // A queued job (not due yet) is cancelled and never runs.
    let mut later = by();
    later.run_at = Some(chrono::Utc::now() + chrono::Duration::seconds(2));
    let queued = app.enqueue(&Noop::default(), later).await;
    assert_eq!(
        db::jobs::cancel(&app.db, queued, "test")
            .await
            .expect("cancel")
            .map(|s| s.as_str()),
        Some("queued")
    );
    // A running job is cancelled and stopped by its worker's heartbeat.
    let running = app.enqueue(&sleeping(20_000), by()).await;
    app.wait_status(running, "running", 20).await;
    assert_eq!(
        db::jobs::cancel(&app.db, running, "test")
            .await
            .expect("cancel")
            .map(|s| s.as_str()),
        Some("running")
    );
    // The worker's heartbeat (every lease/3) sees the cancellation and
    // aborts the run.
    eventually(Duration::from_secs(20), || async {
        (worker.runner().running_count() == 0).then_some(())
    })
    .await;
    assert_eq!(app.job(queued).await.status.as_str(), "cancelled");
    assert_eq!(app.job(running).await.status.as_str(), "cancelled");
    assert_eq!(
        db::jobs::count_events(&app.db, queued, "started")
            .await
            .expect("events"),
        0
    );
    assert_eq!(
        worker.runner().running_count(),
        0,
        "the cancelled job was stopped"
    );
    // A cancelled job can be retried by hand.
    assert_eq!(
        db::jobs::retry_by_hand(&app.db, queued, "test")
            .await
            .expect("retry")
            .map(|s| s.as_str()),
        Some("cancelled")
    );
    app.wait_status(queued, "succeeded", 20).await;
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn shutdown_lets_short_jobs_finish_and_releases_long_ones() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let short = app.enqueue(&sleeping(300), by()).await;
    let long = app.enqueue(&sleeping(30_000), by()).await;
    app.wait_status(short, "running", 20).await;
    app.wait_status(long, "running", 20).await;
    worker
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
    assert_eq!(app.job(short).await.status.as_str(), "succeeded");
    let released = app.job(long).await;
    assert_eq!(released.status.as_str(), "queued");
    assert_eq!(released.attempts, 0, "a released run does not count");
    assert_eq!(
        db::jobs::count_events(&app.db, long, "released")
            .await
            .expect("events"),
        1
    );
}

#[tokio::test]
async fn progress_is_recorded() {
    let app = TestApp::with(fast_queue()).await;
    let worker = app.worker().await;
    let id = app
        .enqueue(
            &Noop {
                sleep_ms: 1200,
                steps: 4,
                ..Noop::default()
            },
            by(),
        )
        .await;
    let seen_partial = Cell::new(false);
    let job = eventually(Duration::from_secs(20), || async {
        let job = app.job(id).await;
        if job.status.as_str() == "running"
            && matches!((job.progress_done, job.progress_total), (Some(d), Some(4)) if d < 4)
        {
            seen_partial.set(true);
        }
        (job.status.as_str() == "succeeded").then_some(job)
    })
    .await;
    assert_eq!((job.progress_done, job.progress_total), (Some(4), Some(4)));
    assert!(seen_partial.get(), "progress was visible while running");
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn the_pump_keeps_at_most_a_window_of_ids_in_redis() {
    let mut settings = fast_queue();
    settings["queue"]["window"] = json!(5);
    settings["worker"]["concurrency"] = json!(2);
    let app = TestApp::with(settings).await;
    let mut tx = app.db.begin().await.expect("begin");
    for _ in 0..60 {
        copiste::jobs::enqueue(&mut tx, &sleeping(30), by())
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let worker = app.worker().await;
    let redis = Producer::connect(&app.config).await.expect("producer");
    // Sampled every 10 ms while waiting: the ids Redis holds waiting to
    // be fetched, and those the ledger counts as pushed and not claimed.
    let max_in_redis = Cell::new(0);
    let max_in_flight = Cell::new(0);
    eventually_every(
        Duration::from_secs(60),
        Duration::from_millis(10),
        || async {
            let in_redis = redis.holdings().await.expect("ids in Redis").waiting;
            max_in_redis.set(max_in_redis.get().max(in_redis));
            let in_flight = copiste_tools::queries::in_flight(&app.db)
                .await
                .expect("in flight");
            max_in_flight.set(max_in_flight.get().max(in_flight));
            let counts = app.counts().await;
            if counts.get("succeeded") == Some(&60) {
                return Ok(());
            }
            Err(format!("jobs did not finish: {counts:?}"))
        },
    )
    .await;
    let (max_in_redis, max_in_flight) = (max_in_redis.get(), max_in_flight.get());
    assert!(
        max_in_redis <= 5,
        "{max_in_redis} ids waiting in Redis with a window of 5"
    );
    assert!(
        max_in_flight <= 5,
        "{max_in_flight} ids pushed and not claimed with a window of 5"
    );
    // The consumer may fetch ids as soon as they are pushed, so none may
    // ever be seen waiting; the ledger's count shows the pump worked.
    assert!(max_in_flight > 0, "no id was ever pushed");
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn higher_priority_jobs_are_delivered_first() {
    let mut settings = fast_queue();
    settings["queue"]["window"] = json!(1);
    settings["worker"]["concurrency"] = json!(1);
    let app = TestApp::with(settings).await;
    let mut ids = Vec::new();
    for priority in [0i16, 5, 1] {
        let mut opts = by();
        opts.priority = Some(priority);
        ids.push(app.enqueue(&Noop::default(), opts).await);
    }
    let worker = app.worker().await;
    app.wait_finished(3, 30).await;
    let mut started = Vec::new();
    for id in &ids {
        started.push(app.job(*id).await.started_at.expect("started"));
    }
    assert!(
        started[1] < started[2] && started[2] < started[0],
        "{started:?}"
    );
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn flushall_mid_run_and_every_job_still_finishes() {
    // A Redis of this test's own, so that flushing it disturbs no other test.
    let config = copiste::config::Config::load_with_overrides(json!({})).expect("config");
    let redis = copiste::local_services::throwaway_redis(&config)
        .await
        .expect("throwaway redis");
    let mut settings = fast_queue();
    settings["redis"] = json!({"url": redis.redis_url.as_str()});
    let app = TestApp::with(settings).await;
    let mut tx = app.db.begin().await.expect("begin");
    for _ in 0..400 {
        copiste::jobs::enqueue(&mut tx, &sleeping(20), by())
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let worker = app.worker().await;
    // Let some finish, then lose everything Redis holds.
    eventually_every(
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async {
            let succeeded = app.counts().await.get("succeeded").copied().unwrap_or(0);
            if succeeded >= 50 {
                return Ok(());
            }
            Err(format!(
                "only {succeeded} of 50 jobs succeeded before the flush"
            ))
        },
    )
    .await;
    let client = redis::Client::open(redis.redis_url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("flushall");
    assert!(
        app.counts().await.get("succeeded").copied().unwrap_or(0) < 400,
        "flushed mid-run"
    );
    app.wait_finished(400, 90).await;
    assert_eq!(app.counts().await.get("succeeded"), Some(&400));
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn a_backlog_of_20000_noop_jobs_all_finish() {
    let mut settings = fast_queue();
    settings["worker"] = json!({"lease_secs": 30, "concurrency": 16, "shutdown_grace_secs": 1});
    let app = TestApp::with(settings).await;
    let mut tx = app.db.begin().await.expect("begin");
    for _ in 0..20_000 {
        copiste::jobs::enqueue(&mut tx, &Noop::default(), by())
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let worker = app.worker().await;
    app.wait_finished(20_000, 600).await;
    assert_eq!(app.counts().await.get("succeeded"), Some(&20_000));
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
    copiste::queue::purge(&app.config).await.expect("purge");
}

/// Every slot of a worker is taken by long jobs for many times
/// `redeliver_after_secs` while others wait: the ids waiting in Redis (or
/// fetched by the consumer, waiting for a slot) are not lost, so they are
/// not pushed again; Redis never holds more than the window, and every
/// job ends. (Before, each reconciliation took them for lost and the pump
/// pushed another window, until apalis' fetch failed for good.)
#[tokio::test]
async fn ids_waiting_for_a_busy_worker_are_not_pushed_again() {
    let mut settings = fast_queue();
    settings["queue"]["window"] = json!(20);
    settings["queue"]["redeliver_after_secs"] = json!(1);
    settings["worker"]["concurrency"] = json!(2);
    settings["worker"]["lease_secs"] = json!(6);
    let app = TestApp::with(settings).await;
    let mut long = by();
    long.priority = Some(5);
    let mut tx = app.db.begin().await.expect("begin");
    for _ in 0..2 {
        copiste::jobs::enqueue(&mut tx, &sleeping(9_000), long.clone())
            .await
            .expect("enqueue");
    }
    for _ in 0..60 {
        copiste::jobs::enqueue(&mut tx, &Noop::default(), by())
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let producer = Producer::connect(&app.config).await.expect("producer");
    let worker = app.worker().await;
    // Sampled every 100 ms while waiting.
    let (most_waiting, most) = (Cell::new(0), Cell::new(0));
    eventually_every(
        Duration::from_secs(90),
        Duration::from_millis(100),
        || async {
            let held = producer.holdings().await.expect("holdings");
            most_waiting.set(most_waiting.get().max(held.waiting));
            most.set(most.get().max(held.total()));
            let counts = app.counts().await;
            if counts.get("succeeded") == Some(&62) {
                return Ok(());
            }
            Err(format!(
                "jobs did not finish: {counts:?}, Redis holds {held:?}"
            ))
        },
    )
    .await;
    let (most_waiting, most) = (most_waiting.get(), most.get());
    assert!(
        most_waiting <= 20,
        "{most_waiting} ids waited in Redis with a window of 20"
    );
    // Plus, at most, the consumer's deliveries whose runs ended and whose
    // acknowledgements apalis sends in batches (of the queue's fetch
    // batch, 32).
    assert!(most <= 20 + 32, "Redis held {most} ids with a window of 20");
    assert!(most > 0);
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

/// A queue past what apalis-redis can fetch from (left by an older
/// version, or written by hand) does not stop the worker for good: the
/// reconciler empties it and the ledger hands its jobs over again.
#[tokio::test]
async fn a_worker_recovers_by_itself_from_an_overflowing_redis_queue() {
    let app = TestApp::with(fast_queue()).await;
    let producer = Producer::connect(&app.config).await.expect("producer");
    // 9 000 ids of no job: apalis' fetch fails on them ("too many results
    // to unpack") until they are gone.
    let junk: Vec<uuid::Uuid> = (0..9_000).map(|_| uuid::Uuid::new_v4()).collect();
    for chunk in junk.chunks(1000) {
        producer.push(chunk).await.expect("push");
    }
    assert!(producer.waiting().await.expect("waiting") >= 9_000);
    let mut tx = app.db.begin().await.expect("begin");
    for _ in 0..20 {
        copiste::jobs::enqueue(&mut tx, &Noop::default(), by())
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let worker = app.worker().await;
    app.wait_finished(20, 60).await;
    assert_eq!(app.counts().await.get("succeeded"), Some(&20));
    assert!(producer.waiting().await.expect("waiting") <= 200);
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

/// What apalis keeps of every acknowledged delivery (its `meta:<id>`
/// hash, `data` and `done` entries) is removed while the worker runs, not
/// only by the nightly housekeeping: Redis stays flat.
#[tokio::test]
async fn redis_stays_flat_while_jobs_run() {
    let app = TestApp::with(fast_queue()).await;
    let mut tx = app.db.begin().await.expect("begin");
    for _ in 0..2_000 {
        copiste::jobs::enqueue(&mut tx, &Noop::default(), by())
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let worker = app.worker().await;
    app.wait_finished(2_000, 120).await;
    // The sweep runs every second.
    let keys = eventually(Duration::from_secs(10), || async {
        let n = app.redis_keys().await;
        (n < 50).then_some(n)
    })
    .await;
    assert!(keys < 50, "{keys} Redis keys left after 2 000 jobs");
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

/// After PostgreSQL restarts (`pg_ctl stop -m immediate`, then start),
/// the pump listens for job notifications again: a job enqueued then is
/// picked up at once, not at the next poll (here a minute away).
#[tokio::test]
async fn job_notifications_come_back_after_postgres_restarts() {
    let config = copiste::config::Config::load_with_overrides(json!({})).expect("config");
    let mut pg = copiste::local_services::throwaway_postgres(&config)
        .await
        .expect("throwaway postgres");
    let mut settings = fast_queue();
    // No poll within the test: a job is picked up on its notification.
    settings["queue"]["pump_interval_ms"] = json!(3_600_000);
    settings["database"] = json!({"url": pg.database_url.as_str()});
    let app = TestApp::with(settings).await;
    let worker = app.worker().await;
    let before = app.enqueue(&Noop::default(), by()).await;
    app.wait_status(before, "succeeded", 10).await;

    // Down longer than the pool's acquire timeout (10 s), within which the
    // listener's own reconnection would still succeed: it gives up, as
    // during a slow `pg_ctl restart -m immediate` (crash recovery).
    // The outage's length is the scenario, not a wait for something.
    pg.stop_postgres().expect("stop");
    tokio::time::sleep(Duration::from_secs(12)).await;
    pg.start_postgres_again().await.expect("start");
    // The pump listens again: its LISTEN connection is back.
    let pool = sqlx::PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("connect");
    eventually(Duration::from_secs(30), || async {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND query ILIKE 'LISTEN%copiste_jobs%'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (listening > 0).then_some(())
    })
    .await;
    pool.close().await;
    let after = eventually(Duration::from_secs(20), || async {
        let mut tx = app.db.begin().await.ok()?;
        let id = copiste::jobs::enqueue(&mut tx, &Noop::default(), by())
            .await
            .ok()?
            .id();
        tx.commit().await.ok()?;
        Some(id)
    })
    .await;
    // The next poll is an hour away: only the notification brings it.
    app.wait_status(after, "succeeded", 30).await;
    worker
        .shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
}

/// Scans of `jobs` that did not go through its primary key (sequential
/// scans and scans of its other indexes), each with its count, as the
/// statistics of the database show them. A scan's count, unlike its rows
/// read, also shows an index walked through for a row it holds in a later
/// column (every queued job read to find one id), which reports one row.
async fn scans_besides_the_primary_key(pool: &sqlx::PgPool) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT 'sequential', coalesce(seq_scan, 0) FROM pg_stat_user_tables
          WHERE relname = 'jobs' AND seq_scan > 0
         UNION ALL
         SELECT indexrelname::text, idx_scan FROM pg_stat_user_indexes
          WHERE relname = 'jobs' AND indexrelname <> 'jobs_pkey' AND idx_scan > 0",
    )
    .fetch_all(pool)
    .await
    .expect("read the table's statistics")
}

/// A worker's connections for claims, lease extensions and outcomes keep
/// the plans they made at their first statements, typically on an empty
/// or quiet ledger (no queued job in the statistics). Once a backlog
/// arrives, those plans must still reach each job by its primary key.
/// Before, they scanned every queued or running job (the `jobs_active`
/// index, later `jobs_status_recent`) at each claim and each outcome: a
/// lone worker process started on a fresh ledger, as the bench's is, ran
/// at a fifth of its speed, and a national backlog made claims quadratic.
#[tokio::test]
async fn claims_planned_on_an_empty_ledger_still_reach_jobs_by_primary_key() {
    const JOBS: usize = 2000;
    let app = TestApp::new().await;
    let mut url = app.config.database_url();
    url.query_pairs_mut()
        .append_pair("application_name", "plans_on_empty");
    let runs = db::Db::connect(&url, 2).await.expect("connect");
    // The statements' first executions (their plans) on the empty ledger.
    let nobody = uuid::Uuid::new_v4();
    let none = db::jobs::claim_many(&runs, &[nobody], "w", 60.0)
        .await
        .expect("claim");
    assert!(none.is_empty());
    db::jobs::extend_leases(&runs, &[nobody], "w", 60.0)
        .await
        .expect("extend");
    let outcome = |id| db::jobs::Finished {
        id,
        attempt: 1,
        status: JobStatus::Succeeded,
        result: json!(null),
    };
    db::jobs::finish_many(&runs, "w", vec![outcome(nobody)])
        .await
        .expect("finish");
    // A backlog.
    let mut tx = app.db.begin().await.expect("begin");
    let mut ids = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        let job = copiste::jobs::enqueue(&mut tx, &Noop::default(), by())
            .await
            .expect("enqueue");
        ids.push(job.id());
    }
    tx.commit().await.expect("commit");
    // Claimed, extended and finished 64 at a time, as a busy worker does.
    for batch in ids.chunks(64) {
        let claimed = db::jobs::claim_many(&runs, batch, "w", 60.0)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), batch.len());
        let held = db::jobs::extend_leases(&runs, batch, "w", 60.0)
            .await
            .expect("extend");
        assert_eq!(held.len(), batch.len());
        let finished =
            db::jobs::finish_many(&runs, "w", batch.iter().map(|&id| outcome(id)).collect())
                .await
                .expect("finish");
        assert_eq!(finished.len(), batch.len());
    }
    // A backend's table statistics reach the server by the time it has
    // left (flushed on exit).
    runs.close().await;
    let pool = sqlx::PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("connect");
    eventually(Duration::from_secs(30), || async {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'plans_on_empty'",
        )
        .fetch_one(&pool)
        .await
        .expect("read the server's activity");
        (left == 0).then_some(())
    })
    .await;
    let scans = scans_besides_the_primary_key(&pool).await;
    // Before, the lookups went through `jobs_status_recent` (status,
    // creation, id), reading every queued job to find each id: about one
    // scan per job and statement (6 000 here), each as long as the
    // backlog. Looked up by id alone, no other scan is left; a handful is
    // allowed for the statistics' own reads of a young table.
    let total: i64 = scans.iter().map(|(_, n)| n).sum();
    assert!(
        total < 50,
        "claiming, extending and finishing {JOBS} jobs scanned jobs besides the primary key: {scans:?}"
    );
}

/// A worker refreshes the planner's statistics of the tables the night
/// grows. Found at a national scale of 0.4 (2026-12-07, autovacuum off):
/// plans made while `grade_exports` was nearly empty read all of it for
/// each unit, from 1 500 to 4 300 buffers a unit as it grew to 330 000
/// rows. Here the jobs table grows from nothing by 1 500 jobs, and a
/// worker analyses it without being asked.
#[tokio::test]
async fn a_worker_analyses_the_tables_the_night_grows() {
    let app = TestApp::with(fast_queue()).await;
    let batch = vec![Noop::default(); 1_500];
    let mut tx = app.db.begin().await.expect("begin");
    copiste::jobs::enqueue_many(&mut tx, &batch, by())
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    let worker = app.worker().await;
    let analysed = app.analysed_tables("jobs").await;
    worker
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert!(analysed.iter().any(|t| t == "jobs"), "{analysed:?}");
}
