//! In-process memory tier: a moka cache bounded by the bytes of the stored
//! (compressed) payloads. An entry larger than the whole bound is refused up
//! front (and counted); entries pushed out later are counted as evictions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::Entry;

#[derive(Default)]
struct Counters {
    evictions: AtomicU64,
    rejected_too_large: AtomicU64,
}

pub struct MemoryTier {
    cache: Cache<String, Entry>,
    max_bytes: u64,
    counters: Arc<Counters>,
}

/// Bytes an entry is charged: its payload (the metadata is tiny next to it).
fn weight(e: &Entry) -> u32 {
    u32::try_from(e.payload.len()).unwrap_or(u32::MAX)
}

impl MemoryTier {
    pub fn new(max_bytes: u64) -> Self {
        let counters = Arc::new(Counters::default());
        let listener_counters = counters.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &String, v: &Entry| weight(v))
            .eviction_listener(move |_k, _v, cause| {
                // Size: pushed out (or not admitted) by the byte bound. Explicit
                // and Replaced removals are ours and not evictions.
                if cause == RemovalCause::Size {
                    listener_counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        MemoryTier {
            cache,
            max_bytes,
            counters,
        }
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        self.cache.get(key)
    }

    /// Stores `entry` unless it alone exceeds the bound (returns false then).
    pub fn insert(&self, entry: Entry) -> bool {
        if u64::from(weight(&entry)) > self.max_bytes {
            self.counters
                .rejected_too_large
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.cache.insert(entry.metadata.config_hash.clone(), entry);
        true
    }

    pub fn remove(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }

    pub fn clear(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
    }

    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            max_bytes: self.max_bytes,
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            rejected_too_large: self.counters.rejected_too_large.load(Ordering::Relaxed),
        }
    }

    /// Applies moka's pending maintenance, so `stats` is exact (tests, `close`).
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub evictions: u64,
    pub rejected_too_large: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::scenario::Metadata;

    fn entry(key: &str, len: usize) -> Entry {
        Entry {
            derived: Default::default(),
            payload: vec![7u8; len].into(),
            codec: Codec::Zstd,
            metadata: Metadata {
                config_hash: key.into(),
                num_scenarios: 1,
                num_buckets: 1,
                generated_at: Some("2026-01-01T00:00:00.000Z".into()),
                duration_ms: Some(1.0),
                recycling_multiples: vec![1.0],
                bucket_names: vec!["b".into()],
            },
        }
    }

    #[test]
    fn refuses_oversized_and_counts_evictions() {
        let m = MemoryTier::new(10_000);
        assert!(!m.insert(entry("big", 10_001)));
        assert!(m.get("big").is_none());
        for i in 0..50 {
            assert!(m.insert(entry(&format!("k{i}"), 1_000)));
        }
        m.sync();
        let s = m.stats();
        assert_eq!(s.rejected_too_large, 1);
        assert!(s.bytes <= 10_000, "{s:?}");
        // Everything admitted is either still there or counted as evicted.
        assert_eq!(s.entries + s.evictions, 50, "{s:?}");
    }

    #[test]
    fn get_remove_round_trip() {
        let m = MemoryTier::new(1 << 20);
        m.insert(entry("a", 10));
        assert_eq!(m.get("a").unwrap().payload.len(), 10);
        assert!(m.remove("a"));
        assert!(!m.remove("a"));
    }
}
