//! The scans of an export: checked (readable, JPEG, hashed) in parallel
//! before anything is written, then uploaded under content-addressed keys.

use std::{
    collections::{HashMap, HashSet},
    fs::OpenOptions,
    io::{ErrorKind, Read as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use anyhow::Context as _;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use quick_cache::sync::Cache;
use sha2::{Digest as _, Sha256};
use zune_jpeg::{
    JpegDecoder,
    zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions},
};

use super::ImportStep;
use crate::storage::Storage;

/// Files checked by one blocking task.
const CHECK_CHUNK: usize = 32;

/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 8;

/// The start of every JPEG file: the SOI marker and the next marker's 0xFF.
const JPEG_MAGIC: [u8; 3] = [0xFF, 0xD8, 0xFF];

/// The end-of-image marker that ends every complete JPEG file.
const JPEG_EOI: [u8; 2] = [0xFF, 0xD9];

/// Zero bytes standing for the end-of-image marker when a sequential JPEG
/// is decoded (see [`check_jpeg`]).
const READ_AHEAD: usize = 16;

/// The largest decoded image a scan may be (an A4 page in colour at
/// 600 dpi is about 100 MiB): one check decodes one image at a time, so
/// this bounds the memory of the scan check to this times the cores.
const MAX_DECODED_BYTES: usize = 256 << 20;

/// The scans a cache remembers at most, checked and stored alike (about
/// 200 bytes each: some 20 MiB for each of the two).
const CACHE_ENTRIES: usize = 100_000;

/// What an import remembers from one piece to the next, so that a scan
/// named by many pieces is decoded once and looked up in the store once:
/// the scans already checked, by (relative path, size, modification time),
/// and the object keys already known to be stored, with their size. Both
/// are bounded; a scan forgotten is only checked again. Cheap to clone.
#[derive(Clone)]
pub(super) struct ScanCache {
    inner: Option<Arc<CacheInner>>,
}

struct CacheInner {
    checked: Cache<(String, u64, SystemTime), Scan>,
    stored: Cache<String, u64>,
}

impl ScanCache {
    /// A cache of [`CACHE_ENTRIES`] scans of each kind.
    pub fn new() -> Self {
        Self {
            inner: Some(Arc::new(CacheInner {
                checked: Cache::new(CACHE_ENTRIES),
                stored: Cache::new(CACHE_ENTRIES),
            })),
        }
    }

    /// A cache that remembers nothing (a format-1 manifest is checked as a
    /// whole, each path once).
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Whether `key` is known to be stored with `size` bytes.
    fn is_stored(&self, key: &str, size: u64) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.stored.get(key) == Some(size))
    }

    /// Remembers that `key` is stored with `size` bytes.
    fn stored(&self, key: String, size: u64) {
        if let Some(inner) = &self.inner {
            inner.stored.insert(key, size);
        }
    }

    /// Checks one scan (see [`check_one`]) unless the same file, by path,
    /// size and modification time, was checked already.
    fn check(&self, dir: &Path, relative: &str, max_bytes: u64) -> Result<Scan, String> {
        let file = dir.join(relative);
        let Some(inner) = &self.inner else {
            return check_one(&file, relative, max_bytes);
        };
        let stamp = |file: &Path| {
            let metadata = std::fs::metadata(file).ok().filter(|m| m.is_file())?;
            Some((metadata.len(), metadata.modified().ok()?))
        };
        let before = stamp(&file);
        if let Some((size, modified)) = before
            && let Some(scan) = inner.checked.get(&(relative.to_owned(), size, modified))
        {
            return Ok(scan);
        }
        let result = check_one(&file, relative, max_bytes);
        // Remembered only when the file did not change while it was read.
        if let (Ok(scan), Some((size, modified))) = (&result, before)
            && scan.size == size
            && stamp(&file) == before
        {
            inner
                .checked
                .insert((relative.to_owned(), size, modified), scan.clone());
        }
        result
    }
}

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
/// tasks at once as there are cores; no file larger than `max_bytes` is
/// read. Returns, for each relative path, the scan or the reason it is
/// unusable.
pub(super) async fn check(
    dir: &Path,
    paths: Vec<String>,
    max_bytes: u64,
    cache: &ScanCache,
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
            let cache = cache.clone();
            tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .map(|relative| {
                        let result = cache.check(&dir, &relative, max_bytes);
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

/// Reads one scan, checks that it is a complete JPEG (see [`check_jpeg`])
/// and hashes it.
fn check_one(file: &Path, relative: &str, max_bytes: u64) -> Result<Scan, String> {
    let bytes = read_bounded(file, relative, max_bytes)?;
    check_jpeg(&bytes, relative)?;
    Ok(Scan {
        sha256: hex::encode(Sha256::digest(&bytes)),
        size: bytes.len() as u64,
    })
}

/// Reads a scan file that must be a regular file (a symbolic link is
/// followed, and its target must be one) of at most `max_bytes`. A device,
/// a FIFO, a socket or a directory is refused from its metadata, before it
/// is opened for reading, and the read itself never goes past the limit.
pub(super) fn read_bounded(file: &Path, relative: &str, max_bytes: u64) -> Result<Vec<u8>, String> {
    let cannot_read = |error: std::io::Error| match error.kind() {
        ErrorKind::NotFound => format!("{relative} does not exist"),
        _ => format!("{relative} cannot be read: {error}"),
    };
    let metadata = std::fs::metadata(file).map_err(cannot_read)?;
    check_metadata(file, relative, &metadata, max_bytes)?;
    // Non-blocking, so that a FIFO swapped in since the check cannot hang
    // the open; it has no effect on a regular file.
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let opened = options.open(file).map_err(cannot_read)?;
    // The file actually opened, in case the path changed since.
    let metadata = opened.metadata().map_err(cannot_read)?;
    check_metadata(file, relative, &metadata, max_bytes)?;
    let capacity = usize::try_from(metadata.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity);
    opened
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "{}: it grew past it while being read",
            too_large(relative, max_bytes)
        ));
    }
    Ok(bytes)
}

/// Refuses anything but a regular file of at most `max_bytes`.
fn check_metadata(
    file: &Path,
    relative: &str,
    metadata: &std::fs::Metadata,
    max_bytes: u64,
) -> Result<(), String> {
    let kind = metadata.file_type();
    if !kind.is_file() {
        let link = if std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink()) {
            "a symbolic link to "
        } else {
            ""
        };
        return Err(format!(
            "{relative} is not a regular file ({link}{}); scans must be regular files",
            describe(kind)
        ));
    }
    if metadata.len() > max_bytes {
        return Err(format!(
            "{}: it has {} bytes",
            too_large(relative, max_bytes),
            metadata.len()
        ));
    }
    Ok(())
}

fn too_large(relative: &str, max_bytes: u64) -> String {
    format!("{relative} is larger than the limit of {max_bytes} bytes (import.max_scan_bytes)")
}

/// What a file that is not a regular file is, for messages.
fn describe(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

/// Checks that `bytes` are a whole JPEG image: the start marker, headers
/// that decode, the end-of-image marker at the end (trailing zero bytes
/// are padding), and entropy-coded data that decodes completely. The
/// decoder accepts an end-of-image marker met too early (it paints the rest
/// grey), so a sequential image is decoded without its final marker, in
/// strict mode: running out of data is then an error. (A cut within the
/// last few bytes of the data followed by an added end marker still
/// passes, as does a cut progressive image given an end marker; a plain
/// truncation never does.) The decoded image is at most
/// [`MAX_DECODED_BYTES`], which bounds the memory of a check.
fn check_jpeg(bytes: &[u8], relative: &str) -> Result<(), String> {
    if !bytes.starts_with(&JPEG_MAGIC) {
        return Err(format!("{relative} is not a JPEG file"));
    }
    let data = bytes
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(bytes, |last| &bytes[..=last]);
    let complete = data.ends_with(&JPEG_EOI);
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|error| format!("{relative} is not a JPEG file ({error})"))?;
    let (width, height) = decoder.dimensions().unwrap_or_default();
    if width == 0 || height == 0 {
        return Err(format!("{relative} is an empty image ({width}×{height})"));
    }
    // Decode to the file's own colours (grey stays grey), as `image` does.
    let colours = match decoder.input_colorspace() {
        Some(own @ (ColorSpace::RGB | ColorSpace::RGBA | ColorSpace::Luma | ColorSpace::LumaA)) => {
            own
        }
        _ => ColorSpace::RGB,
    };
    let options = options.jpeg_set_out_colorspace(colours);
    decoder.set_options(options);
    let decoded = decoder.output_buffer_size().unwrap_or(usize::MAX);
    if decoded > MAX_DECODED_BYTES {
        return Err(format!(
            "{relative} is too large an image ({width}×{height} pixels, more than {} MiB decoded)",
            MAX_DECODED_BYTES >> 20
        ));
    }
    if !complete {
        return Err(format!(
            "{relative} is truncated: it does not end with the JPEG end-of-image marker"
        ));
    }
    // A sequential image is decoded with its final marker replaced by a few
    // zero bytes (room for the decoder's read-ahead, far too few to stand
    // for missing blocks), so that data missing before the marker runs the
    // decoder out of data; a progressive one needs the marker to end its
    // last scan.
    let progressive = decoder.info().is_some_and(|info| info.sof.is_progressive());
    let body = if progressive {
        data.to_vec()
    } else {
        let mut body = Vec::with_capacity(data.len() + READ_AHEAD);
        body.extend_from_slice(&data[..data.len() - JPEG_EOI.len()]);
        body.resize(body.len() + READ_AHEAD, 0);
        body
    };
    JpegDecoder::new_with_options(ZCursor::new(&body[..]), options)
        .decode()
        .map_err(|error| {
            format!("{relative} is truncated or corrupt: its image data does not decode ({error})")
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use image::{ExtendedColorType, ImageEncoder as _, codecs::jpeg::JpegEncoder};

    use super::*;

    /// A `side`×`side` JPEG of noise, grey or in colour; a uniform
    /// 1240×1754 grey page for a side of 0.
    fn noise(side: u32, colour: bool) -> Vec<u8> {
        if side == 0 {
            let mut bytes = Vec::new();
            JpegEncoder::new_with_quality(&mut bytes, 90)
                .write_image(&vec![250; 1240 * 1754], 1240, 1754, ExtendedColorType::L8)
                .expect("encode");
            return bytes;
        }
        let channels = if colour { 3 } else { 1 };
        let mut state = 0x2545_f491_u32;
        let pixels: Vec<u8> = (0..side * side * channels)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let kind = if colour {
            ExtendedColorType::Rgb8
        } else {
            ExtendedColorType::L8
        };
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, 90)
            .write_image(&pixels, side, side, kind)
            .expect("encode");
        bytes
    }

    fn progressive(side: u16) -> Vec<u8> {
        let pixels: Vec<u8> = (0..u32::from(side) * u32::from(side))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut bytes = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
        encoder.set_progressive(true);
        encoder
            .encode(&pixels, side, side, jpeg_encoder::ColorType::Luma)
            .expect("encode");
        bytes
    }

    fn with_eoi(part: &[u8]) -> Vec<u8> {
        [part, &JPEG_EOI[..]].concat()
    }

    #[test]
    fn whole_jpegs_pass() {
        let files = [
            // A uniform page: very little data per block.
            noise(0, false),
            noise(256, false),
            noise(200, true),
            progressive(256),
            noise(8, false),
        ];
        for (i, whole) in files.iter().enumerate() {
            assert_eq!(check_jpeg(whole, "a.jpg"), Ok(()), "file {i}");
            let padded = [&whole[..], &[0; 64][..]].concat();
            assert_eq!(check_jpeg(&padded, "a.jpg"), Ok(()), "file {i}");
        }
    }

    #[test]
    fn the_cache_does_not_check_a_known_file_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.jpg");
        let whole = noise(64, false);
        std::fs::write(&file, &whole).expect("write");
        let cache = ScanCache::new();
        let first = cache
            .check(dir.path(), "a.jpg", 1 << 20)
            .expect("a whole JPEG");
        let modified = std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .expect("mtime");
        // Same size and modification time, content no longer a JPEG: only
        // a check answered from the cache passes.
        let mut corrupt = whole.clone();
        corrupt[..3].copy_from_slice(&[0, 0, 0]);
        let set = |bytes: &[u8], time: SystemTime| {
            std::fs::write(&file, bytes).expect("write");
            std::fs::File::options()
                .write(true)
                .open(&file)
                .and_then(|f| f.set_modified(time))
                .expect("set mtime");
        };
        set(&corrupt, modified);
        let cached = cache.check(dir.path(), "a.jpg", 1 << 20).expect("cached");
        assert_eq!(cached.sha256, first.sha256);
        assert!(
            ScanCache::disabled()
                .check(dir.path(), "a.jpg", 1 << 20)
                .is_err()
        );
        // Another modification time is another file.
        set(&corrupt, modified + std::time::Duration::from_secs(1));
        assert_eq!(
            cache
                .check(dir.path(), "a.jpg", 1 << 20)
                .map(|scan| scan.size),
            Err("a.jpg is not a JPEG file".to_owned())
        );
    }

    #[test]
    fn truncated_jpegs_are_refused() {
        for whole in [noise(256, false), noise(200, true), progressive(256)] {
            let n = whole.len();
            for cut in [n / 2, 1024, n - 400, n - 40, n - 8, n - 1] {
                let error = check_jpeg(&whole[..cut], "a.jpg");
                assert_eq!(
                    error,
                    Err(
                        "a.jpg is truncated: it does not end with the JPEG end-of-image marker"
                            .into()
                    ),
                    "{cut} of {n} bytes"
                );
            }
        }
        // Given an end marker, a cut sequential image fails to decode.
        for whole in [noise(256, false), noise(200, true)] {
            let n = whole.len();
            for cut in [n / 2, 1024, n - 400] {
                let error = check_jpeg(&with_eoi(&whole[..cut]), "a.jpg").expect_err("refused");
                assert!(
                    error.starts_with(
                        "a.jpg is truncated or corrupt: its image data does not decode ("
                    ),
                    "{cut} of {n} bytes: {error}"
                );
            }
        }
    }
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
    cache: &ScanCache,
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
        .map(|(file, scan)| upload_one(storage, file, scan, cache))
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
async fn upload_one(
    storage: &Storage,
    file: PathBuf,
    scan: &Scan,
    cache: &ScanCache,
) -> anyhow::Result<Option<u64>> {
    let key = scan.key();
    if cache.is_stored(&key, scan.size) {
        return Ok(None);
    }
    let existing = storage
        .size(&key)
        .await
        .with_context(|| format!("looking up {key}"))?;
    if existing == Some(scan.size) {
        cache.stored(key, scan.size);
        return Ok(None);
    }
    // Read again with the checks of the first read, and never more than
    // the size checked: anything else means the file changed.
    let bytes = {
        let file = file.clone();
        let size = scan.size;
        tokio::task::spawn_blocking(move || read_bounded(&file, &file.display().to_string(), size))
            .await
            .context("a scan-reading task failed")?
            .map_err(|message| anyhow::anyhow!("{message}; run the import again"))?
    };
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
    cache.stored(key, size);
    Ok(Some(size))
}
