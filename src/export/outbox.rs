//! The `outbox` implementation of the export targets, for sites that
//! exchange files: each batch is written, in the same JSON as the `http`
//! request body, to the object store under
//! `exports/<target>/<session>/<exam>/<establishment>/<digest>.json`.
//!
//! The file name is a digest of the batch's keys, so writing the same batch
//! again (after a crash or a relaunch) replaces the file with identical
//! bytes. A written file is the target's acceptance of every item in it;
//! the receiving side deduplicates items by key, as the `http` contract
//! requires.

use futures::future::BoxFuture;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{
    Batch, CountItem, ExportError, GradeItem, GradesExporter, ItemResult, ItemStatus,
    ServiceFaitExporter, Target,
};
use crate::storage::Storage;

/// A target that is a folder of the object store.
#[derive(Debug, Clone)]
pub struct OutboxTarget {
    target: Target,
    storage: Storage,
}

impl OutboxTarget {
    /// An outbox for `target` in `storage`.
    pub fn new(target: Target, storage: Storage) -> Self {
        Self { target, storage }
    }

    /// The object key a batch is written to.
    pub fn key_of<I>(&self, batch: &Batch<I>, keys: &[&str]) -> String {
        let mut digest = Sha256::new();
        for k in keys {
            digest.update(k.as_bytes());
            digest.update(b"\n");
        }
        let digest = hex::encode(digest.finalize());
        format!(
            "exports/{}/{}/{}/{}/{}.json",
            self.target,
            safe_segment(&batch.session),
            safe_segment(&batch.exam),
            safe_segment(&batch.establishment),
            &digest[..32]
        )
    }

    async fn write<I: Serialize>(
        &self,
        batch: &Batch<I>,
        keys: Vec<&str>,
    ) -> Result<Vec<ItemResult>, ExportError> {
        let body = serde_json::to_vec_pretty(batch)
            .map_err(|e| ExportError::Permanent(format!("cannot serialise the batch: {e}")))?;
        let key = self.key_of(batch, &keys);
        self.storage
            .put(&key, body.into())
            .await
            .map_err(|e| ExportError::Retryable(format!("{} outbox: {e}", self.target)))?;
        Ok(keys
            .into_iter()
            .map(|k| ItemResult {
                key: k.to_owned(),
                status: ItemStatus::Accepted,
                reason: None,
            })
            .collect())
    }
}

/// A path segment made of safe characters only (codes are already so;
/// this guards the object key against anything else).
fn safe_segment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl GradesExporter for OutboxTarget {
    fn send_grades<'a>(
        &'a self,
        batch: &'a Batch<GradeItem>,
    ) -> BoxFuture<'a, Result<Vec<ItemResult>, ExportError>> {
        let keys = batch.items.iter().map(|i| i.key.as_str()).collect();
        Box::pin(self.write(batch, keys))
    }
}

impl ServiceFaitExporter for OutboxTarget {
    fn send_counts<'a>(
        &'a self,
        batch: &'a Batch<CountItem>,
    ) -> BoxFuture<'a, Result<Vec<ItemResult>, ExportError>> {
        let keys = batch.items.iter().map(|i| i.key.as_str()).collect();
        Box::pin(self.write(batch, keys))
    }
}
