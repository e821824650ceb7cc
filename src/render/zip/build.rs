//! A zip build's passes: the reader, the threads of the pipeline and the
//! uploader joined, what a pass ends with, and the second pass that
//! follows one that gave up the upload an earlier run recorded.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::anyhow;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::{
    Contents, Failure, SaveProgress, ZipPlan, ZipProgress,
    checkpoint::CheckpointWriter,
    pipeline::{self, Out, Setup, Start, ToRender, zip_date},
    upload::{ChunkCounts, GiveUpRecordedUpload, OpenPart},
};
use crate::{
    db::render::CopyRow,
    render::copy::document,
    storage::{ResumableUpload, Storage},
};

/// How a build reports its progress: `(done, total)` copies.
pub(super) type Progress<'a> = dyn Fn(u64, u64) -> BoxFuture<'static, ()> + Send + Sync + 'a;

/// Where a build's time went, logged when it ends (`zip stages`): the
/// time the uploader waited on each thing (its waits hold back the zip
/// thread, whose channel fills), and the time chunk tasks spent hashing
/// and writing (alongside the build).
#[derive(Default, Debug)]
pub(super) struct Stages {
    /// Checkpoints handed to the writer (waiting only when it is behind),
    /// and how many.
    pub(super) save_us: AtomicU64,
    pub(super) saves: AtomicU64,
    /// Waits until every checkpoint handed over was written (after a
    /// part's upload is started and once it is staged).
    pub(super) flush_us: AtomicU64,
    /// Progress writes made, and the wait for the last one at the end.
    pub(super) progress_us: AtomicU64,
    pub(super) progress: AtomicU64,
    /// Waits for the oldest chunk in flight.
    pub(super) settle_us: AtomicU64,
    /// Chunk tasks hashing, and writing to the store.
    pub(super) chunk_hash_us: AtomicU64,
    pub(super) chunk_put_us: AtomicU64,
    /// Moving the parts to their final keys.
    pub(super) publish_us: AtomicU64,
}

impl Stages {
    /// Adds the time since `since` to `counter`.
    pub(super) fn add(counter: &AtomicU64, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        counter.fetch_add(us, Ordering::Relaxed);
    }

    /// Logs the stages of a build that took `total`.
    pub(super) fn log(&self, total: Duration) {
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

/// What a pass of a build that staged every part returns.
pub(super) struct Built {
    pub(super) copies: u32,
    pub(super) failures: Vec<Failure>,
    pub(super) resumed_chunks: u64,
    pub(super) uploaded_chunks: u64,
    /// Recorded uploads given up (counted by [`Builder::build_all`]).
    pub(super) restarted_uploads: u32,
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

/// What a build needs besides its copies and its progress.
pub(super) struct Builder<'a> {
    pub(super) storage: &'a Storage,
    pub(super) plan: &'a ZipPlan,
    pub(super) progress: &'a Progress<'a>,
    pub(super) contents: Contents,
    pub(super) run: u32,
    pub(super) save: Option<&'a SaveProgress<'a>>,
    /// Writes the checkpoints `save` makes (when the build has one).
    pub(super) writer: Option<CheckpointWriter>,
    pub(super) stages: Arc<Stages>,
}

impl Builder<'_> {
    /// Hands `recorded` to the checkpoint writer when the build has a
    /// checkpoint: it is written after the checkpoints before it, while
    /// the build goes on ([`Builder::flush`] waits for it).
    pub(super) async fn save(&self, recorded: &ZipProgress) -> anyhow::Result<()> {
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
    pub(super) async fn flush(&self) -> anyhow::Result<()> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        let waiting = Instant::now();
        let flushed = writer.flush().await;
        Stages::add(&self.stages.flush_us, waiting);
        flushed
    }

    /// Records `recorded` and waits until it is written.
    pub(super) async fn record(&self, recorded: &ZipProgress) -> anyhow::Result<()> {
        self.save(recorded).await?;
        self.flush().await
    }

    /// Builds the zip from where `recorded` stands until every part is
    /// staged, recording them in `recorded`. A second pass follows only a
    /// first one that gave up `reopened`, the upload an earlier run
    /// recorded; it starts a new upload, so it cannot give one up again.
    /// On a failure, what was acknowledged stays recorded; without a
    /// checkpoint, the finished parts are deleted.
    pub(super) async fn build_all(
        &self,
        rows: &[CopyRow],
        recorded: &mut ZipProgress,
        mut reopened: Option<ResumableUpload>,
    ) -> anyhow::Result<Built> {
        let mut restarted_uploads = 0;
        loop {
            match self.build(rows, recorded, reopened.take()).await {
                Ok(built) => {
                    return Ok(Built {
                        restarted_uploads,
                        ..built
                    });
                }
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
                    self.record(recorded).await?;
                }
                Err(Stopped::Failed(error)) => {
                    self.failed(recorded).await;
                    return Err(error);
                }
            }
        }
    }

    /// After a failed pass: what was acknowledged is still recorded, so
    /// that the next run does not upload it again. Without a record of
    /// them, finished parts are deleted: nothing may remain. With one,
    /// they stay staged for the next run.
    async fn failed(&self, recorded: &ZipProgress) {
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %format!("{e:#}"), "cannot record the zip's progress");
        }
        if self.save.is_none() {
            for part in &recorded.parts {
                if let Err(e) = self.storage.delete(&part.key).await {
                    tracing::warn!(key = %part.key, error = %e, "cannot delete a zip part");
                }
            }
        }
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
        let total = rows.len() as u64;
        let start = Start {
            next: recorded.parts.last().map_or(0, |p| p.next),
            copies: recorded.parts.last().map_or(0, |p| p.copies),
            manifest: recorded.manifest.clone(),
            failures: recorded.failures.clone(),
        };
        let first = start.next;
        // Entry dates come from the copies, never the clock: the same
        // copies give the same zip. The CSV files take the latest copy's
        // date.
        let latest = rows
            .iter()
            .map(|r| r.updated_at)
            .max()
            .map_or_else(zip::DateTime::default, zip_date);
        // Each part's hasher sends the digest of every upload chunk, in
        // order (a handful of short strings per part).
        let (digest_tx, digest_rx) = mpsc::unbounded_channel::<String>();
        let threads = pipeline::spawn(
            Setup {
                options: self.plan.options,
                contents: self.contents,
                max_part: self.plan.max_part_bytes,
                start,
                latest,
                #[cfg(feature = "failpoints")]
                staging_dir: self.plan.staging_dir.clone(),
            },
            digest_tx,
        );
        let reader = read_copies(self.storage, rows, first, threads.jobs);
        let uploader = self.upload(threads.out, digest_rx, recorded, reopened, first, total);
        let ((), (upload_result, current, counts)) = tokio::join!(reader, uploader);
        let zipped = match threads.zipper.await {
            Ok(zipped) => zipped,
            Err(e) => Err(anyhow!("the zip writer panicked: {e}")),
        };
        let mut panicked = None;
        for thread in threads.render_threads {
            if let Err(e) = thread.await {
                panicked = Some(anyhow!("a PDF renderer panicked: {e}"));
            }
        }
        let failed = match (upload_result, zipped) {
            (Err(e), _) => e,
            (Ok(()), Err(e)) => e,
            (Ok(()), Ok(_)) if current.is_some() => anyhow!("the zip writer ended mid-part"),
            (Ok(()), Ok((copies, failures))) => match panicked {
                Some(e) => e,
                None => {
                    return Ok(Built {
                        copies,
                        failures,
                        resumed_chunks: counts.resumed,
                        uploaded_chunks: counts.uploaded,
                        restarted_uploads: 0,
                    });
                }
            },
        };
        Err(stopped(failed, current).await)
    }

    /// The uploader: the zip's bytes, cut into chunks, into the current
    /// part's upload, and the progress after each copy. It owns the
    /// receiving end `out`: if it stops on an error, the zip thread's
    /// sends fail instead of blocking. Returns how it ended, the part it
    /// left open, and the chunks it counted.
    async fn upload(
        &self,
        mut out: mpsc::Receiver<Out>,
        mut digests: mpsc::UnboundedReceiver<String>,
        recorded: &mut ZipProgress,
        mut reopened: Option<ResumableUpload>,
        first: u64,
        total: u64,
    ) -> (anyhow::Result<()>, Option<OpenPart>, ChunkCounts) {
        let mut current: Option<OpenPart> = None;
        let mut counts = ChunkCounts::default();
        let mut report = Report::new(self.progress, first, total);
        let result: anyhow::Result<()> = async {
            while let Some(msg) = out.recv().await {
                match msg {
                    Out::Chunk(bytes) => {
                        if current.is_none() {
                            self.open_part(recorded, reopened.take(), &mut current)
                                .await?;
                        }
                        let open = current
                            .as_mut()
                            .ok_or_else(|| anyhow!("no upload is open"))?;
                        self.take_bytes(open, bytes, recorded, &mut counts, &mut digests)
                            .await?;
                    }
                    Out::PartEnd(end) => {
                        self.stage_part(&mut current, end, recorded, &mut counts, &mut digests)
                            .await?;
                    }
                    Out::Done => report.copy_done(&self.stages),
                }
            }
            report.finish(&self.stages).await;
            Ok(())
        }
        .await;
        (result, current, counts)
    }
}

/// Why a pass stopped on `error`, with `current` the part it left open:
/// a [`GiveUpRecordedUpload`] is a [`Stopped::Restart`]; otherwise the
/// open upload is aborted unless the checkpoint records it (it stays for
/// the next run), since nothing may remain of it.
async fn stopped(error: anyhow::Error, current: Option<OpenPart>) -> Stopped {
    if let Some(open) = &current {
        if let Some(GiveUpRecordedUpload(reason)) = error.downcast_ref::<GiveUpRecordedUpload>() {
            return Stopped::Restart {
                upload: open.upload.clone(),
                reason: reason.clone(),
            };
        }
        if !open.recorded
            && let Err(e) = open.upload.clone().abort().await
        {
            tracing::warn!(error = %e, "cannot abort the zip upload");
        }
    }
    Stopped::Failed(error)
}

/// Copies whose scans the reader fetches at once. Each fetch waits on the
/// store (a round trip to S3, thread hand-offs on the local store): one
/// at a time, a zip of a few hundred copies spent more time waiting for
/// its scans than writing them. In order, so memory stays bounded by this
/// many copies besides the channel's.
const READ_AHEAD: usize = 16;

/// The reader: the scans of each copy, in order, into the render threads
/// (`jobs`), from the copy `first` (the first no staged part holds), with
/// up to [`READ_AHEAD`] copies read at once.
async fn read_copies(
    storage: &Storage,
    rows: &[CopyRow],
    first: u64,
    jobs: mpsc::Sender<(u64, ToRender)>,
) {
    use futures::{StreamExt as _, stream::FuturesOrdered};
    let mut next_rows = (first..).zip(rows.iter().skip(first as usize));
    let mut reading = FuturesOrdered::new();
    loop {
        while reading.len() < READ_AHEAD {
            let Some((seq, row)) = next_rows.next() else {
                break;
            };
            reading.push_back(read_copy(storage, seq, row));
        }
        let Some(read) = reading.next().await else {
            return;
        };
        if jobs.send(read).await.is_err() {
            return;
        }
    }
}

/// Reads the scans of copy number `seq`, or says why it cannot be
/// rendered.
async fn read_copy(storage: &Storage, seq: u64, row: &CopyRow) -> (u64, ToRender) {
    let job = match document(storage, row).await {
        Ok(doc) => ToRender::Copy {
            row: Box::new(row.clone()),
            doc: Box::new(doc),
        },
        Err(reason) => ToRender::Failed(Failure {
            numero: row.numero.clone(),
            nom: row.nom.clone(),
            prenom: row.prenom.clone(),
            reason,
        }),
    };
    (seq, job)
}

/// The progress of a build, written on a task of its own, one write at a
/// time, in order, at most every 250 ms and after the last copy; the
/// build does not wait for it (only for the last write, before it ends).
struct Report<'a> {
    progress: &'a Progress<'a>,
    done: u64,
    total: u64,
    last: Instant,
    write: Option<tokio::task::JoinHandle<()>>,
}

impl<'a> Report<'a> {
    fn new(progress: &'a Progress<'a>, first: u64, total: u64) -> Self {
        Self {
            progress,
            done: first,
            total,
            last: Instant::now() - Duration::from_secs(1),
            write: None,
        }
    }

    /// Counts a copy written (or left out), and writes the progress when
    /// it is the last or when no write is going on and 250 ms passed.
    fn copy_done(&mut self, stages: &Stages) {
        use tracing::Instrument as _;
        self.done += 1;
        let busy = self.write.as_ref().is_some_and(|w| !w.is_finished());
        if self.done == self.total || (!busy && self.last.elapsed() >= Duration::from_millis(250)) {
            let before = self.write.take();
            let write = (self.progress)(self.done, self.total);
            self.write = Some(tokio::spawn(
                async move {
                    if let Some(before) = before {
                        let _ = before.await;
                    }
                    write.await;
                }
                .instrument(tracing::Span::current()),
            ));
            stages.progress.fetch_add(1, Ordering::Relaxed);
            self.last = Instant::now();
        }
    }

    /// Waits for the last write.
    async fn finish(mut self, stages: &Stages) {
        if let Some(write) = self.write.take() {
            let writing = Instant::now();
            let _ = write.await;
            Stages::add(&stages.progress_us, writing);
        }
    }
}
