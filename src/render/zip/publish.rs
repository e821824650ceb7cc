//! Publishing a zip: its staged parts moved to their final keys, all or
//! none.

use super::{Part, ZipPlan};
use crate::storage::{Storage, StorageError};

/// Moves every complete part from its staging key to its final key; on a
/// failure, deletes what was moved and what was not, and fails. A part
/// already at its final key with its size (moved by a run that was killed
/// while publishing) is left there.
pub(super) async fn publish_parts(
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
