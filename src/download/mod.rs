//! Downloads: asking for an establishment's zip (one `bulk-render` job per
//! exam, establishment and options, idempotent), and the links that hand
//! finished zips out — presigned URLs on S3, `copiste serve` tokens on the
//! local store.

pub mod search;
pub mod serve;
pub mod token;

use std::collections::HashSet;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    app::App,
    db::{self, render::DownloadRow},
    domain::Uai,
    ledger::{self, EnqueueOptions, Enqueued, Kind},
    op::{self, Actor, OpError, Refusal, Scope},
    render::{RenderOptions, RequestedOptions, zip::Part},
};

/// The prefix of every download object: links hand out nothing else.
pub const DOWNLOADS_PREFIX: &str = "downloads/";

/// The prefix of the folders where zip builds upload their parts before
/// moving them to their final keys; never handed out.
pub const STAGING_PREFIX: &str = "downloads/.staging/";

/// What a `bulk-render` job carries: the zip of one establishment's
/// transmitted copies of one exam, rendered with `options`. How it runs is
/// in `src/jobs/bulk_render.rs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRender {
    pub exam: String,
    pub establishment: Uai,
    pub options: RenderOptions,
}

/// A link to one part of a finished zip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub url: String,
    pub bytes: u64,
    pub sha256: String,
    pub expires_at: DateTime<Utc>,
}

/// The answer to a zip request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// A valid zip exists: its links.
    Ready(Vec<Link>),
    /// A job is building it (new or already queued/running).
    Building { job: Uuid, new: bool },
}

/// Which zip: one establishment's transmitted copies of one exam,
/// rendered with the requested switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipInput {
    pub exam: String,
    pub establishment: Uai,
    pub options: RequestedOptions,
}

/// Checks who asks and the options against the exam's kind.
async fn exam_and_options(
    app: &App,
    actor: &Actor,
    input: &ZipInput,
    what: &str,
) -> Result<(String, RenderOptions), OpError> {
    let exam = op::code("exam", &input.exam)?;
    if matches!(actor, Actor::Scheduler) {
        return Err(actor.forbidden(what));
    }
    actor.reach(app, &input.establishment, what).await?;
    let Some(row) = db::catalog::exam(&app.db, exam).await? else {
        return Err(OpError::not_found(format!("exam {exam}")));
    };
    let options = RenderOptions::for_exam(exam, row.kind, input.options)?;
    Ok((row.code, options))
}

/// Asks for the zip of (`exam`, `uai`, options): the existing links while
/// a zip is valid, the job in progress if one is queued or running, else
/// a new `bulk-render` job. Open to admin, the establishment and its
/// academy's coordinator.
pub async fn request(app: &App, actor: &Actor, input: &ZipInput) -> Result<Requested, OpError> {
    let uai = &input.establishment;
    let (exam, options) = exam_and_options(
        app,
        actor,
        input,
        &format!(
            "ask for the zip of exam {} for establishment {uai}",
            input.exam
        ),
    )
    .await?;
    let exam = exam.as_str();
    let db = &app.db;
    if let Some(row) = db::render::current_download(db, exam, uai.as_str(), &options.tag()).await? {
        return Ok(Requested::Ready(links(app, &row).await?));
    }
    if !db::render::has_transmitted(db, exam, uai.as_str()).await? {
        return Err(Refusal::NothingTransmitted {
            exam: exam.to_owned(),
            establishment: uai.clone(),
        }
        .into());
    }
    let job = BulkRender {
        exam: exam.to_owned(),
        establishment: uai.clone(),
        options,
    };
    let payload = serde_json::to_value(&job).context("serialising the bulk-render payload")?;
    let identity = zip_identity(exam, uai, options);
    let mut tx = db.begin().await?;
    // Shared with other single requests, exclusive of `request_all`.
    db::render::lock_exam_zips(&mut tx, exam, false).await?;
    db::render::lock_zip_request(&mut tx, &identity).await?;
    if let Some(id) = db::render::active_job(&mut tx, BulkRender::NAME, &payload).await? {
        return Ok(Requested::Building {
            job: id,
            new: false,
        });
    }
    // The lock above makes a double click one job; the key names the
    // request in the ledger.
    let key = zip_key(&identity);
    let id = ledger::enqueue(&mut tx, &job, EnqueueOptions::by(actor.label()).key(key))
        .await
        .map_err(anyhow::Error::from)?
        .id();
    tx.commit().await?;
    Ok(Requested::Building { job: id, new: true })
}

/// What identifies one zip: (exam, establishment, options).
fn zip_identity(exam: &str, uai: &Uai, options: RenderOptions) -> String {
    format!("{exam}:{uai}:{}", options.tag())
}

/// The idempotency key of one request for the zip `identity`: the same
/// for a single request and for a request of every establishment's zip.
fn zip_key(identity: &str) -> String {
    format!("{}:{identity}:{}", BulkRender::NAME, Uuid::now_v7())
}

/// What a request for every establishment's zip of an exam asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllZipsInput {
    pub exam: String,
    pub options: RequestedOptions,
}

/// One zip job enqueued for an establishment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZipJob {
    pub establishment: Uai,
    pub job: Uuid,
}

/// The answer to a request for every establishment's zip of an exam:
/// how many establishments with transmitted copies the caller reaches,
/// and for how many of them a job was enqueued, a job was already
/// building the zip, or a valid zip was already there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestedAll {
    pub exam: String,
    /// The switches' tag, e.g. `d1a1n1`.
    pub options: String,
    /// Establishments with transmitted copies within the caller's scope.
    pub establishments: usize,
    pub enqueued: usize,
    pub already_building: usize,
    pub already_ready: usize,
    /// The jobs enqueued, one per establishment, in UAI order.
    pub jobs: Vec<ZipJob>,
}

/// Asks, in one transaction, for the zip of every establishment that has
/// transmitted copies of `exam` within the actor's scope (admin: every
/// establishment; a coordinator: those of its academy). Each zip is asked
/// for as [`request`] asks for one (same payload, same kind of key): one
/// already valid or already being built is counted, not enqueued again.
/// An exam with nothing transmitted yet answers with no establishment.
/// An establishment (which asks for its own zip with [`request`]) and the
/// scheduler (which pre-builds with [`prebuild`]) are refused.
pub async fn request_all(
    app: &App,
    actor: &Actor,
    input: &AllZipsInput,
) -> Result<RequestedAll, OpError> {
    let exam = op::code("exam", &input.exam)?;
    let what = format!("ask for the zips of every establishment of exam {exam}");
    if matches!(actor, Actor::Scheduler) {
        return Err(actor.forbidden(what));
    }
    let academy = match actor.scope() {
        Scope::Establishment(_) => {
            return Err(actor.forbidden(format!(
                "{what}: an establishment asks for its own zip only"
            )));
        }
        Scope::All => None,
        Scope::Academy(academy) => Some(academy),
    };
    let Some(row) = db::catalog::exam(&app.db, exam).await? else {
        return Err(OpError::not_found(format!("exam {exam}")));
    };
    let options = RenderOptions::for_exam(&row.code, row.kind, input.options)?;
    let mut tx = app.db.begin().await?;
    db::render::lock_exam_zips(&mut tx, &row.code, true).await?;
    let units = db::render::transmitted_establishments(&mut tx, &row.code, academy).await?;
    let answer = enqueue_zips(&mut tx, &actor.label(), &row.code, options, units, true).await?;
    tx.commit().await?;
    Ok(answer)
}

/// Enqueues, inside `tx` (which holds the exam's exclusive zip lock), the
/// zip of each of `units` with `options`, but those being built (a queued
/// or running job with the same payload) and, when `skip_ready`, those
/// with a valid zip; all new jobs in one statement.
async fn enqueue_zips(
    tx: &mut db::Tx,
    created_by: &str,
    exam: &str,
    options: RenderOptions,
    units: Vec<Uai>,
    skip_ready: bool,
) -> anyhow::Result<RequestedAll> {
    let ready: HashSet<Uai> = if skip_ready {
        db::render::ready_establishments(tx, exam, &options.tag())
            .await?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };
    // A payload that does not decode is not a job of this zip (it dies
    // with its reason when it runs).
    let building: HashSet<BulkRender> = db::render::active_exam_jobs(tx, BulkRender::NAME, exam)
        .await?
        .into_iter()
        .filter_map(|p| serde_json::from_value(p).ok())
        .collect();
    let establishments = units.len();
    let mut already_ready = 0;
    let mut already_building = 0;
    let mut batch = Vec::new();
    for uai in units {
        if ready.contains(&uai) {
            already_ready += 1;
            continue;
        }
        let job = BulkRender {
            exam: exam.to_owned(),
            establishment: uai,
            options,
        };
        if building.contains(&job) {
            already_building += 1;
            continue;
        }
        let key = zip_key(&zip_identity(exam, &job.establishment, options));
        batch.push((job, key));
    }
    let enqueued = ledger::enqueue_many_keyed(tx, &batch, EnqueueOptions::by(created_by))
        .await
        .map_err(anyhow::Error::from)?;
    let mut jobs = Vec::with_capacity(batch.len());
    for ((job, _), done) in batch.into_iter().zip(enqueued) {
        match done {
            Enqueued::Created(id) => jobs.push(ZipJob {
                establishment: job.establishment,
                job: id,
            }),
            // Keys are new for each request; a known one is a job that
            // already exists.
            Enqueued::Existing(_) => already_building += 1,
        }
    }
    Ok(RequestedAll {
        exam: exam.to_owned(),
        options: options.tag(),
        establishments,
        enqueued: jobs.len(),
        already_building,
        already_ready,
        jobs,
    })
}

/// What a pre-build of zips asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrebuildInput {
    /// Units whose copies were transmitted before this instant are left
    /// alone.
    pub since: DateTime<Utc>,
    pub options: RequestedOptions,
}

/// The answer of a pre-build: per exam, what [`request_all`] would say
/// for the units concerned, and the exams refused (E3C with a switch
/// turned off) with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prebuilt {
    pub exams: Vec<RequestedAll>,
    pub refused: Vec<String>,
}

/// Enqueues the zip of every (exam, establishment) unit closed since its
/// last zip: whose latest transmitted copy was accepted after the start
/// of the newest succeeded build of that zip with these options (or that
/// has none), and after `input.since`. A build that failed, a slot that
/// was missed, leave the unit to the next pre-build. One transaction per
/// exam, under the exam's exclusive zip lock; a zip already being built
/// is counted, not enqueued again. Admin and the scheduler only.
pub async fn prebuild(
    app: &App,
    actor: &Actor,
    input: &PrebuildInput,
) -> Result<Prebuilt, OpError> {
    actor.require_operator("pre-build the zips of the units closed since their last zip")?;
    // A payload's options are `RenderOptions`, serialised with the same
    // fields as the request.
    let payload_options =
        serde_json::to_value(input.options).context("serialising the render options")?;
    let units =
        db::schedule::units_to_prebuild(&app.db, BulkRender::NAME, &payload_options, input.since)
            .await?;
    // Per exam: the units to enqueue, and how many are being built.
    let mut by_exam: std::collections::BTreeMap<String, (Vec<Uai>, usize)> = Default::default();
    for unit in units {
        let entry = by_exam.entry(unit.exam).or_default();
        if unit.building {
            entry.1 += 1;
        } else {
            entry.0.push(unit.uai);
        }
    }
    let mut exams = Vec::new();
    let mut refused = Vec::new();
    for (exam, (units, building)) in by_exam {
        let Some(row) = db::catalog::exam(&app.db, &exam).await? else {
            continue;
        };
        let options = match RenderOptions::for_exam(&row.code, row.kind, input.options) {
            Ok(options) => options,
            Err(e) => {
                refused.push(e.to_string());
                continue;
            }
        };
        let mut tx = app.db.begin().await?;
        db::render::lock_exam_zips(&mut tx, &row.code, true).await?;
        let mut answer =
            enqueue_zips(&mut tx, &actor.label(), &row.code, options, units, false).await?;
        tx.commit().await?;
        answer.establishments += building;
        answer.already_building += building;
        exams.push(answer);
    }
    Ok(Prebuilt { exams, refused })
}

/// The links of the current zip of (`exam`, `uai`, options), if one is
/// ready. Open to admin, the establishment and its academy's coordinator.
pub async fn current_links(
    app: &App,
    actor: &Actor,
    input: &ZipInput,
) -> Result<Option<Vec<Link>>, OpError> {
    let uai = &input.establishment;
    let (exam, options) = exam_and_options(
        app,
        actor,
        input,
        &format!(
            "get the links of exam {} for establishment {uai}",
            input.exam
        ),
    )
    .await?;
    match db::render::current_download(&app.db, &exam, uai.as_str(), &options.tag()).await? {
        Some(row) => Ok(Some(links(app, &row).await?)),
        None => Ok(None),
    }
}

/// When a link made at `now` expires: `downloads.link_ttl_secs` from now
/// (the setting as it is when the link is made), but never after the
/// download itself expires.
pub fn link_expiry(
    now: DateTime<Utc>,
    link_ttl_secs: u64,
    download_expires: DateTime<Utc>,
) -> DateTime<Utc> {
    i64::try_from(link_ttl_secs)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .and_then(|ttl| now.checked_add_signed(ttl))
        .map_or(download_expires, |at| at.min(download_expires))
}

/// Links to every part of a download, valid for `downloads.link_ttl_secs`
/// but not after the download expires (see [`link_expiry`]).
pub async fn links(app: &App, row: &DownloadRow) -> anyhow::Result<Vec<Link>> {
    let parts: Vec<Part> =
        serde_json::from_value(row.parts.clone()).context("reading the download's parts")?;
    let now = Utc::now();
    let expires_at = link_expiry(now, app.config.downloads.link_ttl_secs, row.expires_at);
    let ttl = (expires_at - now)
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(1));
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let url = match app.storage.presigned_get(&part.key, ttl).await? {
            Some(url) => url.to_string(),
            None => {
                let secret = app
                    .config
                    .downloads
                    .signing_key
                    .as_ref()
                    .context(
                        "links to the local store need a signing key: set COPISTE_DOWNLOADS__SIGNING_KEY",
                    )?;
                let token = token::sign(
                    &token::Grant {
                        key: part.key.clone(),
                        establishment: row.establishment_uai.to_string(),
                        expires: expires_at.timestamp(),
                    },
                    secret.expose().as_bytes(),
                );
                format!(
                    "{}/downloads/{token}",
                    app.config
                        .downloads
                        .public_base_url
                        .as_str()
                        .trim_end_matches('/')
                )
            }
        };
        out.push(Link {
            url,
            bytes: part.bytes,
            sha256: part.sha256,
            expires_at,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_expires_after_its_ttl_but_never_after_its_download() {
        let now = DateTime::from_timestamp(1_900_000_000, 0).expect("time");
        let download = now + chrono::Duration::days(7);
        assert_eq!(
            link_expiry(now, 3600, download),
            now + chrono::Duration::hours(1)
        );
        assert_eq!(link_expiry(now, 30 * 86_400, download), download);
        assert_eq!(link_expiry(now, u64::MAX, download), download);
    }
}
