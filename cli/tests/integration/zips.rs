//! The zip night: every establishment's zip of an exam asked for in one
//! transaction (`download::request_all`, `copiste download request
//! --all`), and the `zip-prebuild` job that enqueues the zips of the units
//! closed since their last zip. Every outcome is read back from the
//! ledger.

use std::{collections::BTreeSet, time::Duration};

use copiste::{
    domain::Uai,
    download::{self, AllZipsInput, PrebuildInput, Requested, ZipInput},
    jobs::{EnqueueOptions, zip_prebuild::ZipPrebuild},
    op::{Actor, OpError, Refusal},
    render::RequestedOptions,
};
use serde_json::json;
use sqlx::PgPool;

use crate::support::{TestApp, fast_queue};

const PHILO: &str = "BAC26-PHILO";
const E3C: &str = "BAC26-E3C-HG";

fn config() -> serde_json::Value {
    let mut c = fast_queue();
    c["downloads"] = json!({"signing_key": "test-signing-key"});
    c
}

async fn pool(app: &TestApp) -> PgPool {
    PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("pool")
}

/// A bulk-render job as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ZipRow {
    establishment: String,
    status: String,
    key: String,
    created_by: String,
    payload: serde_json::Value,
}

/// Every `bulk-render` job of the ledger, in UAI then key order.
async fn zip_jobs(app: &TestApp) -> Vec<ZipRow> {
    let rows: Vec<(serde_json::Value, String, Option<String>, String)> = sqlx::query_as(
        "SELECT payload, status, idempotency_key, created_by FROM jobs
         WHERE kind = 'bulk-render' ORDER BY payload->>'establishment', idempotency_key",
    )
    .fetch_all(&pool(app).await)
    .await
    .expect("zip jobs");
    rows.into_iter()
        .map(|(payload, status, key, created_by)| ZipRow {
            establishment: payload["establishment"]
                .as_str()
                .expect("an establishment")
                .to_owned(),
            status,
            key: key.expect("every zip job has a key"),
            created_by,
            payload,
        })
        .collect()
}

/// The establishments of `rows`.
fn establishments(rows: &[ZipRow]) -> BTreeSet<String> {
    rows.iter().map(|r| r.establishment.clone()).collect()
}

/// The payload a single request makes for (`exam`, `uai`) with every
/// switch on.
fn default_payload(exam: &str, uai: &str) -> serde_json::Value {
    json!({
        "exam": exam,
        "establishment": uai,
        "options": {"details": true, "appreciation": true, "annotations": true},
    })
}

/// Closes `exam` for each of `uais` with a worker of its own (outbox
/// exporters), and waits until every closure succeeded.
pub async fn close(app: &TestApp, exam: &str, uais: &[Uai]) {
    let worker = app.worker().await;
    for uai in uais {
        let units = crate::ops::request_closure(app, exam, Some(uai), "test")
            .await
            .expect("request")
            .expect("not refused");
        for u in units {
            let job = u.outcome.expect("not refused").job().expect("job");
            app.wait_status(job, "succeeded", 60).await;
        }
    }
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
}

/// The establishments with copies of `exam`, in UAI order.
async fn exam_establishments(app: &TestApp, exam: &str, academy: Option<&str>) -> Vec<Uai> {
    copiste::db::catalog::exam_establishments(&app.db, exam, academy)
        .await
        .expect("establishments")
}

fn all(exam: &str) -> AllZipsInput {
    AllZipsInput {
        exam: exam.into(),
        options: RequestedOptions::default(),
    }
}

#[tokio::test]
async fn request_all_enqueues_one_zip_per_transmitted_establishment_in_scope_and_never_twice() {
    let test = TestApp::with(config()).await;
    test.import_demo(5, 2).await;
    let app = test.app();
    let uais = exam_establishments(&test, PHILO, None).await;
    assert_eq!(uais.len(), 5);
    // The last establishment has nothing transmitted.
    let closed = &uais[..4];
    close(&test, PHILO, closed).await;
    let academy = test.academy_of(&uais[0]).await;
    let of_academy: BTreeSet<String> = exam_establishments(&test, PHILO, Some(&academy))
        .await
        .into_iter()
        .filter(|u| closed.contains(u))
        .map(|u| u.to_string())
        .collect();
    assert!(
        !of_academy.is_empty() && of_academy.len() < closed.len(),
        "{of_academy:?}"
    );

    // An establishment asks for its own zip only; nothing is enqueued.
    let refused = download::request_all(
        &app,
        &Actor::Establishment {
            uai: uais[0].clone(),
        },
        &all(PHILO),
    )
    .await;
    match &refused {
        Err(OpError::Forbidden { what, .. }) => {
            assert!(what.contains("its own zip"), "{what}")
        }
        other => panic!("an establishment was not refused: {other:?}"),
    }
    assert!(zip_jobs(&test).await.is_empty());

    // A coordinator: the transmitted establishments of its academy.
    let coordinator = Actor::Coordinator {
        academy: academy.clone(),
    };
    let first = download::request_all(&app, &coordinator, &all(PHILO))
        .await
        .expect("coordinator's request");
    assert_eq!(first.establishments, of_academy.len());
    assert_eq!(
        (first.enqueued, first.already_building, first.already_ready),
        (of_academy.len(), 0, 0)
    );
    let rows = zip_jobs(&test).await;
    assert_eq!(establishments(&rows), of_academy);
    assert_eq!(rows.len(), of_academy.len(), "one job per establishment");
    for r in &rows {
        assert_eq!(r.payload, default_payload(PHILO, &r.establishment));
        assert!(
            r.key
                .starts_with(&format!("bulk-render:{PHILO}:{}:d1a1n1:", r.establishment)),
            "{}",
            r.key
        );
        assert_eq!(r.created_by, format!("coordinator:{academy}"));
        assert_eq!(r.status, "queued");
    }
    let answered: BTreeSet<String> = first
        .jobs
        .iter()
        .map(|j| j.establishment.to_string())
        .collect();
    assert_eq!(answered, of_academy);

    // Admin: every transmitted establishment; the coordinator's are
    // already being built.
    let admin = Actor::admin("night");
    let second = download::request_all(&app, &admin, &all(PHILO))
        .await
        .expect("admin's request");
    assert_eq!(second.establishments, closed.len());
    assert_eq!(
        (
            second.enqueued,
            second.already_building,
            second.already_ready
        ),
        (closed.len() - of_academy.len(), of_academy.len(), 0)
    );
    let rows = zip_jobs(&test).await;
    let expected: BTreeSet<String> = closed.iter().map(Uai::to_string).collect();
    assert_eq!(establishments(&rows), expected);
    assert_eq!(
        rows.len(),
        closed.len(),
        "exactly one job per establishment"
    );
    for r in rows
        .iter()
        .filter(|r| !of_academy.contains(&r.establishment))
    {
        assert_eq!(r.created_by, "night");
        assert_eq!(r.payload, default_payload(PHILO, &r.establishment));
        assert!(
            r.key
                .starts_with(&format!("bulk-render:{PHILO}:{}:d1a1n1:", r.establishment)),
            "{}",
            r.key
        );
    }

    // Again: nothing new, every zip already being built.
    let third = download::request_all(&app, &admin, &all(PHILO))
        .await
        .expect("again");
    assert_eq!(
        (third.enqueued, third.already_building, third.already_ready),
        (0, closed.len(), 0)
    );
    assert_eq!(zip_jobs(&test).await.len(), closed.len());
    // A single request finds the same job.
    let single = download::request(
        &app,
        &admin,
        &ZipInput {
            exam: PHILO.into(),
            establishment: uais[0].clone(),
            options: RequestedOptions::default(),
        },
    )
    .await
    .expect("single request");
    assert!(
        matches!(single, Requested::Building { new: false, .. }),
        "{single:?}"
    );
    assert_eq!(zip_jobs(&test).await.len(), closed.len());

    // The zips built: every one is ready, nothing is enqueued.
    let worker = test.worker().await;
    for job in first.jobs.iter().chain(&second.jobs) {
        test.wait_status(job.job, "succeeded", 60).await;
    }
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    let fourth = download::request_all(&app, &admin, &all(PHILO))
        .await
        .expect("after the builds");
    assert_eq!(
        (
            fourth.enqueued,
            fourth.already_building,
            fourth.already_ready
        ),
        (0, 0, closed.len())
    );
    assert_eq!(zip_jobs(&test).await.len(), closed.len());

    // Other switches are other zips.
    let other = download::request_all(
        &app,
        &admin,
        &AllZipsInput {
            exam: PHILO.into(),
            options: RequestedOptions {
                annotations: false,
                ..RequestedOptions::default()
            },
        },
    )
    .await
    .expect("other switches");
    assert_eq!((other.options.as_str(), other.enqueued), ("d1a1n0", 4));
    assert_eq!(zip_jobs(&test).await.len(), 2 * closed.len());

    // An exam with nothing transmitted: nothing to do, not an error.
    let nothing = download::request_all(&app, &admin, &all(E3C))
        .await
        .expect("nothing transmitted");
    assert_eq!(
        (nothing.establishments, nothing.enqueued, nothing.jobs.len()),
        (0, 0, 0)
    );
    // E3C switches stay on; an unknown exam is not found.
    let e3c = download::request_all(
        &app,
        &admin,
        &AllZipsInput {
            exam: E3C.into(),
            options: RequestedOptions {
                details: false,
                ..RequestedOptions::default()
            },
        },
    )
    .await;
    assert!(
        matches!(e3c, Err(OpError::Refused(Refusal::E3cSwitches(_)))),
        "{e3c:?}"
    );
    let unknown = download::request_all(&app, &admin, &all("BAC26-NOPE")).await;
    assert!(
        matches!(unknown, Err(OpError::NotFound { .. })),
        "{unknown:?}"
    );
    assert_eq!(zip_jobs(&test).await.len(), 2 * closed.len());
}

/// Runs a `zip-prebuild` job through `worker`'s queue and returns its
/// result.
async fn run_prebuild(test: &TestApp) -> serde_json::Value {
    let id = test
        .enqueue(&ZipPrebuild::default(), EnqueueOptions::by("test"))
        .await;
    let job = test.wait_status(id, "succeeded", 60).await;
    job.result.expect("a result")
}

/// Waits until every `bulk-render` job of the ledger succeeded.
async fn wait_zips_built(test: &TestApp) {
    for _ in 0..600 {
        let rows = zip_jobs(test).await;
        if rows.iter().all(|r| r.status == "succeeded") {
            return;
        }
        assert!(
            !rows
                .iter()
                .any(|r| ["failed", "dead", "cancelled"].contains(&r.status.as_str())),
            "{rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("zips not built: {:?}", zip_jobs(test).await);
}

#[tokio::test]
async fn zip_prebuild_enqueues_the_zips_of_newly_closed_units_only() {
    let test = TestApp::with(config()).await;
    test.import_demo(3, 2).await;
    let uais = exam_establishments(&test, PHILO, None).await;
    assert_eq!(uais.len(), 3);
    close(&test, PHILO, &uais[..2]).await;
    let worker = test.worker().await;

    // The first slot: the two closed units.
    let first = run_prebuild(&test).await;
    assert_eq!(first["enqueued"], 2, "{first}");
    let rows = zip_jobs(&test).await;
    let two: BTreeSet<String> = uais[..2].iter().map(Uai::to_string).collect();
    assert_eq!(establishments(&rows), two);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r.payload, default_payload(PHILO, &r.establishment));
        assert_eq!(r.created_by, "scheduler");
        assert!(
            r.key
                .starts_with(&format!("bulk-render:{PHILO}:{}:d1a1n1:", r.establishment)),
            "{}",
            r.key
        );
    }
    // The same slot again while they are built, or after: nothing new.
    let again = run_prebuild(&test).await;
    assert_eq!(again["enqueued"], 0, "{again}");
    wait_zips_built(&test).await;
    let after = run_prebuild(&test).await;
    assert_eq!(after["enqueued"], 0, "{after}");
    assert_eq!(after["already_building"], 0, "{after}");
    assert_eq!(zip_jobs(&test).await.len(), 2);

    // The third unit is closed: its zip alone.
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");
    close(&test, PHILO, &uais[2..]).await;
    let worker = test.worker().await;
    let third = run_prebuild(&test).await;
    assert_eq!(third["enqueued"], 1, "{third}");
    let rows = zip_jobs(&test).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows.iter()
            .filter(|r| r.establishment == uais[2].as_str())
            .count(),
        1
    );
    wait_zips_built(&test).await;
    assert_eq!(run_prebuild(&test).await["enqueued"], 0);
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    // A copy of the first unit accepted again (as a relaunch after a
    // change would) is newer than its zip: that zip is built again. A
    // unit transmitted before the look-back is left alone.
    let pool = pool(&test).await;
    let touched = sqlx::query(
        "UPDATE grade_exports g SET accepted_at = now()
         FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
         WHERE g.copy_id = c.id AND c.exam_code = $1 AND ca.establishment_uai = $2",
    )
    .bind(PHILO)
    .bind(uais[0].as_str())
    .execute(&pool)
    .await
    .expect("touch");
    assert!(touched.rows_affected() > 0);
    sqlx::query(
        "UPDATE grade_exports g SET accepted_at = now() - interval '30 days'
         FROM copies c JOIN candidates ca ON ca.id = c.candidate_id
         WHERE g.copy_id = c.id AND c.exam_code = $1 AND ca.establishment_uai = $2",
    )
    .bind(PHILO)
    .bind(uais[1].as_str())
    .execute(&pool)
    .await
    .expect("age");
    sqlx::query("DELETE FROM jobs WHERE kind = 'bulk-render' AND payload->>'establishment' = $1")
        .bind(uais[1].as_str())
        .execute(&pool)
        .await
        .expect("prune");
    let app = test.app();
    let done = download::prebuild(
        &app,
        &Actor::admin("night"),
        &PrebuildInput {
            since: chrono::Utc::now() - chrono::Duration::days(7),
            options: RequestedOptions::default(),
        },
    )
    .await
    .expect("prebuild");
    assert_eq!(done.exams.len(), 1);
    assert_eq!(done.exams[0].enqueued, 1);
    assert_eq!(done.exams[0].jobs[0].establishment, uais[0]);
    let rows = zip_jobs(&test).await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.establishment == uais[0].as_str())
            .count(),
        2
    );
    assert!(
        !rows.iter().any(|r| r.establishment == uais[1].as_str()),
        "{rows:?}"
    );

    // Only the operators pre-build.
    let refused = download::prebuild(
        &app,
        &Actor::Coordinator {
            academy: test.academy_of(&uais[0]).await,
        },
        &PrebuildInput {
            since: chrono::Utc::now(),
            options: RequestedOptions::default(),
        },
    )
    .await;
    assert!(
        matches!(refused, Err(OpError::Forbidden { .. })),
        "{refused:?}"
    );
}

#[test]
fn zip_prebuild_checks_its_parameters() {
    let handler = copiste::jobs::registry::find("zip-prebuild").expect("registered");
    handler.check(json!({})).expect("no parameters");
    handler
        .check(json!({"lookback_days": 3, "options": {"details": true, "appreciation": false, "annotations": true}}))
        .expect("parameters");
    let e = handler
        .check(json!({"lookback_days": 0}))
        .expect_err("zero days");
    assert!(e.contains("lookback_days"), "{e}");
    let e = handler
        .check(json!({"days": 3}))
        .expect_err("unknown field");
    assert!(e.contains("unknown field"), "{e}");
    let schedule = copiste::schedule::Schedule::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/zip-prebuild.toml"),
    )
    .expect("the shipped schedule loads");
    assert_eq!(schedule.kind, "zip-prebuild");
    assert!(!schedule.enabled, "shipped disabled");
}
