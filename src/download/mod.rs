//! Downloads: asking for an establishment's zip (one `bulk-render` job per
//! exam, establishment and options, idempotent), and the links that hand
//! finished zips out — presigned URLs on S3, `copiste serve` tokens on the
//! local store.

pub mod search;
pub mod serve;
pub mod token;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    app::App,
    db::{self, render::DownloadRow},
    domain::Uai,
    ledger::{self, EnqueueOptions, Kind},
    op::{self, Actor, OpError, Refusal},
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRender {
    pub exam: String,
    pub establishment: Uai,
    pub options: RenderOptions,
}

/// A link to one part of a finished zip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    let Some(row) = db::closure::exam(&app.db, exam).await? else {
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
    let identity = format!("{exam}:{uai}:{}", options.tag());
    let mut tx = db.begin().await?;
    db::render::lock_zip_request(&mut tx, &identity).await?;
    if let Some(id) = db::render::active_job(&mut tx, BulkRender::NAME, &payload).await? {
        return Ok(Requested::Building {
            job: id,
            new: false,
        });
    }
    // The lock above makes a double click one job; the key names the
    // request in the ledger.
    let key = format!("{}:{identity}:{}", BulkRender::NAME, Uuid::now_v7());
    let id = ledger::enqueue(&mut tx, &job, EnqueueOptions::by(actor.label()).key(key))
        .await
        .map_err(anyhow::Error::from)?
        .id();
    tx.commit().await?;
    Ok(Requested::Building { job: id, new: true })
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
