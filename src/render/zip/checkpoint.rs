//! The checkpoint of a zip build: what a build records of its progress
//! (the format kept in `jobs.checkpoint`), and the writer that records it
//! alongside the build.

use std::sync::Arc;

use anyhow::anyhow;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::Failure;

/// A part a build staged, and where the build stood once it was complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedPart {
    /// Its staging key.
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
    /// The index, among the build's copies, of the first copy that is not
    /// in this part or an earlier one.
    pub next: u64,
    /// Copies written in this part and the earlier ones.
    pub copies: u32,
    /// Rows of `manifest.csv` and failures up to this part: how much of
    /// [`ZipProgress::manifest`] and [`ZipProgress::failures`] they cover.
    pub manifest_rows: usize,
    pub failures: usize,
    /// Whether this is the zip's last part (the one with `manifest.csv`).
    pub last: bool,
    /// The run that staged it (the job's attempt).
    pub run: u32,
    /// The chunks of its upload.
    #[serde(default)]
    pub chunks: u32,
    /// How many of those chunks an earlier run had uploaded (the run that
    /// staged the part continued that run's upload).
    #[serde(default)]
    pub resumed_chunks: u32,
}

/// The name of [`ZipProgress::upload`] in a recorded checkpoint, which
/// housekeeping reads to abort the uploads no run will continue.
pub const UPLOAD_FIELD: &str = "upload";

/// What a zip build has staged so far: enough for a later run to continue
/// after its last complete part, and within the part in progress after
/// its last chunk the store acknowledged, producing the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ZipProgress {
    /// A digest of the build's inputs (copies, options, keys, part size):
    /// progress recorded for other inputs is not resumed.
    pub inputs: String,
    /// The staged parts, in order.
    pub parts: Vec<StagedPart>,
    /// Every row of `manifest.csv` written so far (the entry name last).
    pub manifest: Vec<Vec<String>>,
    /// Every copy left out so far.
    pub failures: Vec<Failure>,
    /// The upload of the part after the staged ones, from the moment it is
    /// started until the part is staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<PartUpload>,
}

impl ZipProgress {
    /// The units of work this progress covers: the staged parts and every
    /// chunk the store acknowledged (theirs and the open upload's). Each
    /// recorded chunk adds one, so a run that uploaded one more chunk than
    /// any run before moved the job forward.
    pub fn units(&self) -> u64 {
        let staged: u64 = self.parts.iter().map(|p| 1 + u64::from(p.chunks)).sum();
        staged + self.upload.as_ref().map_or(0, |u| u.chunks.len() as u64)
    }
}

/// The upload of a part in progress, recorded as soon as it is started
/// and after each chunk the store acknowledges, so that a later run
/// continues it instead of uploading the part again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartUpload {
    /// The part's number (1 for the zip's first part).
    pub part: usize,
    /// The part's staging key, where the upload completes.
    pub key: String,
    /// The store's id of the upload: an S3 multipart upload id, or the
    /// suffix of the local store's staging file `<key>#<upload id>`.
    pub upload_id: String,
    /// When the upload was started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The run that started it.
    pub run: u32,
    /// The chunks the store acknowledged, in order from the part's first
    /// byte (each [`crate::storage::UPLOAD_CHUNK_BYTES`] long but the
    /// last).
    pub chunks: Vec<UploadedChunk>,
}

/// A chunk of a part's upload that the store acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedChunk {
    /// Its index in the part's upload, from 0.
    pub index: usize,
    pub bytes: u64,
    /// A SHA-256 in hex: when `from_start`, of the part's bytes from its
    /// first byte through this chunk's last (the part's hash as it stood
    /// then, so that one pass over the bytes gives the part's SHA-256 and
    /// every chunk's); in records of earlier versions, of this chunk's
    /// bytes alone. A later run that builds the part again keeps the
    /// chunk only if its bytes give this digest.
    pub sha256: String,
    /// Whether `sha256` covers the part from its first byte.
    #[serde(default)]
    pub from_start: bool,
    /// The store's id of the chunk (on S3 the part's ETag), given back
    /// when the upload completes.
    pub part_id: String,
    /// The run that uploaded it.
    pub run: u32,
}

/// What the checkpoint writer is handed.
enum Record {
    /// A checkpoint to write after the ones handed before it.
    Save(BoxFuture<'static, anyhow::Result<()>>),
    /// Answered once every checkpoint handed before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Writes a build's checkpoints on a task of its own, one after the
/// other in the order they were made, so that the uploader does not wait
/// for PostgreSQL's commit after each chunk: it hands the checkpoint over
/// and goes on. What a checkpoint records is already true when it is made
/// (a chunk is recorded once the store acknowledged it), so a checkpoint
/// written a little later is still true; a run killed before it was
/// written uploads that chunk again. The build waits for the writes
/// ([`CheckpointWriter::flush`]) where the order with the store matters:
/// a part's upload is recorded before its first chunk, a staged part
/// before the next part or the move to the final keys. The first write
/// that fails stops the writer, and the build with it at its next
/// checkpoint. Memory stays bounded: at most [`CheckpointWriter::BACKLOG`]
/// checkpoints wait.
pub(super) struct CheckpointWriter {
    tx: mpsc::Sender<Record>,
    /// The error of the write that failed, until the build reads it.
    failed: Arc<std::sync::Mutex<Option<anyhow::Error>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CheckpointWriter {
    /// Checkpoints waiting to be written, at most.
    const BACKLOG: usize = 8;

    pub(super) fn start() -> Self {
        let (tx, mut rx) = mpsc::channel::<Record>(Self::BACKLOG);
        let failed = Arc::new(std::sync::Mutex::new(None));
        let task = {
            let failed = failed.clone();
            tokio::spawn(
                async move {
                    while let Some(record) = rx.recv().await {
                        match record {
                            Record::Save(write) => {
                                if let Err(e) = write.await {
                                    let mut failed =
                                        failed.lock().unwrap_or_else(|p| p.into_inner());
                                    *failed = Some(e.context("recording the zip's progress"));
                                    return;
                                }
                            }
                            Record::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                }
                .instrument(tracing::Span::current()),
            )
        };
        Self { tx, failed, task }
    }

    /// Why the writer stopped.
    fn error(&self) -> anyhow::Error {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed
            .take()
            .unwrap_or_else(|| anyhow!("the checkpoint writer stopped"))
    }

    /// Hands a checkpoint's write over, waiting only while
    /// [`CheckpointWriter::BACKLOG`] writes wait; fails when an earlier
    /// write failed.
    pub(super) async fn save(
        &self,
        write: BoxFuture<'static, anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        if self.task.is_finished() {
            return Err(self.error());
        }
        self.tx
            .send(Record::Save(write))
            .await
            .map_err(|_| self.error())
    }

    /// Waits until every checkpoint handed over is written; fails when
    /// one of them failed.
    pub(super) async fn flush(&self) -> anyhow::Result<()> {
        let (done, written) = tokio::sync::oneshot::channel();
        self.tx
            .send(Record::Flush(done))
            .await
            .map_err(|_| self.error())?;
        written.await.map_err(|_| self.error())
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
