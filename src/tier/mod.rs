//! The cache tiers and what travels between them: an [`Entry`] is a payload as
//! stored (envelope or legacy zlib) plus the metadata the generation produced,
//! so every hit returns exactly what the miss returned. Every tier stores the
//! columns in the key's bucket order.

pub mod catalog;
pub mod durable;
pub mod invalidation;
pub mod memory;
mod postgres;
pub mod redis;
mod redis_bulk;
mod rows;
mod sqlite;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::codec::{self, Codec};
use crate::error::Result;
use crate::portfolio::stats::ColumnStats;
use crate::scenario::Metadata;
use crate::sealed::Sealed;

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Memory,
    Redis,
    Postgres,
    Sqlite,
    Generated,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Memory,
        Source::Redis,
        Source::Postgres,
        Source::Sqlite,
        Source::Generated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Redis => "redis",
            Source::Postgres => "postgres",
            Source::Sqlite => "sqlite",
            Source::Generated => "generated",
        }
    }
}

/// A cached matrix: the payload bytes exactly as stored, how they are encoded,
/// and the generation metadata. Cloning is cheap (the payload is shared).
#[derive(Debug, Clone)]
pub struct Entry {
    pub payload: Bytes,
    pub codec: Codec,
    pub metadata: Metadata,
    /// What has been computed from this payload for any caller, shared by
    /// every clone: it lives and dies with the payload (the memory tier's
    /// copy), so an eviction or invalidation drops it too.
    pub derived: Arc<Derived>,
}

/// Caller-independent results computed from an entry's matrix, each at most once.
#[derive(Debug, Default)]
pub struct Derived {
    /// Per stored column: its sum and p10 / p50 / p90 (portfolio statistics).
    pub column_stats: OnceLock<ColumnStats>,
    /// The payload in a sealed memory file, set on the first large hit from
    /// memory: callers then map it instead of copying it (see
    /// [`crate::sealed`]).
    pub sealed: OnceLock<Arc<Sealed>>,
    /// Set while a call seals the payload, so concurrent hits copy instead
    /// of each sealing a copy of their own.
    pub sealing: std::sync::atomic::AtomicBool,
}

/// Equal payloads, codecs and metadata; what was derived from them follows.
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (&self.payload, self.codec, &self.metadata)
            == (&other.payload, other.codec, &other.metadata)
    }
}

impl Entry {
    /// An entry with nothing derived from its payload yet.
    pub fn new(payload: Bytes, codec: Codec, metadata: Metadata) -> Entry {
        Entry {
            payload,
            codec,
            metadata,
            derived: Arc::default(),
        }
    }

    /// `f(first_row, cells)` over blocks of whole rows of the matrix (called
    /// in parallel, in any order; the results in row order), verified like
    /// [`Entry::decode`] but never whole in memory for an envelope (see
    /// [`codec::decode_blocks_labelled`]).
    pub fn decode_blocks<T: Send>(&self, f: impl Fn(usize, &[f32]) -> T + Sync) -> Result<Vec<T>> {
        codec::decode_blocks_labelled(
            &self.payload,
            self.codec,
            self.metadata.num_scenarios,
            self.metadata.num_buckets,
            f,
        )
    }

    /// Decodes and verifies the matrix (row-major f32).
    pub fn decode(&self) -> Result<Vec<f32>> {
        codec::decode_labelled(
            &self.payload,
            self.codec,
            self.metadata.num_scenarios,
            self.metadata.num_buckets,
        )
    }

    /// Legacy rows carry no recycling multiples; the cache recomputes them when it knows the config.
    pub fn lacks_recycling(&self) -> bool {
        self.metadata.lacks_recycling()
    }

    /// Whether the metadata names every column: always for our envelope;
    /// for a payload in the TypeScript format only when this package wrote
    /// it (`writeLegacyFormat`), since the TypeScript code named none.
    pub fn names_columns(&self) -> bool {
        self.metadata.bucket_names.len() == self.metadata.num_buckets as usize
    }
}
