//! An establishment's transmitted copies of an exam as one zip (or several
//! parts), streamed straight into multipart uploads: one PDF per
//! candidate, `manifest.csv`, and `errors.csv` when some copies failed.
//!
//! Stages joined by bounded channels keep memory bounded whatever the
//! zip's size: the async side reads each copy's scans; render threads
//! build each PDF around its scans (moved, not copied); the zip thread
//! writes them, in order, as stored entries of a streaming zip writer,
//! which is where the scans' bytes are copied, once; the zip's bytes go
//! back in 1 MiB chunks to the async side, which feeds the upload.
//!
//! Parts are uploaded under the plan's staging folder
//! (`downloads/.staging/<job id>/` for the `bulk-render` job), in chunks
//! of a resumable upload, and moved to their final keys only once every
//! part is complete, so no final key ever shows a partial or unfinished
//! zip. A build with a checkpoint records each part it stages, the upload
//! of the part in progress as soon as it starts, and each chunk the store
//! acknowledges: a later run continues after the last part, and within
//! the part after its last chunk, with the same bytes. Without a
//! checkpoint, any failure aborts the open upload and deletes the
//! finished parts. What no run will continue, housekeeping removes: the
//! recorded uploads of finished jobs at once, the other leftovers under
//! `downloads/` after `downloads.abandoned_after_secs`.
//!
//! Its files, one concern each: `checkpoint.rs` (what a build records,
//! and the writer that records it alongside the build), `pipeline.rs`
//! (the render threads, the zip thread and the hashing threads),
//! `upload.rs` (the zip's bytes into upload chunks, recorded once
//! acknowledged), `build.rs` (a pass of a build: reader, threads and
//! uploader joined), `resume.rs` (what a later run keeps of an earlier
//! one), `names.rs` (entry names, `manifest.csv` and `errors.csv`),
//! `publish.rs` (the staged parts moved to their final keys) and, for the
//! integration tests only, `failpoints.rs`.

mod build;
mod checkpoint;
#[cfg(feature = "failpoints")]
pub mod failpoints;
mod names;
mod pipeline;
mod publish;
mod resume;
mod upload;

use std::{sync::Arc, time::Instant};

use anyhow::Context as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use checkpoint::{PartUpload, StagedPart, UPLOAD_FIELD, UploadedChunk, ZipProgress};
pub use names::{csv_text, entry_name};
pub use resume::{Resume, SaveProgress};

use super::RenderOptions;
use crate::{db::render::CopyRow, storage::Storage};
use build::{Builder, Stages};
use checkpoint::CheckpointWriter;
use publish::publish_parts;

/// One stored part of a zip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Part {
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A copy left out of the zip, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub numero: String,
    pub nom: String,
    pub prenom: String,
    pub reason: String,
}

/// What a zip run stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZipOutcome {
    pub parts: Vec<Part>,
    pub copies: u32,
    pub failures: Vec<Failure>,
    /// Parts an earlier run had staged, found again and kept.
    pub resumed_parts: usize,
    /// Chunks of a part in progress that an earlier run had uploaded,
    /// built again with the same bytes and not uploaded again.
    pub resumed_chunks: u64,
    /// Chunks this run uploaded.
    pub uploaded_chunks: u64,
    /// Recorded uploads that could not be continued (gone from the store,
    /// or their chunks not the bytes built again): their part was started
    /// again with a new upload.
    pub restarted_uploads: u32,
}

/// Where the zip goes and how.
#[derive(Debug, Clone)]
pub struct ZipPlan {
    /// Object key of the zip without `.zip`; parts get `_partN`.
    pub key_stem: String,
    /// The folder (key prefix, no trailing `/`) where the parts are
    /// uploaded before they are moved to their final keys; one per build,
    /// e.g. `downloads/.staging/<job id>`.
    pub staging_dir: String,
    pub options: RenderOptions,
    /// A part is closed before an entry would take it past this size.
    pub max_part_bytes: u64,
}

impl ZipPlan {
    fn key(&self, part: usize) -> String {
        if part == 1 {
            format!("{}.zip", self.key_stem)
        } else {
            format!("{}_part{part}.zip", self.key_stem)
        }
    }

    /// Where part `part` is uploaded before it is complete.
    fn staging_key(&self, part: usize) -> String {
        let key = self.key(part);
        let name = key.rsplit('/').next().unwrap_or(&key);
        format!("{}/{name}", self.staging_dir.trim_end_matches('/'))
    }
}

/// What each copy becomes in the zip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contents {
    /// Its PDF, `<entry>.pdf`.
    Pdfs,
    /// The benchmark's floor: its scans as they are, `<entry>-<page>.jpg`.
    Scans,
}

/// Renders and zips `rows` (already filtered to transmitted copies) into
/// the store; `progress(done, total)` after each copy. On any error every
/// upload is aborted and nothing is left at the zip's keys.
pub async fn write_zip(
    storage: &Storage,
    rows: Vec<CopyRow>,
    plan: &ZipPlan,
    progress: &(dyn Fn(u64, u64) -> BoxFuture<'static, ()> + Send + Sync),
) -> anyhow::Result<ZipOutcome> {
    write_zip_resumable(storage, rows, plan, progress, None).await
}

/// The benchmark's floor: [`write_zip`] with each copy's scans stored as
/// they are (`<entry>-<page>.jpg`) instead of its PDF.
#[doc(hidden)]
pub async fn write_scans_zip(
    storage: &Storage,
    rows: Vec<CopyRow>,
    plan: &ZipPlan,
    progress: &(dyn Fn(u64, u64) -> BoxFuture<'static, ()> + Send + Sync),
) -> anyhow::Result<ZipOutcome> {
    build_zip(storage, rows, plan, progress, None, Contents::Scans).await
}

/// [`write_zip`], continuing what an earlier run staged when `resume`
/// says so and recording the progress after each staged part, each
/// started upload and each chunk the store acknowledged. With `resume`, a
/// failure leaves the staged parts (not their final keys) and the
/// recorded upload of the part in progress for the next run; housekeeping
/// deletes and aborts them once the job is over.
pub async fn write_zip_resumable(
    storage: &Storage,
    rows: Vec<CopyRow>,
    plan: &ZipPlan,
    progress: &(dyn Fn(u64, u64) -> BoxFuture<'static, ()> + Send + Sync),
    resume: Option<Resume<'_>>,
) -> anyhow::Result<ZipOutcome> {
    build_zip(storage, rows, plan, progress, resume, Contents::Pdfs).await
}

/// [`write_zip_resumable`], each copy becoming `contents`.
async fn build_zip(
    storage: &Storage,
    rows: Vec<CopyRow>,
    plan: &ZipPlan,
    progress: &(dyn Fn(u64, u64) -> BoxFuture<'static, ()> + Send + Sync),
    resume: Option<Resume<'_>>,
    contents: Contents,
) -> anyhow::Result<ZipOutcome> {
    // A key the store refuses is refused before any work (a permanent
    // error: trying again cannot help).
    for key in [plan.key(2), plan.staging_key(2)] {
        Storage::check_key(&key).with_context(|| format!("the zip cannot be stored at {key}"))?;
    }
    let total = rows.len() as u64;
    let inputs = resume::inputs_digest(&rows, plan, contents);
    let run = resume.as_ref().map_or(1, |r| r.run);
    let save = resume.as_ref().map(|r| r.save);
    let from = resume.and_then(|r| r.from);
    let mut recorded = resume::starting_point(storage, plan, inputs, from).await?;
    let resumed_parts = recorded.parts.len();
    #[cfg(feature = "failpoints")]
    failpoints::check_parts(&plan.staging_dir, resumed_parts).await?;
    if recorded.parts.last().is_some_and(|p| p.last) {
        // Every part was staged: only the move to the final keys is left.
        let copies = recorded.parts.last().map_or(0, |p| p.copies);
        progress(total, total).await;
        let parts = publish_parts(storage, plan, resume::staged_parts(&recorded)).await?;
        return Ok(ZipOutcome {
            parts,
            copies,
            failures: recorded.failures,
            resumed_parts,
            resumed_chunks: 0,
            uploaded_chunks: 0,
            restarted_uploads: 0,
        });
    }
    let (reopened, restarted) = resume::reopen_recorded(storage, plan, &mut recorded).await?;
    let builder = Builder {
        storage,
        plan,
        progress,
        contents,
        run,
        save,
        writer: save.map(|_| CheckpointWriter::start()),
        stages: Arc::new(Stages::default()),
    };
    let building = Instant::now();
    let built = builder.build_all(&rows, &mut recorded, reopened).await?;
    let publishing = Instant::now();
    let parts = publish_parts(storage, plan, resume::staged_parts(&recorded)).await?;
    Stages::add(&builder.stages.publish_us, publishing);
    builder.stages.log(building.elapsed());
    Ok(ZipOutcome {
        parts,
        copies: built.copies,
        failures: built.failures,
        resumed_parts,
        resumed_chunks: built.resumed_chunks,
        uploaded_chunks: built.uploaded_chunks,
        restarted_uploads: u32::from(restarted) + built.restarted_uploads,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sha2::{Digest as _, Sha256};

    use super::*;

    /// A scan of `shade`, the same bytes on every run.
    fn scan(shade: u8) -> Bytes {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 80)
            .encode(&[shade; 64 * 64], 64, 64, jpeg_encoder::ColorType::Luma)
            .expect("encode");
        out.into()
    }

    /// A transmitted copy of `numero`, changed at `at` (seconds since the
    /// epoch), with scans at `page_keys`.
    fn row(
        copy_id: i64,
        numero: &str,
        nom: &str,
        prenom: &str,
        at: i64,
        pages: &[&str],
    ) -> CopyRow {
        CopyRow {
            copy_id,
            numero: numero.into(),
            nom: nom.into(),
            prenom: prenom.into(),
            exam_code: "BAC26-PHILO".into(),
            exam_subject: "Philosophie".into(),
            exam_kind: crate::domain::ExamKind::Ponctuel,
            session: "2026".into(),
            establishment_uai: crate::domain::Uai::from_number(750_001),
            establishment_name: "Lycée test".into(),
            grade: Some(12.5),
            absent: false,
            grading_details: serde_json::json!([]),
            appreciation: Some("Bien.".into()),
            annotations: serde_json::json!([]),
            page_keys: pages.iter().map(|&p| p.to_owned()).collect(),
            version: 1,
            transmitted: true,
            updated_at: chrono::DateTime::from_timestamp(at, 0).expect("date"),
        }
    }

    /// Copies that exercise every kind of entry: accented and hostile
    /// names, a name taken twice, an absent and an ungraded copy, a cell
    /// a spreadsheet would run, and a copy whose scan is missing (in
    /// `errors.csv`).
    fn fixed_copies() -> Vec<CopyRow> {
        let mut absent = row(
            2,
            "2026002",
            "Martin",
            "Léa",
            1_780_000_100,
            &["scans/b.jpg"],
        );
        absent.absent = true;
        absent.grade = None;
        let mut ungraded = row(
            4,
            "2026004",
            "=HYPERLINK(\"x\")",
            "Œdipe",
            1_780_000_300,
            &["scans/a.jpg"],
        );
        ungraded.grade = None;
        ungraded.appreciation = None;
        vec![
            row(
                1,
                "2026001",
                "N'Diaye",
                "Hélène",
                1_780_000_000,
                &["scans/a.jpg", "scans/b.jpg"],
            ),
            absent,
            row(
                3,
                "2026002",
                "MARTIN",
                "lea",
                1_780_000_200,
                &["scans/b.jpg", "scans/a.jpg"],
            ),
            ungraded,
            row(
                5,
                "2026005",
                "Dupont",
                "Jean",
                1_780_000_400,
                &["scans/missing.jpg"],
            ),
            row(
                6,
                "2026006",
                "Дмитриев",
                "Дмитрий",
                1_780_000_500,
                &["scans/a.jpg"],
            ),
        ]
    }

    /// The SHA-256 of each part of [`fixed_copies`]' zip, in one part and
    /// in one part per copy, as built before `render/zip.rs` became a
    /// folder (issue 25): the same bytes since.
    const FIXED_ZIP_SHA256: &[(&str, &[&str])] = &[
        (
            "one part",
            &["9440d1f06c739fff93864a88d32f6d4ea66d796eaae50320186bc0048a7cd40e"],
        ),
        (
            "small parts",
            &[
                "3ef792539c0915e5d9530bea61890e7f498adcdc783bc831944847e0dd5b02d8",
                "d1d2195bca310b6e49ded484223c4d834564dd4bc5398c7a08234b8ab6067e3b",
                "3f1a0d185c25627794466773b966925c8ffe2c8f8b9a4236e67ee58bd18afbef",
                "03d7d231d1a4ce1fdb1e5def03b5ea37c7d12b0fd9ef51af03896853f6eae49d",
                "0b075a2fa57f31c6393f0734c49526221a84ce7eda403c4f71df80ddc1dd726a",
            ],
        ),
    ];

    #[tokio::test]
    async fn a_zip_of_fixed_copies_has_the_recorded_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(&crate::config::StorageConfig {
            kind: crate::config::StorageKind::Local,
            root: dir.path().to_owned(),
            s3: crate::config::S3Config {
                bucket: String::new(),
                region: String::new(),
                endpoint: String::new(),
                allow_http: false,
            },
        })
        .expect("store");
        storage.put("scans/a.jpg", scan(200)).await.expect("put");
        storage.put("scans/b.jpg", scan(90)).await.expect("put");
        let options = RenderOptions::for_exam(
            "BAC26-PHILO",
            crate::domain::ExamKind::Ponctuel,
            crate::render::RequestedOptions::default(),
        )
        .expect("options");
        let progress = |_, _| -> BoxFuture<'static, ()> { Box::pin(async {}) };
        for (name, max_part_bytes) in [("one part", 1 << 30), ("small parts", 1)] {
            let plan = ZipPlan {
                key_stem: format!("downloads/fixed/{}", name.replace(' ', "-")),
                staging_dir: format!("downloads/.staging/{}", name.replace(' ', "-")),
                options,
                max_part_bytes,
            };
            let outcome = write_zip(&storage, fixed_copies(), &plan, &progress)
                .await
                .expect("zip");
            assert_eq!((outcome.copies, outcome.failures.len()), (5, 1), "{name}");
            let mut digests = Vec::new();
            for part in &outcome.parts {
                let bytes = storage.get(&part.key).await.expect("part");
                let sha = hex::encode(Sha256::digest(&bytes));
                assert_eq!(sha, part.sha256, "{}", part.key);
                digests.push(sha);
            }
            let recorded = FIXED_ZIP_SHA256
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, d)| d.to_vec());
            assert_eq!(
                Some(digests.iter().map(String::as_str).collect::<Vec<_>>()),
                recorded,
                "{name}"
            );
        }
    }
}
