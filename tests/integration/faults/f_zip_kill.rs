//! f) A zip build (`bulk-render`) whose worker process is killed with
//! SIGKILL three times at random points of the build, each time after the
//! run staged at least one more part, and started again: the job resumes
//! from its checkpoint each time and succeeds; every part has the SHA-256
//! of the same zip built first without interruption; and once
//! housekeeping has run (enqueued with `copiste jobs enqueue`), nothing
//! remains under `downloads/` but the objects the two downloads name.

use std::{
    cell::RefCell,
    collections::HashSet,
    time::{Duration, Instant},
};

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use serde_json::json;

use super::harness::{self, Suite, report, secs};
use crate::support::eventually_every;

const PHILO: &str = "BAC26-PHILO";
const CANDIDATES: u32 = 800;
/// About fifty copies (one 150-250 kB scan each) per part.
const MAX_PART_BYTES: u64 = 10 * 1024 * 1024;
const KILLS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite (real processes): scripts/test runs it"]
async fn f_zip_build_survives_three_sigkills_and_resumes() {
    let started = Instant::now();
    let mut suite = Suite::start(json!({
        "downloads": {"max_part_bytes": MAX_PART_BYTES, "abandoned_after_secs": 1},
        // Every run renders every copy it writes (no cache of PDFs).
        "render": {"cache_bytes": 0},
    }))
    .await;
    suite.app.import_demo_seeded(2, CANDIDATES, 26).await;
    let mut worker = suite.worker();
    harness::close_exam(&suite, PHILO, &mut [&mut worker]).await;
    let uai = harness::busiest_establishment(&suite.app, PHILO).await;
    let opts = || copiste::jobs::EnqueueOptions::by("faults");

    // The same zip built without interruption.
    let baseline_started = Instant::now();
    let (baseline_parts, expected) =
        harness::baseline_zip(&suite, PHILO, &uai, &mut [&mut worker]).await;
    let uninterrupted = baseline_started.elapsed();
    let n = baseline_parts.len();
    assert!(n >= 8, "{n} parts: make the zip bigger");
    let per_part = uninterrupted / n as u32;

    // The zip again, killed three times: kill k once the run has staged
    // at least one more part and reached a random target, at a random
    // moment within the part after it.
    let job = suite
        .app
        .enqueue(&harness::zip_job(PHILO, &uai), opts())
        .await;
    let mut rng = StdRng::seed_from_u64(26);
    let mut staged_at_kills = Vec::new();
    let kills_started = Instant::now();
    // The kills: not a wait.
    for k in 0..KILLS {
        let floor = staged_at_kills.last().copied().unwrap_or(0) + 1;
        // Up to three quarters of the parts: the last run has some left.
        let ceiling = (n * (k + 1) * 3 / (4 * KILLS)).max(floor);
        let target = rng.random_range(floor..=ceiling);
        {
            let alive = RefCell::new(&mut worker);
            eventually_every(
                Duration::from_secs(30),
                Duration::from_millis(10),
                || async {
                    let staged = harness::staged_parts(&suite.app, job).await;
                    if staged >= target {
                        return Ok(());
                    }
                    alive.borrow_mut().assert_alive();
                    Err(format!("the build did not stage {target} parts ({staged})"))
                },
            )
            .await;
        }
        let within = per_part.as_millis().max(1) as u64;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..within))).await;
        worker.kill();
        let row = suite.app.job(job).await;
        assert_eq!(
            row.status.as_str(),
            "running",
            "kill {} came after the build ended",
            k + 1
        );
        staged_at_kills.push(harness::staged_parts(&suite.app, job).await);
        worker = suite.worker();
    }
    let row = suite
        .wait_job(
            job,
            "succeeded",
            Duration::from_secs(60),
            &mut [&mut worker],
        )
        .await;
    let resumed_in = kills_started.elapsed();

    // Resumed: the parts of the killed runs are in the final zip.
    let result = row.result.clone().expect("result");
    let resumed = result["resumed_parts"].as_u64().expect("resumed_parts") as usize;
    assert!(
        resumed >= *staged_at_kills.last().expect("kills"),
        "resumed {resumed} parts, {staged_at_kills:?} staged at the kills: {result}"
    );
    let checkpoint = copiste::db::jobs::checkpoint(&suite.app.db, job)
        .await
        .expect("checkpoint")
        .expect("recorded");
    let mut runs: Vec<u64> = checkpoint["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["run"].as_u64().expect("run"))
        .collect();
    assert_eq!(runs.len(), n, "every part recorded once");
    assert!(runs.is_sorted(), "{runs:?}");
    runs.dedup();
    assert!(
        runs.len() > KILLS,
        "each killed run staged parts the last one kept: runs {runs:?}"
    );
    assert_eq!(runs.last().copied(), Some(row.attempts as u64), "{runs:?}");

    // The same bytes as the uninterrupted build.
    let parts = harness::result_parts(&row);
    assert_eq!(parts.len(), n);
    assert_eq!(harness::stored_digests(&suite.app, &parts).await, expected);

    // Housekeeping, past `abandoned_after_secs`, leaves only the objects
    // the downloads name.
    let named: HashSet<String> = baseline_parts
        .iter()
        .chain(&parts)
        .map(|p| p.key.clone())
        .collect();
    let listed = suite.app.storage.list("downloads/").await.expect("list");
    let leftovers = listed.iter().filter(|o| !named.contains(&o.key)).count();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = suite.cli(&["jobs", "enqueue", "housekeeping"]);
    let hk: uuid::Uuid = out.trim().parse().expect("the job's id");
    let hk = suite
        .wait_job(hk, "succeeded", Duration::from_secs(30), &mut [&mut worker])
        .await;
    let swept = hk.result.as_ref().expect("result")["abandoned_objects_deleted"]
        .as_u64()
        .expect("abandoned_objects_deleted");
    let left = suite.app.storage.list("downloads/").await.expect("list");
    assert!(
        left.iter().all(|o| !o.partial && named.contains(&o.key)),
        "only the two downloads' parts remain: {left:?}"
    );
    assert_eq!(left.len(), named.len(), "{left:?}");
    assert_eq!(swept as usize, leftovers, "{listed:?}");
    assert!(worker.terminate(Duration::from_secs(10)), "clean stop");

    let bytes: u64 = parts.iter().map(|p| p.bytes).sum();
    report(
        "f zip SIGKILL",
        &format!(
            "{} copies in {n} parts ({:.1} MB), built uninterrupted in {}, {KILLS} kills at \
             {staged_at_kills:?} parts staged, runs {runs:?} (attempts {}), {resumed} parts \
             resumed, every part's SHA-256 equal, done {} after the first kill's run began, \
             {leftovers} leftovers swept by housekeeping, total {}",
            result["copies"],
            bytes as f64 / 1e6,
            secs(uninterrupted),
            row.attempts,
            secs(resumed_in),
            secs(started.elapsed())
        ),
    );
}
