//! d) A soak: 50 000 no-op jobs through two worker processes. Redis' key
//! count and each worker's resident memory, sampled every second,
//! stay flat: min/max printed, bounds asserted.

use std::{
    cell::RefCell,
    time::{Duration, Instant},
};

use copiste::jobs::{EnqueueOptions, noop::Noop};
use serde_json::json;

use super::harness::{self, Suite, report, secs};
use crate::support::{eventually, eventually_every};

const JOBS: i64 = 50_000;
const WINDOW: u64 = 200;
const CONCURRENCY: u64 = 16;
/// Elapsed, succeeded, DBSIZE, keys of the namespace, RSS (KiB) of each
/// worker.
type Sample = (Duration, i64, u64, usize, u64, u64);

const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite (real processes): scripts/test runs it"]
async fn d_soak_of_fifty_thousand_noop_jobs_stays_flat() {
    let started = Instant::now();
    let mut suite = Suite::start(json!({
        "worker": {"concurrency": CONCURRENCY, "lease_secs": 30},
        "queue": {"window": WINDOW},
    }))
    .await;
    let chunk = vec![Noop::default(); 10_000];
    let mut tx = suite.app.db.begin().await.expect("begin");
    for _ in 0..JOBS / 10_000 {
        copiste::jobs::enqueue_many(&mut tx, &chunk, EnqueueOptions::by("faults"))
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let mut a = suite.worker();
    let mut b = suite.worker();
    let run_started = Instant::now();
    // (elapsed, succeeded, DBSIZE, keys of the namespace, RSS KiB of each),
    // every second from a second in, until every job succeeded.
    let samples: RefCell<Vec<Sample>> = RefCell::default();
    tokio::time::sleep(SAMPLE_EVERY).await;
    {
        let workers = RefCell::new([&mut a, &mut b]);
        let within = Duration::from_secs(300).saturating_sub(run_started.elapsed());
        eventually_every(within, SAMPLE_EVERY, || async {
            harness::assert_alive(&mut *workers.borrow_mut());
            let done = suite.count("succeeded").await;
            let (dbsize, keys) = (suite.dbsize().await, suite.app.redis_keys().await);
            let rss = {
                let w = workers.borrow();
                (w[0].rss_kib().unwrap_or(0), w[1].rss_kib().unwrap_or(0))
            };
            let elapsed = run_started.elapsed();
            samples
                .borrow_mut()
                .push((elapsed, done, dbsize, keys, rss.0, rss.1));
            if done >= JOBS {
                return Ok(());
            }
            Err(format!("{done} of {JOBS} jobs succeeded"))
        })
        .await;
    }
    let samples = samples.into_inner();
    let drained = run_started.elapsed();
    // Once idle, the sweep (every second) leaves only the queue's own keys.
    let idle_keys = eventually(Duration::from_secs(10), || async {
        let n = suite.app.redis_keys().await;
        (n < 50).then_some(n)
    })
    .await;
    let counts = suite.counts().await;
    assert_eq!(counts.get("succeeded"), Some(&JOBS), "{counts:?}");
    assert!(a.terminate(Duration::from_secs(10)), "clean stop");
    assert!(b.terminate(Duration::from_secs(10)), "clean stop");

    let min_max = |f: &dyn Fn(&Sample) -> u64| {
        let values: Vec<u64> = samples.iter().map(f).collect();
        (
            values.iter().copied().min().unwrap_or(0),
            values.iter().copied().max().unwrap_or(0),
        )
    };
    let dbsize = min_max(&|s| s.2);
    let keys = min_max(&|s| s.3 as u64);
    let rss = min_max(&|s| s.4.max(s.5));
    // Redis holds at most the window of waiting ids, what the consumers
    // fetched (twice their slots each) and what finished within a second
    // (swept every second), each with its metadata key: a bound that does
    // not grow with the backlog.
    let throughput = JOBS as u64 / drained.as_secs().max(1);
    let key_bound = 2 * (WINDOW + 2 * 2 * CONCURRENCY) + 2 * throughput + 50;
    assert!(
        keys.1 <= key_bound && dbsize.1 <= key_bound,
        "Redis grew: keys {keys:?}, DBSIZE {dbsize:?} (bound {key_bound}); samples {samples:?}"
    );
    // Memory: after the first quarter of the run (warm-up: pools, caches),
    // no worker grows by more than 32 MiB.
    let quarter = samples.len() / 4;
    let warm = samples[..quarter.max(1)]
        .iter()
        .map(|s| s.4.max(s.5))
        .max()
        .unwrap_or(0);
    assert!(
        rss.1 <= warm + 32 * 1024,
        "worker memory grew from {warm} KiB to {} KiB; samples {samples:?}",
        rss.1
    );
    report(
        "d soak",
        &format!(
            "{JOBS} noop jobs, 2 workers x {CONCURRENCY}, window {WINDOW}, {} samples every {}: \
             namespace keys {}-{} (bound {key_bound}; {idle_keys} once idle), DBSIZE {}-{}, worker RSS {}-{} MiB \
             (warm {} MiB), {throughput} jobs/s, drained in {}, total {}",
            samples.len(),
            secs(SAMPLE_EVERY),
            keys.0,
            keys.1,
            dbsize.0,
            dbsize.1,
            rss.0 / 1024,
            rss.1 / 1024,
            warm / 1024,
            secs(drained),
            secs(started.elapsed())
        ),
    );
}
