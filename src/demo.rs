//! `copiste demo`: the README's first command. Migrates, generates a
//! small dataset, imports it, runs a worker in-process through a batch of
//! noop jobs and prints a summary. Later issues add closure, rendering
//! and links.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::{
    config::Config,
    db::{self, Db},
    demo_data::{self, DemoDataOptions},
    jobs::{self, EnqueueOptions, context::Services, noop::Noop},
    storage::Storage,
    worker::{Worker, WorkerOptions},
};

/// Runs the demo against the configured services, or throwaway ones.
pub async fn run(mut config: Config, job_count: u32, candidates: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    let local = crate::local_services::ensure(&config).await?;
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
    let imported = crate::import::import_dir_with(
        &db,
        &storage,
        &out,
        &crate::import::ImportOptions::from_config(&config.import),
        &crate::import::progress_bar(),
    )
    .await?;
    println!("imported: {imported}");

    let demo_key = config.downloads.signing_key.is_none();
    if demo_key {
        config.downloads.signing_key = Some(crate::config::Secret::new(DEMO_SIGNING_KEY));
    }
    let services = Services::new(config, db.clone(), storage)?;
    let worker = Worker::start(services.clone(), WorkerOptions::from_config(&services)).await?;
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
    let bar = crate::cli::progress_bar("noop jobs");
    bar.set_length(u64::from(job_count));
    let counts = jobs::wait_final(&db, &ids, Duration::from_secs(300), "noop jobs", &|n| {
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

    show_schedules();
    close_every_exam(&db, &services).await?;
    request_every_zip(&db, &services, demo_key).await?;
    worker.shutdown(Duration::from_secs(10)).await?;
    db.close().await;
    drop(local);
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Prints the schedules of `./jobs` (the scheduler's default directory)
/// and their next fire times.
fn show_schedules() {
    let dir = std::path::Path::new("jobs");
    match crate::schedule::load_dir(dir) {
        Ok(schedules) => {
            println!("schedules (copiste scheduler, from {}):", dir.display());
            crate::cli::print_schedules(&schedules);
        }
        Err(e) => println!("no schedules shown: {e}"),
    }
}

/// The links' signing key when none is configured (demo only).
const DEMO_SIGNING_KEY: &str = "copiste-demo";

/// Asks for every establishment's zip of every exam, waits for them and
/// prints their links.
async fn request_every_zip(db: &Db, services: &Services, demo_key: bool) -> anyhow::Result<()> {
    use crate::{
        download::{self, Requested},
        render::RequestedOptions,
    };
    let started = Instant::now();
    let exams = ["BAC26-PHILO", "BAC26-E3C-HG", "BAC26-MATHS-H"];
    let mut waiting = Vec::new();
    for exam in exams {
        for uai in db::closure::exam_establishments(db, exam, None).await? {
            match download::request(services, exam, &uai, RequestedOptions::default(), "demo")
                .await?
            {
                Ok(Requested::Building { job, .. }) => waiting.push(job),
                Ok(Requested::Ready(_)) => {}
                Err(refusal) => println!("{exam} {uai}: {refusal}"),
            }
        }
    }
    jobs::wait_final(db, &waiting, Duration::from_secs(600), "the zips", &|_| {}).await?;
    println!(
        "built {} zips in {:.2} s; links (valid {} days):",
        waiting.len(),
        started.elapsed().as_secs_f64(),
        services.config.downloads.link_ttl_secs / 86_400
    );
    for exam in exams {
        for uai in db::closure::exam_establishments(db, exam, None).await? {
            if let Ok(Some(links)) =
                download::current_links(services, exam, &uai, RequestedOptions::default()).await?
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
async fn close_every_exam(db: &Db, services: &Services) -> anyhow::Result<()> {
    use crate::closure::{self, PassRequest, Validation};
    let started = Instant::now();
    let mut ids = Vec::new();
    let exams = ["BAC26-PHILO", "BAC26-E3C-HG", "BAC26-MATHS-H"];
    for exam in exams {
        let row = db::closure::exam(db, exam)
            .await?
            .with_context(|| format!("the demo exam {exam} is missing"))?;
        if row.kind == crate::domain::ExamKind::Harmonised {
            match closure::validate_harmonisation(db, exam, None, &Validation::All, "demo").await? {
                Ok(PassRequest::Enqueued { job, .. }) => ids.push(job),
                Ok(PassRequest::NothingNew { .. }) => {}
                Err(refusal) => println!("{exam}: {refusal}"),
            }
        } else {
            match closure::request_closure(db, exam, None, "demo").await? {
                Ok(units) => {
                    for unit in units {
                        match unit.outcome {
                            Ok(done) => ids.extend(done.job()),
                            Err(refusal) => println!("{}: {refusal}", unit.establishment),
                        }
                    }
                }
                Err(refusal) => println!("{exam}: {refusal}"),
            }
        }
    }
    jobs::wait_final(db, &ids, Duration::from_secs(300), "the closures", &|_| {}).await?;
    println!(
        "closed {} exams in {:.2} s ({} jobs; exports written to the {} outbox of {})",
        exams.len(),
        started.elapsed().as_secs_f64(),
        ids.len(),
        if services.config.exporters.cyclades.kind == crate::config::ExporterKind::Outbox {
            "exports/"
        } else {
            "http"
        },
        services.storage.describe()
    );
    for exam in exams {
        match closure::status::exam_status(db, exam).await? {
            Ok(status) => print!("{status}"),
            Err(refusal) => anyhow::bail!("{refusal}"),
        }
    }
    Ok(())
}
