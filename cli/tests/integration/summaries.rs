//! The closure table's counts come from `unit_summaries`, which triggers
//! keep up to date (migration 10). After every kind of write the project
//! makes (import, closure runs with rejections and failures, relaunch, a
//! withdrawn grade, a candidate who moves, a harmonisation pass), a
//! recount from copies and both ledgers must find nothing to correct.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use copiste::{
    closure::{PassRequest, Validation},
    db,
};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

use crate::support::{TestApp, fast_queue};

const PHILO: &str = "BAC26-PHILO";
const MATHS_H: &str = "BAC26-MATHS-H";

/// Accepts every item but those of `reject`, and answers 503 to every
/// third request without one of them (which then leaves its items pending
/// with the error).
#[derive(Clone)]
struct Target {
    reject: Arc<HashSet<String>>,
    requests: Arc<AtomicU64>,
}

impl Respond for Target {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let rejecting = body["items"].as_array().into_iter().flatten().any(|item| {
            item["candidate"]
                .as_str()
                .is_some_and(|c| self.reject.contains(c))
        });
        // A batch with a rejected item is always answered: the rejection
        // is certain, whatever order the batches go out in.
        if !rejecting && self.requests.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
            return ResponseTemplate::new(503).set_body_string("try again later");
        }
        let results: Vec<Value> = body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                let key = item["key"].clone();
                match item["candidate"].as_str() {
                    Some(c) if self.reject.contains(c) => {
                        json!({"key": key, "status": "rejected", "reason": "unknown candidate"})
                    }
                    _ => json!({"key": key, "status": "accepted"}),
                }
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({ "results": results }))
    }
}

/// The recount finds every summary right.
async fn exact(app: &TestApp, after: &str) {
    let corrected = db::closure::recount_summaries(&app.app().db, 500)
        .await
        .expect("recount");
    assert_eq!(
        corrected, 0,
        "summaries differed from a recount after {after}"
    );
}

/// Waits until no job is running or due: each has finished or waits for a
/// retry an hour away.
async fn settle(app: &TestApp) {
    crate::support::eventually(Duration::from_secs(60), || async {
        (app.busy_jobs().await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_closure_table_counts_stay_exact_through_every_kind_of_write() {
    let server = MockServer::start().await;
    let mut config = fast_queue();
    let uri = server.uri();
    config["exporters"] = json!({
        "cyclades": {"kind": "http", "base_url": uri, "timeout_secs": 1, "concurrency": 2},
        "imagin": {"kind": "http", "base_url": uri, "timeout_secs": 1, "concurrency": 2}
    });
    config["exports"] = json!({"batch_size": 5});
    // Failed runs are retried by relaunches only, within the test.
    config["jobs"] = json!({"backoff_base_secs": 3600.0, "backoff_max_secs": 7200.0});
    let app = TestApp::with(config).await;
    app.import_demo_seeded(3, 12, 7).await;
    exact(&app, "the import").await;

    let uais = db::catalog::exam_establishments(&app.app().db, PHILO, None)
        .await
        .expect("establishments");
    let rejected = app.first_numero(PHILO, &uais[0]).await;
    Mock::given(method("POST"))
        .respond_with(Target {
            reject: Arc::new(HashSet::from([rejected.clone()])),
            requests: Arc::default(),
        })
        .mount(&server)
        .await;
    let worker = app.worker().await;
    crate::ops::request_closure(&app, PHILO, None, "test")
        .await
        .expect("request")
        .expect("not refused");
    settle(&app).await;
    exact(&app, "a closure with rejections and failed batches").await;
    let status = crate::ops::exam_status(&app, PHILO)
        .await
        .expect("status")
        .expect("known exam");
    let unit = status
        .units
        .iter()
        .find(|u| u.establishment == uais[0].as_str())
        .expect("the unit");
    assert_eq!(unit.cyclades.rejected, 1, "{status}");
    assert_eq!(unit.cyclades.total, unit.copies, "{status}");

    // A grade withdrawn, and a candidate who moves to another
    // establishment: both units change.
    let pool = sqlx::PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("pool");
    // Raw SQL: what a new export of the session would write, without the
    // import's checks (the triggers must hold whoever writes).
    sqlx::query(
        "UPDATE copies SET grade = NULL, absent = false, version = copies.version + 1
         FROM candidates ca
         WHERE ca.id = copies.candidate_id AND ca.numero = $1 AND copies.exam_code = $2",
    )
    .bind(app.first_numero(PHILO, &uais[1]).await)
    .bind(PHILO)
    .execute(&pool)
    .await
    .expect("withdraw a grade");
    exact(&app, "a withdrawn grade").await;
    sqlx::query("UPDATE candidates SET establishment_uai = $2 WHERE numero = $1")
        .bind(&rejected)
        .bind(uais[2].as_str())
        .execute(&pool)
        .await
        .expect("move a candidate");
    exact(&app, "a candidate who moved").await;

    crate::ops::request_relaunch(&app, PHILO, None, "test")
        .await
        .expect("relaunch")
        .expect("not refused");
    settle(&app).await;
    exact(&app, "a relaunch").await;

    let pass =
        crate::ops::validate_harmonisation(&app, MATHS_H, None, &Validation::All, "coordinator")
            .await
            .expect("validate")
            .expect("not refused");
    assert!(matches!(pass, PassRequest::Enqueued { .. }), "{pass:?}");
    settle(&app).await;
    exact(&app, "a harmonisation pass").await;
    worker.shutdown(Duration::from_secs(5)).await.expect("stop");

    // The recount does find a wrong row (the check above can fail), and
    // puts it right.
    sqlx::query("UPDATE unit_summaries SET c_accepted = c_accepted + 1 WHERE exam_code = $1 AND establishment_uai = $2")
        .bind(PHILO)
        .bind(uais[1].as_str())
        .execute(&pool)
        .await
        .expect("spoil a summary");
    assert_eq!(
        db::closure::recount_summaries(&app.app().db, 500)
            .await
            .expect("recount"),
        1
    );
    exact(&app, "the correction").await;
}
