//! Object storage adapter: scans in, exports, PDFs and zips out. The only
//! module that names `object_store` types.

use std::sync::Arc;

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
    #[error("object store error on {key}: {source}")]
    Backend {
        key: String,
        #[source]
        source: object_store::Error,
    },
}

/// A handle on the configured object store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The S3 store again, for presigned URLs (`None` on the local store).
    s3: Option<Arc<AmazonS3>>,
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
