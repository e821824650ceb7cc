//! g) PostgreSQL crashes (`pg_ctl stop -m immediate`) while a zip is being
//! built, stays down longer than the lease and the pools' acquire timeout,
//! and starts again: the worker process keeps running, the job finishes
//! with the bytes of an uninterrupted build, and the zip is never
//! half-visible: a watcher polling the store and the ledger sees no
//! object at a final key that is not a complete part, and never a
//! `downloads` row before all of its parts are at their final keys.

use std::{
    cell::RefCell,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use super::harness::{self, Suite, report, secs};
use crate::support::eventually_every;

const PHILO: &str = "BAC26-PHILO";
const CANDIDATES: u32 = 800;
const MAX_PART_BYTES: u64 = 10 * 1024 * 1024;
/// Longer than the lease (3 s) and the pools' acquire timeout (10 s).
const DOWN: Duration = Duration::from_secs(12);

/// What the watcher saw.
#[derive(Debug, Default)]
struct Seen {
    polls: u64,
    /// Polls that found objects at the job's final keys.
    with_objects: u64,
    /// …while the ledger said there was no `downloads` row for the job.
    without_row: u64,
    /// …while the ledger did not answer.
    objects_ledger_down: u64,
    /// Polls while the ledger did not answer.
    ledger_down: u64,
    /// What must never be: an object at a final key that is not a
    /// complete part, or a row while parts are missing.
    violations: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite (real processes): scripts/test runs it"]
async fn g_postgres_crashes_during_a_zip_build() {
    let started = Instant::now();
    let mut suite = Suite::start(json!({
        "downloads": {"max_part_bytes": MAX_PART_BYTES},
        "render": {"cache_bytes": 0},
    }))
    .await;
    suite.app.import_demo_seeded(2, CANDIDATES, 27).await;
    let mut worker = suite.worker();
    harness::close_exam(&suite, PHILO, &mut [&mut worker]).await;
    let uai = harness::busiest_establishment(&suite.app, PHILO).await;
    let opts = || copiste::jobs::EnqueueOptions::by("faults");

    // The same zip built without interruption.
    let (baseline_parts, expected) =
        harness::baseline_zip(&suite, PHILO, &uai, &mut [&mut worker]).await;
    let sizes: Vec<u64> = baseline_parts.iter().map(|p| p.bytes).collect();
    let n = sizes.len();
    assert!(n >= 8, "{n} parts: make the zip bigger");

    let job = suite
        .app
        .enqueue(&harness::zip_job(PHILO, &uai), opts())
        .await;
    // The job's final keys are in a folder named after it.
    let folder = format!("/{job}/");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let storage = suite.app.storage.clone();
        let url = suite.app.config.database_url();
        let sizes = sizes.clone();
        let prefix = format!("downloads/{PHILO}/");
        tokio::spawn(async move {
            let options = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_millis(300));
            let pool = options.connect_lazy(url.as_str()).expect("pool");
            // Watches until told to stop: not a wait. Raw SQL on a pool of
            // its own that gives up at once (the `db` pools wait 10 s for a
            // connection): a poll while the ledger is down must not hang.
            while !stop.load(Ordering::SeqCst) {
                let row: Result<i64, _> =
                    sqlx::query_scalar("SELECT count(*) FROM downloads WHERE job_id = $1")
                        .bind(job)
                        .fetch_one(&pool)
                        .await;
                let listed = storage.list(&prefix).await.expect("list");
                let mut at_final: Vec<_> = listed
                    .into_iter()
                    .filter(|o| o.key.contains(&folder))
                    .collect();
                at_final.sort_by(|a, b| a.key.cmp(&b.key));
                {
                    let mut s = seen.lock().expect("seen");
                    s.polls += 1;
                    for o in &at_final {
                        // `…_partN.zip`, or `….zip` for the first part.
                        let part = o
                            .key
                            .rsplit_once("_part")
                            .and_then(|(_, n)| n.strip_suffix(".zip"))
                            .map_or(Some(1), |n| n.parse::<usize>().ok());
                        let complete = !o.partial
                            && part.is_some_and(|p| p >= 1 && sizes.get(p - 1) == Some(&o.size));
                        if !complete {
                            s.violations
                                .push(format!("{} ({} bytes) at a final key", o.key, o.size));
                        }
                    }
                    if !at_final.is_empty() {
                        s.with_objects += 1;
                    }
                    match row {
                        Ok(0) if !at_final.is_empty() => s.without_row += 1,
                        Ok(0) => {}
                        Ok(_) if at_final.len() != sizes.len() => s.violations.push(format!(
                            "a downloads row with {} of {} parts at their keys",
                            at_final.len(),
                            sizes.len()
                        )),
                        Ok(_) => {}
                        Err(_) => {
                            s.ledger_down += 1;
                            if !at_final.is_empty() {
                                s.objects_ledger_down += 1;
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            pool.close().await;
        })
    };

    // PostgreSQL goes down once the build has staged a part.
    {
        let alive = RefCell::new(&mut worker);
        eventually_every(
            Duration::from_secs(30),
            Duration::from_millis(5),
            || async {
                if harness::staged_parts(&suite.app, job).await >= 1 {
                    return Ok(());
                }
                alive.borrow_mut().assert_alive();
                Err("the build does not start".to_owned())
            },
        )
        .await;
    }
    suite.pg.stop_postgres().expect("pg_ctl stop -m immediate");
    let crashed = Instant::now();
    tokio::time::sleep(DOWN).await;
    let alive_while_down = worker.alive();
    suite.pg.start_postgres_again().await.expect("start again");
    let restarted = Instant::now();
    assert!(
        alive_while_down,
        "the worker exited while PostgreSQL was down:\n{}",
        worker.log_tail(30)
    );
    let row = suite
        .wait_job(
            job,
            "succeeded",
            Duration::from_secs(60),
            &mut [&mut worker],
        )
        .await;
    let recovered = restarted.elapsed();
    stop.store(true, Ordering::SeqCst);
    watcher.await.expect("watcher");
    assert!(worker.terminate(Duration::from_secs(10)), "clean stop");

    // The crash interrupted the build: a second run finished it.
    let result = row.result.clone().expect("result");
    let resumed = result["resumed_parts"].as_u64().expect("resumed_parts");
    assert!(
        row.attempts >= 2 && resumed >= 1,
        "the build was not interrupted (attempts {}, {resumed} parts resumed)",
        row.attempts
    );
    let parts = harness::result_parts(&row);
    assert_eq!(harness::stored_digests(&suite.app, &parts).await, expected);
    let pool = sqlx::PgPool::connect(suite.app.config.database_url().as_str())
        .await
        .expect("pool");
    // Raw SQL: no `db` function counts a job's downloads rows.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM downloads WHERE job_id = $1")
        .bind(job)
        .fetch_one(&pool)
        .await
        .expect("downloads");
    pool.close().await;
    assert_eq!(rows, 1, "one downloads row for the job");
    let seen = Arc::try_unwrap(seen)
        .map(|m| m.into_inner().expect("seen"))
        .unwrap_or_default();
    assert!(seen.violations.is_empty(), "{:#?}", seen.violations);
    let staged = suite
        .app
        .storage
        .list(&copiste::jobs::bulk_render::staging_dir(job))
        .await
        .expect("list");
    assert!(
        staged.iter().all(|o| o.partial),
        "every complete staged part was moved: {staged:?}"
    );

    report(
        "g Postgres crash during a zip",
        &format!(
            "{} copies in {n} parts, down {} after the first part, worker alive, attempts {}, \
             {resumed} parts resumed, every part's SHA-256 equal, 1 downloads row; watcher: \
             {} polls ({} while the ledger was down), {} with final keys ({} before the row, {} \
             while the ledger was down), none partial; done {} after the restart ({} after the crash), total {}",
            result["copies"],
            secs(DOWN),
            row.attempts,
            seen.polls,
            seen.ledger_down,
            seen.with_objects,
            seen.without_row,
            seen.objects_ledger_down,
            secs(recovered),
            secs(crashed.elapsed()),
            secs(started.elapsed())
        ),
    );
}
