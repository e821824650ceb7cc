//! e) Payloads no worker can run, mixed with good jobs: rows in the ledger
//! with a payload that does not decode for their kind or of an unknown
//! kind, and, pushed to Redis behind the pump's back, ids of no job and a
//! task that is not a delivery at all. Each bad row is dead with its
//! reason; the worker processes keep running (never restarted) and run
//! every good job.

use std::time::{Duration, Instant};

use copiste::jobs::{EnqueueOptions, noop::Noop};
use serde_json::{Value, json};

use super::harness::{Suite, report, secs};

const GOOD: i64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite (real processes): scripts/test runs it"]
async fn e_bad_payloads_die_with_a_reason_and_the_workers_run_the_rest() {
    let started = Instant::now();
    let mut suite = Suite::start(json!({})).await;
    let mut a = suite.worker();
    let mut b = suite.worker();
    let (pid_a, pid_b) = (a.pid(), b.pid());

    // Behind the pump's back, straight into apalis' queue: ids of no job,
    // and a task whose data is not a delivery.
    let producer = copiste::queue::Producer::connect(&suite.app.config)
        .await
        .expect("producer");
    let strangers: Vec<uuid::Uuid> = (0..50).map(|_| uuid::Uuid::new_v4()).collect();
    producer.push(&strangers).await.expect("push");
    let queue = copiste::queue::queue_name(&suite.app.config);
    for (i, junk) in ["not json at all", "{\"job_id\": 42}", "[]"]
        .iter()
        .enumerate()
    {
        let task = format!("junk-{i}");
        suite
            .redis_cmd(
                redis::cmd("HSET")
                    .arg(format!("{queue}:data"))
                    .arg(&task)
                    .arg(*junk),
            )
            .await;
        suite
            .redis_cmd(
                redis::cmd("HSET")
                    .arg(format!("{queue}:meta:{task}"))
                    .arg("attempts")
                    .arg(0)
                    .arg("max_attempts")
                    .arg(1)
                    .arg("status")
                    .arg("Pending"),
            )
            .await;
        suite
            .redis_cmd(
                redis::cmd("RPUSH")
                    .arg(format!("{queue}:active"))
                    .arg(&task),
            )
            .await;
    }

    // In the ledger: payloads that do not decode, and unknown kinds.
    let bad: Vec<(&'static str, Value, &str)> = vec![
        ("noop", json!({"sleep_ms": "soon"}), "sleep_ms"),
        ("noop", json!({"unexpected": 1}), "unexpected"),
        ("noop", json!([1, 2, 3]), "noop"),
        ("noop", Value::Null, "noop"),
        ("closure", json!({}), "closure"),
        ("bulk-render", json!({"exam": 12}), "bulk-render"),
        (
            "no-such-kind",
            json!({}),
            "unknown job kind \"no-such-kind\"",
        ),
    ];
    let mut tx = suite.app.db.begin().await.expect("begin");
    let mut bad_ids = Vec::new();
    for (kind, payload, reason) in &bad {
        let id = copiste::jobs::enqueue_raw(
            &mut tx,
            kind,
            payload.clone(),
            3,
            0,
            EnqueueOptions::by("faults"),
        )
        .await
        .expect("enqueue a bad row")
        .id();
        bad_ids.push((id, *reason));
    }
    let good = vec![
        Noop {
            sleep_ms: 5,
            ..Noop::default()
        };
        GOOD as usize
    ];
    copiste::jobs::enqueue_many(&mut tx, &good, EnqueueOptions::by("faults"))
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");

    let total = GOOD + bad.len() as i64;
    suite
        .wait_final(total, Duration::from_secs(60), &mut [&mut a, &mut b])
        .await;
    let counts = suite.counts().await;
    assert_eq!(counts.get("succeeded"), Some(&GOOD), "{counts:?}");
    assert_eq!(counts.get("dead"), Some(&(bad.len() as i64)), "{counts:?}");
    let mut reasons = Vec::new();
    for (id, reason) in &bad_ids {
        let row = suite.app.job(*id).await;
        assert_eq!(row.status.as_str(), "dead", "{row:?}");
        assert_eq!(row.attempts, 1, "a bad payload is not retried: {row:?}");
        let error = row.last_error.clone().unwrap_or_default();
        assert!(
            error.contains(reason),
            "job {} ({}) died with {error:?}, which does not name {reason:?}",
            id,
            row.kind
        );
        reasons.push(error);
    }
    // The junk in Redis is gone, not handed from consumer to consumer:
    // past apalis' detection of a dead consumer (5 missed heartbeats of
    // 2 s), when it gives a dead consumer's tasks back, nothing fails again.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let waiting = producer.holdings().await.expect("holdings");
    for i in 0..3 {
        let left = suite
            .redis_cmd(
                redis::cmd("HEXISTS")
                    .arg(format!("{queue}:data"))
                    .arg(format!("junk-{i}")),
            )
            .await;
        assert_eq!(left, redis::Value::Int(0), "junk-{i} is still in Redis");
    }
    a.assert_alive();
    b.assert_alive();
    assert_eq!((a.pid(), b.pid()), (pid_a, pid_b), "the same processes");
    let restarts = [&a, &b]
        .iter()
        .map(|w| w.log().matches("consumer failed; restarting").count())
        .sum::<usize>();
    // One stop of a consumer per junk task at most (each stop removes
    // every junk task Redis holds): before, every consumer that fetched
    // one stopped, and the task went back to the queue for the next.
    assert!(restarts <= 2, "{restarts} consumer restarts");
    assert!(a.terminate(Duration::from_secs(10)), "clean stop");
    assert!(b.terminate(Duration::from_secs(10)), "clean stop");
    report(
        "e bad payloads",
        &format!(
            "{} bad rows dead at their first attempt with their reason, 50 unknown ids and 3 junk \
             tasks pushed to Redis ({} left there), {GOOD} good jobs succeeded, consumer restarts \
             {restarts}, workers never exited, total {}",
            bad.len(),
            waiting.total(),
            secs(started.elapsed())
        ),
    );
    println!("reasons: {reasons:#?}");
}
