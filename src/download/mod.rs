//! Downloads: asking for an establishment's zip (one `bulk-render` job per
//! exam, establishment and options, idempotent), and the links that hand
//! finished zips out — presigned URLs on S3, `copiste serve` tokens on the
//! local store.

pub mod serve;
pub mod token;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    db::{self, render::DownloadRow},
    domain::Uai,
    jobs::{self, EnqueueOptions, Job, bulk_render::BulkRender, context::Services},
    render::{E3cOptionsFixed, RenderOptions, RequestedOptions, zip::Part},
};

/// The prefix of every download object: links hand out nothing else.
pub const DOWNLOADS_PREFIX: &str = "downloads/";

/// The prefix of the folders where zip builds upload their parts before
/// moving them to their final keys; never handed out.
pub const STAGING_PREFIX: &str = "downloads/.staging/";

/// Why a zip is not requested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadRefusal {
    #[error("unknown exam {0}")]
    UnknownExam(String),
    #[error("establishment {establishment} has no copy of exam {exam} transmitted to Cyclades yet")]
    NothingTransmitted { exam: String, establishment: Uai },
    #[error(transparent)]
    Options(#[from] E3cOptionsFixed),
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

async fn exam_and_options(
    services: &Services,
    exam: &str,
    requested: RequestedOptions,
) -> anyhow::Result<Result<RenderOptions, DownloadRefusal>> {
    let Some(row) = db::closure::exam(&services.db, exam).await? else {
        return Ok(Err(DownloadRefusal::UnknownExam(exam.to_owned())));
    };
    Ok(RenderOptions::for_exam(exam, row.kind, requested).map_err(DownloadRefusal::from))
}

/// Asks for the zip of (`exam`, `uai`, options): the existing links while
/// a zip is valid, the job in progress if one is queued or running, else
/// a new `bulk-render` job.
pub async fn request(
    services: &Services,
    exam: &str,
    uai: &Uai,
    requested: RequestedOptions,
    by: &str,
) -> anyhow::Result<Result<Requested, DownloadRefusal>> {
    let options = match exam_and_options(services, exam, requested).await? {
        Ok(o) => o,
        Err(r) => return Ok(Err(r)),
    };
    let db = &services.db;
    if let Some(row) = db::render::current_download(db, exam, uai.as_str(), &options.tag()).await? {
        return Ok(Ok(Requested::Ready(links(services, &row).await?)));
    }
    if !db::render::has_transmitted(db, exam, uai.as_str()).await? {
        return Ok(Err(DownloadRefusal::NothingTransmitted {
            exam: exam.to_owned(),
            establishment: uai.clone(),
        }));
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
        return Ok(Ok(Requested::Building {
            job: id,
            new: false,
        }));
    }
    // The lock above makes a double click one job; the key names the
    // request in the ledger.
    let key = format!("{}:{identity}:{}", BulkRender::NAME, Uuid::now_v7());
    let id = jobs::enqueue(&mut tx, &job, EnqueueOptions::by(by).key(key))
        .await?
        .id();
    tx.commit().await?;
    Ok(Ok(Requested::Building { job: id, new: true }))
}

/// The links of the current zip of (`exam`, `uai`, options), if any.
pub async fn current_links(
    services: &Services,
    exam: &str,
    uai: &Uai,
    requested: RequestedOptions,
) -> anyhow::Result<Result<Option<Vec<Link>>, DownloadRefusal>> {
    let options = match exam_and_options(services, exam, requested).await? {
        Ok(o) => o,
        Err(r) => return Ok(Err(r)),
    };
    match db::render::current_download(&services.db, exam, uai.as_str(), &options.tag()).await? {
        Some(row) => Ok(Ok(Some(links(services, &row).await?))),
        None => Ok(Ok(None)),
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
pub async fn links(services: &Services, row: &DownloadRow) -> anyhow::Result<Vec<Link>> {
    let parts: Vec<Part> =
        serde_json::from_value(row.parts.clone()).context("reading the download's parts")?;
    let now = Utc::now();
    let expires_at = link_expiry(now, services.config.downloads.link_ttl_secs, row.expires_at);
    let ttl = (expires_at - now)
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(1));
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let url = match services.storage.presigned_get(&part.key, ttl).await? {
            Some(url) => url.to_string(),
            None => {
                let secret = services
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
                    services
                        .config
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
