//! Rendered copies kept in memory, so that a copy opened again (the
//! viewer, then its download; a page reloaded) is not rendered again.
//!
//! An entry's key is a fingerprint of everything the PDF is made of: the
//! copy's text fields, grades, details, appreciation and annotations, the
//! keys of its scans (content-addressed: a scan that changes gets a new
//! key), the switches and the renderer's version. A copy whose content
//! changes therefore gets a new key and is rendered again; stale entries
//! are never read and age out of the cache as it fills.
//!
//! quick_cache is used rather than a hand-written map: it bounds the cache
//! by the bytes it holds and evicts concurrently without one global lock.

use std::sync::Arc;

use bytes::Bytes;
use quick_cache::{Weighter, sync::Cache};

/// The fingerprint of one rendering (SHA-256).
pub type Fingerprint = [u8; 32];

/// A bounded, shared cache of rendered PDFs. Cloning is cheap.
#[derive(Clone)]
pub struct Rendered {
    inner: Option<Arc<Cache<Fingerprint, Bytes, ByLength>>>,
}

#[derive(Clone)]
struct ByLength;

impl Weighter<Fingerprint, Bytes> for ByLength {
    fn weight(&self, _key: &Fingerprint, val: &Bytes) -> u64 {
        // Never zero: an empty value still takes a slot.
        val.len().max(1) as u64
    }
}

impl Rendered {
    /// A cache holding at most `capacity_bytes` of PDFs; 0 keeps nothing.
    pub fn with_capacity(capacity_bytes: u64) -> Self {
        if capacity_bytes == 0 {
            return Self { inner: None };
        }
        // A copy's PDF is a few hundred KiB to a few MiB.
        let items = usize::try_from(capacity_bytes / (512 * 1024))
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            inner: Some(Arc::new(Cache::with_weighter(
                items,
                capacity_bytes,
                ByLength,
            ))),
        }
    }

    /// The PDF rendered for this fingerprint, if still held.
    pub fn get(&self, key: &Fingerprint) -> Option<Bytes> {
        self.inner.as_ref()?.get(key)
    }

    /// Keeps a rendered PDF (a PDF larger than the whole cache is not kept).
    pub fn insert(&self, key: Fingerprint, pdf: Bytes) {
        if let Some(cache) = &self.inner {
            cache.insert(key, pdf);
        }
    }

    /// The bytes held now.
    pub fn bytes(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.weight())
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("bytes", &self.bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_fits_and_nothing_when_disabled() {
        let cache = Rendered::with_capacity(1024 * 1024);
        cache.insert([1; 32], Bytes::from(vec![7u8; 1000]));
        assert_eq!(cache.get(&[1; 32]).as_deref().map(<[u8]>::len), Some(1000));
        assert!(cache.get(&[2; 32]).is_none());
        let off = Rendered::with_capacity(0);
        off.insert([1; 32], Bytes::from(vec![7u8; 10]));
        assert!(off.get(&[1; 32]).is_none());
    }

    #[test]
    fn stays_within_its_capacity() {
        let cache = Rendered::with_capacity(100_000);
        for i in 0..100u8 {
            cache.insert([i; 32], Bytes::from(vec![i; 10_000]));
        }
        assert!(cache.bytes() <= 100_000, "{} bytes held", cache.bytes());
    }
}
