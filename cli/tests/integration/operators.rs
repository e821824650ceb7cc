//! What operators (admin, coordinators) do over many jobs and exams: the
//! jobs list's notes (names, the run that replaced a dead job, the end of
//! a backoff), the bulk retry of a filter's dead jobs, and the academy's
//! view across its exams with its relaunch; establishments are refused
//! all of it.

use chrono::{DateTime, Duration, Utc};
use copiste::{
    access::Role,
    closure::status::academy_view,
    db::jobs::JobRow,
    domain::{JobStatus, Uai},
    jobs::{
        admin::ListInput,
        operators::{self, DeadGroup},
    },
    op::{Actor, OpError, Refusal},
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    jobs_list::{catalogue, pool, uai},
    pages::{client, log_in, page, serve, token},
    support::TestApp,
};

/// Writes a job created `minutes` ago (after those written before with a
/// greater `minutes`), `attempts` made, next attempt at `run_at`.
async fn job(
    pool: &sqlx::PgPool,
    kind: &str,
    status: JobStatus,
    payload: Value,
    minutes: i64,
) -> Uuid {
    job_at(pool, kind, status, payload, minutes, 3, Utc::now()).await
}

async fn job_at(
    pool: &sqlx::PgPool,
    kind: &str,
    status: JobStatus,
    payload: Value,
    minutes: i64,
    attempts: i32,
    run_at: DateTime<Utc>,
) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_at,
                           created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, 3, $6, 'coordinator:A1', $7)",
    )
    .bind(id)
    .bind(kind)
    .bind(payload)
    .bind(status.as_str())
    .bind(attempts)
    .bind(run_at)
    .bind(Utc::now() - Duration::minutes(minutes))
    .execute(pool)
    .await
    .expect("insert a job");
    id
}

fn unit(exam: &str, n: u32) -> Value {
    json!({"exam": exam, "establishment": uai(n).as_str()})
}

async fn status_of(app: &TestApp, id: Uuid) -> JobStatus {
    app.job(id).await.status
}

fn coordinator(academy: &str) -> Actor {
    Actor::Coordinator {
        academy: academy.into(),
    }
}

fn closures() -> ListInput {
    ListInput {
        kind: Some("closure".into()),
        limit: 50,
        ..ListInput::default()
    }
}

/// The dead jobs of a bulk retry's test: the closures of E1 and E2 in
/// establishment 1 (E2 published), E1's in establishment 3 (academy A2), a
/// failed closure and a dead zip in establishment 2.
struct BulkLedger {
    e1_own: Uuid,
    e2_published: Uuid,
    e1_other_academy: Uuid,
    failed: Uuid,
    zip: Uuid,
}

async fn bulk_ledger(app: &TestApp) -> BulkLedger {
    let pool = pool(app).await;
    catalogue(&pool).await;
    let ledger = BulkLedger {
        e1_own: job(&pool, "closure", JobStatus::Dead, unit("E1", 1), 50).await,
        e2_published: job(&pool, "closure", JobStatus::Dead, unit("E2", 1), 40).await,
        e1_other_academy: job(&pool, "closure", JobStatus::Dead, unit("E1", 3), 30).await,
        failed: job(&pool, "closure", JobStatus::Failed, unit("E1", 2), 20).await,
        zip: job(&pool, "bulk-render", JobStatus::Dead, unit("E1", 2), 10).await,
    };
    sqlx::query("UPDATE exams SET published_at = now(), published_by = 'test' WHERE code = 'E2'")
        .execute(&pool)
        .await
        .expect("publish E2");
    ledger
}

#[tokio::test]
async fn a_bulk_retry_takes_only_the_dead_jobs_of_its_filter_and_scope_and_refuses_a_published_exams_closure()
 {
    let app = TestApp::new().await;
    let l = bulk_ledger(&app).await;
    let a1 = coordinator("A1");

    // What the confirmation shows: the academy's dead closures only.
    let dead = operators::dead_jobs(&app.app(), &a1, &closures())
        .await
        .expect("dead jobs");
    let mut ids = dead.ids.clone();
    ids.sort();
    let mut expected = vec![l.e1_own, l.e2_published];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(!dead.more);
    assert_eq!(
        dead.groups.iter().map(|g| g.jobs).sum::<usize>(),
        2,
        "{:?}",
        dead.groups
    );
    assert!(dead.groups.contains(&DeadGroup {
        kind: "closure".into(),
        exam: Some("E2".into()),
        jobs: 1
    }));

    let done = operators::retry_dead(&app.app(), &a1, &closures())
        .await
        .expect("bulk retry");
    assert_eq!(done.retried, vec![l.e1_own]);
    assert_eq!(done.refused.len(), 1, "{:?}", done.refused);
    assert_eq!(done.refused[0].0, l.e2_published);
    assert!(
        matches!(&done.refused[0].1, OpError::Refused(Refusal::Published { exam, .. }) if exam == "E2"),
        "{:?}",
        done.refused[0].1
    );
    assert_eq!(status_of(&app, l.e1_own).await, JobStatus::Queued);
    assert_eq!(status_of(&app, l.e2_published).await, JobStatus::Dead);
    // Out of the filter (a zip), of the status (failed), of the academy.
    assert_eq!(status_of(&app, l.zip).await, JobStatus::Dead);
    assert_eq!(status_of(&app, l.failed).await, JobStatus::Failed);
    assert_eq!(status_of(&app, l.e1_other_academy).await, JobStatus::Dead);

    // Admin's bulk retry of an exam reaches every academy, and still
    // refuses the published exam's closure.
    let admin = Actor::admin("test");
    let done = operators::retry_dead(
        &app.app(),
        &admin,
        &ListInput {
            exam: Some("E1".into()),
            limit: 50,
            ..ListInput::default()
        },
    )
    .await
    .expect("admin's bulk retry");
    let mut retried = done.retried.clone();
    retried.sort();
    let mut expected = vec![l.e1_other_academy, l.zip];
    expected.sort();
    assert_eq!(retried, expected);
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    let done = operators::retry_dead(&app.app(), &admin, &closures())
        .await
        .expect("admin's retry of the closures");
    assert!(done.retried.is_empty());
    assert!(matches!(
        done.refused.as_slice(),
        [(id, OpError::Refused(Refusal::Published { .. }))] if *id == l.e2_published
    ));
}

#[tokio::test]
async fn establishments_and_other_academies_are_refused_bulk_retries_and_academy_views() {
    let app = TestApp::new().await;
    let l = bulk_ledger(&app).await;
    let school = Actor::Establishment { uai: uai(1) };
    for result in [
        operators::dead_jobs(&app.app(), &school, &closures())
            .await
            .map(|_| ()),
        operators::retry_dead(&app.app(), &school, &closures())
            .await
            .map(|_| ()),
        academy_view(&app.app(), &school, "A1").await.map(|_| ()),
        academy_view(&app.app(), &coordinator("A2"), "A1")
            .await
            .map(|_| ()),
        copiste::closure::request::request_relaunch_in_academy(
            &app.app(),
            &coordinator("A2"),
            "E1",
            "A1",
        )
        .await
        .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(OpError::Forbidden { .. })),
            "{result:?}"
        );
    }
    // A coordinator naming another academy's establishment is refused,
    // and nothing was retried.
    let other = ListInput {
        establishment: Some(uai(3)),
        ..closures()
    };
    assert!(matches!(
        operators::retry_dead(&app.app(), &coordinator("A1"), &other).await,
        Err(OpError::Forbidden { .. })
    ));
    assert_eq!(status_of(&app, l.e1_own).await, JobStatus::Dead);
    assert_eq!(status_of(&app, l.e1_other_academy).await, JobStatus::Dead);
    // Admin asking for an unknown academy: not found.
    assert!(matches!(
        academy_view(&app.app(), &Actor::admin("test"), "A9").await,
        Err(OpError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_dead_job_is_replaced_only_by_a_later_live_run_of_the_same_unit() {
    let app = TestApp::new().await;
    let pool = pool(&app).await;
    catalogue(&pool).await;
    let academy = |a: &str| json!({"exam": "E1", "academy": a, "pass": 1});
    // Establishment 1, E1: a dead closure, then a relaunch that succeeded.
    let relaunched = job(&pool, "closure", JobStatus::Dead, unit("E1", 1), 60).await;
    let relaunch = job(
        &pool,
        "export-retry",
        JobStatus::Succeeded,
        unit("E1", 1),
        50,
    )
    .await;
    // Establishment 2, E1: a dead closure, then another dead one.
    let dead_twice = job(&pool, "closure", JobStatus::Dead, unit("E1", 2), 60).await;
    let dead_again = job(&pool, "closure", JobStatus::Dead, unit("E1", 2), 50).await;
    // Establishment 1, E2: a run that succeeded before the dead one.
    job(&pool, "closure", JobStatus::Succeeded, unit("E2", 1), 70).await;
    let dead_after = job(&pool, "closure", JobStatus::Dead, unit("E2", 1), 60).await;
    // A zip is not replaced by a closure of its unit.
    let zip = job(&pool, "bulk-render", JobStatus::Dead, unit("E2", 2), 60).await;
    job(&pool, "closure", JobStatus::Succeeded, unit("E2", 2), 50).await;
    // An academy's pass: replaced by its own academy's later one, queued.
    let pass = job(
        &pool,
        "harmonisation-validation",
        JobStatus::Dead,
        academy("A1"),
        60,
    )
    .await;
    let later_pass = job(
        &pool,
        "harmonisation-validation",
        JobStatus::Queued,
        academy("A1"),
        40,
    )
    .await;
    let other_pass = job(
        &pool,
        "harmonisation-validation",
        JobStatus::Dead,
        academy("A2"),
        60,
    )
    .await;
    // A job of no unit.
    let noop = job(&pool, "noop", JobStatus::Dead, json!({}), 60).await;
    job(&pool, "noop", JobStatus::Succeeded, json!({}), 50).await;

    let ids = [
        relaunched, dead_twice, dead_again, dead_after, zip, pass, other_pass, noop,
    ];
    let mut rows: Vec<JobRow> = Vec::new();
    for id in ids {
        rows.push(app.job(id).await);
    }
    let notes = operators::notes(&app.app(), &Actor::admin("test"), &rows)
        .await
        .expect("notes");
    let mut expected = std::collections::HashMap::new();
    expected.insert(relaunched, relaunch);
    expected.insert(pass, later_pass);
    assert_eq!(notes.superseded, expected);
    assert_eq!(notes.exams.get("E1").map(String::as_str), Some("Un"));
    assert_eq!(
        notes
            .establishments
            .get(uai(2).as_str())
            .map(String::as_str),
        Some("Lycée 2")
    );
    // A coordinator's notes stay within its academy: A2's pass and
    // establishment 3 are not A1's.
    let notes = operators::notes(&app.app(), &coordinator("A2"), &rows)
        .await
        .expect("notes");
    assert!(notes.superseded.is_empty(), "{:?}", notes.superseded);
    assert!(
        notes.establishments.is_empty(),
        "{:?}",
        notes.establishments
    );
}

/// A session cookie of `role`.
async fn log_in_as(app: &TestApp, base: &str, role: Role) -> String {
    let (_, token) = token(app, role).await;
    log_in(base, &token).await
}

async fn post(base: &str, cookie: &str, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
    let response = client()
        .post(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .header("sec-fetch-site", "same-origin")
        .form(form)
        .send()
        .await
        .expect("post");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn the_jobs_list_names_exams_and_places_tells_when_a_backoff_ends_and_links_the_replacing_run()
 {
    let app = TestApp::new().await;
    let pool = pool(&app).await;
    catalogue(&pool).await;
    let dead = job(&pool, "closure", JobStatus::Dead, unit("E1", 1), 60).await;
    let later = job(&pool, "export-retry", JobStatus::Queued, unit("E1", 1), 50).await;
    let run_at = Utc::now() + Duration::minutes(17);
    let waiting = job_at(
        &pool,
        "closure",
        JobStatus::Queued,
        unit("E2", 2),
        40,
        1,
        run_at,
    )
    .await;
    let base = serve(&app).await;
    let cookie = log_in_as(
        &app,
        &base,
        Role::Coordinator {
            academy: "A1".into(),
        },
    )
    .await;
    let (status, body) = page(&base, &cookie, "/travaux").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Names beside codes, who asked and when, in French.
    assert!(
        body.contains("Lycée 1") && body.contains(uai(1).as_str()),
        "{body}"
    );
    assert!(body.contains(">Un<") && body.contains(">Deux<"), "{body}");
    assert!(body.contains("académie A1"), "{body}");
    // The dead closure names the relaunch that replaced it.
    assert!(
        body.contains(&format!(
            "<a href=\"/travaux/{later}\" class=\"replaced\">remplacé par un essai plus récent</a>"
        )),
        "{body}"
    );
    assert_eq!(body.matches("remplacé par un essai plus récent").count(), 1);
    // The job waiting for its backoff says when it tries again.
    let expected = format!("nouvel essai à {}", copiste::web::french::time(&run_at));
    assert!(body.contains(&expected), "{expected} in {body}");
    // Each status's count links to that status, other filters kept.
    let counts = &body[body.find("class=\"counts\"").expect("the counts")..];
    assert!(
        counts.contains("<a href=\"/travaux?status=dead&"),
        "{counts}"
    );
    // The dead jobs of the filter can be retried at once.
    assert!(
        body.contains("action=\"/travaux/relance-groupee\""),
        "{body}"
    );
    let (_, filtered) = page(&base, &cookie, "/travaux?status=queued").await;
    assert!(
        !filtered.contains("relance-groupee"),
        "no dead job shown: no bulk retry"
    );
    // The dead job's own page says it too; the waiting job's says when.
    let (status, body) = page(&base, &cookie, &format!("/travaux/{dead}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(&format!("href=\"/travaux/{later}\" class=\"replaced\""))
            && body.contains("Lycée 1 ("),
        "{body}"
    );
    let (_, body) = page(&base, &cookie, &format!("/travaux/{waiting}")).await;
    assert!(body.contains(&expected), "{body}");
    assert!(!body.contains("remplacé par"), "{body}");
}

#[tokio::test]
async fn the_bulk_retry_page_asks_first_then_says_what_was_retried_and_refused() {
    let app = TestApp::new().await;
    let l = bulk_ledger(&app).await;
    let base = serve(&app).await;
    let cookie = log_in_as(
        &app,
        &base,
        Role::Coordinator {
            academy: "A1".into(),
        },
    )
    .await;
    let filter = [("kind", "closure"), ("exam", ""), ("uai", "")];
    let (status, body) = post(&base, &cookie, "/travaux/relance-groupee", &filter).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("2 travaux en échec à relancer"), "{body}");
    assert!(body.contains("clôture : 1 travail, examen E2"), "{body}");
    assert!(body.contains("name=\"confirme\" value=\"1\""), "{body}");
    assert_eq!(
        status_of(&app, l.e1_own).await,
        JobStatus::Dead,
        "asked only"
    );

    // A cross-site post is refused before the operation.
    let response = client()
        .post(format!("{base}/travaux/relance-groupee"))
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "cross-site")
        .header(header::ORIGIN, "https://elsewhere.example")
        .form(&[("kind", "closure"), ("confirme", "1")])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(status_of(&app, l.e1_own).await, JobStatus::Dead);

    let mut confirmed = filter.to_vec();
    confirmed.push(("confirme", "1"));
    let (status, body) = post(&base, &cookie, "/travaux/relance-groupee", &confirmed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("1 travail relancé"), "{body}");
    assert!(
        body.contains("1 travail refusé") && body.contains("E2 a été publié"),
        "{body}"
    );
    assert_eq!(status_of(&app, l.e1_own).await, JobStatus::Queued);
    assert_eq!(status_of(&app, l.e1_other_academy).await, JobStatus::Dead);

    // An establishment sees no bulk retry and is refused it.
    let school = cookie_of_school(&app, &base).await;
    let (status, body) = page(&base, &school, "/travaux").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("relance-groupee"), "{body}");
    for form in [&filter[..], &confirmed[..]] {
        let (status, _) = post(&base, &school, "/travaux/relance-groupee", form).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    assert_eq!(status_of(&app, l.zip).await, JobStatus::Dead);
}

#[tokio::test]
async fn the_api_retries_a_filters_dead_jobs_in_the_callers_scope_and_says_which_were_refused() {
    let app = TestApp::new().await;
    let l = bulk_ledger(&app).await;
    let base = serve(&app).await;
    let retry_dead = |token: String, query: &'static str| {
        let base = base.clone();
        async move {
            let response = client()
                .post(format!("{base}/api/v1/jobs/retry-dead{query}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("post");
            let status = response.status();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (_, school) = token(&app, Role::Establishment { uai: uai(2) }).await;
    let (status, body) = retry_dead(school, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(status_of(&app, l.zip).await, JobStatus::Dead);

    let (_, a1) = token(
        &app,
        Role::Coordinator {
            academy: "A1".into(),
        },
    )
    .await;
    let (status, body) = retry_dead(a1.clone(), "?establishment=abc").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = retry_dead(a1, "?kind=closure").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["retried"], json!([l.e1_own]), "{body}");
    assert_eq!(body["refused"][0]["job"], json!(l.e2_published), "{body}");
    assert_eq!(body["refused"][0]["problem"]["status"], 409, "{body}");
    assert_eq!(body["more"], false, "{body}");
    assert_eq!(status_of(&app, l.e1_own).await, JobStatus::Queued);
    assert_eq!(status_of(&app, l.e1_other_academy).await, JobStatus::Dead);
    assert_eq!(status_of(&app, l.zip).await, JobStatus::Dead);
}

async fn cookie_of_school(app: &TestApp, base: &str) -> String {
    log_in_as(app, base, Role::Establishment { uai: uai(2) }).await
}

/// Sets the closure state of units of the demo's exam.
async fn set_state(pool: &sqlx::PgPool, exam: &str, uai: &Uai, state: &str) {
    sqlx::query(
        "INSERT INTO closure_units (exam_code, establishment_uai, state, closed_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (exam_code, establishment_uai) DO UPDATE SET state = EXCLUDED.state",
    )
    .bind(exam)
    .bind(uai.as_str())
    .bind(state)
    .execute(pool)
    .await
    .expect("unit state");
}

#[tokio::test]
async fn the_academy_view_counts_each_exams_units_filters_errors_and_relaunches_with_confirmation()
{
    const PHILO: &str = "BAC26-PHILO";
    let app = TestApp::new().await;
    app.import_demo(4, 2).await;
    let two = app.two_academies(PHILO).await;
    let pool = pool(&app).await;
    let academy = two.academy_a.clone();
    let ours: Vec<Uai> = copiste::db::catalog::exam_establishments(&app.db, PHILO, Some(&academy))
        .await
        .expect("establishments");
    assert!(ours.len() >= 2, "{ours:?}");
    set_state(&pool, PHILO, &ours[0], "closed").await;
    set_state(&pool, PHILO, &ours[1], "closed_with_errors").await;
    // Another academy's errors are not ours.
    set_state(&pool, PHILO, &two.other, "closed_with_errors").await;

    let coordinator = coordinator(&academy);
    let view = academy_view(&app.app(), &coordinator, &academy)
        .await
        .expect("view");
    let philo = view
        .exams
        .iter()
        .find(|e| e.exam.code == PHILO)
        .expect("the exam");
    let units = i64::try_from(ours.len()).expect("units");
    assert_eq!(philo.progress.closed, 1);
    assert_eq!(philo.progress.with_errors, 1);
    assert_eq!(philo.progress.open, units - 2);
    assert_eq!(philo.progress.units(), units);
    let others: Vec<_> = view.exams.iter().filter(|e| e.exam.code != PHILO).collect();
    assert!(!others.is_empty());
    assert!(others.iter().all(|e| e.progress.with_errors == 0));

    let base = serve(&app).await;
    let cookie = log_in_as(
        &app,
        &base,
        Role::Coordinator {
            academy: academy.clone(),
        },
    )
    .await;
    let (status, body) = page(&base, &cookie, "/examens").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("href=\"/academie\""), "in the menu: {body}");
    let (status, body) = page(&base, &cookie, "/academie").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for e in &view.exams {
        assert!(
            body.contains(&format!(">{}</a>", e.exam.code)),
            "{} in {body}",
            e.exam.code
        );
    }
    let (status, body) = page(&base, &cookie, "/academie?erreurs=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!(">{PHILO}</a>")), "{body}");
    for e in &others {
        assert!(
            !body.contains(&format!(">{}</a>", e.exam.code)),
            "{} hidden: {body}",
            e.exam.code
        );
    }
    // Another academy: refused to a coordinator, open to admin.
    let (status, _) = page(
        &base,
        &cookie,
        &format!("/academie?academie={}", two.academy_b),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let admin = cookie_admin(&app, &base).await;
    let (status, body) = page(
        &base,
        &admin,
        &format!("/academie?academie={}", two.academy_b),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(&format!("value=\"{}\" selected", two.academy_b)),
        "{body}"
    );

    // "Relancer" asks first, then relaunches the academy's closed units
    // only (the never-closed ones are refused, the other academy's
    // untouched).
    let form = [("academie", academy.as_str()), ("examen", PHILO)];
    let (status, body) = post(&base, &cookie, "/academie/relance", &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("Confirmer la relance") && body.contains(PHILO),
        "{body}"
    );
    assert_eq!(app.counts().await.values().sum::<i64>(), 0, "asked only");
    let mut confirmed = form.to_vec();
    confirmed.push(("confirme", "1"));
    let (status, body) = post(&base, &cookie, "/academie/relance", &confirmed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(ours[0].as_str()) && !body.contains(two.other.as_str()),
        "{body}"
    );

    // An establishment is refused the view and the relaunch.
    let school = log_in_as(
        &app,
        &base,
        Role::Establishment {
            uai: ours[0].clone(),
        },
    )
    .await;
    let (status, _) = page(&base, &school, "/academie").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post(&base, &school, "/academie/relance", &confirmed).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn cookie_admin(app: &TestApp, base: &str) -> String {
    log_in_as(app, base, Role::Admin).await
}
