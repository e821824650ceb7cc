//! Object storage adapter: scans in, exports, PDFs and zips out. The only
//! module that names `object_store` types.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use bytes::Bytes;
use futures::{StreamExt as _, stream::BoxStream};
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
    aws::{AmazonS3, AmazonS3Builder},
    local::LocalFileSystem,
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
    /// A local store's unfinished multipart upload (`<key>#<n>`, a file
    /// `LocalFileSystem` writes before renaming it to its key, and leaves
    /// behind when the process is killed).
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

/// Parts of a multipart upload written at once, at most.
const UPLOAD_CONCURRENCY: usize = 2;
/// Size of each multipart part (S3's minimum is 5 MiB).
const UPLOAD_PART: usize = 8 * 1024 * 1024;

/// An object being written in parts: invisible at its key until
/// [`Upload::finish`]; [`Upload::abort`] (or a crash) leaves nothing there.
pub struct Upload {
    key: String,
    inner: WriteMultipart,
}

impl Upload {
    /// Appends bytes, waiting while too many parts are in flight (memory
    /// stays bounded by the part size times the concurrency).
    /// The bytes are handed on as they are, not copied.
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        self.inner
            .wait_for_capacity(UPLOAD_CONCURRENCY)
            .await
            .map_err(|e| Storage::backend(&self.key, e))?;
        self.inner.put(bytes);
        Ok(())
    }

    /// Completes the object: it appears at its key, whole.
    pub async fn finish(self) -> Result<(), StorageError> {
        let key = self.key;
        self.inner
            .finish()
            .await
            .map_err(|e| Storage::backend(&key, e))?;
        Ok(())
    }

    /// Gives the upload up; nothing appears at the key.
    pub async fn abort(self) -> Result<(), StorageError> {
        let key = self.key;
        self.inner
            .abort()
            .await
            .map_err(|e| Storage::backend(&key, e))
    }
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

    /// Starts a multipart upload to `key`.
    pub async fn upload(&self, key: &str) -> Result<Upload, StorageError> {
        let path = Self::path(key)?;
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| Self::backend(key, e))?;
        Ok(Upload {
            key: key.to_owned(),
            inner: WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART),
        })
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
