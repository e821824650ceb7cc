//! Object storage adapter: scans in, exports, PDFs and zips out. The only
//! module that names `object_store` types.

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, aws::AmazonS3Builder, local::LocalFileSystem,
    path::Path,
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
    description: String,
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
                let store = builder
                    .build()
                    .context("configuring the S3 store (storage.s3)")?;
                Ok(Self {
                    store: Arc::new(store),
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
}
