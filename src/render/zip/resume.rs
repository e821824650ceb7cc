//! Resuming a zip build: what a later run keeps of the progress an
//! earlier one recorded (the staged parts still there, the upload of the
//! part in progress), and the digest that says whether it was recorded
//! for the same inputs.

use anyhow::Context as _;
use futures::future::BoxFuture;
use sha2::{Digest as _, Sha256};

use super::{Contents, Part, PartUpload, ZipPlan, ZipProgress};
use crate::{
    db::render::CopyRow,
    storage::{ResumableUpload, Storage},
};

/// Records a build's progress; an error stops the build.
pub type SaveProgress<'a> =
    dyn Fn(&ZipProgress) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync + 'a;

/// How a build continues an earlier one and records its own progress.
pub struct Resume<'a> {
    /// What an earlier run recorded, if any.
    pub from: Option<ZipProgress>,
    /// This run's number, recorded with the parts it stages.
    pub run: u32,
    /// Records the progress after each staged part, each started upload
    /// and each chunk the store acknowledged; an error stops the build.
    pub save: &'a SaveProgress<'a>,
}

/// A digest of what a build's bytes depend on: its copies (as read from
/// the database: a changed copy has another version or date), the
/// options, the keys and the part size.
pub(super) fn inputs_digest(rows: &[CopyRow], plan: &ZipPlan, contents: Contents) -> String {
    let mut hash = Sha256::new();
    hash.update(
        format!(
            "{}\n{}\n{}\n{}\n{}\n",
            plan.key_stem,
            plan.staging_dir,
            plan.options.tag(),
            plan.max_part_bytes,
            contents == Contents::Scans
        )
        .as_bytes(),
    );
    for r in rows {
        hash.update(
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{:?}\t{}\t{:?}\t{}\n",
                r.copy_id,
                r.version,
                r.updated_at.timestamp_micros(),
                r.numero,
                r.nom,
                r.prenom,
                r.grade,
                r.absent,
                r.page_keys,
                r.establishment_name,
            )
            .as_bytes(),
        );
    }
    hex::encode(hash.finalize())
}

/// The parts of `from` that are still where it says, in order, up to the
/// first one missing or of another size (that part and the later ones are
/// built again); `from` is cut to them. A part already moved to its final
/// key (a run killed while publishing) counts as there.
async fn still_there(
    storage: &Storage,
    plan: &ZipPlan,
    mut from: ZipProgress,
) -> anyhow::Result<ZipProgress> {
    let mut kept = 0;
    for (i, part) in from.parts.iter().enumerate() {
        let staged = storage
            .size(&part.key)
            .await
            .with_context(|| format!("checking the staged part {}", part.key))?;
        let there = if staged == Some(part.bytes) {
            true
        } else {
            let key = plan.key(i + 1);
            staged.is_none()
                && storage
                    .size(&key)
                    .await
                    .with_context(|| format!("checking the part {key}"))?
                    == Some(part.bytes)
        };
        if !there {
            tracing::warn!(key = %part.key, "a staged part is missing: built again from there");
            break;
        }
        kept += 1;
    }
    from.parts.truncate(kept);
    let (rows, failures) = from
        .parts
        .last()
        .map_or((0, 0), |p| (p.manifest_rows, p.failures));
    from.manifest.truncate(rows);
    from.failures.truncate(failures);
    Ok(from)
}

/// Aborts an upload an earlier run recorded; a failure is only logged (an
/// S3 bucket's lifecycle rule removes what is left, see
/// docs/operations.md).
pub(super) async fn abort_recorded(storage: &Storage, upload: &PartUpload) {
    if let Err(e) = storage
        .abort_resumable_upload(&upload.key, &upload.upload_id)
        .await
    {
        tracing::warn!(
            key = %upload.key, upload_id = %upload.upload_id, error = %e,
            "cannot abort a recorded upload"
        );
    }
}

/// The upload an earlier run recorded for the part after the staged ones,
/// reopened to be continued, and whether a recorded upload had to be
/// given up instead (not the next part's, or no longer in the store: its
/// record is then dropped and the part starts again with a new upload).
pub(super) async fn reopen_recorded(
    storage: &Storage,
    plan: &ZipPlan,
    recorded: &mut ZipProgress,
) -> anyhow::Result<(Option<ResumableUpload>, bool)> {
    let Some(upload) = recorded.upload.clone() else {
        return Ok((None, false));
    };
    let part = recorded.parts.len() + 1;
    let in_order = upload.chunks.iter().enumerate().all(|(i, c)| c.index == i);
    if upload.part != part || upload.key != plan.staging_key(part) || !in_order {
        tracing::warn!(
            key = %upload.key, upload_id = %upload.upload_id,
            "the recorded upload is not the next part's: aborted, the part starts again"
        );
        recorded.upload = None;
        abort_recorded(storage, &upload).await;
        return Ok((None, true));
    }
    let written = upload.chunks.iter().map(|c| c.bytes).sum();
    let reopened = storage
        .reopen_resumable_upload(&upload.key, &upload.upload_id, written)
        .await
        .with_context(|| format!("reopening the recorded upload of {}", upload.key))?;
    // The local store writes chunks without syncing each to disk (the part
    // is synced once complete): after a crash of the machine, a staging
    // file may have its length but not the bytes recorded. Its recorded
    // bytes are hashed again and must give the last recorded chunk's
    // digest, which covers the part from its first byte.
    if let (Some(open), Some(last)) = (&reopened, upload.chunks.last())
        && last.from_start
        && let Some(found) = open
            .written_sha256(written)
            .await
            .with_context(|| format!("reading back the recorded upload of {}", upload.key))?
        && found != last.sha256
    {
        tracing::warn!(
            key = %upload.key, upload_id = %upload.upload_id,
            "the recorded upload does not hold the bytes recorded: the part starts again with a new upload"
        );
        recorded.upload = None;
        abort_recorded(storage, &upload).await;
        return Ok((None, true));
    }
    if reopened.is_some() {
        tracing::info!(
            key = %upload.key, upload_id = %upload.upload_id, chunks = upload.chunks.len(),
            "continuing the recorded upload of the part in progress"
        );
        Ok((reopened, false))
    } else {
        tracing::warn!(
            key = %upload.key, upload_id = %upload.upload_id,
            "the recorded upload is no longer in the store: the part starts again with a new upload"
        );
        recorded.upload = None;
        Ok((None, true))
    }
}

/// The progress this run starts from: what `from` recorded, cut to the
/// staged parts still there, when it was recorded for these `inputs`;
/// otherwise none (and the upload `from` recorded is aborted).
pub(super) async fn starting_point(
    storage: &Storage,
    plan: &ZipPlan,
    inputs: String,
    from: Option<ZipProgress>,
) -> anyhow::Result<ZipProgress> {
    match from {
        Some(from) if from.inputs == inputs => still_there(storage, plan, from).await,
        Some(from) => {
            tracing::info!("the copies changed since the last run: the zip is built anew");
            if let Some(upload) = &from.upload {
                abort_recorded(storage, upload).await;
            }
            Ok(ZipProgress {
                inputs,
                ..ZipProgress::default()
            })
        }
        None => Ok(ZipProgress {
            inputs,
            ..ZipProgress::default()
        }),
    }
}

/// The staged parts `recorded` names, in order.
pub(super) fn staged_parts(recorded: &ZipProgress) -> Vec<Part> {
    recorded
        .parts
        .iter()
        .map(|p| Part {
            key: p.key.clone(),
            bytes: p.bytes,
            sha256: p.sha256.clone(),
        })
        .collect()
}
