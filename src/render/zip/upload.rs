//! The uploader of a zip build: the zip's bytes cut into upload chunks
//! of the current part's resumable upload, each recorded in the
//! checkpoint once the store acknowledged it; the chunks an earlier run
//! recorded are built again and checked instead of uploaded again.

use std::{sync::Arc, time::Instant};

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::{
    PartUpload, StagedPart, UploadedChunk, ZipProgress,
    build::{Builder, Stages},
    pipeline::PartEnd,
};
use crate::storage::{ResumableUpload, StorageError, UPLOAD_CHUNK_BYTES, UPLOAD_CONCURRENCY};

/// The marker of an uploader error that gives up the upload an earlier
/// run recorded: the pass stops, and the part starts again with a new
/// upload.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct GiveUpRecordedUpload(pub(super) String);

/// Chunks counted by a pass of a build.
#[derive(Default)]
pub(super) struct ChunkCounts {
    /// Kept from a recorded upload (built again, the same bytes).
    pub(super) resumed: u64,
    /// Uploaded by this run.
    pub(super) uploaded: u64,
}

/// The part a pass of a build is uploading.
pub(super) struct OpenPart {
    pub(super) upload: ResumableUpload,
    /// Whether the checkpoint records this upload: a failure then leaves
    /// it for the next run instead of aborting it.
    pub(super) recorded: bool,
    /// Whether an earlier run started it: its recorded chunks are built
    /// again and checked, not uploaded again.
    reopened: bool,
    /// Bytes received for the chunks not yet handed to the store.
    pending: std::collections::VecDeque<Bytes>,
    pending_bytes: usize,
    /// The index of the next chunk handed to the store.
    next_chunk: usize,
    /// The part's bytes so far.
    bytes: u64,
    /// Chunks this part kept from the recorded upload.
    resumed: u32,
    /// Chunks being checked or uploaded, in order.
    in_flight: std::collections::VecDeque<tokio::task::JoinHandle<anyhow::Result<ChunkDone>>>,
}

impl OpenPart {
    fn new(upload: ResumableUpload, recorded: bool, reopened: bool) -> Self {
        Self {
            upload,
            recorded,
            reopened,
            pending: std::collections::VecDeque::new(),
            pending_bytes: 0,
            next_chunk: 0,
            bytes: 0,
            resumed: 0,
            in_flight: std::collections::VecDeque::new(),
        }
    }

    /// The first `n` pending bytes (at most what is pending), as pieces
    /// of the received chunks, without copy.
    fn take_chunk(&mut self, n: usize) -> Vec<Bytes> {
        let mut chunk = Vec::new();
        let mut need = n.min(self.pending_bytes);
        self.pending_bytes -= need;
        while need > 0 {
            let Some(mut piece) = self.pending.pop_front() else {
                break;
            };
            if piece.len() > need {
                let rest = piece.split_off(need);
                self.pending.push_front(rest);
            }
            need -= piece.len();
            chunk.push(piece);
        }
        chunk
    }
}

impl OpenPart {
    /// Waits until the chunks in flight are written (or failed), without
    /// recording them: a failpoint stops the build there, as a process
    /// killed after the store took them but before their checkpoint.
    #[cfg(feature = "failpoints")]
    pub(super) async fn drain(&mut self) {
        while let Some(task) = self.in_flight.pop_front() {
            let _ = task.await;
        }
    }
}

impl Drop for OpenPart {
    fn drop(&mut self) {
        for task in &self.in_flight {
            task.abort();
        }
    }
}

/// What became of a chunk handed to the store.
enum ChunkDone {
    /// Recorded by an earlier run with its digest from the part's first
    /// byte, built again with as many bytes: kept if the part's hash
    /// through it is the one recorded.
    Recorded(UploadedChunk),
    /// Recorded by an earlier run, and built again with the same bytes.
    Kept,
    /// Recorded by an earlier run, but built again with other bytes.
    Differs { index: usize },
    /// Uploaded by this run and acknowledged by the store.
    Uploaded(UploadedChunk),
}

/// Uploads chunk `index` of `upload`, or, when an earlier run recorded it
/// (`expected`), checks it instead. Its digest comes from the part's
/// hasher (see [`Hasher`]), which the uploader reads in order when the
/// chunk settles; only a record of an earlier version, the digest of the
/// chunk alone, has the chunk hashed here.
async fn chunk_task(
    upload: ResumableUpload,
    index: usize,
    chunk: Vec<Bytes>,
    expected: Option<UploadedChunk>,
    run: u32,
    stages: Arc<Stages>,
) -> anyhow::Result<ChunkDone> {
    let bytes: u64 = chunk.iter().map(|b| b.len() as u64).sum();
    if let Some(expected) = expected {
        if expected.bytes != bytes {
            return Ok(ChunkDone::Differs { index });
        }
        if expected.from_start {
            return Ok(ChunkDone::Recorded(expected));
        }
        let hashing = Instant::now();
        let sha256 = tokio::task::spawn_blocking(move || {
            let mut hash = Sha256::new();
            for piece in &chunk {
                hash.update(piece);
            }
            hex::encode(hash.finalize())
        })
        .await
        .context("the chunk hasher panicked")?;
        Stages::add(&stages.chunk_hash_us, hashing);
        return Ok(if expected.sha256 == sha256 {
            ChunkDone::Kept
        } else {
            ChunkDone::Differs { index }
        });
    }
    let putting = Instant::now();
    let part_id = upload.put_chunk(index, chunk).await?;
    Stages::add(&stages.chunk_put_us, putting);
    Ok(ChunkDone::Uploaded(UploadedChunk {
        index,
        bytes,
        // Set when the chunk settles, from the part's hasher.
        sha256: String::new(),
        from_start: true,
        part_id,
        run,
    }))
}

/// A settled chunk with its digest from the part's hasher (`digests`, in
/// order): a recorded chunk built again is kept only if the part's hash
/// through it is the one recorded; an uploaded chunk is recorded with it.
/// A chunk that failed takes no digest; the outer error is the hasher's.
async fn with_digest(
    done: anyhow::Result<ChunkDone>,
    digests: &mut mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<anyhow::Result<ChunkDone>> {
    let done = match done {
        Ok(done) => done,
        Err(e) => return Ok(Err(e)),
    };
    // The hasher has every byte of this chunk (the zip thread hands each
    // piece to it before the uploader), so its digest comes.
    let through = digests
        .recv()
        .await
        .ok_or_else(|| anyhow!("the part's hasher stopped"))?;
    Ok(Ok(match done {
        ChunkDone::Recorded(expected) if expected.sha256 == through => ChunkDone::Kept,
        ChunkDone::Recorded(expected) => ChunkDone::Differs {
            index: expected.index,
        },
        ChunkDone::Uploaded(mut chunk) => {
            chunk.sha256 = through;
            ChunkDone::Uploaded(chunk)
        }
        other => other,
    }))
}

impl Builder<'_> {
    /// Starts the upload of the next part and records it before its first
    /// chunk; or continues the upload an earlier run recorded.
    pub(super) async fn open_part(
        &self,
        recorded: &mut ZipProgress,
        reopened: Option<ResumableUpload>,
        current: &mut Option<OpenPart>,
    ) -> anyhow::Result<()> {
        if let Some(upload) = reopened {
            *current = Some(OpenPart::new(upload, true, true));
            return Ok(());
        }
        let part = recorded.parts.len() + 1;
        let key = self.plan.staging_key(part);
        let upload = self
            .storage
            .start_resumable_upload(&key)
            .await
            .with_context(|| format!("starting the upload of {key}"))?;
        recorded.upload = Some(PartUpload {
            part,
            key,
            upload_id: upload.upload_id().to_owned(),
            started_at: chrono::Utc::now(),
            run: self.run,
            chunks: Vec::new(),
        });
        // Held before it is recorded: a failure to record it aborts it.
        let open = current.insert(OpenPart::new(upload, false, false));
        self.record(recorded).await?;
        open.recorded = self.save.is_some();
        Ok(())
    }

    /// Adds the zip's next bytes to the open part, handing each complete
    /// upload chunk to the store.
    pub(super) async fn take_bytes(
        &self,
        open: &mut OpenPart,
        bytes: Bytes,
        recorded: &mut ZipProgress,
        counts: &mut ChunkCounts,
        digests: &mut mpsc::UnboundedReceiver<String>,
    ) -> anyhow::Result<()> {
        open.bytes += bytes.len() as u64;
        open.pending_bytes += bytes.len();
        open.pending.push_back(bytes);
        while open.pending_bytes >= UPLOAD_CHUNK_BYTES {
            let chunk = open.take_chunk(UPLOAD_CHUNK_BYTES);
            self.submit(open, chunk, recorded, counts, digests).await?;
        }
        Ok(())
    }

    /// Hands a chunk of the open part to the store, waiting while too many
    /// are in flight.
    async fn submit(
        &self,
        open: &mut OpenPart,
        chunk: Vec<Bytes>,
        recorded: &mut ZipProgress,
        counts: &mut ChunkCounts,
        digests: &mut mpsc::UnboundedReceiver<String>,
    ) -> anyhow::Result<()> {
        while open.in_flight.len() >= UPLOAD_CONCURRENCY {
            self.settle(open, recorded, counts, digests).await?;
        }
        let index = open.next_chunk;
        open.next_chunk += 1;
        let expected = if open.reopened {
            recorded
                .upload
                .as_ref()
                .and_then(|u| u.chunks.get(index).cloned())
        } else {
            None
        };
        let task = chunk_task(
            open.upload.clone(),
            index,
            chunk,
            expected,
            self.run,
            self.stages.clone(),
        )
        .instrument(tracing::Span::current());
        open.in_flight.push_back(tokio::spawn(task));
        Ok(())
    }

    /// Waits for the oldest chunk in flight and records it once the store
    /// acknowledged it, with its digest from the part's hasher (`digests`,
    /// one per chunk, in order).
    async fn settle(
        &self,
        open: &mut OpenPart,
        recorded: &mut ZipProgress,
        counts: &mut ChunkCounts,
        digests: &mut mpsc::UnboundedReceiver<String>,
    ) -> anyhow::Result<()> {
        let Some(task) = open.in_flight.pop_front() else {
            return Ok(());
        };
        let waiting = Instant::now();
        let done = task.await.context("a chunk upload panicked")?;
        let done = with_digest(done, digests).await?;
        Stages::add(&self.stages.settle_us, waiting);
        match done {
            Err(e) => {
                if open.reopened
                    && matches!(StorageError::find_in(&e), Some(StorageError::NotFound(_)))
                {
                    return Err(GiveUpRecordedUpload(format!(
                        "the store no longer has the upload: {e:#}"
                    ))
                    .into());
                }
                Err(e.context("uploading the zip"))
            }
            Ok(ChunkDone::Recorded(_)) => Err(anyhow!("a recorded chunk was not checked")),
            Ok(ChunkDone::Kept) => {
                counts.resumed += 1;
                open.resumed += 1;
                Ok(())
            }
            Ok(ChunkDone::Differs { index }) => Err(GiveUpRecordedUpload(format!(
                "chunk {index} built again is not the bytes an earlier run uploaded"
            ))
            .into()),
            Ok(ChunkDone::Uploaded(chunk)) => {
                counts.uploaded += 1;
                self.record_chunk(chunk, recorded).await?;
                #[cfg(feature = "failpoints")]
                self.stop_after_chunks(open, recorded).await?;
                Ok(())
            }
        }
    }

    /// Records a chunk this run uploaded in the upload of the part in
    /// progress, and hands the checkpoint to the writer.
    async fn record_chunk(
        &self,
        chunk: UploadedChunk,
        recorded: &mut ZipProgress,
    ) -> anyhow::Result<()> {
        let upload = recorded
            .upload
            .as_mut()
            .ok_or_else(|| anyhow!("a chunk was uploaded without a recorded upload"))?;
        anyhow::ensure!(
            chunk.index == upload.chunks.len(),
            "chunk {} acknowledged after {} chunks",
            chunk.index,
            upload.chunks.len()
        );
        upload.chunks.push(chunk);
        self.save(recorded).await
    }

    /// Completes the open part once its last byte is handed over: uploads
    /// what is pending, waits for every chunk, completes the upload and
    /// records the staged part.
    pub(super) async fn stage_part(
        &self,
        current: &mut Option<OpenPart>,
        end: PartEnd,
        recorded: &mut ZipProgress,
        counts: &mut ChunkCounts,
        digests: &mut mpsc::UnboundedReceiver<String>,
    ) -> anyhow::Result<()> {
        let open = current
            .as_mut()
            .ok_or_else(|| anyhow!("a zip part ended before its first byte"))?;
        if open.pending_bytes > 0 {
            let chunk = open.take_chunk(open.pending_bytes);
            self.submit(open, chunk, recorded, counts, digests).await?;
        }
        while !open.in_flight.is_empty() {
            self.settle(open, recorded, counts, digests).await?;
        }
        let upload = recorded
            .upload
            .as_ref()
            .ok_or_else(|| anyhow!("a zip part ended without a recorded upload"))?;
        if upload.chunks.len() != open.next_chunk {
            let why = format!(
                "{} chunks recorded, {} built",
                upload.chunks.len(),
                open.next_chunk
            );
            if open.reopened {
                return Err(GiveUpRecordedUpload(why).into());
            }
            return Err(anyhow!("the upload of {}: {why}", upload.key));
        }
        let key = upload.key.clone();
        let ids = upload.chunks.iter().map(|c| c.part_id.clone()).collect();
        if let Err(e) = open.upload.clone().complete(ids).await {
            if open.reopened && matches!(e, StorageError::NotFound(_)) {
                return Err(GiveUpRecordedUpload(format!(
                    "the store no longer has the upload: {e}"
                ))
                .into());
            }
            return Err(anyhow::Error::new(e).context(format!("completing the upload of {key}")));
        }
        let (bytes, chunks, resumed) = (open.bytes, open.next_chunk, open.resumed);
        *current = None;
        recorded.manifest.extend(end.manifest);
        recorded.failures.extend(end.failures);
        recorded.parts.push(StagedPart {
            key,
            bytes,
            sha256: end.sha256,
            next: end.next,
            copies: end.copies,
            manifest_rows: recorded.manifest.len(),
            failures: recorded.failures.len(),
            last: end.last,
            run: self.run,
            chunks: u32::try_from(chunks).unwrap_or(u32::MAX),
            resumed_chunks: resumed,
        });
        recorded.upload = None;
        self.record(recorded).await?;
        #[cfg(feature = "failpoints")]
        super::failpoints::check_parts(&self.plan.staging_dir, recorded.parts.len()).await?;
        Ok(())
    }
}
