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

use std::{
    collections::HashSet,
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use tracing::Instrument as _;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use zip::{CompressionMethod, ZipWriter, write::SimpleFileOptions};

use super::{
    RenderOptions,
    copy::document,
    pdf::{self, CopyDocument},
};
use crate::{
    db::render::CopyRow,
    storage::{ResumableUpload, Storage, StorageError, UPLOAD_CHUNK_BYTES, UPLOAD_CONCURRENCY},
};

/// Bytes handed from the zip writer to the uploader at a time.
const CHUNK: usize = 1024 * 1024;

/// Where a build's time went, logged when it ends (`zip stages`): the
/// time the uploader waited on each thing (its waits hold back the zip
/// thread, whose channel fills), and the time chunk tasks spent hashing
/// and writing (alongside the build).
#[derive(Default, Debug)]
struct Stages {
    /// Checkpoints handed to the writer (waiting only when it is behind),
    /// and how many.
    save_us: AtomicU64,
    saves: AtomicU64,
    /// Waits until every checkpoint handed over was written (after a
    /// part's upload is started and once it is staged).
    flush_us: AtomicU64,
    /// Progress writes made, and the wait for the last one at the end.
    progress_us: AtomicU64,
    progress: AtomicU64,
    /// Waits for the oldest chunk in flight.
    settle_us: AtomicU64,
    /// Chunk tasks hashing, and writing to the store.
    chunk_hash_us: AtomicU64,
    chunk_put_us: AtomicU64,
    /// Moving the parts to their final keys.
    publish_us: AtomicU64,
}

impl Stages {
    /// Adds the time since `since` to `counter`.
    fn add(counter: &AtomicU64, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        counter.fetch_add(us, Ordering::Relaxed);
    }

    /// Logs the stages of a build that took `total`.
    fn log(&self, total: Duration) {
        let ms = |c: &AtomicU64| c.load(Ordering::Relaxed) / 1000;
        tracing::info!(
            duration_ms = total.as_millis() as u64,
            save_wait_ms = ms(&self.save_us),
            saves = self.saves.load(Ordering::Relaxed),
            flush_wait_ms = ms(&self.flush_us),
            progress_wait_ms = ms(&self.progress_us),
            progress_writes = self.progress.load(Ordering::Relaxed),
            settle_wait_ms = ms(&self.settle_us),
            chunk_hash_ms = ms(&self.chunk_hash_us),
            chunk_put_ms = ms(&self.chunk_put_us),
            publish_ms = ms(&self.publish_us),
            "zip stages"
        );
    }
}

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

/// A test seam: makes a build stop (fail, or hang as a killed process
/// would) once a number of its parts are staged, or a number of chunks of
/// its part in progress are recorded.
#[doc(hidden)]
pub mod failpoint {
    use std::{
        collections::HashMap,
        sync::{LazyLock, Mutex},
    };

    /// What an armed failpoint does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Action {
        /// The build fails with an error.
        Fail,
        /// The build waits for ever (until its task is aborted).
        Hang,
    }

    /// When an armed failpoint fires.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Trigger {
        /// Once this many parts are staged.
        Parts(usize),
        /// Once the upload of the part in progress has this many chunks
        /// recorded.
        Chunks(usize),
    }

    static ARMED: LazyLock<Mutex<HashMap<String, (Trigger, Action)>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));

    fn set(staging_dir: &str, trigger: Trigger, action: Action) {
        let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
        armed.insert(staging_dir.to_owned(), (trigger, action));
    }

    /// Arms a failpoint, once, for the build staging in `staging_dir`:
    /// it fires when `parts` parts are staged (counting those resumed,
    /// checked when the run starts and after each part it stages).
    pub fn arm(staging_dir: &str, parts: usize, action: Action) {
        set(staging_dir, Trigger::Parts(parts), action);
    }

    /// Arms a failpoint, once, for the build staging in `staging_dir`:
    /// it fires when the upload of the part in progress has `chunks`
    /// chunks recorded (counting those of an earlier run, checked after
    /// each chunk this run records).
    pub fn arm_after_chunks(staging_dir: &str, chunks: usize, action: Action) {
        set(staging_dir, Trigger::Chunks(chunks), action);
    }

    async fn fire(staging_dir: &str, now: Trigger) -> anyhow::Result<()> {
        let action = {
            let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
            match armed.get(staging_dir) {
                Some(&(at, action)) if at == now => {
                    armed.remove(staging_dir);
                    Some(action)
                }
                _ => None,
            }
        };
        match action {
            None => Ok(()),
            Some(Action::Fail) => Err(anyhow::anyhow!("injected failure at {now:?}")),
            Some(Action::Hang) => std::future::pending().await,
        }
    }

    /// Fires the failpoint of `staging_dir` if it is armed for `parts`
    /// staged parts.
    pub(super) async fn check(staging_dir: &str, parts: usize) -> anyhow::Result<()> {
        fire(staging_dir, Trigger::Parts(parts)).await
    }

    /// Whether the failpoint of `staging_dir` is armed for `chunks`
    /// recorded chunks of the part in progress (the build then waits for
    /// that record to be written before it fires).
    pub(super) fn armed_at_chunks(staging_dir: &str, chunks: usize) -> bool {
        let armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
        matches!(armed.get(staging_dir), Some(&(Trigger::Chunks(n), _)) if n == chunks)
    }

    /// Fires the failpoint of `staging_dir` if it is armed for `chunks`
    /// recorded chunks of the part in progress.
    pub(super) async fn check_chunks(staging_dir: &str, chunks: usize) -> anyhow::Result<()> {
        fire(staging_dir, Trigger::Chunks(chunks)).await
    }
}

/// A zip entry name `<numero>_<NOM>_<Prenom>.pdf` in safe ASCII: letters
/// transliterated, anything else but letters and digits turned into `-`,
/// never a path, never `..`, never a reserved device name.
pub fn entry_name(numero: &str, nom: &str, prenom: &str) -> String {
    fn clean(s: &str) -> String {
        let ascii = deunicode::deunicode(s);
        let mut out = String::with_capacity(ascii.len());
        for c in ascii.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        out.trim_matches('-').chars().take(40).collect()
    }
    let numero = clean(numero);
    let nom = clean(nom).to_ascii_uppercase();
    let prenom = {
        let p = clean(prenom).to_ascii_lowercase();
        let mut capital = true;
        p.chars()
            .map(|c| {
                let c = if capital { c.to_ascii_uppercase() } else { c };
                capital = c == '-';
                c
            })
            .collect::<String>()
    };
    let mut stem = [numero, nom, prenom]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    if stem.is_empty() {
        stem = "copie".into();
    }
    const RESERVED: [&str; 22] = [
        "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
        "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    ];
    if RESERVED.contains(&stem.to_ascii_uppercase().as_str()) {
        stem.insert(0, '_');
    }
    format!("{stem}.pdf")
}

/// A text cell of `manifest.csv` or `errors.csv` made from user data,
/// neutralised as OWASP recommends for CSV exports: a cell beginning with
/// `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so
/// that a spreadsheet shows it as text instead of running it as a formula.
pub fn csv_text(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// `name`, or `name` with `_2`, `_3`… before the extension, whichever is
/// not taken yet; records it as taken.
fn unique(name: String, taken: &mut HashSet<String>) -> String {
    if taken.insert(name.to_ascii_lowercase()) {
        return name;
    }
    let stem = name.trim_end_matches(".pdf");
    (2..)
        .map(|n| format!("{stem}_{n}.pdf"))
        .find(|candidate| taken.insert(candidate.to_ascii_lowercase()))
        .unwrap_or(name)
}

/// What the async side sends the zip thread.
enum Job {
    Copy {
        row: Box<CopyRow>,
        doc: Box<CopyDocument>,
    },
    Failed(Failure),
}

/// What a render thread hands the zip thread.
enum Rendered {
    Pdf {
        row: Box<CopyRow>,
        pdf: Box<pdf::PreparedPdf>,
        len: u64,
    },
    /// The floor: the scans as they are.
    Raw {
        row: Box<CopyRow>,
        doc: Box<CopyDocument>,
    },
    Failed(Failure),
}

/// What the zip thread sends back.
enum Out {
    Chunk(Bytes),
    /// The current part is complete.
    PartEnd(PartEnd),
    /// A copy was written (or left out): progress.
    Done,
}

/// A complete part, and where the build stands after it.
struct PartEnd {
    /// Its SHA-256, in hex.
    sha256: String,
    /// The index of the first copy not in this part or before.
    next: u64,
    copies: u32,
    /// Rows of `manifest.csv` and failures since the previous part.
    manifest: Vec<Vec<String>>,
    failures: Vec<Failure>,
    last: bool,
}

/// Where the zip thread starts: at the beginning, or after the parts an
/// earlier run staged.
#[derive(Default)]
struct Start {
    next: u64,
    copies: u32,
    manifest: Vec<Vec<String>>,
    failures: Vec<Failure>,
}

/// A `Write` that hands its bytes to the async side in chunks, and to a
/// [`Hasher`].
struct Sink {
    buf: Vec<u8>,
    tx: mpsc::Sender<Out>,
    written: u64,
    hash: Hasher,
}

/// The SHA-256 of a part, computed on a thread of its own: hashing costs
/// as much CPU as the rest of the zip's path, and alongside it takes no
/// time. The same pass gives each upload chunk's record its digest: at
/// the end of every [`UPLOAD_CHUNK_BYTES`] of the part, and at the part's
/// end, the hash of the part so far goes to `digests`, in order, one per
/// upload chunk (the part's bytes are hashed once, not once for the part
/// and again for each chunk).
struct Hasher {
    chunks: std::sync::mpsc::SyncSender<Bytes>,
    thread: std::thread::JoinHandle<String>,
}

impl Hasher {
    fn start(digests: mpsc::UnboundedSender<String>) -> std::io::Result<Hasher> {
        let (chunks, rx) = std::sync::mpsc::sync_channel::<Bytes>(4);
        let thread = std::thread::Builder::new()
            .name("zip-sha256".into())
            .spawn(move || {
                let mut hash = Sha256::new();
                // Bytes hashed since the last upload chunk's end.
                let mut in_chunk = 0usize;
                for chunk in rx {
                    let mut rest = &chunk[..];
                    while !rest.is_empty() {
                        let take = rest.len().min(UPLOAD_CHUNK_BYTES - in_chunk);
                        hash.update(&rest[..take]);
                        rest = &rest[take..];
                        in_chunk += take;
                        if in_chunk == UPLOAD_CHUNK_BYTES {
                            // The uploader may have stopped: then nobody
                            // needs the digest.
                            let _ = digests.send(hex::encode(hash.clone().finalize()));
                            in_chunk = 0;
                        }
                    }
                }
                let digest = hex::encode(hash.finalize());
                if in_chunk > 0 {
                    let _ = digests.send(digest.clone());
                }
                digest
            })?;
        Ok(Hasher { chunks, thread })
    }

    fn update(&self, chunk: Bytes) -> std::io::Result<()> {
        self.chunks
            .send(chunk)
            .map_err(|_| std::io::Error::other("the hasher stopped"))
    }

    /// The digest of every chunk, in hex.
    fn finish(self) -> anyhow::Result<String> {
        drop(self.chunks);
        self.thread
            .join()
            .map_err(|_| anyhow!("the hasher panicked"))
    }
}

impl Sink {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.hash.update(chunk.clone())?;
        self.tx
            .blocking_send(Out::Chunk(chunk))
            .map_err(|_| std::io::Error::other("the uploader stopped"))
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
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
    /// Fault injection for tests: fail after writing this many entries.
    #[doc(hidden)]
    pub fail_after: Option<u32>,
    /// The benchmark's floor: store each copy's scans as they are
    /// (`<entry>-<page>.jpg`) instead of rendering a PDF.
    #[doc(hidden)]
    pub raw_scans: bool,
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

/// A digest of what a build's bytes depend on: its copies (as read from
/// the database: a changed copy has another version or date), the
/// options, the keys and the part size.
fn inputs_digest(rows: &[CopyRow], plan: &ZipPlan) -> String {
    let mut hash = Sha256::new();
    hash.update(
        format!(
            "{}\n{}\n{}\n{}\n{}\n",
            plan.key_stem,
            plan.staging_dir,
            plan.options.tag(),
            plan.max_part_bytes,
            plan.raw_scans
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
async fn abort_recorded(storage: &Storage, upload: &PartUpload) {
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
async fn reopen_recorded(
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
    // A key the store refuses is refused before any work (a permanent
    // error: trying again cannot help).
    for key in [plan.key(2), plan.staging_key(2)] {
        Storage::check_key(&key).with_context(|| format!("the zip cannot be stored at {key}"))?;
    }
    let total = rows.len() as u64;
    let inputs = inputs_digest(&rows, plan);
    let run = resume.as_ref().map_or(1, |r| r.run);
    let save = resume.as_ref().map(|r| r.save);
    let mut recorded = match resume.and_then(|r| r.from) {
        Some(from) if from.inputs == inputs => still_there(storage, plan, from).await?,
        Some(from) => {
            tracing::info!("the copies changed since the last run: the zip is built anew");
            if let Some(upload) = &from.upload {
                abort_recorded(storage, upload).await;
            }
            ZipProgress {
                inputs,
                ..ZipProgress::default()
            }
        }
        None => ZipProgress {
            inputs,
            ..ZipProgress::default()
        },
    };
    let resumed_parts = recorded.parts.len();
    failpoint::check(&plan.staging_dir, resumed_parts).await?;
    if recorded.parts.last().is_some_and(|p| p.last) {
        // Every part was staged: only the move to the final keys is left.
        let copies = recorded.parts.last().map_or(0, |p| p.copies);
        progress(total, total).await;
        let parts = publish(storage, plan, staged_parts(&recorded)).await?;
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
    let (mut reopened, restarted) = reopen_recorded(storage, plan, &mut recorded).await?;
    let mut restarted_uploads = u32::from(restarted);
    let builder = Builder {
        storage,
        plan,
        progress,
        run,
        save,
        writer: save.map(|_| CheckpointWriter::start()),
        stages: Arc::new(Stages::default()),
    };
    let building = Instant::now();
    // A second pass follows only a first one that gave up a reopened
    // upload; it starts a new upload, so it cannot give one up again.
    let built = loop {
        match builder.build(&rows, &mut recorded, reopened.take()).await {
            Ok(built) => break built,
            Err(Stopped::Restart { upload, reason }) => {
                restarted_uploads += 1;
                tracing::warn!(
                    key = %upload.key(), upload_id = %upload.upload_id(), %reason,
                    "the recorded upload cannot be continued: aborted, the part starts again \
                     with a new upload"
                );
                if let Err(e) = upload.abort().await {
                    tracing::warn!(error = %e, "cannot abort the recorded upload");
                }
                recorded.upload = None;
                builder.record(&recorded).await?;
            }
            Err(Stopped::Failed(error)) => {
                // What was acknowledged is still recorded, so that the
                // next run does not upload it again.
                if let Err(e) = builder.flush().await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot record the zip's progress");
                }
                // Without a record of them, finished parts are deleted:
                // nothing may remain. With one, they stay staged for the
                // next run.
                if save.is_none() {
                    for part in &recorded.parts {
                        if let Err(e) = storage.delete(&part.key).await {
                            tracing::warn!(key = %part.key, error = %e, "cannot delete a zip part");
                        }
                    }
                }
                return Err(error);
            }
        }
    };
    let publishing = Instant::now();
    let parts = publish(storage, plan, staged_parts(&recorded)).await?;
    Stages::add(&builder.stages.publish_us, publishing);
    builder.stages.log(building.elapsed());
    Ok(ZipOutcome {
        parts,
        copies: built.copies,
        failures: built.failures,
        resumed_parts,
        resumed_chunks: built.resumed_chunks,
        uploaded_chunks: built.uploaded_chunks,
        restarted_uploads,
    })
}

/// The staged parts `recorded` names, in order.
fn staged_parts(recorded: &ZipProgress) -> Vec<Part> {
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

/// What a pass of a build that staged every part returns.
struct Built {
    copies: u32,
    failures: Vec<Failure>,
    resumed_chunks: u64,
    uploaded_chunks: u64,
}

/// Why a pass of a build stopped without staging every part.
enum Stopped {
    /// The upload an earlier run recorded for the part in progress cannot
    /// be continued: the store no longer has it, or a chunk built again is
    /// not the bytes recorded. The caller aborts it and starts the part
    /// again with a new upload.
    Restart {
        upload: ResumableUpload,
        reason: String,
    },
    /// The build failed.
    Failed(anyhow::Error),
}

/// The marker of an uploader error that is a [`Stopped::Restart`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct GiveUpRecordedUpload(String);

/// Chunks counted by a pass of a build.
#[derive(Default)]
struct ChunkCounts {
    /// Kept from a recorded upload (built again, the same bytes).
    resumed: u64,
    /// Uploaded by this run.
    uploaded: u64,
}

/// The part a pass of a build is uploading.
struct OpenPart {
    upload: ResumableUpload,
    /// Whether the checkpoint records this upload: a failure then leaves
    /// it for the next run instead of aborting it.
    recorded: bool,
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
struct CheckpointWriter {
    tx: mpsc::Sender<Record>,
    /// The error of the write that failed, until the build reads it.
    failed: Arc<std::sync::Mutex<Option<anyhow::Error>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CheckpointWriter {
    /// Checkpoints waiting to be written, at most.
    const BACKLOG: usize = 8;

    fn start() -> Self {
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
    async fn save(&self, write: BoxFuture<'static, anyhow::Result<()>>) -> anyhow::Result<()> {
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
    async fn flush(&self) -> anyhow::Result<()> {
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

/// What a build needs besides its copies and its progress.
struct Builder<'a> {
    storage: &'a Storage,
    plan: &'a ZipPlan,
    progress: &'a (dyn Fn(u64, u64) -> BoxFuture<'static, ()> + Send + Sync),
    run: u32,
    save: Option<&'a SaveProgress<'a>>,
    /// Writes the checkpoints `save` makes (when the build has one).
    writer: Option<CheckpointWriter>,
    stages: Arc<Stages>,
}

impl Builder<'_> {
    /// Hands `recorded` to the checkpoint writer when the build has a
    /// checkpoint: it is written after the checkpoints before it, while
    /// the build goes on ([`Builder::flush`] waits for it).
    async fn save(&self, recorded: &ZipProgress) -> anyhow::Result<()> {
        let (Some(save), Some(writer)) = (self.save, &self.writer) else {
            return Ok(());
        };
        let saving = Instant::now();
        let handed = writer.save(save(recorded)).await;
        Stages::add(&self.stages.save_us, saving);
        self.stages.saves.fetch_add(1, Ordering::Relaxed);
        handed
    }

    /// Waits until every checkpoint handed to the writer is written.
    async fn flush(&self) -> anyhow::Result<()> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        let waiting = Instant::now();
        let flushed = writer.flush().await;
        Stages::add(&self.stages.flush_us, waiting);
        flushed
    }

    /// Records `recorded` and waits until it is written.
    async fn record(&self, recorded: &ZipProgress) -> anyhow::Result<()> {
        self.save(recorded).await?;
        self.flush().await
    }

    /// Starts the upload of the next part and records it before its first
    /// chunk; or continues the upload an earlier run recorded.
    async fn open_part(
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
        // The hasher has every byte of this chunk (the zip thread hands
        // each piece to it before the uploader), so its digest comes.
        let through = match &done {
            Ok(_) => Some(
                digests
                    .recv()
                    .await
                    .ok_or_else(|| anyhow!("the part's hasher stopped"))?,
            ),
            Err(_) => None,
        };
        Stages::add(&self.stages.settle_us, waiting);
        let done = match (done, through) {
            (Ok(ChunkDone::Recorded(expected)), Some(through)) => {
                if expected.sha256 == through {
                    Ok(ChunkDone::Kept)
                } else {
                    Ok(ChunkDone::Differs {
                        index: expected.index,
                    })
                }
            }
            (Ok(ChunkDone::Uploaded(mut chunk)), Some(through)) => {
                chunk.sha256 = through;
                Ok(ChunkDone::Uploaded(chunk))
            }
            (done, _) => done,
        };
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
                let chunks = upload.chunks.len();
                self.save(recorded).await?;
                if failpoint::armed_at_chunks(&self.plan.staging_dir, chunks) {
                    self.flush().await?;
                }
                failpoint::check_chunks(&self.plan.staging_dir, chunks).await
            }
        }
    }

    /// Completes the open part once its last byte is handed over: uploads
    /// what is pending, waits for every chunk, completes the upload and
    /// records the staged part.
    async fn finish_part(
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
        failpoint::check(&self.plan.staging_dir, recorded.parts.len()).await
    }

    /// One pass of a build: renders and zips the copies from the first one
    /// no part of `recorded` holds, uploads the parts and records them in
    /// `recorded`. `reopened` is the upload of the part in progress that
    /// an earlier run recorded: its recorded chunks are built again and
    /// checked, not uploaded again. On a failure the open upload is
    /// aborted, unless the checkpoint records it.
    async fn build(
        &self,
        rows: &[CopyRow],
        recorded: &mut ZipProgress,
        reopened: Option<ResumableUpload>,
    ) -> Result<Built, Stopped> {
        let (storage, plan, progress) = (self.storage, self.plan, self.progress);
        let total = rows.len() as u64;
        let start = Start {
            next: recorded.parts.last().map_or(0, |p| p.next),
            copies: recorded.parts.last().map_or(0, |p| p.copies),
            manifest: recorded.manifest.clone(),
            failures: recorded.failures.clone(),
        };
        let first = start.next;
        let (job_tx, job_rx) = mpsc::channel::<(u64, Job)>(4);
        let (out_tx, out_rx) = mpsc::channel::<Out>(4);
        let options = plan.options;
        let max_part = plan.max_part_bytes;
        let fail_after = plan.fail_after;
        let raw_scans = plan.raw_scans;
        // Entry dates come from the copies, never the clock: the same
        // copies give the same zip. The CSV files take the latest copy's
        // date.
        let latest = rows
            .iter()
            .map(|r| r.updated_at)
            .max()
            .map_or_else(zip::DateTime::default, zip_date);
        let span = tracing::Span::current();
        // PDFs are rendered on several threads (they are independent); the
        // zip thread puts them back in order.
        let renderers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let (rendered_tx, rendered_rx) =
            std::sync::mpsc::sync_channel::<(u64, Rendered)>(renderers * 2);
        // Each part's hasher sends the digest of every upload chunk, in
        // order (a handful of short strings per part).
        let (digest_tx, digest_rx) = mpsc::unbounded_channel::<String>();
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let mut render_threads = Vec::with_capacity(renderers);
        for _ in 0..renderers {
            let job_rx = job_rx.clone();
            let rendered_tx = rendered_tx.clone();
            let span = span.clone();
            render_threads.push(tokio::task::spawn_blocking(move || {
                span.in_scope(|| render_thread(&job_rx, &rendered_tx, options, raw_scans))
            }));
        }
        // Only the render threads hold the receiver: when they stop, the
        // reader's sends fail instead of blocking.
        drop(job_rx);
        drop(rendered_tx);
        let zipper = tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                zip_thread(
                    rendered_rx,
                    out_tx,
                    &digest_tx,
                    max_part,
                    fail_after,
                    start,
                    latest,
                )
            })
        });

        // The reader: scans of each copy, in order, into the zip thread,
        // from the first copy no staged part holds.
        let reader = {
            let storage = storage.clone();
            async move {
                for (seq, row) in (first..).zip(rows.iter().skip(first as usize)) {
                    let job = match document(&storage, row).await {
                        Ok(doc) => Job::Copy {
                            row: Box::new(row.clone()),
                            doc: Box::new(doc),
                        },
                        Err(reason) => Job::Failed(Failure {
                            numero: row.numero.clone(),
                            nom: row.nom.clone(),
                            prenom: row.prenom.clone(),
                            reason,
                        }),
                    };
                    if job_tx.send((seq, job)).await.is_err() {
                        break;
                    }
                }
            }
        };

        // The uploader: the zip's bytes, cut into chunks, into the current
        // part's upload. It owns the receiving end: if it stops on an
        // error, the zip thread's sends fail instead of blocking.
        let uploader = async {
            let mut out_rx = out_rx;
            let mut digests = digest_rx;
            let mut current: Option<OpenPart> = None;
            let mut reopened = reopened;
            let mut counts = ChunkCounts::default();
            let mut done = first;
            let mut last_progress = Instant::now() - Duration::from_secs(1);
            // Progress is written on a task of its own, one write at a
            // time, in order; the build does not wait for it (only for
            // the last, before it ends).
            let mut progress_write: Option<tokio::task::JoinHandle<()>> = None;
            let result: anyhow::Result<()> = async {
                while let Some(msg) = out_rx.recv().await {
                    match msg {
                        Out::Chunk(bytes) => {
                            if current.is_none() {
                                self.open_part(recorded, reopened.take(), &mut current)
                                    .await?;
                            }
                            let open = current
                                .as_mut()
                                .ok_or_else(|| anyhow!("no upload is open"))?;
                            open.bytes += bytes.len() as u64;
                            open.pending_bytes += bytes.len();
                            open.pending.push_back(bytes);
                            while open.pending_bytes >= UPLOAD_CHUNK_BYTES {
                                let chunk = open.take_chunk(UPLOAD_CHUNK_BYTES);
                                self.submit(open, chunk, recorded, &mut counts, &mut digests)
                                    .await?;
                            }
                        }
                        Out::PartEnd(end) => {
                            self.finish_part(
                                &mut current,
                                end,
                                recorded,
                                &mut counts,
                                &mut digests,
                            )
                            .await?;
                        }
                        Out::Done => {
                            done += 1;
                            let busy = progress_write.as_ref().is_some_and(|w| !w.is_finished());
                            if done == total
                                || (!busy && last_progress.elapsed() >= Duration::from_millis(250))
                            {
                                let before = progress_write.take();
                                let write = progress(done, total);
                                progress_write = Some(tokio::spawn(
                                    async move {
                                        if let Some(before) = before {
                                            let _ = before.await;
                                        }
                                        write.await;
                                    }
                                    .instrument(tracing::Span::current()),
                                ));
                                self.stages.progress.fetch_add(1, Ordering::Relaxed);
                                last_progress = Instant::now();
                            }
                        }
                    }
                }
                if let Some(write) = progress_write.take() {
                    let writing = Instant::now();
                    let _ = write.await;
                    Stages::add(&self.stages.progress_us, writing);
                }
                Ok(())
            }
            .await;
            (result, current, counts)
        };

        let ((), (upload_result, current, counts)) = tokio::join!(reader, uploader);
        let zipped = match zipper.await {
            Ok(zipped) => zipped,
            Err(e) => Err(anyhow!("the zip writer panicked: {e}")),
        };
        let mut panicked = None;
        for thread in render_threads {
            if let Err(e) = thread.await {
                panicked = Some(anyhow!("a PDF renderer panicked: {e}"));
            }
        }
        let failed = match (upload_result, zipped) {
            (Err(e), _) => Some(e),
            (Ok(()), Err(e)) => Some(e),
            (Ok(()), Ok(_)) if current.is_some() => Some(anyhow!("the zip writer ended mid-part")),
            (Ok(()), Ok(zipped)) => match panicked {
                Some(e) => Some(e),
                None => {
                    return Ok(Built {
                        copies: zipped.0,
                        failures: zipped.1,
                        resumed_chunks: counts.resumed,
                        uploaded_chunks: counts.uploaded,
                    });
                }
            },
        };
        let error = failed.unwrap_or_else(|| anyhow!("the zip build failed"));
        if let Some(open) = &current {
            if let Some(GiveUpRecordedUpload(reason)) = error.downcast_ref::<GiveUpRecordedUpload>()
            {
                return Err(Stopped::Restart {
                    upload: open.upload.clone(),
                    reason: reason.clone(),
                });
            }
            // An upload the checkpoint records stays for the next run;
            // any other is aborted: nothing may remain of it.
            if !open.recorded
                && let Err(e) = open.upload.clone().abort().await
            {
                tracing::warn!(error = %e, "cannot abort the zip upload");
            }
        }
        Err(Stopped::Failed(error))
    }
}

/// A zip entry's date (UTC, to the even second as the format keeps it);
/// 1980-01-01 for a date the format cannot hold.
fn zip_date(at: chrono::DateTime<chrono::Utc>) -> zip::DateTime {
    use chrono::{Datelike as _, Timelike as _};
    let (Ok(year), Ok(month), Ok(day), Ok(hour), Ok(minute), Ok(second)) = (
        u16::try_from(at.year()),
        u8::try_from(at.month()),
        u8::try_from(at.day()),
        u8::try_from(at.hour()),
        u8::try_from(at.minute()),
        u8::try_from(at.second().min(59)),
    ) else {
        return zip::DateTime::default();
    };
    zip::DateTime::from_date_and_time(year, month, day, hour, minute, second).unwrap_or_default()
}

/// Moves every complete part from its staging key to its final key; on a
/// failure, deletes what was moved and what was not, and fails. A part
/// already at its final key with its size (moved by a run that was killed
/// while publishing) is left there.
async fn publish(
    storage: &Storage,
    plan: &ZipPlan,
    staged: Vec<Part>,
) -> anyhow::Result<Vec<Part>> {
    let mut moved = Vec::with_capacity(staged.len());
    let mut failure = None;
    for (i, part) in staged.iter().enumerate() {
        let key = plan.key(i + 1);
        let result = match storage.rename(&part.key, &key).await {
            Err(StorageError::NotFound(_))
                if storage.size(&key).await.ok().flatten() == Some(part.bytes) =>
            {
                Ok(())
            }
            other => other,
        };
        if let Err(e) = result {
            failure = Some(anyhow::Error::new(e).context(format!("moving {} to {key}", part.key)));
            break;
        }
        moved.push(Part {
            key,
            bytes: part.bytes,
            sha256: part.sha256.clone(),
        });
    }
    let Some(error) = failure else {
        return Ok(moved);
    };
    for key in moved
        .iter()
        .map(|p| &p.key)
        .chain(staged.iter().skip(moved.len()).map(|p| &p.key))
    {
        if let Err(e) = storage.delete(key).await {
            tracing::warn!(key = %key, error = %e, "cannot delete a zip part");
        }
    }
    Err(error)
}

/// A render thread: takes the next copy, renders it, hands it on.
fn render_thread(
    jobs: &std::sync::Mutex<mpsc::Receiver<(u64, Job)>>,
    rendered: &std::sync::mpsc::SyncSender<(u64, Rendered)>,
    options: RenderOptions,
    raw_scans: bool,
) {
    loop {
        let next = match jobs.lock() {
            Ok(mut rx) => rx.blocking_recv(),
            Err(_) => return,
        };
        let Some((seq, job)) = next else { return };
        let out = match job {
            Job::Failed(f) => Rendered::Failed(f),
            Job::Copy { row, doc } if raw_scans => Rendered::Raw { row, doc },
            Job::Copy { row, doc } => match pdf::prepare(*doc, options) {
                Ok(mut pdf) => {
                    let len = pdf.size();
                    Rendered::Pdf {
                        row,
                        pdf: Box::new(pdf),
                        len,
                    }
                }
                Err(e) => Rendered::Failed(Failure {
                    numero: row.numero.clone(),
                    nom: row.nom.clone(),
                    prenom: row.prenom.clone(),
                    reason: e.to_string(),
                }),
            },
        };
        if rendered.send((seq, out)).is_err() {
            return;
        }
    }
}

/// The zip thread: writes the rendered copies, in their order, as stored
/// entries of the current part, then `manifest.csv` and `errors.csv`;
/// starts after the copies that `start` says earlier parts hold. Entries
/// are dated from their copy, the CSV files `latest`.
fn zip_thread(
    rendered: std::sync::mpsc::Receiver<(u64, Rendered)>,
    out: mpsc::Sender<Out>,
    digests: &mpsc::UnboundedSender<String>,
    max_part: u64,
    fail_after: Option<u32>,
    start: Start,
    latest: zip::DateTime,
) -> anyhow::Result<(u32, Vec<Failure>)> {
    let entry_options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(false);
    let new_zip = || -> anyhow::Result<_> {
        Ok(ZipWriter::new_stream(Sink {
            buf: Vec::with_capacity(CHUNK),
            tx: out.clone(),
            written: 0,
            hash: Hasher::start(digests.clone()).context("starting the hasher")?,
        }))
    };
    let mut zip = new_zip()?;
    let mut entries_in_part = 0u32;
    // Entry names of earlier parts are taken.
    let mut taken: HashSet<String> = start
        .manifest
        .iter()
        .filter_map(|row| row.last())
        .map(|name| name.to_ascii_lowercase())
        .collect();
    let mut manifest = start.manifest;
    let mut failures = start.failures;
    // What the current part adds (sent with its end).
    let mut part_rows = 0usize;
    let mut part_failures = 0usize;
    let mut copies = start.copies;
    // Copies rendered ahead of their turn.
    let mut waiting = std::collections::BTreeMap::new();
    let mut next = start.next;
    for (seq, item) in rendered {
        waiting.insert(seq, item);
        while let Some(item) = waiting.remove(&next) {
            match item {
                Rendered::Failed(f) => {
                    failures.push(f);
                    part_failures += 1;
                }
                Rendered::Raw { row, doc } => {
                    let stem = entry_name(&row.numero, &row.nom, &row.prenom);
                    let stem = stem.trim_end_matches(".pdf");
                    let options = entry_options.last_modified_time(zip_date(row.updated_at));
                    for (i, page) in doc.pages.iter().enumerate() {
                        zip.start_file(format!("{stem}-{}.jpg", i + 1), options)?;
                        zip.write_all(page)?;
                    }
                    copies += 1;
                }
                Rendered::Pdf { row, pdf, len } => {
                    let written = zip.get_ref().map_or(0, |w| w.get_ref().written);
                    if entries_in_part > 0 && written + len + 4096 > max_part {
                        let end = PartEnd {
                            sha256: String::new(),
                            next,
                            copies,
                            manifest: manifest[manifest.len() - part_rows..].to_vec(),
                            failures: failures[failures.len() - part_failures..].to_vec(),
                            last: false,
                        };
                        finish_part(zip, &out, end)?;
                        zip = new_zip()?;
                        entries_in_part = 0;
                        part_rows = 0;
                        part_failures = 0;
                    }
                    let name = unique(entry_name(&row.numero, &row.nom, &row.prenom), &mut taken);
                    let options = entry_options.last_modified_time(zip_date(row.updated_at));
                    zip.start_file(name.as_str(), options)
                        .with_context(|| format!("starting zip entry {name}"))?;
                    pdf.write_to(&mut zip)
                        .with_context(|| format!("writing zip entry {name}"))?;
                    entries_in_part += 1;
                    copies += 1;
                    if fail_after == Some(copies) {
                        return Err(anyhow!("injected failure after {copies} entries"));
                    }
                    let grade = match (row.absent, row.grade) {
                        (true, _) => "absent".to_owned(),
                        (false, Some(g)) => g.to_string(),
                        (false, None) => String::new(),
                    };
                    // Grades and page counts are written by copiste;
                    // the other cells come from the import.
                    manifest.push(vec![
                        csv_text(&row.numero).into_owned(),
                        csv_text(&row.nom).into_owned(),
                        csv_text(&row.prenom).into_owned(),
                        grade,
                        row.page_keys.len().to_string(),
                        csv_text(&name).into_owned(),
                    ]);
                    part_rows += 1;
                }
            }
            next += 1;
            if out.blocking_send(Out::Done).is_err() {
                return Err(anyhow!("the uploader stopped"));
            }
        }
    }
    let csv_options = entry_options.last_modified_time(latest);
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["numero", "nom", "prenom", "grade", "pages", "entry"])?;
    for row in &manifest {
        writer.write_record(row)?;
    }
    let manifest_csv = writer.into_inner().context("finishing manifest.csv")?;
    zip.start_file("manifest.csv", csv_options)?;
    zip.write_all(&manifest_csv)?;
    if !failures.is_empty() {
        let mut errors = csv::Writer::from_writer(Vec::new());
        errors.write_record(["numero", "nom", "prenom", "reason"])?;
        for f in &failures {
            errors.write_record([
                &*csv_text(&f.numero),
                &*csv_text(&f.nom),
                &*csv_text(&f.prenom),
                &*csv_text(&f.reason),
            ])?;
        }
        let errors = errors.into_inner().context("finishing errors.csv")?;
        zip.start_file("errors.csv", csv_options)?;
        zip.write_all(&errors)?;
    }
    let end = PartEnd {
        sha256: String::new(),
        next,
        copies,
        manifest: manifest[manifest.len() - part_rows..].to_vec(),
        failures: failures[failures.len() - part_failures..].to_vec(),
        last: true,
    };
    finish_part(zip, &out, end)?;
    Ok((copies, failures))
}

/// Completes the current part and sends its end, with its SHA-256.
fn finish_part(
    zip: ZipWriter<zip::write::StreamWriter<Sink>>,
    out: &mpsc::Sender<Out>,
    mut end: PartEnd,
) -> anyhow::Result<()> {
    let mut sink = zip.finish().context("finishing the zip")?.into_inner();
    sink.flush().context("sending the end of the zip")?;
    end.sha256 = sink.hash.finish()?;
    out.blocking_send(Out::PartEnd(end))
        .map_err(|_| anyhow!("the uploader stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
        for cell in [
            "=HYPERLINK(\"http://evil.example/\",\"x\")",
            "+1+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(csv_text(cell), format!("'{cell}"));
        }
        for cell in ["Martin", "2026001", "N'Diaye", "", "a=b"] {
            assert_eq!(csv_text(cell), cell);
        }
    }

    #[test]
    fn entry_names_are_safe_ascii_and_unique() {
        assert_eq!(
            entry_name("2026001", "N'Diaye", "Hélène"),
            "2026001_N-DIAYE_Helene.pdf"
        );
        assert_eq!(
            entry_name("2026002", "Nguyễn", "Linh"),
            "2026002_NGUYEN_Linh.pdf"
        );
        assert_eq!(
            entry_name("2026003", "Kowalski", "Łukasz"),
            "2026003_KOWALSKI_Lukasz.pdf"
        );
        assert_eq!(
            entry_name("2026004", "Dupont-Aignan", "jean-baptiste"),
            "2026004_DUPONT-AIGNAN_Jean-Baptiste.pdf"
        );
        let hostile = entry_name("../../etc", "/passwd", "..");
        assert!(
            !hostile.contains('/') && !hostile.contains(".."),
            "{hostile}"
        );
        assert_eq!(entry_name("CON", "", ""), "_CON.pdf");
        let emoji = entry_name("7", "😀 Smile", "🎓");
        assert!(emoji.is_ascii() && !emoji.contains('/'), "{emoji}");
        let mut taken = HashSet::new();
        let a = unique(entry_name("1", "Martin", "Léa"), &mut taken);
        let b = unique(entry_name("1", "Martin", "Léa"), &mut taken);
        let c = unique(entry_name("1", "MARTIN", "lea"), &mut taken);
        assert_eq!(a, "1_MARTIN_Lea.pdf");
        assert_eq!(b, "1_MARTIN_Lea_2.pdf");
        assert_eq!(c, "1_MARTIN_Lea_3.pdf");
    }

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
                fail_after: None,
                raw_scans: false,
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
