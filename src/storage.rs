//! Object storage adapter: scans in, exports, PDFs and zips out, the
//! zips through resumable uploads. The only module that names
//! `object_store` types.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use bytes::Bytes;
use futures::{StreamExt as _, stream::BoxStream};
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
    aws::{AmazonS3, AmazonS3Builder},
    local::LocalFileSystem,
    multipart::{MultipartStore as _, PartId},
    path::Path,
    signer::Signer as _,
};

use crate::config::{StorageConfig, StorageKind};

/// Why an object could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} does not exist")]
    NotFound(String),
    #[error("invalid object key {key}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("cannot list or remove local files under {prefix}: {source}")]
    Listing {
        prefix: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the local upload of {key}: {source}")]
    Local {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid chunk of the upload of {key}: {reason}")]
    Chunk { key: String, reason: String },
    #[error("object store error on {key}: {source}")]
    Backend {
        key: String,
        #[source]
        source: object_store::Error,
    },
}

impl StorageError {
    /// Whether trying again cannot help: the key itself is refused.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::InvalidKey { .. })
    }

    /// The storage error behind `error`, if any link of its chain is one.
    pub fn find_in(error: &anyhow::Error) -> Option<&StorageError> {
        error.chain().find_map(|e| e.downcast_ref::<StorageError>())
    }
}

/// An object found by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The object's key; for a partial file, the key with its `#N` suffix.
    pub key: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// A local store's unfinished upload (`<key>#<digits>`: the staging
    /// file of a [`ResumableUpload`], or the file `LocalFileSystem` writes
    /// before renaming it to its key), left behind by a process that was
    /// killed or a build that was given up.
    pub partial: bool,
}

/// A handle on the configured object store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The S3 store again, for presigned URLs (`None` on the local store).
    s3: Option<Arc<AmazonS3>>,
    /// The local store's root directory (`None` on S3), for its partial files.
    local_root: Option<PathBuf>,
    description: String,
}

/// Chunks of a resumable upload that a caller should have in flight at
/// once, at most (memory stays bounded by the chunk size times this).
pub const UPLOAD_CONCURRENCY: usize = 2;
/// The size of every chunk of a [`ResumableUpload`] but the last (S3's
/// minimum for a part of a multipart upload is 5 MiB).
pub const UPLOAD_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// An object written chunk by chunk that a later process can continue:
/// its key and its upload id are all it takes to find it again
/// ([`Storage::reopen_resumable_upload`]). On S3 it is a multipart upload
/// (object_store's `MultipartStore`), each chunk a part; on the local
/// store, a staging file `<key>#<upload id>` next to the key that each
/// chunk is written into at its place, synced to disk once complete, then
/// renamed to the key (a chunk acknowledged is in the system's cache, which
/// a killed process does not lose; after a crash of the machine,
/// [`ResumableUpload::written_sha256`] tells whether the file still holds
/// what was acknowledged). Chunks are numbered from 0, and every chunk but the
/// last is exactly [`UPLOAD_CHUNK_BYTES`] long. Nothing is visible at the
/// key until [`ResumableUpload::complete`]; an upload given up
/// ([`ResumableUpload::abort`], or one that no run continues) never
/// appears there.
#[derive(Clone, Debug)]
pub struct ResumableUpload {
    key: String,
    upload_id: String,
    target: UploadTarget,
}

/// Where a [`ResumableUpload`]'s chunks go.
#[derive(Clone, Debug)]
enum UploadTarget {
    /// An S3 multipart upload of the object at `path`.
    S3 { store: Arc<AmazonS3>, path: Path },
    /// The local store's staging file `file`, renamed to `target`.
    Local { file: PathBuf, target: PathBuf },
}

impl ResumableUpload {
    /// The key the object will have once complete.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The store's id of this upload: an S3 multipart upload id, or the
    /// suffix of the local staging file `<key>#<upload id>`.
    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// Writes chunk `index` (its bytes are the pieces `chunk`, handed on
    /// without copy) and returns the store's id of it (on S3 the part's
    /// ETag; on the local store the file's length after the chunk), which
    /// [`ResumableUpload::complete`] needs back. Writing a chunk again
    /// replaces it. Fails with [`StorageError::NotFound`] when the upload
    /// no longer exists (aborted, or removed by the store).
    pub async fn put_chunk(&self, index: usize, chunk: Vec<Bytes>) -> Result<String, StorageError> {
        let len: usize = chunk.iter().map(Bytes::len).sum();
        if len > UPLOAD_CHUNK_BYTES {
            return Err(StorageError::Chunk {
                key: self.key.clone(),
                reason: format!("chunk {index} has {len} bytes, more than {UPLOAD_CHUNK_BYTES}"),
            });
        }
        match &self.target {
            UploadTarget::S3 { store, path } => {
                let part = store
                    .put_part(
                        path,
                        &self.upload_id,
                        index,
                        chunk.into_iter().collect::<PutPayload>(),
                    )
                    .await
                    .map_err(|e| Storage::backend(&self.key, e))?;
                Ok(part.content_id)
            }
            UploadTarget::Local { file, .. } => {
                let file = file.clone();
                let offset = (index * UPLOAD_CHUNK_BYTES) as u64;
                let end = offset + len as u64;
                self.blocking(move || local_write_chunk(&file, offset, &chunk))
                    .await?;
                Ok(end.to_string())
            }
        }
    }

    /// Completes the upload with the ids of its chunks, in order: the
    /// object appears at its key, whole. Fails with
    /// [`StorageError::NotFound`] when the upload no longer exists.
    pub async fn complete(self, chunk_ids: Vec<String>) -> Result<(), StorageError> {
        match &self.target {
            UploadTarget::S3 { store, path } => {
                let parts = chunk_ids
                    .into_iter()
                    .map(|content_id| PartId { content_id })
                    .collect();
                store
                    .complete_multipart(path, &self.upload_id, parts)
                    .await
                    .map_err(|e| Storage::backend(&self.key, e))?;
                Ok(())
            }
            UploadTarget::Local { file, target } => {
                // The last chunk's id is the object's length.
                let len = match chunk_ids.last() {
                    None => 0,
                    Some(id) => id.parse::<u64>().map_err(|_| StorageError::Chunk {
                        key: self.key.clone(),
                        reason: format!("{id:?} is not the id of a local chunk"),
                    })?,
                };
                let (file, target) = (file.clone(), target.clone());
                self.blocking(move || local_complete(&file, &target, len))
                    .await
            }
        }
    }

    /// The SHA-256, in hex, of the first `len` bytes this upload holds, read
    /// back from the local store's staging file, whose chunks are not
    /// synced to disk one by one: after a crash of the machine, it may have
    /// lost some of what it acknowledged. `None` on S3, which keeps every
    /// part it acknowledged.
    pub async fn written_sha256(&self, len: u64) -> Result<Option<String>, StorageError> {
        match &self.target {
            UploadTarget::S3 { .. } => Ok(None),
            UploadTarget::Local { file, .. } => {
                let file = file.clone();
                self.blocking(move || local_sha256(&file, len).map(Some))
                    .await
            }
        }
    }

    /// Gives the upload up: what it wrote is removed, and nothing appears
    /// at the key. Aborting an upload that no longer exists is not an
    /// error.
    pub async fn abort(self) -> Result<(), StorageError> {
        match &self.target {
            UploadTarget::S3 { store, path } => {
                match store.abort_multipart(path, &self.upload_id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(Storage::backend(&self.key, e)),
                }
            }
            UploadTarget::Local { file, .. } => {
                let file = file.clone();
                self.blocking(move || match std::fs::remove_file(&file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                })
                .await
            }
        }
    }

    /// Runs a file operation of the local store on a blocking thread; a
    /// missing file is [`StorageError::NotFound`].
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let result = tokio::task::spawn_blocking(f)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        result.map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                StorageError::NotFound(self.key.clone())
            } else {
                StorageError::Local {
                    key: self.key.clone(),
                    source,
                }
            }
        })
    }
}

/// Writes the pieces of a chunk into the local staging file `file` from
/// `offset`. They are not synced to disk here: the whole file is, once,
/// when the upload completes ([`local_complete`]).
fn local_write_chunk(file: &std::path::Path, offset: u64, chunk: &[Bytes]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::OpenOptions::new().write(true).open(file)?;
    let mut at = offset;
    for piece in chunk {
        f.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// The SHA-256, in hex, of the first `len` bytes of the local staging file
/// `file`.
fn local_sha256(file: &std::path::Path, len: u64) -> std::io::Result<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut f = std::fs::File::open(file)?.take(len);
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        read += n as u64;
    }
    if read < len {
        return Err(std::io::Error::other(format!(
            "the staging file {} has {read} bytes, fewer than {len}",
            file.display()
        )));
    }
    Ok(hex::encode(hash.finalize()))
}

/// Cuts the local staging file `file` to `len` bytes, syncs it and renames
/// it to `target`, then syncs the folder so that the rename lasts.
fn local_complete(
    file: &std::path::Path,
    target: &std::path::Path,
    len: u64,
) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(file)?;
    let found = f.metadata()?.len();
    if found < len {
        return Err(std::io::Error::other(format!(
            "the staging file {} has {found} bytes, fewer than the {len} written",
            file.display()
        )));
    }
    f.set_len(len)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(file, target)?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A byte range of an object being read.
pub struct ObjectStream {
    /// The whole object's size.
    pub size: u64,
    /// The range returned.
    pub range: std::ops::Range<u64>,
    pub stream: BoxStream<'static, Result<Bytes, StorageError>>,
}

impl Storage {
    /// Opens the store described by the configuration, creating the local
    /// root directory when needed.
    pub fn open(config: &StorageConfig) -> anyhow::Result<Self> {
        match config.kind {
            StorageKind::Local => {
                std::fs::create_dir_all(&config.root)
                    .with_context(|| format!("creating storage.root {}", config.root.display()))?;
                let store = LocalFileSystem::new_with_prefix(&config.root)
                    .with_context(|| format!("opening storage.root {}", config.root.display()))?;
                Ok(Self {
                    store: Arc::new(store),
                    s3: None,
                    local_root: Some(config.root.clone()),
                    description: format!("local:{}", config.root.display()),
                })
            }
            StorageKind::S3 => {
                crate::tls::install_provider();
                let s3 = &config.s3;
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http);
                if !s3.endpoint.is_empty() {
                    builder = builder.with_endpoint(&s3.endpoint);
                }
                let store = Arc::new(
                    builder
                        .build()
                        .context("configuring the S3 store (storage.s3)")?,
                );
                Ok(Self {
                    store: store.clone(),
                    s3: Some(store),
                    local_root: None,
                    description: format!("s3://{}", s3.bucket),
                })
            }
        }
    }

    /// A short description for logs and summaries.
    pub fn describe(&self) -> &str {
        &self.description
    }

    fn path(key: &str) -> Result<Path, StorageError> {
        Path::parse(key).map_err(|e| StorageError::InvalidKey {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Checks that `key` is a valid object key (no empty, `.` or `..`
    /// segment, no control character), before anything is written under it.
    pub fn check_key(key: &str) -> Result<(), StorageError> {
        Self::path(key).map(|_| ())
    }

    fn backend(key: &str, source: object_store::Error) -> StorageError {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound(key.to_owned()),
            source => StorageError::Backend {
                key: key.to_owned(),
                source,
            },
        }
    }

    /// Writes a whole object atomically.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        let path = Self::path(key)?;
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| Self::backend(key, e))?;
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = Self::path(key)?;
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| Self::backend(key, e))?;
        result.bytes().await.map_err(|e| Self::backend(key, e))
    }

    /// The size of an object, or `None` when it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = Self::path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Self::backend(key, e)),
        }
    }

    /// Deletes an object; deleting a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = Self::path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Self::backend(key, e)),
        }
    }

    /// Moves an object to another key (a rename on the local store, a copy
    /// then a delete on S3).
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let source = Self::path(from)?;
        let target = Self::path(to)?;
        self.store
            .rename(&source, &target)
            .await
            .map_err(|e| Self::backend(from, e))
    }

    /// Every object under `prefix` (a folder, e.g. `downloads/`), with its
    /// last modification, and on the local store the partial files of
    /// unfinished multipart uploads too.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        let path = Self::path(prefix)?;
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(&path));
        while let Some(meta) = stream.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(Self::backend(prefix, e)),
            };
            out.push(Listed {
                key: meta.location.to_string(),
                size: meta.size,
                last_modified: meta.last_modified,
                partial: false,
            });
        }
        if let Some(root) = &self.local_root {
            let root = root.clone();
            let prefix_owned = path.to_string();
            let partials =
                tokio::task::spawn_blocking(move || local_partials(&root, &prefix_owned))
                    .await
                    .map_err(|e| StorageError::Listing {
                        prefix: prefix.to_owned(),
                        source: std::io::Error::other(e),
                    })?
                    .map_err(|source| StorageError::Listing {
                        prefix: prefix.to_owned(),
                        source,
                    })?;
            out.extend(partials);
        }
        Ok(out)
    }

    /// Deletes an object found by [`Storage::list`], a partial file
    /// included; deleting a missing one is not an error.
    pub async fn delete_listed(&self, listed: &Listed) -> Result<(), StorageError> {
        if !listed.partial {
            return self.delete(&listed.key).await;
        }
        // The key's segments were checked: no `.`, `..` or empty one.
        Self::check_key(&listed.key)?;
        let Some(root) = &self.local_root else {
            return Err(StorageError::InvalidKey {
                key: listed.key.clone(),
                reason: "not a partial file of the local store".into(),
            });
        };
        let file = listed.key.split('/').fold(root.clone(), |mut dir, part| {
            dir.push(part);
            dir
        });
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StorageError::Listing {
                prefix: listed.key.clone(),
                source,
            }),
        }
    }

    /// The local file of `key` under the store's root `root` (the key's
    /// segments are checked: no `.`, `..` or empty one).
    fn local_file(root: &std::path::Path, key: &str) -> Result<PathBuf, StorageError> {
        Self::check_key(key)?;
        Ok(key.split('/').fold(root.to_path_buf(), |mut dir, part| {
            dir.push(part);
            dir
        }))
    }

    /// The upload of `key` named `upload_id`, without checking that it
    /// exists.
    fn resumable(&self, key: &str, upload_id: &str) -> Result<ResumableUpload, StorageError> {
        let target = match (&self.s3, &self.local_root) {
            (Some(store), _) => UploadTarget::S3 {
                store: store.clone(),
                path: Self::path(key)?,
            },
            (None, Some(root)) => {
                if upload_id.is_empty() || !upload_id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(StorageError::InvalidKey {
                        key: key.to_owned(),
                        reason: format!("{upload_id:?} is not the id of a local upload"),
                    });
                }
                let target = Self::local_file(root, key)?;
                let mut name = target.file_name().unwrap_or_default().to_os_string();
                name.push(format!("#{upload_id}"));
                UploadTarget::Local {
                    file: target.with_file_name(name),
                    target,
                }
            }
            (None, None) => {
                return Err(StorageError::InvalidKey {
                    key: key.to_owned(),
                    reason: "this store has no resumable uploads".into(),
                });
            }
        };
        Ok(ResumableUpload {
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            target,
        })
    }

    /// Starts a resumable upload to `key`; record its
    /// [`ResumableUpload::upload_id`] to continue it later.
    pub async fn start_resumable_upload(&self, key: &str) -> Result<ResumableUpload, StorageError> {
        if let Some(store) = &self.s3 {
            let path = Self::path(key)?;
            let upload_id = store
                .create_multipart(&path)
                .await
                .map_err(|e| Self::backend(key, e))?;
            return self.resumable(key, &upload_id);
        }
        // A local upload's id is digits, so that its staging file
        // (`<key>#<digits>`) is listed as a partial file and swept.
        let upload_id = uuid::Uuid::new_v4().as_u64_pair().0.to_string();
        let upload = self.resumable(key, &upload_id)?;
        if let UploadTarget::Local { file, .. } = &upload.target {
            let file = file.clone();
            upload
                .blocking(move || {
                    if let Some(dir) = file.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&file)?
                        .sync_all()
                })
                .await?;
        }
        Ok(upload)
    }

    /// The upload `upload_id` of `key` that an earlier run started, to be
    /// continued after its first `written` bytes (the chunks it recorded),
    /// or `None` when it is no longer there. On the local store the
    /// staging file must hold at least `written` bytes: it is cut back to
    /// them (chunks written after the last one recorded are dropped); a
    /// shorter or missing file is removed and `None` returned. On S3 an
    /// upload is found gone only when it is used: its next
    /// [`ResumableUpload::put_chunk`] or [`ResumableUpload::complete`]
    /// fails with [`StorageError::NotFound`].
    pub async fn reopen_resumable_upload(
        &self,
        key: &str,
        upload_id: &str,
        written: u64,
    ) -> Result<Option<ResumableUpload>, StorageError> {
        let upload = self.resumable(key, upload_id)?;
        let UploadTarget::Local { file, .. } = &upload.target else {
            return Ok(Some(upload));
        };
        let file = file.clone();
        let there = upload
            .blocking(move || {
                let f = match std::fs::OpenOptions::new().write(true).open(&file) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(e),
                };
                if f.metadata()?.len() < written {
                    drop(f);
                    std::fs::remove_file(&file)?;
                    return Ok(false);
                }
                f.set_len(written)?;
                f.sync_all()?;
                Ok(true)
            })
            .await?;
        Ok(there.then_some(upload))
    }

    /// Aborts the upload `upload_id` of `key` (see
    /// [`ResumableUpload::abort`]); aborting one that no longer exists is
    /// not an error.
    pub async fn abort_resumable_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        self.resumable(key, upload_id)?.abort().await
    }

    /// Streams an object, or the byte range `range` of it.
    pub async fn get_stream(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<ObjectStream, StorageError> {
        let path = Self::path(key)?;
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&path, options)
            .await
            .map_err(|e| Self::backend(key, e))?;
        let size = result.meta.size;
        let range = result.range.clone();
        let owned = key.to_owned();
        let stream = result
            .into_stream()
            .map(move |chunk| chunk.map_err(|e| Self::backend(&owned, e)))
            .boxed();
        Ok(ObjectStream {
            size,
            range,
            stream,
        })
    }

    /// A presigned GET URL valid for `ttl`, on an S3 store; `None` on the
    /// local store, whose objects `copiste serve` hands out instead.
    pub async fn presigned_get(
        &self,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<url::Url>, StorageError> {
        let Some(s3) = &self.s3 else {
            return Ok(None);
        };
        let path = Self::path(key)?;
        let url = s3
            .signed_url(object_store::signer::Method::GET, &path, ttl)
            .await
            .map_err(|e| Self::backend(key, e))?;
        Ok(Some(url))
    }
}

/// The partial files (`<name>#<digits>`) under `prefix` of the local store
/// rooted at `root`, which `object_store` does not list.
fn local_partials(root: &std::path::Path, prefix: &str) -> std::io::Result<Vec<Listed>> {
    fn walk(dir: &std::path::Path, key: &str, out: &mut Vec<Listed>) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if key.is_empty() {
                name.clone()
            } else {
                format!("{key}/{name}")
            };
            let meta = entry.metadata()?;
            if meta.is_dir() {
                walk(&entry.path(), &child, out)?;
            } else if is_partial_name(&name) {
                out.push(Listed {
                    key: child,
                    size: meta.len(),
                    last_modified: meta
                        .modified()
                        .map(chrono::DateTime::<chrono::Utc>::from)
                        .unwrap_or_else(|_| chrono::Utc::now()),
                    partial: true,
                });
            }
        }
        Ok(())
    }
    let dir = prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .fold(root.to_path_buf(), |mut d, s| {
            d.push(s);
            d
        });
    let mut out = Vec::new();
    walk(&dir, prefix.trim_end_matches('/'), &mut out)?;
    Ok(out)
}

/// Whether a file name is a multipart upload's partial file: `…#<digits>`.
fn is_partial_name(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_keys_are_permanent_errors_found_through_context() {
        let error = Storage::check_key("downloads/EVIL/../x/a.zip").expect_err("invalid");
        assert!(error.is_permanent(), "{error}");
        let wrapped = anyhow::Error::new(error).context("starting the upload");
        assert!(StorageError::find_in(&wrapped).is_some_and(StorageError::is_permanent));
        assert!(Storage::check_key("downloads/BAC26/0750001A/d1a1n1/x.zip").is_ok());
        assert!(!StorageError::NotFound("k".into()).is_permanent());
    }

    #[test]
    fn partial_names_are_recognised() {
        assert!(is_partial_name("a.zip#1"));
        assert!(is_partial_name("a.zip#12"));
        assert!(!is_partial_name("a.zip"));
        assert!(!is_partial_name("a.zip#"));
        assert!(!is_partial_name("a#b.zip"));
    }
}
