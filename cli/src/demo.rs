//! `copiste demo`: the README's first command. Migrates, generates a
//! small dataset, imports it, runs a worker in-process through a batch of
//! noop jobs and prints a summary. Later issues add closure, rendering
//! and links.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use copiste::{
    app::App,
    config::Config,
    db::{self, Db},
    jobs::{self, EnqueueOptions, noop::Noop},
    op::{Actor, OpError},
    storage::Storage,
    worker::{Worker, WorkerOptions},
};
use copiste_tools::demo_data::{self, DemoDataOptions};

/// Runs the demo against the configured services, or throwaway ones.
pub async fn run(mut config: Config, job_count: u32, candidates: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    let local = copiste::local_services::ensure(&config).await?;
    let db_name = config
        .database
        .url
        .path()
        .trim_start_matches('/')
        .to_owned();
    let db_name = if db_name.is_empty() {
        "copiste".to_owned()
    } else {
        db_name
    };
    config.database.url = db::ensure_database(&local.database_url, &db_name).await?;
    config.database.password = None;
    config.redis.url = local.redis_url.clone();
    config.redis.password = None;

    println!("== copiste demo");
    println!("database  {}", db::redact(&config.database.url));
    println!("redis     {}", config.redis.url);
    let db = Db::connect(&config.database_url(), config.database.max_connections).await?;
    db.migrate().await?;
    println!("migrated");

    let storage = Storage::open(&config.storage)?;
    println!("storage   {}", storage.describe());
    generate_and_import(&config, &db, &storage, candidates).await?;

    let demo_key = config.downloads.signing_key.is_none();
    if demo_key {
        config.downloads.signing_key = Some(copiste::config::Secret::new(DEMO_SIGNING_KEY));
    }
    let app = App::new(config, db.clone(), storage)?;
    let worker = Worker::start(app.clone(), WorkerOptions::from_config(&app)).await?;
    run_noop_jobs(&db, job_count).await?;

    show_schedules();
    close_every_exam(&db, &app).await?;
    request_every_zip(&db, &app, demo_key).await?;
    print_tokens(&app, demo_key, local.started_any()).await?;
    worker.shutdown(Duration::from_secs(10)).await?;
    db.close().await;
    drop(local);
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Generates a small session into a temporary directory and imports it.
async fn generate_and_import(
    config: &Config,
    db: &Db,
    storage: &Storage,
    candidates: u32,
) -> anyhow::Result<()> {
    let dataset = tempfile::Builder::new()
        .prefix("copiste-demo-")
        .tempdir()
        .context("creating a directory for the demo dataset")?;
    let out = dataset.path().join("session");
    let opts = DemoDataOptions {
        establishments: 3,
        candidates,
        pages: 2,
        seed: 2026,
    };
    let generated = tokio::task::spawn_blocking({
        let out = out.clone();
        let span = tracing::Span::current();
        move || {
            span.in_scope(|| {
                let progress = demo_data::Progress::stderr();
                let generated = demo_data::generate(&out, &opts, &|done, total| {
                    progress.update(done, total);
                });
                progress.finish();
                generated
            })
        }
    })
    .await
    .context("the dataset generator panicked")??;
    println!(
        "generated {} establishments, {} candidates, {} copies, {} scans ({:.1} MB)",
        generated.establishments,
        generated.candidates,
        generated.copies,
        generated.scans,
        generated.bytes as f64 / 1e6
    );
    let imported = copiste::import::import_dir_with(
        db,
        storage,
        &out,
        &copiste::import::ImportOptions::from_config(&config.import),
        &copiste::import::progress_bar(),
    )
    .await?;
    println!("imported: {imported}");
    Ok(())
}

/// Enqueues `job_count` noop jobs, waits for them through Redis and the
/// worker, and prints the rate.
async fn run_noop_jobs(db: &Db, job_count: u32) -> anyhow::Result<()> {
    let run_started = Instant::now();
    let mut tx = db.begin().await?;
    let mut ids = Vec::with_capacity(job_count as usize);
    for i in 0..job_count {
        let job = Noop {
            sleep_ms: u64::from(i % 5),
            ..Noop::default()
        };
        ids.push(
            jobs::enqueue(&mut tx, &job, EnqueueOptions::by("demo"))
                .await?
                .id(),
        );
    }
    tx.commit().await?;
    let bar = crate::progress_bar("noop jobs");
    bar.set_length(u64::from(job_count));
    let counts = jobs::wait_final(db, &ids, Duration::from_secs(300), "noop jobs", &|n| {
        bar.set_position(n)
    })
    .await?;
    bar.finish_and_clear();
    let elapsed = run_started.elapsed();
    println!(
        "ran {job_count} noop jobs through Redis in {:.2} s ({:.0} jobs/s): {}",
        elapsed.as_secs_f64(),
        f64::from(job_count) / elapsed.as_secs_f64(),
        counts
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// Prints the schedules of `./jobs` (the scheduler's default directory)
/// and their next fire times.
fn show_schedules() {
    let dir = std::path::Path::new("jobs");
    match copiste::schedule::load_dir(dir) {
        Ok(schedules) => {
            println!("schedules (copiste scheduler, from {}):", dir.display());
            crate::print_schedules(&schedules);
        }
        Err(e) => println!("no schedules shown: {e}"),
    }
}

/// Makes one access token per role (admin; the coordinator of the first
/// academy; its first establishment) and prints them with the command that
/// serves the API on this database.
async fn print_tokens(app: &App, demo_key: bool, throwaway: bool) -> anyhow::Result<()> {
    use copiste::access::{Role, TokenInput, create_token};
    let uai = db::catalog::exam_establishments(&app.db, "BAC26-PHILO", None)
        .await?
        .into_iter()
        .next()
        .context("the demo has no establishment")?;
    let academy = db::catalog::establishment_academy(&app.db, uai.as_str())
        .await?
        .context("the demo establishment has no academy")?;
    let roles = [
        ("admin", Role::Admin),
        (
            "coordinator",
            Role::Coordinator {
                academy: academy.clone(),
            },
        ),
        ("establishment", Role::Establishment { uai: uai.clone() }),
    ];
    println!("access tokens (valid 30 days; copiste tokens list / revoke):");
    let mut admin = None;
    for (what, role) in roles {
        let input = TokenInput {
            role,
            name: format!("demo {what}"),
            lifetime: Some(chrono::Duration::days(30)),
        };
        let issued = create_token(app, &demo(), &input)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let scope = match what {
            "coordinator" => format!(" of academy {academy}"),
            "establishment" => format!(" {uai}"),
            _ => String::new(),
        };
        println!("  {what}{scope}: {}", issued.token);
        admin.get_or_insert(issued.token);
    }
    let key = if demo_key {
        format!("COPISTE_DOWNLOADS__SIGNING_KEY={DEMO_SIGNING_KEY} ")
    } else {
        String::new()
    };
    println!(
        "serve the pages and the API with\n  {key}copiste serve --listen 127.0.0.1:8080\nthen open http://127.0.0.1:8080/ and log in with a token above, or\n  curl -H 'Authorization: Bearer {}' http://127.0.0.1:8080/api/v1/exams/BAC26-PHILO/closure",
        admin.unwrap_or_default()
    );
    if throwaway {
        println!(
            "(the demo ran on throwaway PostgreSQL and Redis, removed now: with your own servers running, the tokens and the data stay)"
        );
    }
    Ok(())
}

/// The links' signing key when none is configured (demo only).
const DEMO_SIGNING_KEY: &str = "copiste-demo";

/// Asks for every establishment's zip of every exam, waits for them and
/// prints their links.
async fn request_every_zip(db: &Db, app: &App, demo_key: bool) -> anyhow::Result<()> {
    use copiste::download::{self, Requested, ZipInput};
    let zip = |exam: &str, uai: &copiste::domain::Uai| ZipInput {
        exam: exam.to_owned(),
        establishment: uai.clone(),
        options: copiste::render::RequestedOptions::default(),
    };
    let started = Instant::now();
    let exams = ["BAC26-PHILO", "BAC26-E3C-HG", "BAC26-MATHS-H"];
    let mut waiting = Vec::new();
    for exam in exams {
        for uai in db::catalog::exam_establishments(db, exam, None).await? {
            match download::request(app, &demo(), &zip(exam, &uai)).await {
                Ok(Requested::Building { job, .. }) => waiting.push(job),
                Ok(Requested::Ready(_)) => {}
                Err(e) => println!("{exam} {uai}: {}", shown(e)?),
            }
        }
    }
    jobs::wait_final(db, &waiting, Duration::from_secs(600), "the zips", &|_| {}).await?;
    println!(
        "built {} zips in {:.2} s; links (valid {} days):",
        waiting.len(),
        started.elapsed().as_secs_f64(),
        app.config.downloads.link_ttl_secs / 86_400
    );
    for exam in exams {
        for uai in db::catalog::exam_establishments(db, exam, None).await? {
            if let Some(links) = download::current_links(app, &demo(), &zip(exam, &uai))
                .await
                .map_err(|e| anyhow::anyhow!(e))?
            {
                for link in links {
                    println!("  {exam} {uai} {:>9} bytes  {}", link.bytes, link.url);
                }
            }
        }
    }
    if demo_key {
        println!(
            "no signing key is configured: the links are signed with the demo key; serve them with\n  COPISTE_DOWNLOADS__SIGNING_KEY={DEMO_SIGNING_KEY} copiste serve"
        );
    }
    Ok(())
}

/// Closes every exam of the demo session: a closure per establishment for
/// ponctuel and E3C exams, one harmonisation pass over every copy for the
/// harmonised one; waits for the jobs and prints each exam's status.
async fn close_every_exam(db: &Db, app: &App) -> anyhow::Result<()> {
    use copiste::closure::{
        self, PassRequest, Validation,
        request::{PassInput, UnitsInput},
    };
    let started = Instant::now();
    let mut ids = Vec::new();
    let exams = ["BAC26-PHILO", "BAC26-E3C-HG", "BAC26-MATHS-H"];
    for exam in exams {
        let row = db::catalog::exam(db, exam)
            .await?
            .with_context(|| format!("the demo exam {exam} is missing"))?;
        if row.kind == copiste::domain::ExamKind::Harmonised {
            let input = PassInput {
                exam: exam.to_owned(),
                academy: None,
                selection: Validation::All,
            };
            match closure::validate_harmonisation(app, &demo(), &input).await {
                Ok(PassRequest::Enqueued { job, .. }) => ids.push(job),
                Ok(PassRequest::NothingNew { .. }) => {}
                Err(e) => println!("{exam}: {}", shown(e)?),
            }
        } else {
            match closure::request_closure(app, &demo(), &UnitsInput::exam(exam)).await {
                Ok(units) => {
                    for unit in units {
                        match unit.outcome {
                            Ok(done) => ids.extend(done.job()),
                            Err(refusal) => println!("{}: {refusal}", unit.establishment),
                        }
                    }
                }
                Err(e) => println!("{exam}: {}", shown(e)?),
            }
        }
    }
    jobs::wait_final(db, &ids, Duration::from_secs(300), "the closures", &|_| {}).await?;
    println!(
        "closed {} exams in {:.2} s ({} jobs; exports written to the {} outbox of {})",
        exams.len(),
        started.elapsed().as_secs_f64(),
        ids.len(),
        if app.config.exporters.cyclades.kind == copiste::config::ExporterKind::Outbox {
            "exports/"
        } else {
            "http"
        },
        app.storage.describe()
    );
    for exam in exams {
        let status = closure::status::exam_status(app, &demo(), exam)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        print!("{status}");
    }
    Ok(())
}

/// The demo acts as admin.
fn demo() -> Actor {
    Actor::admin("demo")
}

/// An operation's error the demo shows and goes on after (a refusal, a
/// missing row), or stops on (an internal error).
fn shown(e: OpError) -> anyhow::Result<String> {
    match e {
        OpError::Internal(e) => Err(e),
        other => Ok(other.to_string()),
    }
}
