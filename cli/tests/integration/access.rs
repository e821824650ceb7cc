//! Who may do what: every operation a person can ask for, asked by every
//! kind of actor, is allowed (with the answer it gives on this world) or
//! `Forbidden`,
//! as docs/domain.md ("Who may do what") says. The same table holds for
//! every front door, since the scope lives in the operations.

use copiste::{
    app::App,
    closure::{
        self, Validation,
        request::{PassInput, UnitsInput},
    },
    domain::Uai,
    download::{
        self, AllZipsInput, PrebuildInput, ZipInput,
        search::{SearchInput, search_candidates},
    },
    jobs::{
        admin::{self, EnqueueInput, ListInput},
        operators,
    },
    op::{Actor, OpError},
    render::{
        RequestedOptions,
        copy::{CopyInput, render_copy},
    },
    schedule,
};
use serde_json::json;

use crate::support::{TestApp, TwoAcademies};

const PHILO: &str = "BAC26-PHILO";
const E3C: &str = "BAC26-E3C-HG";
const MATHS_H: &str = "BAC26-MATHS-H";

/// One operation with its input fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CloseUnit,
    RelaunchUnit,
    Status,
    Publish,
    ValidateOwnAcademy,
    ValidateAcademyA,
    Search,
    RenderCopy,
    ZipRequest,
    ZipLinks,
    ZipRequestAll,
    ZipPrebuild,
    JobsList,
    JobsShow,
    JobsRetry,
    JobsCancel,
    JobsEnqueue,
    ScheduleSlot,
    JobsNotes,
    DeadJobs,
    RetryDead,
    AcademyView,
    RelaunchInAcademy,
}

const OPS: [Op; 23] = [
    Op::CloseUnit,
    Op::RelaunchUnit,
    Op::Status,
    Op::Publish,
    Op::ValidateOwnAcademy,
    Op::ValidateAcademyA,
    Op::Search,
    Op::RenderCopy,
    Op::ZipRequest,
    Op::ZipLinks,
    Op::ZipRequestAll,
    Op::ZipPrebuild,
    Op::JobsList,
    Op::JobsShow,
    Op::JobsRetry,
    Op::JobsCancel,
    Op::JobsEnqueue,
    Op::ScheduleSlot,
    Op::JobsNotes,
    Op::DeadJobs,
    Op::RetryDead,
    Op::AcademyView,
    Op::RelaunchInAcademy,
];

/// What the operations act on: establishment `uai` of academy `academy_a`,
/// one of its candidates, and a job.
struct World {
    app: App,
    uai: Uai,
    academy_a: String,
    numero: String,
    job: uuid::Uuid,
    schedules: Vec<schedule::Schedule>,
}

async fn ask(w: &World, actor: &Actor, op: Op) -> Result<(), OpError> {
    let app = &w.app;
    let unit = UnitsInput::unit(PHILO, w.uai.clone());
    let zip = ZipInput {
        exam: PHILO.into(),
        establishment: w.uai.clone(),
        options: RequestedOptions::default(),
    };
    let pass = |academy: Option<&str>| PassInput {
        exam: MATHS_H.into(),
        academy: academy.map(str::to_owned),
        selection: Validation::All,
    };
    match op {
        Op::CloseUnit => closure::request_closure(app, actor, &unit).await.map(drop),
        Op::RelaunchUnit => closure::request_relaunch(app, actor, &unit).await.map(drop),
        Op::Status => closure::status::exam_status(app, actor, PHILO)
            .await
            .map(drop),
        Op::Publish => closure::publish(app, actor, E3C).await.map(drop),
        Op::ValidateOwnAcademy => closure::validate_harmonisation(app, actor, &pass(None))
            .await
            .map(drop),
        Op::ValidateAcademyA => {
            closure::validate_harmonisation(app, actor, &pass(Some(&w.academy_a)))
                .await
                .map(drop)
        }
        Op::Search => {
            let input = SearchInput {
                exam: PHILO.into(),
                establishment: w.uai.clone(),
                query: "a".into(),
                limit: 10,
                offset: 0,
            };
            search_candidates(app, actor, &input).await.map(drop)
        }
        Op::RenderCopy => {
            let input = CopyInput {
                exam: PHILO.into(),
                numero: w.numero.clone(),
                options: RequestedOptions::default(),
            };
            render_copy(app, actor, &input).await.map(drop)
        }
        Op::ZipRequest => download::request(app, actor, &zip).await.map(drop),
        Op::ZipLinks => download::current_links(app, actor, &zip).await.map(drop),
        Op::ZipRequestAll => {
            let input = AllZipsInput {
                exam: PHILO.into(),
                options: RequestedOptions::default(),
            };
            download::request_all(app, actor, &input).await.map(drop)
        }
        Op::ZipPrebuild => {
            let input = PrebuildInput {
                since: chrono::Utc::now() - chrono::Duration::days(7),
                options: RequestedOptions::default(),
            };
            download::prebuild(app, actor, &input).await.map(drop)
        }
        Op::JobsList => {
            let input = ListInput {
                limit: 10,
                ..ListInput::default()
            };
            admin::list(app, actor, &input).await.map(drop)
        }
        Op::JobsShow => admin::show(app, actor, w.job).await.map(drop),
        Op::JobsRetry => admin::retry(app, actor, w.job).await.map(drop),
        Op::JobsCancel => admin::cancel(app, actor, w.job).await.map(drop),
        Op::JobsEnqueue => {
            let input = EnqueueInput {
                kind: "noop".into(),
                payload: json!({}),
                key: None,
            };
            admin::enqueue(app, actor, &input).await.map(drop)
        }
        Op::ScheduleSlot => schedule::scheduler::run_slot(
            app,
            actor,
            &w.schedules,
            "housekeeping",
            chrono::Utc::now(),
        )
        .await
        .map(drop),
        Op::JobsNotes => operators::notes(app, actor, &[]).await.map(drop),
        Op::DeadJobs => operators::dead_jobs(app, actor, &ListInput::default())
            .await
            .map(drop),
        Op::RetryDead => operators::retry_dead(app, actor, &ListInput::default())
            .await
            .map(drop),
        Op::AcademyView => closure::status::academy_view(app, actor, &w.academy_a)
            .await
            .map(drop),
        Op::RelaunchInAcademy => {
            closure::request::request_relaunch_in_academy(app, actor, PHILO, &w.academy_a)
                .await
                .map(drop)
        }
    }
}

/// Whether `actor` may ask for `op` on establishment `w.uai` (academy A).
fn allowed(actor: &Who, op: Op) -> bool {
    use Op::*;
    use Who::*;
    match op {
        // Everyone reads a status, scoped to what it reaches.
        Status => true,
        CloseUnit | RelaunchUnit => {
            matches!(actor, Admin | CoordinatorA | Establishment | Scheduler)
        }
        Publish => matches!(actor, Admin),
        // A coordinator validates its own academy's passes.
        ValidateOwnAcademy => matches!(actor, Admin | CoordinatorA | CoordinatorB),
        ValidateAcademyA => matches!(actor, Admin | CoordinatorA),
        Search | RenderCopy | ZipRequest | ZipLinks => {
            matches!(actor, Admin | CoordinatorA | Establishment)
        }
        // Every establishment's zip of an exam: admin, and a coordinator
        // for its own academy; an establishment asks for its own zip.
        ZipRequestAll => matches!(actor, Admin | CoordinatorA | CoordinatorB),
        // Pre-building zips: the operators.
        ZipPrebuild => matches!(actor, Admin | Scheduler),
        // Everyone lists the jobs it reaches (scoped); the noop job names
        // no establishment, so only the operators reach it.
        JobsList => true,
        JobsShow | JobsRetry | JobsCancel | JobsEnqueue | ScheduleSlot => {
            matches!(actor, Admin | Scheduler)
        }
        // The operators' views: the list's notes are scoped like the list;
        // the bulk retry is every operator's, scoped; an academy's view and
        // relaunch are its coordinator's and the operators'.
        JobsNotes => true,
        DeadJobs | RetryDead => !matches!(actor, Establishment | OtherEstablishment),
        AcademyView | RelaunchInAcademy => matches!(actor, Admin | CoordinatorA | Scheduler),
    }
}

/// What an operation answers an actor it allows, on this world: done, or
/// the rule's refusal or a conflict with the state (never "not found" or
/// "invalid": the world holds what every operation names).
fn expected_answer(who: Who, op: Op) -> &'static str {
    match op {
        // Nothing of PHILO is transmitted yet (the exam is not closed).
        Op::RenderCopy | Op::ZipRequest => "refused",
        // The noop job is queued when the scheduler asks to retry it, then
        // cancelled by the scheduler: admin, asking last, retries it.
        Op::JobsRetry if who != Who::Admin => "conflict",
        _ => "ok",
    }
}

/// The kind of an operation's answer.
fn kind(answer: &Result<(), OpError>) -> &'static str {
    match answer {
        Ok(()) => "ok",
        Err(OpError::Invalid { .. }) => "invalid",
        Err(OpError::NotFound { .. }) => "not found",
        Err(OpError::Forbidden { .. }) => "forbidden",
        Err(OpError::Refused(_)) => "refused",
        Err(OpError::Conflict { .. }) => "conflict",
        Err(OpError::Internal(_)) => "internal",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Admin,
    CoordinatorA,
    CoordinatorB,
    /// The establishment the operations name.
    Establishment,
    /// Another establishment, of the other academy.
    OtherEstablishment,
    Scheduler,
}

#[tokio::test]
async fn every_operation_is_allowed_or_forbidden_by_who_asks() {
    let test = TestApp::new().await;
    test.import_demo(3, 6).await;
    let app = test.app();
    let TwoAcademies {
        uai,
        academy_a,
        other,
        academy_b,
    } = test.two_academies(PHILO).await;
    let numero = test.first_numero(PHILO, &uai).await;
    let job = test
        .enqueue(
            &copiste::jobs::noop::Noop::default(),
            copiste::jobs::EnqueueOptions::by("test"),
        )
        .await;
    let schedules =
        schedule::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs"))
            .expect("schedules");
    let world = World {
        app: app.clone(),
        uai: uai.clone(),
        academy_a: academy_a.clone(),
        numero,
        job,
        schedules,
    };
    let actors = [
        (Who::Admin, Actor::admin("test")),
        (
            Who::CoordinatorA,
            Actor::Coordinator {
                academy: academy_a.clone(),
            },
        ),
        (Who::CoordinatorB, Actor::Coordinator { academy: academy_b }),
        (
            Who::Establishment,
            Actor::Establishment { uai: uai.clone() },
        ),
        (Who::OtherEstablishment, Actor::Establishment { uai: other }),
        (Who::Scheduler, Actor::Scheduler),
    ];
    let mut wrong = Vec::new();
    let mut asked = 0;
    // Admin last, so that what it changes (a publication, a cancelled
    // job) comes after every other actor asked.
    for (who, actor) in actors.iter().rev() {
        for op in OPS {
            asked += 1;
            let answer = ask(&world, actor, op).await;
            if let Err(OpError::Internal(e)) = &answer {
                wrong.push(format!("{op:?} by {who:?}: internal error {e:#}"));
                continue;
            }
            let expected = if allowed(who, op) {
                expected_answer(*who, op)
            } else {
                "forbidden"
            };
            if kind(&answer) != expected {
                wrong.push(format!(
                    "{op:?} by {who:?}: expected {expected}, got {answer:?}"
                ));
            }
        }
    }
    assert_eq!(asked, 6 * OPS.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn a_status_shows_only_the_units_the_actor_reaches() {
    let test = TestApp::new().await;
    test.import_demo(3, 4).await;
    let app = test.app();
    let uais = copiste::db::catalog::exam_establishments(&app.db, PHILO, None)
        .await
        .expect("establishments");
    assert_eq!(uais.len(), 3);
    let all = closure::status::exam_status(&app, &Actor::admin("t"), PHILO)
        .await
        .expect("status");
    assert_eq!(all.units.len(), 3);
    let own = closure::status::exam_status(
        &app,
        &Actor::Establishment {
            uai: uais[1].clone(),
        },
        PHILO,
    )
    .await
    .expect("status");
    assert_eq!(
        own.units
            .iter()
            .map(|u| u.establishment.as_str())
            .collect::<Vec<_>>(),
        vec![uais[1].as_str()]
    );
    let academy = test.academy_of(&uais[0]).await;
    let of_academy = closure::status::exam_status(
        &app,
        &Actor::Coordinator {
            academy: academy.clone(),
        },
        PHILO,
    )
    .await
    .expect("status");
    let in_academy = copiste::db::catalog::exam_establishments(&app.db, PHILO, Some(&academy))
        .await
        .expect("establishments");
    assert!(
        !in_academy.is_empty() && in_academy.len() < 3,
        "{in_academy:?}"
    );
    assert_eq!(of_academy.units.len(), in_academy.len());
    // A closure asked by a coordinator for the whole exam covers its
    // academy's units only.
    let units = closure::request_closure(
        &app,
        &Actor::Coordinator { academy },
        &UnitsInput::exam(PHILO),
    )
    .await
    .expect("closure");
    let mut closed: Vec<Uai> = units.into_iter().map(|u| u.establishment).collect();
    closed.sort();
    assert_eq!(closed, in_academy);
}

#[test]
fn each_error_has_its_own_exit_code() {
    let errors = [
        OpError::invalid("exam", "must not be empty"),
        OpError::not_found("exam X"),
        Actor::Scheduler.forbidden("render a copy"),
        OpError::Refused(copiste::op::Refusal::Harmonised("X".into())),
        OpError::conflict("job is running"),
        OpError::Internal(anyhow::anyhow!("database down")),
    ];
    let codes: Vec<u8> = errors.iter().map(OpError::exit_code).collect();
    assert_eq!(codes, vec![2, 3, 4, 5, 6, 1]);
    assert_eq!(errors[0].to_string(), "invalid exam: must not be empty");
    assert_eq!(errors[2].to_string(), "the scheduler may not render a copy");
}

#[tokio::test]
async fn a_jobs_listing_shows_what_the_actor_reaches_page_by_page() {
    let test = TestApp::new().await;
    test.import_demo(3, 2).await;
    let app = test.app();
    let uais = copiste::db::catalog::exam_establishments(&app.db, PHILO, None)
        .await
        .expect("establishments");
    let mut ids = std::collections::HashMap::new();
    for uai in &uais {
        let id = test
            .enqueue(
                &copiste::jobs::export_retry::ExportRetry {
                    exam: PHILO.into(),
                    establishment: uai.clone(),
                },
                copiste::jobs::EnqueueOptions::by("test"),
            )
            .await;
        ids.insert(uai.clone(), id);
    }
    test.enqueue(
        &copiste::jobs::noop::Noop::default(),
        copiste::jobs::EnqueueOptions::by("test"),
    )
    .await;
    let listed = |actor: Actor, input: ListInput| {
        let app = app.clone();
        async move {
            let list = admin::list(&app, &actor, &input).await.expect("list");
            let mut ids: Vec<uuid::Uuid> = list.jobs.iter().map(|j| j.id).collect();
            ids.sort();
            (ids, list.more, list.counts)
        }
    };
    let all = ListInput {
        limit: 100,
        ..ListInput::default()
    };
    let (everything, _, counts) = listed(Actor::admin("t"), all.clone()).await;
    assert_eq!(everything.len(), 4);
    assert_eq!(counts.iter().map(|(_, c)| c.n).sum::<i64>(), 4);
    // An establishment: its own job only.
    let (own, _, counts) = listed(
        Actor::Establishment {
            uai: uais[0].clone(),
        },
        all.clone(),
    )
    .await;
    assert_eq!(own, vec![ids[&uais[0]]]);
    assert_eq!(counts.iter().map(|(_, c)| c.n).sum::<i64>(), 1);
    // A coordinator: the jobs of its academy's establishments.
    let academy = test.academy_of(&uais[0]).await;
    let mut expected = Vec::new();
    for u in &uais {
        if test.academy_of(u).await == academy {
            expected.push(ids[u]);
        }
    }
    expected.sort();
    let (of_academy, _, _) = listed(Actor::Coordinator { academy }, all.clone()).await;
    assert_eq!(of_academy, expected);
    assert!(of_academy.len() < 3);
    // Filters and pages.
    let (by_exam, _, _) = listed(
        Actor::admin("t"),
        ListInput {
            exam: Some(PHILO.into()),
            ..all.clone()
        },
    )
    .await;
    assert_eq!(by_exam.len(), 3, "the noop job names no exam");
    let (first, more, _) = listed(
        Actor::admin("t"),
        ListInput {
            limit: 3,
            ..ListInput::default()
        },
    )
    .await;
    assert_eq!((first.len(), more), (3, true));
    let (last, more, _) = listed(
        Actor::admin("t"),
        ListInput {
            limit: 3,
            offset: 3,
            ..ListInput::default()
        },
    )
    .await;
    assert_eq!((last.len(), more), (1, false));
    // Asking for another establishment's jobs is forbidden.
    let other = admin::list(
        &app,
        &Actor::Establishment {
            uai: uais[0].clone(),
        },
        &ListInput {
            establishment: Some(uais[1].clone()),
            ..all
        },
    )
    .await;
    assert!(matches!(other, Err(OpError::Forbidden { .. })), "{other:?}");
}

/// A job that sends an exam's items (here a closure cancelled by the
/// publication) is never run again once Cyclades has published the exam:
/// retrying it is refused by the operation to every actor that reaches
/// it, and forbidden to the others, and the job stays cancelled.
#[tokio::test]
async fn no_one_retries_a_closure_job_of_a_published_exam() {
    let test = TestApp::new().await;
    test.import_demo(3, 2).await;
    let app = test.app();
    let TwoAcademies { uai, academy_a, .. } = test.two_academies(PHILO).await;
    let job = test.enqueue_closure(PHILO, &uai).await;
    let published = closure::publish(&app, &Actor::admin("test"), PHILO)
        .await
        .expect("publish");
    assert_eq!(published.cancelled, vec![job]);
    for actor in [
        Actor::admin("test"),
        Actor::Scheduler,
        Actor::Coordinator {
            academy: academy_a.clone(),
        },
    ] {
        match admin::retry(&app, &actor, job).await {
            Err(OpError::Refused(copiste::op::Refusal::Published { exam, .. })) => {
                assert_eq!(exam, PHILO);
            }
            other => panic!("{actor:?} retried a published exam's closure: {other:?}"),
        }
    }
    let refused = admin::retry(&app, &Actor::Establishment { uai }, job).await;
    assert!(
        matches!(refused, Err(OpError::Forbidden { .. })),
        "{refused:?}"
    );
    assert_eq!(test.job(job).await.status.as_str(), "cancelled");
}

/// Moves a session and its token `hours` into the past, as if that long
/// had passed since the login.
async fn age(test: &TestApp, token: uuid::Uuid, hours: i64) {
    let pool = sqlx::PgPool::connect(test.config.database_url().as_str())
        .await
        .expect("connect");
    let shift = format!("{hours} hours");
    for statement in [
        "UPDATE web_sessions SET created_at = created_at - $2::interval,
                expires_at = expires_at - $2::interval WHERE token_id = $1",
        "UPDATE access_tokens SET created_at = created_at - $2::interval,
                expires_at = expires_at - $2::interval WHERE id = $1",
    ] {
        sqlx::query(statement)
            .bind(token)
            .bind(&shift)
            .execute(&pool)
            .await
            .expect("age the session and its token");
    }
    pool.close().await;
}

/// Logs in with a new establishment token of `lifetime`; returns the
/// token's id, the session's cookie and its end.
async fn logged_in(
    test: &TestApp,
    uai: &Uai,
    lifetime: Option<chrono::Duration>,
) -> (uuid::Uuid, String, chrono::DateTime<chrono::Utc>) {
    let app = test.app();
    let issued = copiste::access::create_token(
        &app,
        &Actor::admin("test"),
        &copiste::access::TokenInput {
            role: copiste::access::Role::Establishment { uai: uai.clone() },
            name: "session".into(),
            lifetime,
        },
    )
    .await
    .expect("token");
    match copiste::access::log_in(&app, &issued.token)
        .await
        .expect("log in")
    {
        copiste::access::Login::Session { cookie, expires_at } => (issued.id, cookie, expires_at),
        refused => panic!("login refused: {refused:?}"),
    }
}

/// Whether the session of `cookie` is still admitted.
async fn admitted(test: &TestApp, cookie: &str) -> bool {
    match copiste::access::session(&test.app(), cookie)
        .await
        .expect("session")
    {
        copiste::access::Authenticated::Actor { .. } => true,
        copiste::access::Authenticated::Refused(_) => false,
    }
}

/// A page session lasts 12 hours, and never past its token's expiry.
#[tokio::test]
async fn a_session_lasts_twelve_hours_and_never_past_its_token() {
    let test = TestApp::new().await;
    test.import_demo(2, 2).await;
    let TwoAcademies { uai, .. } = test.two_academies(PHILO).await;

    // A token without an end: twelve hours.
    let before = chrono::Utc::now();
    let (token, cookie, ends) = logged_in(&test, &uai, None).await;
    let twelve = copiste::access::SESSION_LIFETIME;
    assert_eq!(twelve, chrono::Duration::hours(12));
    assert!(
        ends >= before + twelve && ends <= chrono::Utc::now() + twelve,
        "{ends}"
    );
    assert!(admitted(&test, &cookie).await);
    age(&test, token, 11).await;
    assert!(admitted(&test, &cookie).await, "ended before 12 h");
    age(&test, token, 1).await;
    assert!(!admitted(&test, &cookie).await, "still open after 12 h");

    // A token that ends in two hours: the session ends with it.
    let before = chrono::Utc::now();
    let (token, cookie, ends) = logged_in(&test, &uai, Some(chrono::Duration::hours(2))).await;
    assert!(
        ends >= before + chrono::Duration::hours(2)
            && ends <= chrono::Utc::now() + chrono::Duration::hours(2),
        "{ends}"
    );
    let stored: chrono::DateTime<chrono::Utc> = {
        let pool = sqlx::PgPool::connect(test.config.database_url().as_str())
            .await
            .expect("connect");
        sqlx::query_scalar("SELECT expires_at FROM web_sessions WHERE token_id = $1")
            .bind(token)
            .fetch_one(&pool)
            .await
            .expect("the session")
    };
    // The same instant (the database keeps microseconds).
    assert!(
        (stored - ends).abs() < chrono::Duration::milliseconds(1),
        "stored {stored}, answered {ends}"
    );
    assert!(admitted(&test, &cookie).await);
    age(&test, token, 1).await;
    assert!(admitted(&test, &cookie).await, "ended before its token");
    age(&test, token, 1).await;
    assert!(!admitted(&test, &cookie).await, "outlived its token");
}
