//! The scans of an export: checked (readable, JPEG, hashed) in parallel
//! before anything is written, then uploaded under content-addressed keys.

use std::{
    collections::{HashMap, HashSet},
    io::{Cursor, ErrorKind},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use image::{ImageFormat, ImageReader};
use sha2::{Digest as _, Sha256};

use super::ImportStep;
use crate::storage::Storage;

/// Files checked by one blocking task.
const CHECK_CHUNK: usize = 32;

/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 8;

/// The start of every JPEG file: the SOI marker and the next marker's 0xFF.
const JPEG_MAGIC: [u8; 3] = [0xFF, 0xD8, 0xFF];

/// A checked scan.
#[derive(Debug, Clone)]
pub(super) struct Scan {
    /// SHA-256 of the file, in lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl Scan {
    /// The object-store key of the scan: its content's hash, so that the
    /// same page imported twice, or by two exports, is stored once.
    pub fn key(&self) -> String {
        scan_key(&self.sha256)
    }
}

/// The object-store key of a scan whose SHA-256 is `sha256` (lower-case
/// hex).
pub(super) fn scan_key(sha256: &str) -> String {
    let prefix = sha256.get(..2).unwrap_or("00");
    format!("scans/{prefix}/{sha256}.jpg")
}

/// Checks every scan, `CHECK_CHUNK` files per blocking task and as many
/// tasks at once as there are cores. Returns, for each relative path, the
/// scan or the reason it is unusable.
pub(super) async fn check(
    dir: &Path,
    paths: Vec<String>,
    progress: &dyn Fn(ImportStep),
) -> anyhow::Result<HashMap<String, Result<Scan, String>>> {
    let total = paths.len() as u64;
    progress(ImportStep::Checking { done: 0, total });
    let parallelism = std::thread::available_parallelism().map_or(4, usize::from);
    let chunks: Vec<Vec<String>> = paths.chunks(CHECK_CHUNK).map(<[String]>::to_vec).collect();
    let mut results = HashMap::with_capacity(paths.len());
    let mut checked = stream::iter(chunks)
        .map(|chunk| {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .map(|relative| {
                        let result = check_one(&dir.join(&relative), &relative);
                        (relative, result)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .buffer_unordered(parallelism);
    let mut done = 0;
    while let Some(chunk) = checked.next().await {
        let chunk = chunk.context("a scan-checking task failed")?;
        done += chunk.len() as u64;
        results.extend(chunk);
        progress(ImportStep::Checking { done, total });
    }
    Ok(results)
}

/// Reads one scan, checks that it is a JPEG whose header decodes, and
/// hashes it. The image data itself is not decoded: that would cost far
/// more than the rest of the import.
fn check_one(file: &Path, relative: &str) -> Result<Scan, String> {
    let bytes = std::fs::read(file).map_err(|error| match error.kind() {
        ErrorKind::NotFound => format!("{relative} does not exist"),
        _ => format!("{relative} cannot be read: {error}"),
    })?;
    if !bytes.starts_with(&JPEG_MAGIC) {
        return Err(format!("{relative} is not a JPEG file"));
    }
    let (width, height) = ImageReader::with_format(Cursor::new(&bytes), ImageFormat::Jpeg)
        .into_dimensions()
        .map_err(|error| format!("{relative} is not a JPEG file ({error})"))?;
    if width == 0 || height == 0 {
        return Err(format!("{relative} is an empty image ({width}×{height})"));
    }
    Ok(Scan {
        sha256: hex::encode(Sha256::digest(&bytes)),
        size: bytes.len() as u64,
    })
}

/// What the upload did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Uploaded {
    pub uploaded: u64,
    pub already_stored: u64,
    pub bytes: u64,
}

/// Stores every distinct scan that is not stored yet with the same size,
/// `UPLOAD_CONCURRENCY` at a time. `scans` maps each relative path to its
/// checked scan; files with the same content are uploaded once.
pub(super) async fn upload(
    storage: &Storage,
    dir: &Path,
    scans: &HashMap<String, Scan>,
    progress: &dyn Fn(ImportStep),
) -> anyhow::Result<Uploaded> {
    let mut seen = HashSet::new();
    let mut distinct: Vec<(PathBuf, &Scan)> = scans
        .iter()
        .filter(|(_, scan)| seen.insert(scan.sha256.as_str()))
        .map(|(relative, scan)| (dir.join(relative), scan))
        .collect();
    // A stable order makes runs reproducible and the store's listing warm.
    distinct.sort_by(|a, b| a.1.sha256.cmp(&b.1.sha256));
    let total = distinct.len() as u64;
    progress(ImportStep::Uploading { done: 0, total });
    let mut outcome = Uploaded::default();
    let mut done = 0;
    let mut uploads = stream::iter(distinct)
        .map(|(file, scan)| upload_one(storage, file, scan))
        .buffer_unordered(UPLOAD_CONCURRENCY);
    while let Some(result) = uploads.try_next().await? {
        match result {
            Some(bytes) => {
                outcome.uploaded += 1;
                outcome.bytes += bytes;
            }
            None => outcome.already_stored += 1,
        }
        done += 1;
        progress(ImportStep::Uploading { done, total });
    }
    Ok(outcome)
}

/// Uploads one scan unless an object of the same size is already at its
/// key; returns the bytes uploaded, or `None` when it was already stored.
async fn upload_one(storage: &Storage, file: PathBuf, scan: &Scan) -> anyhow::Result<Option<u64>> {
    let key = scan.key();
    let existing = storage
        .size(&key)
        .await
        .with_context(|| format!("looking up {key}"))?;
    if existing == Some(scan.size) {
        return Ok(None);
    }
    let bytes = tokio::fs::read(&file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    // The file was hashed during validation; a different hash now means it
    // changed since, and storing it under the old key would break content
    // addressing.
    let sha256 = hex::encode(Sha256::digest(&bytes));
    anyhow::ensure!(
        sha256 == scan.sha256,
        "{} changed during the import; run it again",
        file.display()
    );
    let size = bytes.len() as u64;
    storage
        .put(&key, Bytes::from(bytes))
        .await
        .with_context(|| format!("storing {} as {key}", file.display()))?;
    Ok(Some(size))
}
