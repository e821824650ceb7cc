//! c) PostgreSQL crashes during a closure (`pg_ctl stop -m immediate`),
//! stays down a few seconds and starts again: the worker processes keep
//! running, every job finishes, every unit ends closed and nothing takes
//! effect twice at the targets.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::eventually_every;

use super::{
    harness::{self, Suite, report, secs},
    stand_in::{Faults, StandIn},
};

const PHILO: &str = "BAC26-PHILO";
/// Longer than the pools' acquire timeout (10 s): the statements waiting
/// for a connection give up, as during a slow crash recovery.
const DOWN: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite (real processes): scripts/test runs it"]
async fn c_postgres_crashes_during_a_closure() {
    let started = Instant::now();
    let stand_in = StandIn::start(
        Faults {
            latency: Duration::from_millis(100),
            ..Faults::default()
        },
        3,
    )
    .await;
    let mut suite = Suite::start(json!({
        "exporters": stand_in.exporters(2, 2),
        "exports": {"batch_size": 10},
        "worker": {"concurrency": 4},
    }))
    .await;
    suite.app.import_demo_seeded(10, 60, 3).await;
    let candidates = harness::candidates_of(&suite.app, PHILO).await;
    let mut a = suite.worker();
    let mut b = suite.worker();
    crate::ops::request_closure(&suite.app, PHILO, None, "faults")
        .await
        .expect("request")
        .expect("not refused");
    eventually_every(
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async {
            if stand_in.effects() < candidates.len() / 4 {
                return Err("the closure does not start".to_owned());
            }
            Ok(())
        },
    )
    .await;
    let effects_at_crash = stand_in.effects();
    suite.pg.stop_postgres().expect("pg_ctl stop -m immediate");
    tokio::time::sleep(DOWN).await;
    let alive_while_down = [a.alive(), b.alive()];
    suite.pg.start_postgres_again().await.expect("start again");
    let restarted = Instant::now();
    assert_eq!(
        alive_while_down,
        [true, true],
        "a worker exited while PostgreSQL was down:\n{}\n---\n{}",
        a.log_tail(30),
        b.log_tail(30)
    );
    let rounds = harness::close_every_unit(
        &suite,
        PHILO,
        Duration::from_secs(120),
        &mut [&mut a, &mut b],
    )
    .await;
    let recovered = restarted.elapsed();
    assert!(a.terminate(Duration::from_secs(10)), "clean stop");
    assert!(b.terminate(Duration::from_secs(10)), "clean stop");
    let (grades, counts) = stand_in.assert_exactly_once(PHILO, &candidates);
    let units = harness::assert_all_closed(&suite.app, PHILO).await;
    let jobs = suite.counts().await;
    let duplicates = stand_in.seen(|s| s.duplicates);
    report(
        "c Postgres crash",
        &format!(
            "{} copies, {units} units, down {} at {effects_at_crash} effects, \
             {grades} grades + {counts} counts each once, {duplicates} duplicates answered, \
             {rounds} relaunch rounds, jobs {jobs:?}, all closed {} after the restart, total {}",
            candidates.len(),
            secs(DOWN),
            secs(recovered),
            secs(started.elapsed())
        ),
    );
}
