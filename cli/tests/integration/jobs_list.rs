//! The jobs list read by key (cursor pages, capped counts) and
//! housekeeping's batched prune, on ledgers written in raw SQL so that
//! creation instants can be shared by many jobs.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use copiste::{
    domain::{JobStatus, Uai},
    jobs::admin::{self, COUNT_CAP, JobList, ListInput},
    op::{Actor, OpError},
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, rows_read};

/// A job of the fixture, as written.
#[derive(Debug, Clone)]
struct Fixture {
    id: Uuid,
    kind: &'static str,
    status: JobStatus,
    payload: Value,
    created_at: DateTime<Utc>,
}

/// The UAI of establishment `n` (7 digits and the mod-23 letter).
pub(crate) fn uai(n: u32) -> Uai {
    const LETTERS: &[u8; 23] = b"ABCDEFGHJKLMNPRSTUVWXYZ";
    let text = format!("{n:07}{}", char::from(LETTERS[(n % 23) as usize]));
    Uai::parse(&text).expect("a valid UAI")
}

/// A pool of its own on the test's database.
pub(crate) async fn pool(app: &TestApp) -> sqlx::PgPool {
    sqlx::PgPool::connect(app.config.database_url().as_str())
        .await
        .expect("pool")
}

/// Two academies: A1 holds establishments 1 and 2, A2 establishment 3;
/// two exams, E1 ("Un") and E2 ("Deux"). The operators' tests share it.
pub(crate) async fn catalogue(pool: &sqlx::PgPool) {
    for statement in [
        "INSERT INTO academies (code, name) VALUES ('A1', 'Académie 1'), ('A2', 'Académie 2')",
        "INSERT INTO sessions (code, name) VALUES ('S', 'Session')",
        "INSERT INTO exams (code, session_code, subject, kind)
         VALUES ('E1', 'S', 'Un', 'ponctuel'), ('E2', 'S', 'Deux', 'ponctuel')",
    ] {
        sqlx::query(statement)
            .execute(pool)
            .await
            .expect("catalogue");
    }
    for (n, academy) in [(1, "A1"), (2, "A1"), (3, "A2")] {
        sqlx::query("INSERT INTO establishments (uai, name, academy_code) VALUES ($1, $2, $3)")
            .bind(uai(n).as_str())
            .bind(format!("Lycée {n}"))
            .bind(academy)
            .execute(pool)
            .await
            .expect("establishment");
    }
}

async fn insert(pool: &sqlx::PgPool, job: &Fixture, finished_at: Option<DateTime<Utc>>) {
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, status, max_attempts, created_by, created_at,
                           finished_at)
         VALUES ($1, $2, $3, $4, 3, 'test', $5, $6)",
    )
    .bind(job.id)
    .bind(job.kind)
    .bind(&job.payload)
    .bind(job.status.as_str())
    .bind(job.created_at)
    .bind(finished_at)
    .execute(pool)
    .await
    .expect("insert a job");
}

/// 120 jobs of four kinds, two exams, three establishments and five
/// statuses; every ten share one creation instant (to the microsecond).
async fn ledger(pool: &sqlx::PgPool) -> Vec<Fixture> {
    const KINDS: [&str; 4] = ["closure", "bulk-render", "noop", "harmonisation-validation"];
    const STATUSES: [JobStatus; 5] = [
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Dead,
        JobStatus::Queued,
        JobStatus::Cancelled,
    ];
    let base = Utc::now() - Duration::hours(1);
    let mut jobs = Vec::new();
    for i in 0..120u32 {
        let kind = KINDS[(i % 4) as usize];
        let exam = ["E1", "E2"][(i / 4 % 2) as usize];
        let establishment = uai(i % 3 + 1);
        let payload = match kind {
            "noop" => json!({}),
            "harmonisation-validation" => {
                let academy = ["A1", "A2"][(i / 8 % 2) as usize];
                json!({"exam": exam, "academy": academy, "pass": 1})
            }
            _ => json!({"exam": exam, "establishment": establishment.as_str()}),
        };
        let job = Fixture {
            id: Uuid::new_v4(),
            kind,
            status: STATUSES[(i % 5) as usize],
            payload,
            created_at: base + Duration::seconds(i64::from(i / 10)),
        };
        insert(pool, &job, None).await;
        jobs.push(job);
    }
    jobs
}

/// Every page of a listing from its cursor on (the first page when it
/// has none), following `next`.
async fn every_page(app: &TestApp, actor: &Actor, input: &ListInput) -> Vec<JobList> {
    let app = app.app();
    let mut pages = Vec::new();
    let mut cursor = input.cursor.clone();
    loop {
        let page = admin::list(
            &app,
            actor,
            &ListInput {
                cursor: cursor.clone(),
                ..input.clone()
            },
        )
        .await
        .expect("a page");
        assert_eq!(
            page.more,
            page.next.is_some(),
            "more says whether a next page exists"
        );
        cursor.clone_from(&page.next);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() <= 200, "the pages never end");
    }
}

fn payload_str<'a>(job: &'a Fixture, field: &str) -> Option<&'a str> {
    job.payload.get(field).and_then(Value::as_str)
}

/// Pages of 7 jobs with each filter, as each kind of actor: every job the
/// listing selects comes exactly once, newest first, ties on the creation
/// instant broken by id, and nothing else comes.
#[tokio::test]
async fn keyset_pages_return_every_job_exactly_once_with_each_filter() {
    let app = TestApp::new().await;
    let pool = pool(&app).await;
    catalogue(&pool).await;
    let jobs = ledger(&pool).await;
    let admin_actor = Actor::admin("test");
    let coordinator = Actor::Coordinator {
        academy: "A1".into(),
    };
    let own = Actor::Establishment { uai: uai(2) };
    let page = ListInput {
        limit: 7,
        ..ListInput::default()
    };
    let in_a1 = |j: &Fixture| {
        payload_str(j, "academy") == Some("A1")
            || [uai(1), uai(2)]
                .iter()
                .any(|u| payload_str(j, "establishment") == Some(u.as_str()))
    };
    type Select = Box<dyn Fn(&Fixture) -> bool>;
    let cases: Vec<(&str, &Actor, ListInput, Select)> = vec![
        ("everything", &admin_actor, page.clone(), Box::new(|_| true)),
        (
            "status dead",
            &admin_actor,
            ListInput {
                status: Some(JobStatus::Dead),
                ..page.clone()
            },
            Box::new(|j| j.status == JobStatus::Dead),
        ),
        (
            "kind bulk-render",
            &admin_actor,
            ListInput {
                kind: Some("bulk-render".into()),
                ..page.clone()
            },
            Box::new(|j| j.kind == "bulk-render"),
        ),
        (
            "exam E2",
            &admin_actor,
            ListInput {
                exam: Some("E2".into()),
                ..page.clone()
            },
            Box::new(|j| payload_str(j, "exam") == Some("E2")),
        ),
        (
            "establishment 1",
            &admin_actor,
            ListInput {
                establishment: Some(uai(1)),
                ..page.clone()
            },
            Box::new(|j| payload_str(j, "establishment") == Some(uai(1).as_str())),
        ),
        (
            "exam E1 and status queued",
            &admin_actor,
            ListInput {
                exam: Some("E1".into()),
                status: Some(JobStatus::Queued),
                ..page.clone()
            },
            Box::new(|j| payload_str(j, "exam") == Some("E1") && j.status == JobStatus::Queued),
        ),
        (
            "coordinator of A1",
            &coordinator,
            page.clone(),
            Box::new(move |j| in_a1(j)),
        ),
        (
            "coordinator of A1, kind closure",
            &coordinator,
            ListInput {
                kind: Some("closure".into()),
                ..page.clone()
            },
            Box::new(move |j| in_a1(j) && j.kind == "closure"),
        ),
        (
            "establishment 2 itself",
            &own,
            page.clone(),
            Box::new(|j| payload_str(j, "establishment") == Some(uai(2).as_str())),
        ),
    ];
    for (name, actor, input, select) in cases {
        let pages = every_page(&app, actor, &input).await;
        let listed: Vec<(DateTime<Utc>, Uuid)> = pages
            .iter()
            .flat_map(|p| p.jobs.iter().map(|j| (j.created_at, j.id)))
            .collect();
        let expected: HashSet<Uuid> = jobs.iter().filter(|j| select(j)).map(|j| j.id).collect();
        assert!(!expected.is_empty(), "{name}: the fixture selects jobs");
        let unique: HashSet<Uuid> = listed.iter().map(|(_, id)| *id).collect();
        assert_eq!(unique.len(), listed.len(), "{name}: a job came twice");
        assert_eq!(unique, expected, "{name}: the jobs listed");
        assert!(
            listed.windows(2).all(|w| w[0] > w[1]),
            "{name}: newest first, ties by id: {listed:?}"
        );
        assert!(
            pages.iter().all(|p| p.jobs.len() <= 7),
            "{name}: pages of 7"
        );
        assert_eq!(
            pages.len(),
            expected.len().div_ceil(7),
            "{name}: no empty last page"
        );
    }
}

/// A cursor keeps its place when newer jobs arrive: the pages after it
/// give the jobs that were older, each once, and none of the new ones.
#[tokio::test]
async fn a_page_cursor_stays_valid_when_new_jobs_arrive() {
    let app = TestApp::new().await;
    let pool = pool(&app).await;
    catalogue(&pool).await;
    let jobs = ledger(&pool).await;
    let actor = Actor::admin("test");
    let input = ListInput {
        limit: 25,
        ..ListInput::default()
    };
    let first = admin::list(&app.app(), &actor, &input)
        .await
        .expect("first page");
    let mut seen: Vec<Uuid> = first.jobs.iter().map(|j| j.id).collect();
    // New jobs, some at the very instant of the newest job shown.
    let newest = first.jobs[0].created_at;
    let mut arrived = HashSet::new();
    for i in 0..30 {
        let job = Fixture {
            id: Uuid::new_v4(),
            kind: "noop",
            status: JobStatus::Queued,
            payload: json!({}),
            created_at: if i % 2 == 0 {
                Utc::now()
            } else {
                newest + Duration::microseconds(1)
            },
        };
        insert(&pool, &job, None).await;
        arrived.insert(job.id);
    }
    let rest = every_page(
        &app,
        &actor,
        &ListInput {
            cursor: first.next.clone(),
            ..input
        },
    )
    .await;
    seen.extend(rest.iter().flat_map(|p| p.jobs.iter().map(|j| j.id)));
    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a job came twice");
    assert!(
        unique.is_disjoint(&arrived),
        "a newer job came after the cursor"
    );
    assert_eq!(unique, jobs.iter().map(|j| j.id).collect::<HashSet<_>>());
}

/// A cursor the listing did not make is invalid input naming `cursor`;
/// so is an offset given with a cursor, or past the deprecated bound.
#[tokio::test]
async fn a_malformed_cursor_is_invalid_input_naming_the_cursor() {
    let app = TestApp::new().await;
    let actor = Actor::admin("test");
    let listed = |cursor: &str, offset: i64| {
        let app = app.app();
        let actor = actor.clone();
        let input = ListInput {
            limit: 10,
            cursor: Some(cursor.to_owned()),
            offset,
            ..ListInput::default()
        };
        async move { admin::list(&app, &actor, &input).await }
    };
    for bad in [
        "not a cursor!",
        "",
        "AAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        match listed(bad, 0).await {
            Err(OpError::Invalid { field, reason }) => {
                assert_eq!(field, "cursor", "{bad:?}");
                assert!(reason.contains("cursor"), "{reason}");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // A cursor made by a listing is accepted, but not with an offset.
    let good = admin::Cursor::after(&copiste::db::jobs::JobRow {
        id: Uuid::nil(),
        kind: "noop".into(),
        status: JobStatus::Queued,
        payload: json!({}),
        priority: 0,
        attempts: 0,
        max_attempts: 1,
        run_at: Utc::now(),
        lease_until: None,
        worker: None,
        progress_done: None,
        progress_total: None,
        result: None,
        last_error: None,
        idempotency_key: None,
        created_by: "test".into(),
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
    })
    .encode();
    assert!(listed(&good, 0).await.is_ok());
    assert!(matches!(
        listed(&good, 5).await,
        Err(OpError::Invalid {
            field: "offset",
            ..
        })
    ));
    let past = admin::list(
        &app.app(),
        &actor,
        &ListInput {
            limit: 10,
            offset: admin::MAX_OFFSET + 1,
            ..ListInput::default()
        },
    )
    .await;
    assert!(
        matches!(
            past,
            Err(OpError::Invalid {
                field: "offset",
                ..
            })
        ),
        "{past:?}"
    );
}

/// Each status is counted up to the cap: a status with more jobs shows
/// the cap, marked as capped; the others their exact counts.
#[tokio::test]
async fn per_status_counts_stop_at_the_cap() {
    let app = TestApp::new().await;
    let pool = pool(&app).await;
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, status, max_attempts, created_by)
         SELECT gen_random_uuid(), 'noop', '{}', 'succeeded', 1, 'test'
         FROM generate_series(1, $1::int)",
    )
    .bind(i32::try_from(COUNT_CAP).expect("cap") + 5)
    .execute(&pool)
    .await
    .expect("many jobs");
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, status, max_attempts, created_by)
         SELECT gen_random_uuid(), 'noop', '{}', 'dead', 1, 'test' FROM generate_series(1, 3)",
    )
    .execute(&pool)
    .await
    .expect("dead jobs");
    let list = admin::list(
        &app.app(),
        &Actor::admin("test"),
        &ListInput {
            limit: 1,
            ..ListInput::default()
        },
    )
    .await
    .expect("list");
    let count = |s: JobStatus| {
        list.counts
            .iter()
            .find(|(status, _)| *status == s)
            .map(|(_, c)| *c)
            .expect("every status is counted")
    };
    assert_eq!(count(JobStatus::Succeeded).n, COUNT_CAP);
    assert!(count(JobStatus::Succeeded).capped);
    assert_eq!(
        count(JobStatus::Succeeded).to_string(),
        format!("{COUNT_CAP}+")
    );
    assert_eq!(
        (count(JobStatus::Dead).n, count(JobStatus::Dead).capped),
        (3, false)
    );
    assert_eq!(count(JobStatus::Queued).n, 0);
}

/// The counts read each status through a plan of its own: the index of
/// a status with few jobs, at most the cap's rows of one with many. One
/// statement counting every status (a subquery per row of `unnest`) was
/// planned once for all statuses: after a national night (46 000
/// succeeded jobs, each row updated several times) it scanned the whole
/// ledger six times per page, 40 ms a page, and the jobs list's p99 under
/// load was 291 ms. Measured by the rows the counting connection read
/// (`pg_stat_user_tables`), not by time.
#[tokio::test]
async fn counts_read_each_status_through_its_own_plan() {
    let app = TestApp::new().await;
    let pool = pool(&app).await;
    let many = i32::try_from(COUNT_CAP).expect("cap") * 3;
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, status, max_attempts, created_by)
         SELECT gen_random_uuid(), 'noop', '{}',
                CASE WHEN g % 1000 = 0 THEN 'dead' ELSE 'succeeded' END, 1, 'test'
         FROM generate_series(1, $1::int) g",
    )
    .bind(many)
    .execute(&pool)
    .await
    .expect("many jobs");
    sqlx::query("ANALYZE jobs")
        .execute(&pool)
        .await
        .expect("analyse");
    let before = rows_read(&pool, "jobs").await;
    // One connection: the one whose statistics are flushed below.
    let db = copiste::db::Db::connect(&app.config.database_url(), 1)
        .await
        .expect("one connection");
    let counts =
        copiste::db::jobs::count_capped(&db, &copiste::db::jobs::JobFilter::default(), COUNT_CAP)
            .await
            .expect("counts");
    assert!(
        counts.contains(&(JobStatus::Succeeded, COUNT_CAP)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&(JobStatus::Dead, i64::from(many / 1000))),
        "{counts:?}"
    );
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(db.pg_pool())
        .await
        .expect("flush the statistics");
    db.close().await;
    // Flushed when the connection goes idle or closes; wait for it.
    let mut rows = 0;
    for _ in 0..100 {
        rows = rows_read(&pool, "jobs").await - before;
        if rows > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        rows > 0,
        "the counting connection's statistics never arrived"
    );
    // The cap's rows for `succeeded`, the dead jobs, a few more; not the
    // ledger once per status (six times 30 000 rows).
    assert!(
        rows <= COUNT_CAP + COUNT_CAP / 2,
        "the counts read {rows} rows of a ledger of {many} jobs"
    );
}

/// Housekeeping's prune deletes, batch after batch, exactly the finished
/// jobs that ended before the cutoff, with their events, and clears the
/// closure units and downloads that named them; it leaves every other
/// job (finished later, queued, running) and its history.
#[tokio::test]
async fn the_batched_prune_removes_exactly_the_finished_jobs_past_retention() {
    let app = TestApp::new().await;
    let pool = pool(&app).await;
    catalogue(&pool).await;
    let now = Utc::now();
    let cutoff = now - Duration::days(30);
    let mut old = HashSet::new();
    let mut kept = HashSet::new();
    for i in 0..43u32 {
        let (status, finished_at) = match i % 6 {
            0 => (JobStatus::Succeeded, Some(cutoff - Duration::days(2))),
            1 => (JobStatus::Failed, Some(cutoff - Duration::hours(1))),
            2 => (JobStatus::Dead, Some(cutoff - Duration::days(9))),
            3 => (JobStatus::Cancelled, Some(cutoff - Duration::seconds(1))),
            // Finished after the cutoff: kept.
            4 => (JobStatus::Succeeded, Some(cutoff + Duration::hours(1))),
            // Old but not finished: kept.
            _ => (JobStatus::Queued, None),
        };
        let job = Fixture {
            id: Uuid::new_v4(),
            kind: "closure",
            status,
            payload: json!({"exam": "E1", "establishment": uai(i % 3 + 1).as_str()}),
            created_at: cutoff - Duration::days(10),
        };
        insert(&pool, &job, finished_at).await;
        for event in ["enqueued", "started", "succeeded"] {
            sqlx::query("INSERT INTO job_events (job_id, event, attempt) VALUES ($1, $2, 1)")
                .bind(job.id)
                .bind(event)
                .execute(&pool)
                .await
                .expect("event");
        }
        if finished_at.is_some_and(|f| f < cutoff) {
            old.insert(job.id);
        } else {
            kept.insert(job.id);
        }
    }
    // A closure unit and a download that name pruned jobs.
    let named = *old.iter().next().expect("an old job");
    sqlx::query(
        "INSERT INTO closure_units (exam_code, establishment_uai, active_job_id)
         VALUES ('E1', $1, $2)",
    )
    .bind(uai(1).as_str())
    .bind(named)
    .execute(&pool)
    .await
    .expect("unit");
    sqlx::query(
        "INSERT INTO downloads (id, exam_code, establishment_uai, options, parts, copies, errors,
                                job_id, expires_at)
         VALUES (gen_random_uuid(), 'E1', $1, 'd1a1n1', '[]', 0, 0, $2, now())",
    )
    .bind(uai(1).as_str())
    .bind(named)
    .execute(&pool)
    .await
    .expect("download");

    let pruned = copiste::db::schedule::prune_jobs(&app.db, cutoff, 4)
        .await
        .expect("prune");
    assert_eq!(
        pruned,
        old.len() as u64,
        "every old finished job, over several batches"
    );
    assert!(old.len() > 4 * 3, "the fixture needs several batches");
    let left: HashSet<Uuid> = sqlx::query_scalar("SELECT id FROM jobs")
        .fetch_all(&pool)
        .await
        .expect("jobs")
        .into_iter()
        .collect();
    assert_eq!(left, kept, "exactly the others are left");
    let events: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT job_id, count(*) FROM job_events GROUP BY job_id")
            .fetch_all(&pool)
            .await
            .expect("events");
    assert_eq!(
        events.iter().map(|(id, _)| *id).collect::<HashSet<_>>(),
        kept,
        "the pruned jobs' events went with them"
    );
    assert!(events.iter().all(|(_, n)| *n == 3), "{events:?}");
    let unit: Option<Uuid> =
        sqlx::query_scalar("SELECT active_job_id FROM closure_units WHERE exam_code = 'E1'")
            .fetch_one(&pool)
            .await
            .expect("unit");
    assert_eq!(unit, None);
    let download: Option<Uuid> = sqlx::query_scalar("SELECT job_id FROM downloads")
        .fetch_one(&pool)
        .await
        .expect("download");
    assert_eq!(download, None);
    // A second run finds nothing more.
    let again = copiste::db::schedule::prune_jobs(&app.db, cutoff, 4)
        .await
        .expect("prune again");
    assert_eq!(again, 0);
}
