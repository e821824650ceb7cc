//! The threads of a zip build: render threads make each copy's PDF, the
//! zip thread writes them in order as stored entries of the current part
//! (then `manifest.csv` and `errors.csv`), a hashing thread per part
//! computes its SHA-256, and the zip's bytes go back to the async side in
//! chunks of [`CHUNK`] bytes.

use std::{collections::HashSet, io::Write};

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use zip::{CompressionMethod, ZipWriter, write::SimpleFileOptions};

use super::{
    Contents, Failure,
    names::{entry_name, errors_csv, manifest_csv, manifest_row, unique},
};
use crate::{
    db::render::CopyRow,
    render::{
        RenderOptions,
        pdf::{self, CopyDocument},
    },
    storage::UPLOAD_CHUNK_BYTES,
};

/// Bytes handed from the zip writer to the uploader at a time.
const CHUNK: usize = 1024 * 1024;

/// What the async side sends the render threads.
pub(super) enum ToRender {
    Copy {
        row: Box<CopyRow>,
        doc: Box<CopyDocument>,
    },
    Failed(Failure),
}

/// What a render thread hands the zip thread.
enum RenderedCopy {
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
pub(super) enum Out {
    Chunk(Bytes),
    /// The current part is complete.
    PartEnd(PartEnd),
    /// A copy was written (or left out): progress.
    Done,
}

/// A complete part, and where the build stands after it.
pub(super) struct PartEnd {
    /// Its SHA-256, in hex.
    pub(super) sha256: String,
    /// The index of the first copy not in this part or before.
    pub(super) next: u64,
    pub(super) copies: u32,
    /// Rows of `manifest.csv` and failures since the previous part.
    pub(super) manifest: Vec<Vec<String>>,
    pub(super) failures: Vec<Failure>,
    pub(super) last: bool,
}

/// Where the zip thread starts: at the beginning, or after the parts an
/// earlier run staged.
#[derive(Default)]
pub(super) struct Start {
    pub(super) next: u64,
    pub(super) copies: u32,
    pub(super) manifest: Vec<Vec<String>>,
    pub(super) failures: Vec<Failure>,
}

/// What the threads of a build are given.
pub(super) struct Setup {
    pub(super) options: RenderOptions,
    pub(super) contents: Contents,
    /// A part is closed before an entry would take it past this size.
    pub(super) max_part: u64,
    pub(super) start: Start,
    /// The date of the CSV files (the latest copy's).
    pub(super) latest: zip::DateTime,
    /// The build's staging folder, which names its failpoints.
    #[cfg(feature = "failpoints")]
    pub(super) staging_dir: String,
}

/// The running threads of a build, and their ends of the channels.
pub(super) struct Pipeline {
    /// Where the copies to render go, in order, numbered.
    pub(super) jobs: mpsc::Sender<(u64, ToRender)>,
    /// The zip's bytes and its parts' ends.
    pub(super) out: mpsc::Receiver<Out>,
    pub(super) render_threads: Vec<tokio::task::JoinHandle<()>>,
    /// The zip thread: the copies written and the failures.
    pub(super) zipper: tokio::task::JoinHandle<anyhow::Result<(u32, Vec<Failure>)>>,
}

/// Starts the render threads and the zip thread of a build, in the
/// current span; `digests` gets the digest of every upload chunk of every
/// part, in order (see [`Hasher`]).
pub(super) fn spawn(setup: Setup, digests: mpsc::UnboundedSender<String>) -> Pipeline {
    let (job_tx, job_rx) = mpsc::channel::<(u64, ToRender)>(4);
    let (out_tx, out_rx) = mpsc::channel::<Out>(4);
    let span = tracing::Span::current();
    // PDFs are rendered on several threads (they are independent); the
    // zip thread puts them back in order.
    let renderers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let (rendered_tx, rendered_rx) =
        std::sync::mpsc::sync_channel::<(u64, RenderedCopy)>(renderers * 2);
    let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
    let (options, contents) = (setup.options, setup.contents);
    let mut render_threads = Vec::with_capacity(renderers);
    for _ in 0..renderers {
        let job_rx = job_rx.clone();
        let rendered_tx = rendered_tx.clone();
        let span = span.clone();
        render_threads.push(tokio::task::spawn_blocking(move || {
            span.in_scope(|| render_thread(&job_rx, &rendered_tx, options, contents))
        }));
    }
    // Only the render threads hold the receiver (this one is dropped on
    // return): when they stop, the reader's sends fail instead of
    // blocking.
    drop(rendered_tx);
    let zipper = tokio::task::spawn_blocking(move || {
        span.in_scope(|| zip_thread(rendered_rx, out_tx, &digests, setup))
    });
    Pipeline {
        jobs: job_tx,
        out: out_rx,
        render_threads,
        zipper,
    }
}

/// A render thread: takes the next copy, renders it, hands it on.
fn render_thread(
    jobs: &std::sync::Mutex<mpsc::Receiver<(u64, ToRender)>>,
    rendered: &std::sync::mpsc::SyncSender<(u64, RenderedCopy)>,
    options: RenderOptions,
    contents: Contents,
) {
    loop {
        let next = match jobs.lock() {
            Ok(mut rx) => rx.blocking_recv(),
            Err(_) => return,
        };
        let Some((seq, job)) = next else { return };
        let out = match job {
            ToRender::Failed(f) => RenderedCopy::Failed(f),
            ToRender::Copy { row, doc } if contents == Contents::Scans => {
                RenderedCopy::Raw { row, doc }
            }
            ToRender::Copy { row, doc } => match pdf::prepare(*doc, options) {
                Ok(mut pdf) => {
                    let len = pdf.size();
                    RenderedCopy::Pdf {
                        row,
                        pdf: Box::new(pdf),
                        len,
                    }
                }
                Err(e) => RenderedCopy::Failed(Failure {
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
/// starts after the copies that `setup.start` says earlier parts hold.
/// Entries are dated from their copy, the CSV files `setup.latest`.
fn zip_thread(
    rendered: std::sync::mpsc::Receiver<(u64, RenderedCopy)>,
    out: mpsc::Sender<Out>,
    digests: &mpsc::UnboundedSender<String>,
    setup: Setup,
) -> anyhow::Result<(u32, Vec<Failure>)> {
    let latest = setup.latest;
    let mut zip = ZipState::new(&out, digests, setup)?;
    // Copies rendered ahead of their turn.
    let mut waiting = std::collections::BTreeMap::new();
    for (seq, item) in rendered {
        waiting.insert(seq, item);
        while let Some(item) = waiting.remove(&zip.next) {
            zip.write(item)?;
            zip.next += 1;
            if out.blocking_send(Out::Done).is_err() {
                return Err(anyhow!("the uploader stopped"));
            }
        }
    }
    zip.finish(latest)
}

/// The zip writer of a part.
type PartWriter = ZipWriter<zip::write::StreamWriter<Sink>>;

/// What the zip thread holds: the part being written, and where the
/// build stands.
struct ZipState<'a> {
    out: &'a mpsc::Sender<Out>,
    digests: &'a mpsc::UnboundedSender<String>,
    entry_options: SimpleFileOptions,
    max_part: u64,
    zip: PartWriter,
    entries_in_part: u32,
    /// Entry names taken (in lower case), by this part and the earlier.
    taken: HashSet<String>,
    manifest: Vec<Vec<String>>,
    failures: Vec<Failure>,
    /// What the current part adds (sent with its end).
    part_rows: usize,
    part_failures: usize,
    copies: u32,
    /// The index of the next copy to write.
    next: u64,
    #[cfg(feature = "failpoints")]
    staging_dir: String,
}

impl<'a> ZipState<'a> {
    fn new(
        out: &'a mpsc::Sender<Out>,
        digests: &'a mpsc::UnboundedSender<String>,
        setup: Setup,
    ) -> anyhow::Result<Self> {
        let start = setup.start;
        // Entry names of earlier parts are taken.
        let taken: HashSet<String> = start
            .manifest
            .iter()
            .filter_map(|row| row.last())
            .map(|name| name.to_ascii_lowercase())
            .collect();
        Ok(Self {
            out,
            digests,
            entry_options: SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .large_file(false),
            max_part: setup.max_part,
            zip: new_part(out, digests)?,
            entries_in_part: 0,
            taken,
            manifest: start.manifest,
            failures: start.failures,
            part_rows: 0,
            part_failures: 0,
            copies: start.copies,
            next: start.next,
            #[cfg(feature = "failpoints")]
            staging_dir: setup.staging_dir,
        })
    }

    /// Writes the next copy (or records its failure).
    fn write(&mut self, item: RenderedCopy) -> anyhow::Result<()> {
        match item {
            RenderedCopy::Failed(f) => {
                self.failures.push(f);
                self.part_failures += 1;
            }
            RenderedCopy::Raw { row, doc } => {
                let stem = entry_name(&row.numero, &row.nom, &row.prenom);
                let stem = stem.trim_end_matches(".pdf");
                let options = self
                    .entry_options
                    .last_modified_time(zip_date(row.updated_at));
                for (i, page) in doc.pages.iter().enumerate() {
                    self.zip
                        .start_file(format!("{stem}-{}.jpg", i + 1), options)?;
                    self.zip.write_all(page)?;
                }
                self.copies += 1;
            }
            RenderedCopy::Pdf { row, pdf, len } => self.write_pdf(&row, *pdf, len)?,
        }
        Ok(())
    }

    /// Writes a copy's PDF of `len` bytes, in a new part when it would
    /// take the current one past its size.
    fn write_pdf(&mut self, row: &CopyRow, pdf: pdf::PreparedPdf, len: u64) -> anyhow::Result<()> {
        let written = self.zip.get_ref().map_or(0, |w| w.get_ref().written);
        if self.entries_in_part > 0 && written + len + 4096 > self.max_part {
            let end = self.part_end(false);
            // The next part's hasher gets no byte before this part's has
            // sent its last digest (closing joins it): digests stay in order.
            let zip = std::mem::replace(&mut self.zip, new_part(self.out, self.digests)?);
            close_zip_part(zip, self.out, end)?;
            self.entries_in_part = 0;
            self.part_rows = 0;
            self.part_failures = 0;
        }
        let name = unique(
            entry_name(&row.numero, &row.nom, &row.prenom),
            &mut self.taken,
        );
        let options = self
            .entry_options
            .last_modified_time(zip_date(row.updated_at));
        self.zip
            .start_file(name.as_str(), options)
            .with_context(|| format!("starting zip entry {name}"))?;
        pdf.write_to(&mut self.zip)
            .with_context(|| format!("writing zip entry {name}"))?;
        self.entries_in_part += 1;
        self.copies += 1;
        #[cfg(feature = "failpoints")]
        super::failpoints::check_entries(&self.staging_dir, self.copies)?;
        self.manifest.push(manifest_row(row, &name));
        self.part_rows += 1;
        Ok(())
    }

    /// The end of the current part, as the build stands (its SHA-256 is
    /// set once the part is complete).
    fn part_end(&self, last: bool) -> PartEnd {
        PartEnd {
            sha256: String::new(),
            next: self.next,
            copies: self.copies,
            manifest: self.manifest[self.manifest.len() - self.part_rows..].to_vec(),
            failures: self.failures[self.failures.len() - self.part_failures..].to_vec(),
            last,
        }
    }

    /// Writes `manifest.csv` and `errors.csv` (when a copy failed), dated
    /// `latest`, and completes the last part.
    fn finish(mut self, latest: zip::DateTime) -> anyhow::Result<(u32, Vec<Failure>)> {
        let csv_options = self.entry_options.last_modified_time(latest);
        let manifest = manifest_csv(&self.manifest)?;
        self.zip.start_file("manifest.csv", csv_options)?;
        self.zip.write_all(&manifest)?;
        if !self.failures.is_empty() {
            let errors = errors_csv(&self.failures)?;
            self.zip.start_file("errors.csv", csv_options)?;
            self.zip.write_all(&errors)?;
        }
        let end = self.part_end(true);
        close_zip_part(self.zip, self.out, end)?;
        Ok((self.copies, self.failures))
    }
}

/// A new part's zip writer, whose bytes go to `out` and to a new
/// [`Hasher`].
fn new_part(
    out: &mpsc::Sender<Out>,
    digests: &mpsc::UnboundedSender<String>,
) -> anyhow::Result<PartWriter> {
    let pool = ChunkPool::default();
    Ok(ZipWriter::new_stream(Sink {
        buf: pool.take(),
        pool,
        tx: out.clone(),
        written: 0,
        hash: Hasher::start(digests.clone()).context("starting the hasher")?,
    }))
}

/// Completes a part's zip and sends its end, with its SHA-256.
fn close_zip_part(
    zip: PartWriter,
    out: &mpsc::Sender<Out>,
    mut end: PartEnd,
) -> anyhow::Result<()> {
    let mut sink = zip.finish().context("finishing the zip")?.into_inner();
    sink.flush().context("sending the end of the zip")?;
    end.sha256 = sink.hash.finish()?;
    out.blocking_send(Out::PartEnd(end))
        .map_err(|_| anyhow!("the uploader stopped"))
}

/// A zip entry's date (UTC, to the even second as the format keeps it);
/// 1980-01-01 for a date the format cannot hold.
pub(super) fn zip_date(at: chrono::DateTime<chrono::Utc>) -> zip::DateTime {
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

/// A `Write` that hands its bytes to the async side in chunks, and to a
/// [`Hasher`].
struct Sink {
    buf: Vec<u8>,
    pool: ChunkPool,
    tx: mpsc::Sender<Out>,
    written: u64,
    hash: Hasher,
}

/// The chunk buffers of a part, used again once the uploader and the
/// hasher are done with them: the last handle on a chunk dropped puts its
/// buffer back. Above 128 KiB every fresh buffer is a mapping of its own
/// (`crate::memory`), paid in page faults as it is filled and returned to
/// the system when freed; a 1 MiB buffer per megabyte of zip was a third
/// of a build's page faults (docs/performance.md, "Page faults: what the
/// job pays for returning buffers"). The buffers live as long as the
/// part's chunks: they are freed with the last one after the part ends.
#[derive(Clone, Default)]
struct ChunkPool(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// At most this many idle buffers are kept: about as many chunks as the
/// channels between the zip thread, the hasher and the uploader hold, so
/// the pool keeps no more memory than a build has in flight anyway.
const POOLED_CHUNKS: usize = 16;

impl ChunkPool {
    /// An empty buffer of [`CHUNK`] bytes' capacity: an idle one, or a
    /// new one.
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    /// `buf` as a chunk whose buffer comes back to this pool when its last
    /// handle is dropped.
    fn wrap(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(PooledChunk {
            buf,
            pool: self.clone(),
        })
    }
}

/// A chunk's buffer, on its way back to its [`ChunkPool`].
struct PooledChunk {
    buf: Vec<u8>,
    pool: ChunkPool,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() != CHUNK {
            return;
        }
        buf.clear();
        if let Ok(mut idle) = self.pool.0.lock()
            && idle.len() < POOLED_CHUNKS
        {
            idle.push(buf);
        }
    }
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
        let next = self.pool.take();
        let chunk = self.pool.wrap(std::mem::replace(&mut self.buf, next));
        self.hash.update(chunk.clone())?;
        self.tx
            .blocking_send(Out::Chunk(chunk))
            .map_err(|_| std::io::Error::other("the uploader stopped"))
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Chunks of exactly CHUNK bytes (the last one of a part shorter),
        // so that a buffer never grows past its pooled capacity.
        let mut rest = data;
        while !rest.is_empty() {
            let take = rest.len().min(CHUNK - self.buf.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == CHUNK {
                self.send()?;
            }
        }
        self.written += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
