//! f) A zip build (`bulk-render`) of one part of many upload chunks whose
//! worker process is killed with SIGKILL three times at random points of
//! the part, each time after the run recorded at least one more chunk, and
//! started again: each run continues the same upload after its last
//! recorded chunk (building the chunks before it again, checked against
//! their recorded SHA-256, without uploading them), and the job succeeds;
//! the zip has the SHA-256 of the same zip built first without
//! interruption; nothing was ever at the zip's key before it was complete;
//! and once housekeeping has run (enqueued with `copiste jobs enqueue`),
//! nothing remains under `downloads/` but the objects the two downloads
//! name.

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
const KILLS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite (real processes): scripts/test runs it"]
async fn f_zip_build_survives_three_sigkills_and_resumes_within_its_part() {
    let started = Instant::now();
    let mut suite = Suite::start(json!({
        // The default part size: the zip is one part.
        "downloads": {"abandoned_after_secs": 1},
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
    assert_eq!(baseline_parts.len(), 1, "one part");
    let chunk = copiste::storage::UPLOAD_CHUNK_BYTES as u64;
    let n = baseline_parts[0].bytes.div_ceil(chunk) as usize;
    assert!(n >= 8, "{n} chunks: make the zip bigger");
    let per_chunk = uninterrupted / n as u32;

    // The zip again, killed three times: kill k once the run has recorded
    // at least one more chunk and reached a random target, at a random
    // moment within the chunk after it. The final key is watched all
    // along: nothing may be there before the zip is complete.
    let job = suite
        .app
        .enqueue(&harness::zip_job(PHILO, &uai), opts())
        .await;
    let final_folder = format!("downloads/{PHILO}/{uai}/");
    let seen_early = |listed: &[copiste::storage::Listed]| {
        listed
            .iter()
            .filter(|o| o.key.contains(&job.to_string()))
            .map(|o| o.key.clone())
            .collect::<Vec<_>>()
    };
    let mut rng = StdRng::seed_from_u64(26);
    let mut at_kills = Vec::new();
    let mut upload_ids = HashSet::new();
    let kills_started = Instant::now();
    // The kills: not a wait.
    for k in 0..KILLS {
        let floor = at_kills.last().copied().unwrap_or(0) + 1;
        // Up to three quarters of the chunks: the last run has some left.
        let ceiling = (n * (k + 1) * 3 / (4 * KILLS)).max(floor);
        let target = rng.random_range(floor..=ceiling);
        {
            let alive = RefCell::new(&mut worker);
            eventually_every(
                Duration::from_secs(30),
                Duration::from_millis(10),
                || async {
                    let recorded = harness::recorded_chunks(&suite.app, job).await.0;
                    if recorded >= target {
                        return Ok(());
                    }
                    alive.borrow_mut().assert_alive();
                    let listed = suite.app.storage.list(&final_folder).await.expect("list");
                    assert!(seen_early(&listed).is_empty(), "{listed:?}");
                    Err(format!(
                        "the build did not record {target} chunks ({recorded})"
                    ))
                },
            )
            .await;
        }
        let within = per_chunk.as_millis().max(1) as u64;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..within))).await;
        worker.kill();
        let row = suite.app.job(job).await;
        assert_eq!(
            row.status.as_str(),
            "running",
            "kill {} came after the build ended",
            k + 1
        );
        let (chunks, upload_id) = harness::recorded_chunks(&suite.app, job).await;
        at_kills.push(chunks);
        upload_ids.extend(upload_id);
        let listed = suite.app.storage.list(&final_folder).await.expect("list");
        assert!(seen_early(&listed).is_empty(), "{listed:?}");
        worker = suite.worker();
    }
    assert_eq!(upload_ids.len(), 1, "one upload, continued: {upload_ids:?}");
    let row = suite
        .wait_job(
            job,
            "succeeded",
            Duration::from_secs(60),
            &mut [&mut worker],
        )
        .await;
    let resumed_in = kills_started.elapsed();

    // The last run continued the upload: it kept the chunks recorded by
    // the killed runs and uploaded only the rest.
    let result = row.result.clone().expect("result");
    let resumed = result["resumed_chunks"].as_u64().expect("resumed_chunks") as usize;
    let uploaded = result["uploaded_chunks"].as_u64().expect("uploaded_chunks") as usize;
    let last_kill = *at_kills.last().expect("kills");
    assert_eq!(result["restarted_uploads"], 0, "{result}");
    assert_eq!(resumed, last_kill, "{result}");
    assert_eq!(resumed + uploaded, n, "{result}");
    let checkpoint = copiste::db::jobs::checkpoint(&suite.app.db, job)
        .await
        .expect("checkpoint")
        .expect("recorded");
    let part = &checkpoint["parts"][0];
    assert_eq!(part["chunks"].as_u64(), Some(n as u64), "{checkpoint}");
    assert_eq!(part["resumed_chunks"].as_u64(), Some(resumed as u64));
    assert_eq!(part["run"].as_u64(), Some(u64::from(row.attempts as u32)));
    assert!(checkpoint.get("upload").is_none(), "{checkpoint}");
    // Every kill came after one more recorded chunk: no attempt counted.
    assert_eq!(row.attempts as usize, KILLS + 1);

    // The same bytes as the uninterrupted build.
    let parts = harness::result_parts(&row);
    assert_eq!(parts.len(), 1);
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

    // What each run kept of the recorded chunks and recorded itself.
    let before: Vec<usize> = std::iter::once(0).chain(at_kills.iter().copied()).collect();
    let recorded_by_run: Vec<usize> = before
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain(std::iter::once(uploaded))
        .collect();
    let kept_by_run = before;
    report(
        "f zip SIGKILL",
        &format!(
            "{} copies in one part of {n} chunks ({:.1} MB), built uninterrupted in {}, \
             {KILLS} kills at {at_kills:?} chunks recorded (attempts {}), one upload continued \
             throughout: runs 1-{} resumed {kept_by_run:?} chunks and uploaded {recorded_by_run:?} \
             (the last run resumed {resumed} and uploaded {uploaded}), \
             SHA-256 equal to the uninterrupted zip, nothing at the zip's key before it was \
             complete, done {} after the first kill's run began, {leftovers} leftovers swept \
             by housekeeping, total {}",
            result["copies"],
            parts[0].bytes as f64 / 1e6,
            secs(uninterrupted),
            row.attempts,
            KILLS + 1,
            secs(resumed_in),
            secs(started.elapsed())
        ),
    );
}
