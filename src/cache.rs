//! The tiered cache: memory -> Redis -> durable store -> generator.
//!
//! - Lookups go memory, Redis, durable; a Redis hit fills memory; a durable hit
//!   fills memory and rewrites Redis in the background.
//! - A miss generates (off the async threads), writes the durable store first
//!   (the source of truth; if that fails the call fails with `E_DURABLE_WRITE`
//!   and nothing is cached), then memory, and Redis in the background once the
//!   row is committed. `flush` and `close` wait for background writes, and
//!   invalidation waits for them so none can bring a key back.
//! - Concurrent calls for one key in this process share one lookup and one
//!   generation; across processes the durable store's per-key lock makes the
//!   first one generate and the others read its row.
//! - Redis never fails a call: its errors are counted and skipped.
//! - Stored payloads are checked before they are served; legacy (TypeScript)
//!   payloads are verified, re-encoded and written back in the new format.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::codec::{self, Codec};
use crate::config::ScenarioConfig;
use crate::error::{Error, Result};
use crate::stats::{Stats, StatsSnapshot};
use crate::tier::durable::{Durable, DurableOptions, DurableUrl, DEFAULT_SQLITE_PATH};
use crate::tier::memory::MemoryTier;
use crate::tier::redis::{Lookup, RedisTier};
use crate::tier::{Entry, Source};
use crate::{generator, key, scenario};

/// Options of [`Cache::open`]. `None` means "the default" (see each field).
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    /// `postgres://`, `postgresql://`, `sqlite://path` or a file path.
    /// Default: env `DATABASE_URL`, else SQLite at `.scenario-matrix-cache/cache.db`.
    pub database_url: Option<String>,
    /// `redis://` or `rediss://`; an empty string turns Redis off.
    /// Default: env `REDIS_URL`, else no Redis tier.
    pub redis_url: Option<String>,
    /// Bound on the memory tier's payload bytes; 0 turns it off. Default 128 MiB.
    pub memory_max_bytes: Option<u64>,
    /// Default 86400 (24 h).
    pub redis_ttl_seconds: Option<u64>,
    /// Default `scenario-matrix:`.
    pub redis_key_prefix: Option<String>,
    /// Apply the embedded migrations on open. Default true.
    pub run_migrations: Option<bool>,
    /// Bound on each Redis command (and connect). Default 500 ms.
    pub redis_timeout_ms: Option<u64>,
    /// Bound on connecting to / acquiring a connection of the durable store. Default 10 s.
    pub database_timeout_ms: Option<u64>,
    /// Durable store pool size. Default 8.
    pub database_max_connections: Option<u32>,
}

pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 128 * 1024 * 1024;
pub const DEFAULT_REDIS_TTL_SECONDS: u64 = 86_400;
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "scenario-matrix:";

/// A result as the caller sees it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry: Entry,
    pub source: Source,
    /// The matrix itself when this call generated it (saves a decode in `get_matrix`).
    pub matrix: Option<Arc<Vec<f32>>>,
}

type Flight = Shared<BoxFuture<'static, Result<Hit>>>;

pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    memory: Option<MemoryTier>,
    redis: Option<RedisTier>,
    durable: Durable,
    inflight: Mutex<HashMap<String, Flight>>,
    background: Background,
    stats: Stats,
    closed: AtomicBool,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

impl Cache {
    pub async fn open(opts: CacheOptions) -> Result<Cache> {
        let db = opts
            .database_url
            .or_else(|| env_nonempty("DATABASE_URL"))
            .unwrap_or_else(|| DEFAULT_SQLITE_PATH.to_string());
        let url = DurableUrl::parse(&db)?;
        let durable_opts = DurableOptions {
            run_migrations: opts.run_migrations.unwrap_or(true),
            timeout: Duration::from_millis(opts.database_timeout_ms.unwrap_or(10_000)),
            max_connections: opts.database_max_connections.unwrap_or(8).max(1),
        };
        let redis_url = opts
            .redis_url
            .or_else(|| env_nonempty("REDIS_URL"))
            .filter(|s| !s.trim().is_empty());
        let redis = match redis_url {
            Some(u) => Some(RedisTier::new(
                &u,
                opts.redis_key_prefix
                    .as_deref()
                    .unwrap_or(DEFAULT_REDIS_KEY_PREFIX),
                opts.redis_ttl_seconds.unwrap_or(DEFAULT_REDIS_TTL_SECONDS),
                Duration::from_millis(opts.redis_timeout_ms.unwrap_or(500)),
            )?),
            None => None,
        };
        let memory_max = opts.memory_max_bytes.unwrap_or(DEFAULT_MEMORY_MAX_BYTES);
        let durable = Durable::open(&url, &durable_opts).await?;
        Ok(Cache {
            inner: Arc::new(Inner {
                memory: (memory_max > 0).then(|| MemoryTier::new(memory_max)),
                redis,
                durable,
                inflight: Mutex::new(HashMap::new()),
                background: Background::default(),
                stats: Stats::default(),
                closed: AtomicBool::new(false),
            }),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Relaxed) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The cached matrix for `cfg`, generating and storing it on a miss.
    pub async fn get_or_generate(&self, cfg: &ScenarioConfig) -> Result<Hit> {
        self.get_or_generate_keyed(cfg, key::canonical_key(cfg), false)
            .await
    }

    /// The decoded (and verified) matrix for `cfg`, row-major: the generator's
    /// own output on a miss, else the stored payload decoded off the async threads.
    pub async fn get_matrix(&self, cfg: &ScenarioConfig) -> Result<(Hit, Vec<f32>)> {
        let mut hit = self
            .get_or_generate_keyed(cfg, key::canonical_key(cfg), true)
            .await?;
        let matrix = match hit.matrix.take() {
            // Joiners of one flight share it; each caller gets its own copy.
            Some(m) => Arc::try_unwrap(m).unwrap_or_else(|shared| shared.as_ref().clone()),
            None => {
                let entry = hit.entry.clone();
                blocking(move || entry.decode()).await?
            }
        };
        Ok((hit, matrix))
    }

    /// The memory tier alone, synchronously: lets the binding answer a hit on
    /// the calling thread without a trip through the runtime. Counts hits only;
    /// a miss is counted by the lookup that follows.
    pub fn get_from_memory(&self, key: &str) -> Result<Option<Hit>> {
        self.check_open()?;
        let started = Instant::now();
        // An entry still lacking recycling multiples (a legacy one first read by
        // key) is left to the full lookup, which completes it from the config.
        let found = self.inner.memory.as_ref().and_then(|m| m.get(key));
        let Some(entry) = found.filter(|e| !e.lacks_recycling()) else {
            return Ok(None);
        };
        self.inner.stats.memory.hit(entry.payload.len());
        self.inner
            .stats
            .record_call(Source::Memory, started.elapsed());
        Ok(Some(Hit {
            entry,
            source: Source::Memory,
            matrix: None,
        }))
    }

    /// [`Cache::get_or_generate`] when the caller already has the canonical key
    /// of `cfg`. With `keep_matrix`, a generation hands back its uncompressed
    /// matrix in [`Hit::matrix`]; otherwise it is freed before the tiers are
    /// written (20 MB less at the peak of a large miss).
    pub async fn get_or_generate_keyed(
        &self,
        cfg: &ScenarioConfig,
        key: String,
        keep_matrix: bool,
    ) -> Result<Hit> {
        self.check_open()?;
        let started = Instant::now();
        let flight = {
            let mut inflight = self.inner.inflight.lock().expect("inflight lock");
            if let Some(f) = inflight.get(&key) {
                self.inner.stats.single_flight_joins.fetch_add(1, Relaxed);
                f.clone()
            } else {
                let inner = self.inner.clone();
                let (cfg, k) = (cfg.clone(), key.clone());
                // A task of its own, so the work finishes (and leaves the map)
                // even if every caller stops waiting.
                let task = tokio::spawn(async move {
                    let r = inner.resolve(&cfg, &k, keep_matrix).await;
                    inner.inflight.lock().expect("inflight lock").remove(&k);
                    r
                });
                let f = task
                    .map(|joined| {
                        joined.unwrap_or_else(|e| {
                            Err(Error::Internal(format!("cache task failed: {e}")))
                        })
                    })
                    .boxed()
                    .shared();
                inflight.insert(key.clone(), f.clone());
                f
            }
        };
        let hit = flight.await?;
        self.inner.stats.record_call(hit.source, started.elapsed());
        Ok(hit)
    }

    /// Lookup only: never generates. `None` when no tier has the key.
    pub async fn get(&self, key: &str) -> Result<Option<Hit>> {
        self.check_open()?;
        check_key(key)?;
        let started = Instant::now();
        let hit = self.inner.lookup(key, None).await?;
        if let Some(h) = &hit {
            self.inner.stats.record_call(h.source, started.elapsed());
        }
        Ok(hit)
    }

    /// Removes `key` from every tier; true when any tier had it.
    pub async fn invalidate(&self, key: &str) -> Result<bool> {
        self.check_open()?;
        check_key(key)?;
        let inner = &self.inner;
        // A background Redis write still in flight would bring the key back.
        inner.background.wait().await;
        let in_durable = inner.durable.delete(key).await?;
        let in_redis = match &inner.redis {
            Some(r) => {
                r.delete(&[key.to_string()])
                    .await
                    .map_err(|_| inner.stats.redis.error())
                    .unwrap_or(0)
                    > 0
            }
            None => false,
        };
        let in_memory = inner.memory.as_ref().is_some_and(|m| m.remove(key));
        Ok(in_durable || in_redis || in_memory)
    }

    /// Removes every matrix of a fund (optionally one taxonomy version) from
    /// every tier; returns how many the durable store held. Rows the
    /// TypeScript app left 'pending', 'processing' or 'failed' are not
    /// matrices: they stay, and are not counted.
    pub async fn invalidate_fund(
        &self,
        fund_id: &str,
        taxonomy_version: Option<&str>,
    ) -> Result<u64> {
        self.check_open()?;
        let inner = &self.inner;
        inner.background.wait().await;
        let keys = inner.durable.delete_fund(fund_id, taxonomy_version).await?;
        if let Some(r) = &inner.redis {
            if r.delete(&keys).await.is_err() {
                inner.stats.redis.error();
            }
        }
        if let Some(m) = &inner.memory {
            keys.iter().for_each(|k| {
                m.remove(k);
            });
        }
        Ok(keys.len() as u64)
    }

    pub fn stats(&self) -> StatsSnapshot {
        let memory = self.inner.memory.as_ref().map(|m| m.stats());
        self.inner.stats.snapshot(memory)
    }

    /// Refuses new calls, waits for background writes, closes the pools.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Relaxed) {
            return;
        }
        self.inner.background.wait().await;
        self.inner.durable.close().await;
        if let Some(m) = &self.inner.memory {
            m.clear();
        }
    }

    /// Waits until the background writes are done (tests, benchmarks).
    pub async fn flush(&self) {
        self.inner.background.wait().await;
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.len() == 64
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "a cache key is 64 lowercase hex digits, got {key:?}"
        )))
    }
}

impl Inner {
    /// Lookup, then generation under the durable store's per-key lock.
    async fn resolve(
        self: &Arc<Self>,
        cfg: &ScenarioConfig,
        key: &str,
        keep_matrix: bool,
    ) -> Result<Hit> {
        if let Some(hit) = self.lookup(key, Some(cfg)).await? {
            return Ok(hit);
        }
        let cfg_owned = cfg.clone();
        let generated: Arc<Mutex<Option<Arc<Vec<f32>>>>> = Arc::default();
        let slot = generated.clone();
        let (entry, inserted) = self
            .durable
            .get_or_insert(cfg, key, move || async move {
                let (entry, matrix) = generate(cfg_owned).await?;
                if keep_matrix {
                    *slot.lock().expect("slot lock") = Some(matrix);
                }
                Ok(entry)
            })
            .await
            .inspect_err(|_| self.stats.durable.error())?;
        let source = if inserted {
            self.stats.generations.fetch_add(1, Relaxed);
            Source::Generated
        } else {
            // Another process generated it while we waited for the lock.
            self.stats.durable.hit(entry.payload.len());
            self.durable.source()
        };
        let entry = self.normalise(entry, Some(cfg)).await?;
        // Durable is committed; Redis follows in the background (outside the
        // caller's latency; `close` and `flush` wait for it).
        self.write_redis_in_background(&entry);
        if let Some(m) = &self.memory {
            m.insert(entry.clone());
        }
        let matrix = generated.lock().expect("slot lock").take();
        Ok(Hit {
            entry,
            source,
            matrix,
        })
    }

    /// memory -> Redis -> durable. Fills the faster tiers on the way back.
    async fn lookup(
        self: &Arc<Self>,
        key: &str,
        cfg: Option<&ScenarioConfig>,
    ) -> Result<Option<Hit>> {
        if let Some(m) = &self.memory {
            let usable = |e: &Entry| cfg.is_none() || !e.lacks_recycling();
            if let Some(entry) = m.get(key).filter(usable) {
                self.stats.memory.hit(entry.payload.len());
                return Ok(Some(Hit {
                    entry,
                    source: Source::Memory,
                    matrix: None,
                }));
            }
            self.stats.memory.miss();
        }

        if let Some(r) = &self.redis {
            match r.get(key).await {
                Ok(Lookup::Hit(entry)) => {
                    let legacy = entry.codec != Codec::Zstd;
                    // Legacy values, and values stored without recycling
                    // multiples, are completed and written back.
                    let rewrite = legacy || (entry.lacks_recycling() && cfg.is_some());
                    match self.normalise(entry, cfg).await {
                        Ok(entry) if self.check(&entry) => {
                            self.stats.redis.hit(entry.payload.len());
                            if legacy {
                                self.stats.legacy_rewrites.fetch_add(1, Relaxed);
                            }
                            if rewrite {
                                self.write_redis_in_background(&entry);
                            }
                            self.fill_memory(&entry);
                            return Ok(Some(Hit {
                                entry,
                                source: Source::Redis,
                                matrix: None,
                            }));
                        }
                        // Counted as corrupt; the durable copy (or a new one) overwrites it.
                        _ => {
                            self.stats.corrupt_entries.fetch_add(1, Relaxed);
                            self.stats.redis.miss();
                        }
                    }
                }
                Ok(Lookup::Undecodable(_)) => {
                    self.stats.corrupt_entries.fetch_add(1, Relaxed);
                    self.stats.redis.miss();
                }
                Ok(Lookup::Miss) => self.stats.redis.miss(),
                Err(_) => self.stats.redis.error(),
            }
        }

        let found = self
            .durable
            .get(key)
            .await
            .inspect_err(|_| self.stats.durable.error())?;
        let Some(entry) = found else {
            self.stats.durable.miss();
            return Ok(None);
        };
        let legacy = entry.codec != Codec::Zstd;
        match self.normalise(entry, cfg).await {
            Ok(entry) if self.check(&entry) => {
                self.stats.durable.hit(entry.payload.len());
                if legacy {
                    self.stats.legacy_rewrites.fetch_add(1, Relaxed);
                }
                self.write_redis_in_background(&entry);
                self.fill_memory(&entry);
                Ok(Some(Hit {
                    entry,
                    source: self.durable.source(),
                    matrix: None,
                }))
            }
            // The source of truth is damaged: say so rather than serve or overwrite it.
            Ok(_) => Err(self.corrupt(key, "envelope header check failed")),
            Err(e) => Err(self.corrupt(key, &e.to_string())),
        }
    }

    fn corrupt(&self, key: &str, why: &str) -> Error {
        self.stats.corrupt_entries.fetch_add(1, Relaxed);
        Error::Corrupt(format!(
            "stored matrix {key} is unreadable ({why}); invalidate it to regenerate"
        ))
    }

    /// Integrity check before serving a stored envelope: the header, every
    /// chunk's stored-bytes checksum and dimensions matching the metadata (the
    /// raw-data checksums are checked whenever the matrix is decoded).
    fn check(&self, e: &Entry) -> bool {
        codec::verify(&e.payload).is_ok_and(|h| {
            h.num_scenarios == e.metadata.num_scenarios && h.num_buckets == e.metadata.num_buckets
        })
    }

    /// Turns a legacy payload into an envelope entry (verifying it by decoding)
    /// and fills recycling multiples that legacy rows lack, when the config is known.
    async fn normalise(&self, entry: Entry, cfg: Option<&ScenarioConfig>) -> Result<Entry> {
        let needs_recycling = entry.lacks_recycling() && cfg.is_some();
        if entry.codec == Codec::Zstd && !needs_recycling {
            return Ok(entry);
        }
        let cfg = cfg.cloned();
        blocking(move || {
            let matrix = entry.decode()?;
            let mut e = entry;
            if let Some(cfg) = &cfg {
                if e.lacks_recycling() {
                    e.metadata.recycling_multiples = generator::recycling_multiples(cfg, &matrix);
                }
            }
            if e.codec != Codec::Zstd {
                e.payload =
                    codec::encode(&matrix, e.metadata.num_scenarios, e.metadata.num_buckets)?
                        .into();
                e.codec = Codec::Zstd;
            }
            if e.metadata.generated_at.is_empty() {
                e.metadata.generated_at = scenario::iso8601_now();
            }
            Ok(e)
        })
        .await
    }

    fn fill_memory(&self, e: &Entry) {
        if let Some(m) = &self.memory {
            m.insert(e.clone());
        }
    }

    fn write_redis_in_background(self: &Arc<Self>, e: &Entry) {
        if self.redis.is_none() {
            return;
        }
        let inner = self.clone();
        let e = e.clone();
        self.background.spawn(async move {
            if let Some(r) = &inner.redis {
                if r.put(&e).await.is_err() {
                    inner.stats.redis.error();
                }
            }
        });
    }
}

/// Background writes (Redis rewrites) and a way to wait for all of them.
#[derive(Default)]
struct Background {
    pending: Arc<std::sync::atomic::AtomicUsize>,
    idle: Arc<tokio::sync::Notify>,
}

impl Background {
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        use std::sync::atomic::Ordering::SeqCst;
        self.pending.fetch_add(1, SeqCst);
        let (pending, idle) = (self.pending.clone(), self.idle.clone());
        tokio::spawn(async move {
            // Counted down even if `work` panics (the guard drops on unwind).
            struct Done(
                Arc<std::sync::atomic::AtomicUsize>,
                Arc<tokio::sync::Notify>,
            );
            impl Drop for Done {
                fn drop(&mut self) {
                    if self.0.fetch_sub(1, SeqCst) == 1 {
                        self.1.notify_waiters();
                    }
                }
            }
            let _done = Done(pending, idle);
            work.await;
        });
    }

    /// Returns once no background write is pending.
    async fn wait(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let notified = self.idle.notified();
            if self.pending.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The caller's own copy of a payload. Large ones are copied by all cores:
/// the cost of a 15 MB copy is mostly first-touch page faults, which run in
/// parallel.
pub fn caller_copy(payload: &[u8]) -> Vec<u8> {
    const SLICE: usize = 1 << 20;
    if payload.len() < 4 * SLICE {
        return payload.to_vec();
    }
    use rayon::prelude::*;
    // Zeroed memory this size comes straight from the OS untouched, so the
    // zeroing is free and the first touch happens in the parallel copy.
    let mut out = vec![0u8; payload.len()];
    out.par_chunks_mut(SLICE)
        .zip(payload.par_chunks(SLICE))
        .for_each(|(dst, src)| dst.copy_from_slice(src));
    out
}

/// Runs CPU work on the blocking pool; a panic there becomes `E_INTERNAL`.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Internal(format!("worker failed: {e}"))))
}

async fn generate(cfg: ScenarioConfig) -> Result<(Entry, Arc<Vec<f32>>)> {
    blocking(move || {
        let (s, matrix) = scenario::run_with_matrix(&cfg)?;
        Ok((
            Entry {
                payload: s.envelope.into(),
                codec: Codec::Zstd,
                metadata: s.metadata,
            },
            Arc::new(matrix),
        ))
    })
    .await
}
