//! The operators' view of running processes: a `copiste worker` and a
//! `copiste serve` started as child processes, their `/metrics` scraped
//! after a closure and a zip, and `/readyz` while Redis is down.

use std::{collections::HashMap, time::Duration};

use copiste::{domain::Uai, render::RequestedOptions};
use serde_json::json;

use crate::faults::{
    harness::Suite,
    stand_in::{Faults, StandIn},
};
use crate::support::eventually_every;

const PHILO: &str = "BAC26-PHILO";

/// A free loopback port (bound, then released for the child: see
/// [`spawn_listening`] for another process taking it in between).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// Starts `copiste ARGS… 127.0.0.1:PORT` on a free port and waits for its
/// `/healthz`; returns the process and its base URL. A port another
/// process took between the probe and the child's bind makes the child
/// exit: another port is then tried.
async fn spawn_listening(
    suite: &mut Suite,
    args: &[&str],
) -> (crate::faults::harness::WorkerProcess, String) {
    for _ in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut full = args.to_vec();
        full.push(&addr);
        let mut child = suite.spawn(&full);
        let url = format!("http://{addr}");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if !child.alive() {
                // Most likely the port was taken: try another.
                break;
            }
            if get(&format!("{url}/healthz")).await.0 == 200 {
                return (child, url);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{url}/healthz never answered 200:\n{}",
                child.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("copiste {args:?} could not listen on five free ports in a row");
}

/// The samples of a Prometheus text page: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of `metric` whose labels include all of `labels`.
fn sum(samples: &HashMap<String, f64>, metric: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            (k.as_str() == metric || k.starts_with(&format!("{metric}{{")))
                && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn get(url: &str) -> (u16, String) {
    match copiste::tls::http_client()
        .build()
        .expect("an HTTP client")
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_what_a_closure_and_a_zip_did_and_readiness_names_redis() {
    let stand_in = StandIn::start(Faults::default(), 5).await;
    let mut suite = Suite::start(json!({
        "exporters": stand_in.exporters(5, 2),
        "exports": {"batch_size": 4},
        "downloads": {"signing_key": "metrics-test-key"},
    }))
    .await;
    suite.app.import_demo_seeded(3, 5, 11).await;
    let (mut worker, worker_url) =
        spawn_listening(&mut suite, &["worker", "--metrics-listen"]).await;
    let (mut server, serve_url) = spawn_listening(&mut suite, &["serve", "--listen"]).await;
    let before = samples(&get(&format!("{worker_url}/metrics")).await.1);
    assert_eq!(
        sum(&before, "copiste_job_runs_total", &[]),
        0.0,
        "{before:?}"
    );

    // A closure of every unit, then one establishment's zip.
    let units = crate::ops::request_closure(&suite.app, PHILO, None, "metrics")
        .await
        .expect("request")
        .expect("not refused");
    let closures = units.len() as i64;
    suite
        .wait_final(closures, Duration::from_secs(60), &mut [&mut worker])
        .await;
    let core = suite.app.app();
    let uai: Uai = units[0].establishment.clone();
    crate::ops::zip_request(&core, PHILO, &uai, RequestedOptions::default(), "metrics")
        .await
        .expect("request")
        .expect("not refused");
    suite
        .wait_final(closures + 1, Duration::from_secs(60), &mut [&mut worker])
        .await;
    let links = crate::ops::zip_links(&core, PHILO, &uai, RequestedOptions::default())
        .await
        .expect("links")
        .expect("allowed")
        .expect("a zip");
    let options = copiste::render::RenderOptions::for_exam(
        PHILO,
        copiste::domain::ExamKind::Ponctuel,
        RequestedOptions::default(),
    )
    .expect("options");
    let entries =
        copiste::db::render::current_download(&suite.app.db, PHILO, uai.as_str(), &options.tag())
            .await
            .expect("read the download")
            .expect("the download row")
            .copies;

    let after = samples(&get(&format!("{worker_url}/metrics")).await.1);
    let runs = |kind: &str, outcome: &str| {
        sum(
            &after,
            "copiste_job_runs_total",
            &[
                &format!("kind=\"{kind}\""),
                &format!("outcome=\"{outcome}\""),
            ],
        )
    };
    assert_eq!(runs("closure", "succeeded"), closures as f64, "{after:?}");
    assert_eq!(runs("bulk-render", "succeeded"), 1.0, "{after:?}");
    assert_eq!(
        sum(
            &after,
            "copiste_job_run_duration_seconds_count",
            &["kind=\"closure\""]
        ),
        closures as f64
    );
    let requests = stand_in.seen(|s| s.requests) as f64;
    assert!(requests > 0.0);
    assert_eq!(
        sum(&after, "copiste_export_requests_total", &["class=\"2xx\""]),
        requests,
        "every request the stand-in answered, counted once: {after:?}"
    );
    assert_eq!(
        sum(&after, "copiste_zip_entries_total", &[]),
        entries as f64
    );
    assert_eq!(
        sum(&after, "copiste_zip_bytes_total", &[]),
        links.iter().map(|l| l.bytes).sum::<u64>() as f64
    );
    assert!(sum(&after, "copiste_pump_pushed_ids_total", &[]) >= (closures + 1) as f64);

    // The ledger's gauges, read every few seconds, and the server's own
    // request counts.
    let served = eventually_every(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            let served = samples(&get(&format!("{serve_url}/metrics")).await.1);
            let closed = sum(
                &served,
                "copiste_jobs",
                &["kind=\"closure\"", "state=\"succeeded\""],
            );
            if closed > 0.0 {
                return Ok(served);
            }
            Err(format!(
                "the server's gauges show no succeeded closure: {served:?}"
            ))
        },
    )
    .await;
    assert_eq!(
        sum(
            &served,
            "copiste_jobs",
            &["kind=\"closure\"", "state=\"succeeded\""]
        ),
        closures as f64,
        "{served:?}"
    );
    assert!(
        sum(
            &served,
            "copiste_export_items",
            &["target=\"cyclades\"", "state=\"accepted\""]
        ) > 0.0
    );
    assert!(
        sum(
            &served,
            "copiste_http_requests_total",
            &["route=\"/healthz\"", "status=\"200\""]
        ) >= 1.0,
        "{served:?}"
    );

    // Readiness follows Redis.
    for base in [&worker_url, &serve_url] {
        assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    }
    suite.redis.stop_redis().expect("stop Redis");
    for base in [&worker_url, &serve_url] {
        let (status, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("redis") && !body.contains("postgres"),
            "{body}"
        );
    }
    suite.redis.start_redis_again().await.expect("start Redis");
    for base in [&worker_url, &serve_url] {
        assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    }
    server.terminate(Duration::from_secs(10));
    worker.terminate(Duration::from_secs(10));
}
