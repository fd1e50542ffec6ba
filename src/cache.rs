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
//! - Redis never fails a call: its errors are counted and skipped, and after
//!   one a circuit breaker stops asking it until a probe gets an answer.
//! - Stored payloads are checked before they are served, and must have the
//!   shape their key describes; legacy (TypeScript) payloads are verified,
//!   re-encoded and written back in the new format. Every copy is in the key's
//!   bucket order ([`crate::view`] gives callers theirs).
//! - Invalidation wins races: a per-cache epoch, bumped by every invalidation,
//!   is checked by each memory fill and Redis write, so none that started
//!   before an invalidation lands after it; the invalidation also waits for
//!   in-flight misses, so their durable rows are removed too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::codec::{self, Codec};
use crate::config::ScenarioConfig;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind, Events};
use crate::stats::{Outcome, Stats, StatsSnapshot};
use crate::tier::durable::{Durable, DurableOptions, DurableUrl, DEFAULT_SQLITE_PATH};
use crate::tier::invalidation::{Notice, Scope};
use crate::tier::memory::MemoryTier;
use crate::tier::redis::{Lookup, RedisOptions, RedisTarget, RedisTier};
use crate::tier::{Entry, Source};
use crate::view::{self, ColumnOrder};
use crate::{generator, key, scenario, sealed};

mod admin;
mod analytics;
pub use admin::{GcReport, Repaired, RowCheck, RowStatus, StoreReport};

/// Options of [`Cache::open`]. `None` means "the default" (see each field).
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    /// `postgres://`, `postgresql://`, `sqlite://path` or a file path.
    /// Default: env `DATABASE_URL`, else SQLite at `.scenario-matrix-cache/cache.db`.
    pub database_url: Option<String>,
    /// `redis://` or `rediss://`; an empty string turns Redis off.
    /// Default: env `REDIS_URL`, else no Redis tier.
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://` each), used
    /// instead of `redis_url` when given (an empty list counts as not given).
    /// Default: env `REDIS_CLUSTER_NODES` (comma-separated) when `redis_url`
    /// is not given either.
    pub redis_cluster_nodes: Option<Vec<String>>,
    /// Bound on the memory tier's payload bytes; 0 turns it off. Default 128 MiB.
    pub memory_max_bytes: Option<u64>,
    /// Default 86400 (24 h).
    pub redis_ttl_seconds: Option<u64>,
    /// Default `scenario-matrix:`.
    pub redis_key_prefix: Option<String>,
    /// Apply the embedded migrations on open. Default true.
    pub run_migrations: Option<bool>,
    /// Bound on connecting to Redis and on waiting for each reply. Default 100 ms.
    pub redis_timeout_ms: Option<u64>,
    /// Slowest Redis transfer accepted: a value of N MB gets N / this many
    /// seconds on top of `redis_timeout_ms`. Default 10 (MB/s).
    pub redis_min_throughput_mbps: Option<f64>,
    /// While the Redis circuit breaker is open, the pause between probes. Default 1000 ms.
    pub redis_breaker_cooldown_ms: Option<u64>,
    /// Bound on connecting to / acquiring a connection of the durable store. Default 10 s.
    pub database_timeout_ms: Option<u64>,
    /// Durable store pool size. Default 8.
    pub database_max_connections: Option<u32>,
    /// Where events go (tier errors, breaker changes, corrupt copies,
    /// repairs, slow calls). Default: nowhere.
    pub on_event: Events,
    /// A call taking at least this long is reported as a `SlowCall` event. Default 1000 ms.
    pub slow_call_ms: Option<u64>,
    /// The transition mode for a fleet that still runs the TypeScript
    /// implementation: rows and Redis values are written in its format
    /// (PostgreSQL only). Default false.
    pub write_legacy_format: Option<bool>,
    /// Raw matrix bytes (`numScenarios x buckets x 4`) from which a
    /// durable-store hit is answered by regenerating the matrix and proving
    /// it equal to the stored row, which is then read only in part (see
    /// `Inner::regenerated_hit`); 0 never does. Default
    /// [`DEFAULT_REGENERATE_MIN_BYTES`].
    pub regenerate_min_bytes: Option<u64>,
}

pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 128 * 1024 * 1024;
pub const DEFAULT_REDIS_TTL_SECONDS: u64 = 86_400;
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "scenario-matrix:";
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 100;
pub const DEFAULT_REDIS_MIN_THROUGHPUT_MBPS: f64 = 10.0;
pub const DEFAULT_REDIS_BREAKER_COOLDOWN_MS: u64 = 1000;
pub const DEFAULT_SLOW_CALL_MS: u64 = 1000;
/// Off: on this machine's local PostgreSQL it paid only for `getMatrix`
/// (docs/performance.md, "Regenerated hits").
pub const DEFAULT_REGENERATE_MIN_BYTES: u64 = 0;

/// How much of a durable row a regenerated hit reads: the envelope's header
/// and chunk table (every chunk's length and checksums; 500 bytes for a
/// 100,000 x 50 matrix) and the start of its first chunk.
const HEAD_BYTES: usize = 64 * 1024;

/// A result: the stored entry (columns in the key's bucket order) and where
/// it came from. [`Hit::for_caller`] gives a caller its own copy in its order.
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry: Entry,
    pub source: Source,
    /// The matrix itself (key order) when this call generated it (saves a
    /// decode in `get_matrix`).
    pub matrix: Option<Arc<Vec<f32>>>,
}

/// What a caller receives: its own copy of the payload (decoding in its
/// bucket order) and the metadata in that order.
#[derive(Debug)]
pub struct CallerCopy {
    pub payload: CallerBytes,
    pub metadata: scenario::Metadata,
    pub source: Source,
}

/// A caller's own bytes: a copy, or a copy-on-write mapping of a sealed
/// payload (its writes stay its own; see [`crate::sealed`]).
pub enum CallerBytes {
    Copied(Vec<u8>),
    Mapped(sealed::PrivateMap),
    /// The payload itself, when nothing else held it (read from Redis or
    /// the durable store with the memory tier off, or too large for it).
    Handed(bytes::BytesMut),
}

impl std::ops::Deref for CallerBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            CallerBytes::Copied(v) => v,
            CallerBytes::Mapped(m) => m,
            CallerBytes::Handed(b) => b,
        }
    }
}

impl std::fmt::Debug for CallerBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self {
            CallerBytes::Copied(_) => "Copied",
            CallerBytes::Mapped(_) => "Mapped",
            CallerBytes::Handed(_) => "Handed",
        };
        write!(f, "{how}({} bytes)", self.len())
    }
}

impl Hit {
    /// [`Hit::for_caller`], without a copy when this hit holds the only
    /// reference to a payload in the stored order: the caller gets it.
    pub fn into_caller(self, cfg: Option<&ScenarioConfig>) -> Result<CallerCopy> {
        let identity = cfg.is_none_or(|c| ColumnOrder::for_config(c).is_identity());
        if !identity || self.entry.derived.sealed.get().is_some() {
            return self.for_caller(cfg);
        }
        let Hit { entry, source, .. } = self;
        let Entry {
            payload, metadata, ..
        } = entry;
        match payload.try_into_mut() {
            Ok(mine) => Ok(CallerCopy {
                payload: CallerBytes::Handed(mine),
                metadata,
                source,
            }),
            Err(shared) => Ok(CallerCopy {
                payload: CallerBytes::Copied(codec::copy_large(&shared)),
                metadata,
                source,
            }),
        }
    }

    /// The caller's copy, in `cfg`'s bucket order (the stored order when
    /// `cfg` is `None`, e.g. a lookup by key).
    pub fn for_caller(&self, cfg: Option<&ScenarioConfig>) -> Result<CallerCopy> {
        let order = match cfg {
            Some(c) => ColumnOrder::for_config(c),
            None => ColumnOrder::stored(self.entry.metadata.num_buckets as usize),
        };
        let copied = || order.envelope(&self.entry.payload).map(CallerBytes::Copied);
        let payload = match self.entry.derived.sealed.get() {
            // A mapping only fails when the OS refuses one (file descriptors
            // or address space exhausted); a copy serves then.
            Some(s) if order.is_identity() => match s.private_map() {
                Ok(m) => CallerBytes::Mapped(m),
                Err(_) => copied()?,
            },
            _ => copied()?,
        };
        Ok(CallerCopy {
            payload,
            metadata: order.metadata(&self.entry.metadata),
            source: self.source,
        })
    }
}

/// What [`Cache::ping`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub durable: TierHealth,
    /// None without a Redis tier.
    pub redis: Option<TierHealth>,
}

/// One store's answer to a ping.
#[derive(Debug, Clone, PartialEq)]
pub struct TierHealth {
    pub ok: bool,
    pub latency_ms: f64,
    /// Why not, when not ok (never with a password).
    pub error: Option<String>,
}

impl TierHealth {
    async fn of(ping: impl std::future::Future<Output = Result<()>>) -> TierHealth {
        let started = Instant::now();
        let r = ping.await;
        TierHealth {
            ok: r.is_ok(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            error: r.err().map(|e| e.to_string()),
        }
    }
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
    /// Bumped when every invalidation starts and ends. A fill (memory insert,
    /// Redis write) carries the epoch its lookup started in and lands only if
    /// no invalidation started since and none is running.
    epoch: AtomicU64,
    /// Invalidations running now: while any is, nothing is filled and Redis
    /// is not read (its copies may be the ones being removed).
    invalidating: AtomicU64,
    /// Orders memory fills against invalidations' removals (the epoch check
    /// and the insert happen under it).
    fill_lock: Mutex<()>,
    events: Events,
    /// Calls at least this long are reported (`SlowCall`).
    slow_call: Duration,
    /// Keys whose Redis copies an invalidation could not delete: never read
    /// from Redis here, and deleted again by the next invalidation.
    unreached: Mutex<HashSet<String>>,
    /// Drops memory and Redis copies that other instances invalidated
    /// (running while there is a memory tier or Redis; stopped by `close`).
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// `writeLegacyFormat`: Redis values are written in the TypeScript
    /// format (the durable store writes its rows so itself), and rows in
    /// that format are left in it.
    write_legacy: bool,
    /// `regenerateMinBytes` (0: never).
    regenerate_min_bytes: usize,
    /// Keys whose rows a regeneration did not match (another writer version,
    /// say): not regenerated again until invalidated, as each attempt would
    /// cost a generation on top of the read. Bounded (cleared when full).
    unproven: Mutex<HashSet<String>>,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

/// Where Redis is, by precedence: the options (`redisClusterNodes`, then
/// `redisUrl`), then the environment (`REDIS_CLUSTER_NODES`, then
/// `REDIS_URL`). An explicit option beats the environment, so `redisUrl: ''`
/// turns Redis off whatever the environment says. None: no Redis tier.
fn redis_target(
    cluster: Option<Vec<String>>,
    url: Option<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<RedisTarget> {
    let target = match (cluster, url) {
        (Some(nodes), _) => RedisTarget::Cluster(nodes),
        (None, Some(url)) => RedisTarget::Single(url),
        (None, None) => {
            let nodes: Vec<String> = env("REDIS_CLUSTER_NODES")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if nodes.is_empty() {
                RedisTarget::Single(env("REDIS_URL")?)
            } else {
                RedisTarget::Cluster(nodes)
            }
        }
    };
    match &target {
        RedisTarget::Single(url) if url.trim().is_empty() => None,
        _ => Some(target),
    }
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
            write_legacy_format: opts.write_legacy_format.unwrap_or(false),
        };
        let redis_target = redis_target(
            opts.redis_cluster_nodes.filter(|nodes| !nodes.is_empty()),
            opts.redis_url,
            env_nonempty,
        );
        let min_throughput = opts
            .redis_min_throughput_mbps
            .unwrap_or(DEFAULT_REDIS_MIN_THROUGHPUT_MBPS);
        if !(min_throughput.is_finite() && min_throughput > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "redisMinThroughputMbps must be a positive number, got {min_throughput}"
            )));
        }
        let redis_timeout = opts.redis_timeout_ms.unwrap_or(DEFAULT_REDIS_TIMEOUT_MS);
        let cooldown = opts
            .redis_breaker_cooldown_ms
            .unwrap_or(DEFAULT_REDIS_BREAKER_COOLDOWN_MS);
        if redis_timeout == 0 || cooldown < 10 {
            return Err(Error::InvalidArgument(format!(
                "redisTimeoutMs must be at least 1 and redisBreakerCooldownMs at least 10, got {redis_timeout} and {cooldown}"
            )));
        }
        let redis = match redis_target {
            Some(target) => {
                let tier = RedisTier::new(
                    &target,
                    RedisOptions {
                        prefix: opts
                            .redis_key_prefix
                            .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string()),
                        ttl_seconds: opts.redis_ttl_seconds.unwrap_or(DEFAULT_REDIS_TTL_SECONDS),
                        timeout: Duration::from_millis(redis_timeout),
                        min_rate: min_throughput * 1e6,
                        cooldown: Duration::from_millis(cooldown),
                        events: opts.on_event.clone(),
                    },
                )?;
                tier.connect().await;
                Some(tier)
            }
            None => None,
        };
        let memory_max = opts.memory_max_bytes.unwrap_or(DEFAULT_MEMORY_MAX_BYTES);
        let durable = Durable::open(&url, &durable_opts).await?;
        let cache = Cache {
            inner: Arc::new(Inner {
                memory: (memory_max > 0).then(|| MemoryTier::new(memory_max)),
                redis,
                durable,
                inflight: Mutex::new(HashMap::new()),
                background: Background::default(),
                stats: Stats::default(),
                closed: AtomicBool::new(false),
                epoch: AtomicU64::new(0),
                invalidating: AtomicU64::new(0),
                fill_lock: Mutex::new(()),
                unreached: Mutex::new(HashSet::new()),
                follower: Mutex::new(None),
                write_legacy: durable_opts.write_legacy_format,
                events: opts.on_event,
                slow_call: Duration::from_millis(opts.slow_call_ms.unwrap_or(DEFAULT_SLOW_CALL_MS)),
                regenerate_min_bytes: usize::try_from(
                    opts.regenerate_min_bytes
                        .unwrap_or(DEFAULT_REGENERATE_MIN_BYTES),
                )
                .unwrap_or(usize::MAX),
                unproven: Mutex::new(HashSet::new()),
            }),
        };
        cache.follow_invalidations().await;
        Ok(cache)
    }

    /// Keeps the memory tier, and the Redis copies this instance writes, in
    /// step with invalidations made by any instance sharing the durable
    /// store (README "Many instances"). An instance without a memory tier
    /// follows too: its background Redis writes can land after another
    /// instance's delete. The task holds the cache weakly, so a dropped
    /// cache is not kept alive by it.
    async fn follow_invalidations(&self) {
        if self.inner.memory.is_none() && self.inner.redis.is_none() {
            return;
        }
        let mut follower = self.inner.durable.follower().await;
        let inner = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            loop {
                let notice = follower.next().await;
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                inner.forget(&notice);
                if let Notice::Forget(keys) = &notice {
                    // A Redis copy can outlive the invalidation: read here
                    // before the invalidating instance deleted it, or written
                    // by a fill of ours that began before the notice. So our
                    // pending writes finish, our own delete follows, and
                    // memory is cleared once more.
                    inner.background.wait().await;
                    // Keys it cannot delete are not served from Redis here
                    // and are retried with the next delete (a notice or an
                    // invalidation of this instance): the error is recorded.
                    let _ = inner.delete_from_redis(keys).await;
                    inner.forget(&notice);
                }
            }
        });
        *self.inner.follower.lock().expect("follower lock") = Some(task);
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Relaxed) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The cached matrix for `cfg`, generating and storing it on a miss. The
    /// entry is in the key's bucket order: use [`Hit::for_caller`] for `cfg`'s.
    pub async fn get_or_generate(&self, cfg: &ScenarioConfig) -> Result<Hit> {
        self.get_or_generate_keyed(cfg, key::canonical_key(cfg), false)
            .await
    }

    /// The decoded (and verified) matrix for `cfg`, row-major, with its
    /// columns in `cfg`'s bucket order: the generator's own output on a miss,
    /// else the stored payload decoded off the async threads.
    pub async fn get_matrix(&self, cfg: &ScenarioConfig) -> Result<(Hit, Vec<f32>)> {
        let hit = self
            .get_or_generate_keyed(cfg, key::canonical_key(cfg), true)
            .await?;
        Self::matrix_for_caller(hit, cfg).await
    }

    /// The second half of [`Cache::get_matrix`]: the caller's own decoded
    /// copy of a hit from `get_or_generate_keyed(.., keep_matrix: true)`.
    pub async fn matrix_for_caller(mut hit: Hit, cfg: &ScenarioConfig) -> Result<(Hit, Vec<f32>)> {
        let order = ColumnOrder::for_config(cfg);
        let generated = hit.matrix.take();
        let entry = hit.entry.clone();
        let matrix = blocking(move || {
            let mut m = match generated {
                // Joiners of one flight share it; each caller gets its own copy.
                Some(m) => Arc::try_unwrap(m).unwrap_or_else(|shared| shared.as_ref().clone()),
                None => entry.decode()?,
            };
            order.matrix(&mut m);
            Ok(m)
        })
        .await?;
        Ok((hit, matrix))
    }

    /// Runs `f` over `cfg`'s matrix (row-major, columns in `cfg`'s bucket
    /// order, got or generated like [`Cache::get_matrix`]) off the async
    /// threads: work that reads the matrix where it is rather than handing it
    /// out (portfolio statistics, the optimiser).
    pub async fn with_matrix<T: Send + 'static>(
        &self,
        cfg: &ScenarioConfig,
        f: impl FnOnce(&[f32]) -> Result<T> + Send + 'static,
    ) -> Result<(Hit, T)> {
        let (hit, matrix) = self.get_matrix(cfg).await?;
        let out = blocking(move || f(&matrix)).await?;
        Ok((hit, out))
    }

    /// The caller's copy of `hit` in `cfg`'s bucket order (see
    /// [`Hit::into_caller`]); a large hit from memory is mapped rather than
    /// copied (see `Inner::seal`).
    pub async fn for_caller(&self, hit: Hit, cfg: Option<&ScenarioConfig>) -> Result<CallerCopy> {
        let hit = if hit.source == Source::Memory {
            self.inner.seal(hit).await
        } else {
            hit
        };
        hit.into_caller(cfg)
    }

    /// The memory tier alone, synchronously: lets the binding answer a hit on
    /// the calling thread without a trip through the runtime. Counts hits only;
    /// a miss is counted by the lookup that follows.
    pub fn get_from_memory(&self, cfg: &ScenarioConfig, key: &str) -> Result<Option<Hit>> {
        self.check_open()?;
        let started = Instant::now();
        let found = self.inner.memory.as_ref().and_then(|m| m.get(key));
        let Some(entry) = found.filter(|e| serves(e, Some(cfg))) else {
            return Ok(None);
        };
        self.inner.stats.memory.hit(entry.payload.len());
        self.inner
            .stats
            .record_call(Outcome::Hit(Source::Memory), started.elapsed());
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
        self.get_or_join(cfg, key, keep_matrix)
            .await
            .map(|(hit, _)| hit)
    }

    /// [`Cache::get_or_generate_keyed`], also saying whether the call joined
    /// a lookup or generation that another call had started (then `true`).
    pub async fn get_or_join(
        &self,
        cfg: &ScenarioConfig,
        key: String,
        keep_matrix: bool,
    ) -> Result<(Hit, bool)> {
        let started = Instant::now();
        let result = self.join_or_lead(cfg, key.clone(), keep_matrix).await;
        let outcome = match &result {
            Ok((hit, _)) if hit.source != Source::Generated => Outcome::Hit(hit.source),
            Ok((_, true)) => Outcome::Joined,
            Ok((_, false)) => Outcome::Generated,
            Err(_) => Outcome::Failed,
        };
        self.finished(&key, outcome, started.elapsed());
        result
    }

    /// The flight for `key`: a new one, or the one under way (then `true`).
    async fn join_or_lead(
        &self,
        cfg: &ScenarioConfig,
        key: String,
        keep_matrix: bool,
    ) -> Result<(Hit, bool)> {
        self.check_open()?;
        let (flight, joined) = {
            let mut inflight = self.inner.inflight.lock().expect("inflight lock");
            if let Some(f) = inflight.get(&key) {
                self.inner.stats.single_flight_joins.fetch_add(1, Relaxed);
                (f.clone(), true)
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
                (f, false)
            }
        };
        Ok((flight.await?, joined))
    }

    /// Whether each store answers now (one trivial request each, at once),
    /// for readiness probes; the durable store is the one a server needs.
    pub async fn ping(&self) -> Result<Health> {
        self.check_open()?;
        let redis = async {
            match &self.inner.redis {
                Some(r) => Some(TierHealth::of(r.ping()).await),
                None => None,
            }
        };
        let (durable, redis) = tokio::join!(TierHealth::of(self.inner.durable.ping()), redis);
        Ok(Health { durable, redis })
    }

    /// Records how long a caller waited for a result of `source`, measured by
    /// the binding up to the hand-off (`stats().latency_to_caller`).
    pub fn record_to_caller(&self, source: Source, took: Duration) {
        self.inner.stats.record_to_caller(source, took);
    }

    /// Counts a finished call, and reports it when slow.
    fn finished(&self, key: &str, outcome: Outcome, took: Duration) {
        self.inner.stats.record_call(outcome, took);
        if took >= self.inner.slow_call {
            self.inner.events.emit(|| {
                Event::new(EventKind::SlowCall)
                    .key(key)
                    .message(outcome.as_str())
                    .ms(took.as_secs_f64() * 1000.0)
            });
        }
    }

    /// Counts a lookup call that was refused before it reached the cache (a
    /// config or argument the binding could not read), so `calls` has it.
    pub fn record_refused(&self) {
        self.inner
            .stats
            .record_call(Outcome::Failed, Duration::ZERO);
    }

    /// Lookup only: never generates. `None` when no tier has a copy that can
    /// be served without the config (legacy copies of several buckets, and
    /// legacy Redis values, need it).
    pub async fn get(&self, key: &str) -> Result<Option<Hit>> {
        let started = Instant::now();
        let result = self.lookup_by_key(key).await;
        let outcome = match &result {
            Ok(Some(hit)) => Outcome::Hit(hit.source),
            Ok(None) => Outcome::NotFound,
            Err(_) => Outcome::Failed,
        };
        self.finished(key, outcome, started.elapsed());
        result
    }

    async fn lookup_by_key(&self, key: &str) -> Result<Option<Hit>> {
        self.check_open()?;
        check_key(key)?;
        let epoch = self.inner.epoch.load(SeqCst);
        self.inner.lookup(key, None, epoch).await
    }

    /// Removes `key` from every tier; true when any tier had it. Calls for the
    /// key that are in flight may still receive their result, but nothing
    /// they would store lands after this resolves.
    pub async fn invalidate(&self, key: &str) -> Result<bool> {
        self.check_open()?;
        check_key(key)?;
        let keys = [key.to_string()];
        let inner = &self.inner;
        let _window = inner.quiesce(Some(key)).await;
        let in_durable = !inner.durable.invalidate(Scope::Key(key)).await?.is_empty();
        let in_memory = inner.remove_from_memory(&keys);
        let in_redis = inner.delete_from_redis(&keys).await?;
        Ok(in_durable || in_redis > 0 || in_memory)
    }

    /// Removes every matrix of a fund (optionally one taxonomy version) from
    /// every tier; returns how many the durable store held. Rows the
    /// TypeScript app left 'pending', 'processing' or 'failed' are not
    /// matrices: they stay, and are not counted.
    /// Rejects with `E_INVALIDATION_INCOMPLETE` when Redis could not be
    /// reached: the durable rows are gone, and the next invalidation retries
    /// the Redis copies (this process never serves them meanwhile).
    pub async fn invalidate_fund(
        &self,
        fund_id: &str,
        taxonomy_version: Option<&str>,
    ) -> Result<u64> {
        self.check_open()?;
        let inner = &self.inner;
        let _window = inner.quiesce(None).await;
        let keys = inner
            .durable
            .invalidate(Scope::Fund {
                fund_id,
                taxonomy_version,
            })
            .await?;
        inner.remove_from_memory(&keys);
        inner.delete_from_redis(&keys).await?;
        Ok(keys.len() as u64)
    }

    pub fn stats(&self) -> StatsSnapshot {
        // moka counts entries and bytes in its maintenance, which runs only
        // now and then: without this, a busy memory tier can read as empty.
        let memory = self.inner.memory.as_ref().map(|m| {
            m.sync();
            m.stats()
        });
        let breaker = self.inner.redis.as_ref().map(|r| r.breaker());
        self.inner.stats.snapshot(memory, breaker)
    }

    /// Refuses new calls, waits for the background writes pending now,
    /// closes the pools and the Redis connection.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Relaxed) {
            return;
        }
        if let Some(task) = self.inner.follower.lock().expect("follower lock").take() {
            task.abort();
        }
        self.inner.background.wait().await;
        self.inner.durable.close().await;
        if let Some(r) = &self.inner.redis {
            r.close().await;
        }
        if let Some(m) = &self.inner.memory {
            m.clear();
        }
    }

    /// Waits until the background writes pending now are done (later ones
    /// are not waited for, so steady traffic cannot hold it up).
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

/// Whether a normalised entry can answer a call: complete metadata (names and
/// recycling multiples), and when the config is known, the shape of its key.
fn serves(e: &Entry, cfg: Option<&ScenarioConfig>) -> bool {
    e.codec == Codec::Zstd
        && !e.metadata.lacks_recycling()
        && e.metadata.bucket_names.len() == e.metadata.num_buckets as usize
        && cfg.is_none_or(|c| view::check_fits(&e.metadata, c).is_ok())
}

/// Whether a durable row as read may stand for `cfg`'s key (else a miss
/// replaces it): ours (in either format), or a TypeScript payload of one
/// bucket (the only shape of its rows whose columns are known), with the
/// dimensions of the key.
fn attributable(e: &Entry, cfg: &ScenarioConfig) -> bool {
    (e.codec == Codec::Zstd || e.names_columns() || e.metadata.num_buckets == 1)
        && view::check_fits(&e.metadata, cfg).is_ok()
}

/// An invalidation in progress; dropping it (also on error or cancellation)
/// bumps the epoch again, so fills of lookups that started inside the window
/// never land either.
struct InvalidationWindow<'a>(&'a Inner);

impl Drop for InvalidationWindow<'_> {
    fn drop(&mut self) {
        self.0.epoch.fetch_add(1, SeqCst);
        self.0.invalidating.fetch_sub(1, SeqCst);
    }
}

/// What [`Inner::normalise`] made of a stored copy.
enum Normalised {
    /// Ready to serve (and, when complete, to fill the faster tiers).
    Ready(Entry),
    /// Not this key's matrix, or not attributable to buckets: never served.
    Unusable,
}

impl Inner {
    /// Lookup, then generation under the durable store's per-key lock.
    async fn resolve(
        self: &Arc<Self>,
        cfg: &ScenarioConfig,
        key: &str,
        keep_matrix: bool,
    ) -> Result<Hit> {
        let epoch = self.epoch.load(SeqCst);
        if let Some(mut hit) = self.lookup(key, Some(cfg), epoch).await? {
            if !keep_matrix {
                // A regenerated hit's matrix, which this call does not hand out.
                hit.matrix = None;
            }
            return Ok(hit);
        }
        let cfg_owned = cfg.clone();
        let generated: Arc<Mutex<Option<Arc<Vec<f32>>>>> = Arc::default();
        let slot = generated.clone();
        let (entry, inserted) = self
            .durable
            .get_or_replace(
                cfg,
                key,
                |e| attributable(e, cfg),
                move || async move {
                    let (entry, matrix) = generate(cfg_owned).await?;
                    if keep_matrix {
                        *slot.lock().expect("slot lock") = Some(matrix);
                    }
                    Ok(entry)
                },
            )
            .await
            .inspect_err(|e| self.tier_failed("durable", key, e))?;
        let (entry, source, matrix) = if inserted {
            self.stats.generations.fetch_add(1, Relaxed);
            let matrix = generated.lock().expect("slot lock").take();
            (entry, Source::Generated, matrix)
        } else {
            // Another process (or a writer that takes no lock) stored it while
            // we waited: the stored row is the answer, for this caller too.
            self.stats.durable.hit(entry.payload.len());
            match self.normalise(entry, Some(cfg)).await {
                Ok(Normalised::Ready(e)) if self.check(&e) => (e, self.durable.source(), None),
                Ok(_) => return Err(self.corrupt(key, "the stored row does not fit its key")),
                Err(e) => return Err(self.corrupt(key, &e.to_string())),
            }
        };
        self.fill(&entry, epoch, true);
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
        epoch: u64,
    ) -> Result<Option<Hit>> {
        if let Some(m) = &self.memory {
            if let Some(entry) = m.get(key).filter(|e| serves(e, cfg)) {
                self.stats.memory.hit(entry.payload.len());
                return Ok(Some(Hit {
                    entry,
                    source: Source::Memory,
                    matrix: None,
                }));
            }
            self.stats.memory.miss();
        }

        // A legacy Redis value is only a hint: the durable row (with the
        // metadata the app recorded) is preferred, and without one the value
        // is stored durably before it is served.
        let mut legacy_value = None;
        let unreached = self.invalidating.load(SeqCst) > 0
            || self.unreached.lock().expect("unreached lock").contains(key);
        if let (Some(r), false) = (&self.redis, unreached) {
            let raw_len = cfg.map(|c| c.num_scenarios as usize * c.buckets.len() * 4);
            match r.get(key, raw_len).await {
                // Ours, in our format or (from the transition mode) the TypeScript one.
                Ok(Lookup::Hit(entry)) if entry.codec == Codec::Zstd || entry.names_columns() => {
                    let complete = !entry.metadata.lacks_recycling();
                    let other_format = (entry.codec == Codec::Zstd) == self.write_legacy;
                    match self.normalise(entry, cfg).await {
                        Ok(Normalised::Ready(entry)) if self.check(&entry) => {
                            self.stats.redis.hit(entry.payload.len());
                            // Completed multiples go back to Redis too, and
                            // so does a copy in the format this instance
                            // does not write.
                            self.fill(&entry, epoch, !complete || other_format);
                            return Ok(Some(Hit {
                                entry,
                                source: Source::Redis,
                                matrix: None,
                            }));
                        }
                        // Counted as corrupt; the durable copy (or a new one) overwrites it.
                        _ => {
                            self.corrupt_seen(
                                Some("redis"),
                                key,
                                "a checksum, length or shape check failed",
                            );
                            self.stats.redis.miss();
                        }
                    }
                }
                Ok(Lookup::Hit(legacy)) => {
                    // A legacy value of another shape than the key's is corrupt
                    // (counted; the answer below overwrites it).
                    if cfg.is_some_and(|c| view::check_fits(&legacy.metadata, c).is_err()) {
                        self.corrupt_seen(
                            Some("redis"),
                            key,
                            "a legacy value of another shape than the key's",
                        );
                    } else {
                        legacy_value = Some(legacy);
                    }
                    self.stats.redis.miss();
                }
                Ok(Lookup::Undecodable(why)) => {
                    self.corrupt_seen(Some("redis"), key, &why);
                    self.stats.redis.miss();
                }
                Ok(Lookup::Outdated) | Ok(Lookup::Miss) => self.stats.redis.miss(),
                // Counted by the breaker.
                Ok(Lookup::Skipped) => {}
                Err(e) => self.tier_failed("redis", key, &e),
            }
        }

        if let Some(cfg) = cfg {
            if let Some(hit) = self.regenerated_hit(cfg, key, epoch).await? {
                return Ok(Some(hit));
            }
        }
        let found = self
            .durable
            .get(key)
            .await
            .inspect_err(|e| self.tier_failed("durable", key, e))?;
        let Some(entry) = found else {
            self.stats.durable.miss();
            return match (legacy_value, cfg) {
                (Some(legacy), Some(cfg)) => self.adopt_legacy_value(legacy, cfg, key, epoch).await,
                _ => Ok(None),
            };
        };
        let legacy = entry.codec != Codec::Zstd;
        // A row the transition mode wrote, read once the mode is off.
        let convert = legacy && entry.names_columns() && !self.write_legacy;
        let stored = entry.clone(); // cheap: the payload is shared
        match self.normalise(entry, cfg).await {
            Ok(Normalised::Ready(entry)) if self.check(&entry) => {
                self.stats.durable.hit(entry.payload.len());
                if legacy {
                    self.stats.legacy_rewrites.fetch_add(1, Relaxed);
                }
                if let (true, Some(cfg)) = (convert, cfg) {
                    self.convert_row(cfg, &entry);
                }
                self.fill(&entry, epoch, true);
                Ok(Some(Hit {
                    entry,
                    source: self.durable.source(),
                    matrix: None,
                }))
            }
            // Not this key's matrix: a miss, whose generation replaces it.
            Ok(Normalised::Unusable) => {
                self.stats.durable.miss();
                Ok(None)
            }
            // The source of truth is damaged: repaired when the config is
            // known and the repair can be proven, else reported.
            Ok(Normalised::Ready(_)) => {
                self.repair(stored, cfg, key, "a checksum or length check failed", epoch)
                    .await
            }
            Err(e) => self.repair(stored, cfg, key, &e.to_string(), epoch).await,
        }
    }

    /// A durable hit of a large matrix without reading the row's payload:
    /// the generator is deterministic, so the matrix is generated and
    /// encoded again, and served when the encoding has the row's length and
    /// its first `HEAD_BYTES` bytes are the row's: the envelope header and
    /// the chunk table, which holds every chunk's length and the checksums
    /// of its stored and its raw bytes (the ones a normal hit verifies the
    /// row by), and the start of the first chunk. A row of another writer
    /// version, another generator, or damaged in those bytes differs, and
    /// is read whole as before (`None`), as is any row when the head read or
    /// the generation fails. The metadata is the row's. Only for
    /// rows served as they are stored (our format, the key's column order,
    /// complete metadata), with `regenerateMinBytes` on and the matrix at
    /// least that large. Costs the generation's CPU instead of the transfer:
    /// see README ("Options") for when it pays. Damage past the first
    /// 64 KiB is not seen here (the bytes served are the checksummed ones
    /// all the same); reading the row whole, or `verify`, finds it.
    async fn regenerated_hit(
        self: &Arc<Self>,
        cfg: &ScenarioConfig,
        key: &str,
        epoch: u64,
    ) -> Result<Option<Hit>> {
        let raw = cfg.num_scenarios as usize * cfg.buckets.len() * 4;
        if self.regenerate_min_bytes == 0
            || raw < self.regenerate_min_bytes
            || self.write_legacy
            || self.unproven.lock().expect("unproven lock").contains(key)
        {
            return Ok(None);
        }
        // A failed head read or generation is reported and the row read
        // whole, which may well answer.
        let head = match self.durable.head(key, HEAD_BYTES).await {
            Ok(head) => head,
            Err(e) => {
                self.tier_failed("durable", key, &e);
                return Ok(None);
            }
        };
        let Some((head, len)) = head else {
            return Ok(None);
        };
        let as_stored = head.codec == Codec::Zstd
            && view::key_order_of(&head.metadata.bucket_names).is_identity()
            && serves(&head, Some(cfg));
        if !as_stored || len <= head.payload.len() {
            // Not served as stored, or short enough to read whole anyway.
            return Ok(None);
        }
        // Not counted in `generations` (misses); in `regenerated_hits`.
        let (fresh, matrix) = match generate(cfg.clone()).await {
            Ok(made) => made,
            Err(e) => {
                self.tier_failed("durable", key, &e);
                return Ok(None);
            }
        };
        if fresh.payload.len() != len || fresh.payload[..head.payload.len()] != head.payload[..] {
            self.stats.regenerations_unproven.fetch_add(1, Relaxed);
            let mut unproven = self.unproven.lock().expect("unproven lock");
            if unproven.len() >= 1024 {
                unproven.clear();
            }
            unproven.insert(key.to_string());
            return Ok(None);
        }
        let entry = Entry::new(fresh.payload, Codec::Zstd, head.metadata);
        self.stats.durable.hit(entry.payload.len());
        self.stats.regenerated_hits.fetch_add(1, Relaxed);
        self.fill(&entry, epoch, true);
        Ok(Some(Hit {
            entry,
            source: self.durable.source(),
            matrix: Some(matrix),
        }))
    }

    /// A damaged durable row of ours, for a call that knows its config: the
    /// generator is deterministic, so the matrix is generated again, proven
    /// equal to what was stored through the raw-data checksums that survive
    /// in the row's chunk table, and the row is rewritten. Without the
    /// config, or without that proof, `E_CORRUPT` (and nothing overwritten).
    async fn repair(
        self: &Arc<Self>,
        damaged: Entry,
        cfg: Option<&ScenarioConfig>,
        key: &str,
        why: &str,
        epoch: u64,
    ) -> Result<Option<Hit>> {
        let Some(cfg) = cfg else {
            return Err(self.corrupt(key, why));
        };
        // Only rows in the key's column order are compared (rows of older
        // versions in another order are not repaired).
        let comparable = damaged.codec == Codec::Zstd
            && view::key_order_of(&damaged.metadata.bucket_names).is_identity();
        if !comparable || codec::read_header(&damaged.payload).is_err() {
            return Err(self.corrupt(
                key,
                &format!("{why}; not repaired: no readable checksums to prove a regenerated matrix equal to it"),
            ));
        }
        let (fresh, matrix) = generate(cfg.clone()).await?;
        self.stats.generations.fetch_add(1, Relaxed);
        let payload = damaged.payload.clone();
        match blocking(move || codec::raw_checksums_match(&payload, &matrix)).await {
            Ok(true) => {}
            Ok(false) => return Err(self.corrupt(
                key,
                &format!("{why}; not repaired: the regenerated matrix contradicts the checksums the row still holds, so the row was left as it is"),
            )),
            Err(e) => return Err(self.corrupt(
                key,
                &format!("{why}; not repaired: no readable checksums to prove a regenerated matrix equal to it ({e})"),
            )),
        }
        // Replace the damaged row. If another process repaired or
        // regenerated it meanwhile, its row is the same bytes (the generator
        // and encoder are deterministic) and is kept.
        self.durable
            .delete(key)
            .await
            .inspect_err(|e| self.tier_failed("durable", key, e))?;
        let (entry, inserted) = self
            .durable
            .get_or_replace(
                cfg,
                key,
                |e| attributable(e, cfg) && self.check(e),
                move || async move { Ok(fresh) },
            )
            .await
            .inspect_err(|e| self.tier_failed("durable", key, e))?;
        let entry = if inserted {
            entry
        } else {
            // A writer that takes no lock stored a row meanwhile: served only
            // once it passes the checks every stored row passes.
            match self.normalise(entry, Some(cfg)).await {
                Ok(Normalised::Ready(e)) if self.check(&e) => e,
                _ => {
                    return Err(
                        self.corrupt(key, "the row stored during the repair does not fit its key")
                    )
                }
            }
        };
        self.corrupt_seen(Some("durable"), key, why);
        self.stats.repairs.fetch_add(1, Relaxed);
        self.events.emit(|| {
            Event::new(EventKind::Repair)
                .tier("durable")
                .key(key)
                .message(format!("regenerated, proven equal and rewritten ({why})"))
        });
        self.fill(&entry, epoch, true);
        Ok(Some(Hit {
            entry,
            source: Source::Generated,
            matrix: None,
        }))
    }

    /// Rewrites the durable row of `entry` (read from a row the transition
    /// mode wrote) in our format, in the background: the hit does not wait.
    fn convert_row(self: &Arc<Self>, cfg: &ScenarioConfig, entry: &Entry) {
        let (inner, cfg, entry) = (self.clone(), cfg.clone(), entry.clone());
        self.background.spawn(async move {
            let key = &entry.metadata.config_hash;
            if let Err(e) = inner.durable.convert(&cfg, key, &entry).await {
                inner.tier_failed("durable", key, &e);
            }
        });
    }

    /// A verified TypeScript matrix found only in Redis: stored durably (with
    /// its unknown metadata left unknown) so every later call, in any process,
    /// gets the same one; then served.
    async fn adopt_legacy_value(
        self: &Arc<Self>,
        legacy: Entry,
        cfg: &ScenarioConfig,
        key: &str,
        epoch: u64,
    ) -> Result<Option<Hit>> {
        let entry = match self.normalise(legacy, Some(cfg)).await {
            Ok(Normalised::Ready(e)) => e,
            Ok(Normalised::Unusable) | Err(_) => return Ok(None),
        };
        let adopted = entry.clone();
        let (stored, inserted) = self
            .durable
            .get_or_replace(
                cfg,
                key,
                |e| attributable(e, cfg),
                move || async move { Ok(adopted) },
            )
            .await
            .inspect_err(|e| self.tier_failed("durable", key, e))?;
        let (entry, source) = if inserted {
            self.stats.legacy_rewrites.fetch_add(1, Relaxed);
            (entry, Source::Redis)
        } else {
            match self.normalise(stored, Some(cfg)).await {
                Ok(Normalised::Ready(e)) if self.check(&e) => (e, self.durable.source()),
                _ => return Err(self.corrupt(key, "the stored row does not fit its key")),
            }
        };
        self.fill(&entry, epoch, true);
        Ok(Some(Hit {
            entry,
            source,
            matrix: None,
        }))
    }

    /// A failed request to `tier`: counted, and reported to the event sink.
    fn tier_failed(&self, tier: &'static str, key: &str, e: &Error) {
        match tier {
            "redis" => self.stats.redis.error(),
            _ => self.stats.durable.error(),
        }
        self.events.emit(|| {
            Event::new(EventKind::TierError)
                .tier(tier)
                .key(key)
                .message(e)
        });
    }

    /// A stored copy that failed its checks: counted, and reported.
    fn corrupt_seen(&self, tier: Option<&'static str>, key: &str, why: &str) {
        self.stats.corrupt_entries.fetch_add(1, Relaxed);
        self.events.emit(|| {
            let e = Event::new(EventKind::CorruptEntry).key(key).message(why);
            match tier {
                Some(t) => e.tier(t),
                None => e,
            }
        });
    }

    fn corrupt(&self, key: &str, why: &str) -> Error {
        self.corrupt_seen(Some("durable"), key, why);
        Error::Corrupt(format!(
            "stored matrix {key} is unreadable ({why}); invalidate it to regenerate"
        ))
    }

    /// Integrity check before serving a stored envelope: the header, every
    /// chunk's stored-bytes checksum and dimensions matching the metadata (the
    /// raw-data checksums are checked whenever the matrix is decoded). Stored
    /// copies never carry a column map: they are in the key's order.
    fn check(&self, e: &Entry) -> bool {
        codec::verify(&e.payload).is_ok_and(|h| {
            h.num_scenarios == e.metadata.num_scenarios
                && h.num_buckets == e.metadata.num_buckets
                && h.column_map.is_none()
        })
    }

    /// Brings a stored copy to the form calls are served from: our envelope,
    /// columns in the key's bucket order, and (when the config is known) the
    /// bucket names and recycling multiples filled in and the shape checked
    /// against the key. Decodes only when something must change.
    async fn normalise(&self, entry: Entry, cfg: Option<&ScenarioConfig>) -> Result<Normalised> {
        let m = &entry.metadata;
        let legacy = entry.codec != Codec::Zstd;
        if legacy && m.num_buckets != 1 && !entry.names_columns() {
            // The TypeScript code recorded no column order.
            self.stats.legacy_unattributable.fetch_add(1, Relaxed);
            return Ok(Normalised::Unusable);
        }
        if let Some(cfg) = cfg {
            if let Err(e) = view::check_fits(m, cfg) {
                self.corrupt_seen(None, &m.config_hash, &e.to_string());
                return Ok(Normalised::Unusable);
            }
        }
        // Rows written before columns followed the key list their columns in
        // their writer's order.
        let to_key_order = view::key_order_of(&m.bucket_names);
        let reorder = !to_key_order.is_identity();
        let fill_recycling = m.lacks_recycling() && cfg.is_some();
        let fill_names = m.bucket_names.is_empty() && cfg.is_some();
        if !legacy && !reorder && !fill_recycling {
            return Ok(Normalised::Ready(entry));
        }
        let norm = cfg.map(key::normalised);
        blocking(move || {
            let mut matrix = entry.decode()?;
            let mut e = entry;
            let (rows, cols) = (e.metadata.num_scenarios, e.metadata.num_buckets);
            if reorder {
                to_key_order.matrix(&mut matrix);
                e.metadata = to_key_order.metadata(&e.metadata);
            }
            if let Some(norm) = &norm {
                if fill_names {
                    e.metadata.bucket_names = norm.buckets.iter().map(|b| b.name.clone()).collect();
                }
                if e.metadata.lacks_recycling() {
                    e.metadata.recycling_multiples = generator::recycling_multiples(norm, &matrix);
                }
            }
            if legacy || reorder {
                e.payload = codec::encode(&matrix, rows, cols)?.into();
                e.codec = Codec::Zstd;
            }
            // What was derived belongs to the payload it came from.
            e.derived = Default::default();
            Ok(Normalised::Ready(e))
        })
        .await
    }

    /// Fills memory (and with `redis`, Redis in the background) with a
    /// complete entry, unless an invalidation happened since `epoch`.
    fn fill(self: &Arc<Self>, e: &Entry, epoch: u64, redis: bool) {
        if !serves(e, None) {
            // A legacy copy read without its config: served, never cached.
            return;
        }
        if let Some(m) = &self.memory {
            let _order = self.fill_lock.lock().expect("fill lock");
            if self.may_fill(epoch) {
                m.insert(e.clone());
            }
        }
        if redis && self.redis.is_some() {
            let inner = self.clone();
            let e = e.clone();
            self.background.spawn(async move {
                // Checked here, not when scheduled: an invalidation bumps the
                // epoch and then waits for every write already past this check.
                if !inner.may_fill(epoch) {
                    return;
                }
                if let Some(r) = &inner.redis {
                    let written = if inner.write_legacy {
                        put_typescript(r, &e).await
                    } else {
                        r.put(&e).await
                    };
                    if let Err(err) = written {
                        inner.tier_failed("redis", &e.metadata.config_hash, &err);
                    }
                }
            });
        }
    }

    /// `hit` (from memory) with its payload sealed, when it is large: the
    /// payload is copied into a sealed memory file (about 7 ms for 16 MB on
    /// the compute pool) and the memory tier's entry swapped for one over
    /// it, so that this caller and every later one map it instead of copying
    /// it (see [`crate::sealed`]). Done on an entry's first large hit, not
    /// when it is stored: a miss does not wait for it, and an entry never hit
    /// again never pays. The swap is made only while the memory tier still
    /// holds this very entry and no invalidation began (checked under the
    /// fill lock, as fills are); any failure leaves the copying entry.
    async fn seal(&self, mut hit: Hit) -> Hit {
        let e = &hit.entry;
        let Some(m) = &self.memory else {
            return hit;
        };
        if e.payload.len() < sealed::MIN_LEN
            || e.derived.sealed.get().is_some()
            || e.derived.sealing.swap(true, SeqCst)
        {
            return hit;
        }
        let derived = e.derived.clone();
        // Let a later hit try again unless this one sealed it.
        let _done = DropFn(move || derived.sealing.store(false, SeqCst));
        let epoch = self.epoch.load(SeqCst);
        let payload = e.payload.clone();
        // On the compute pool, whose threads yield to the event loop's.
        let (tx, rx) = tokio::sync::oneshot::channel();
        rayon::spawn(move || {
            let _ = tx.send(sealed::seal(&payload).ok());
        });
        let Ok(Some(s)) = rx.await else {
            return hit;
        };
        let s = Arc::new(s);
        let _order = self.fill_lock.lock().expect("fill lock");
        let e = &hit.entry;
        let same = m
            .get(&e.metadata.config_hash)
            .is_some_and(|cur| Arc::ptr_eq(&cur.derived, &e.derived));
        if self.may_fill(epoch) && same && e.derived.sealed.set(s.clone()).is_ok() {
            // Same bytes (the file is a copy of them) and what was derived
            // from them; the heap copy goes once its users do.
            let entry = Entry {
                payload: bytes::Bytes::from_owner(SealedBytes(s)),
                ..hit.entry.clone()
            };
            m.insert(entry.clone());
            hit.entry = entry;
        }
        hit
    }

    fn may_fill(&self, epoch: u64) -> bool {
        self.invalidating.load(SeqCst) == 0 && self.epoch.load(SeqCst) == epoch
    }

    /// Opens an invalidation window (closed when the guard drops): no fill
    /// that started before it, or starts inside it, lands. Bumps the epoch,
    /// then waits for in-flight calls (of `key`, or all) so their durable
    /// writes are done before the delete, and for background Redis writes
    /// already under way.
    async fn quiesce(&self, key: Option<&str>) -> InvalidationWindow<'_> {
        {
            let _order = self.fill_lock.lock().expect("fill lock");
            self.invalidating.fetch_add(1, SeqCst);
            self.epoch.fetch_add(1, SeqCst);
        }
        let window = InvalidationWindow(self);
        let flights: Vec<Flight> = {
            let inflight = self.inflight.lock().expect("inflight lock");
            match key {
                Some(k) => inflight.get(k).cloned().into_iter().collect(),
                None => inflight.values().cloned().collect(),
            }
        };
        for f in flights {
            let _ = f.await;
        }
        self.background.wait().await;
        window
    }

    /// Deletes Redis copies of `keys`, and any an earlier invalidation could
    /// not reach. Returns how many of `keys` existed.
    async fn delete_from_redis(&self, keys: &[String]) -> Result<u64> {
        let Some(r) = &self.redis else {
            return Ok(0);
        };
        let earlier: Vec<String> = {
            let own: HashSet<&String> = keys.iter().collect();
            let mut unreached = self.unreached.lock().expect("unreached lock");
            unreached.drain().filter(|k| !own.contains(k)).collect()
        };
        // Two deletes when earlier ones are left (rare): DEL counts the keys
        // it removed, and the answer is about `keys` only.
        let n = match r.delete(keys).await {
            Ok(n) => n,
            Err(e) => return Err(self.record_unreached(keys.iter().cloned().chain(earlier), &e)),
        };
        if !earlier.is_empty() {
            if let Err(e) = r.delete(&earlier).await {
                // The caller's keys are gone; only the earlier ones stay.
                self.record_unreached(earlier, &e);
            }
        }
        Ok(n)
    }

    /// Records Redis copies a delete could not reach (never read from Redis
    /// here, retried by the next delete) and says so.
    fn record_unreached(&self, keys: impl IntoIterator<Item = String>, e: &Error) -> Error {
        let mut all: Vec<String> = keys.into_iter().collect();
        all.sort();
        all.dedup();
        let n = all.len();
        self.stats.redis.error();
        self.events.emit(|| {
            Event::new(EventKind::TierError)
                .tier("redis")
                .message(format!("deleting {n} keys: {e}"))
        });
        self.unreached.lock().expect("unreached lock").extend(all);
        Error::InvalidationIncomplete(format!(
            "the durable store no longer holds the matrices, but {n} Redis copies could not be deleted ({e}); this process will not serve them, and the next invalidate or invalidateFund call retries them"
        ))
    }

    /// Another instance invalidated these keys (or notices were missed):
    /// their memory copies go, and fills of lookups already under way do not
    /// land (the epoch moves, as for a local invalidation).
    fn forget(&self, notice: &Notice) {
        let _order = self.fill_lock.lock().expect("fill lock");
        self.epoch.fetch_add(1, SeqCst);
        let Some(m) = &self.memory else {
            return;
        };
        match notice {
            Notice::Forget(keys) => keys.iter().for_each(|k| {
                m.remove(k);
            }),
            Notice::Missed => m.clear(),
        }
    }

    fn remove_from_memory(&self, keys: &[String]) -> bool {
        // A key's next row may be one a regeneration matches.
        {
            let mut unproven = self.unproven.lock().expect("unproven lock");
            for k in keys {
                unproven.remove(k);
            }
        }
        let Some(m) = &self.memory else {
            return false;
        };
        let _order = self.fill_lock.lock().expect("fill lock");
        keys.iter().fold(false, |any, k| m.remove(k) || any)
    }
}

impl Drop for Inner {
    /// A cache dropped without `close()` stops following invalidations (the
    /// task holds it weakly and would otherwise wait for the next notice).
    fn drop(&mut self) {
        if let Some(task) = self.follower.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// Background writes (Redis rewrites) and a way to wait for those pending
/// at a given moment.
#[derive(Default)]
struct Background {
    state: Arc<Mutex<Pending>>,
    done: Arc<tokio::sync::Notify>,
}

/// Writes are numbered in the order they were spawned.
#[derive(Default)]
struct Pending {
    next: u64,
    running: std::collections::BTreeSet<u64>,
}

impl Background {
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let id = {
            let mut p = self.state.lock().expect("background lock");
            p.next += 1;
            let id = p.next;
            p.running.insert(id);
            id
        };
        // Removed even if `work` panics (the guard drops on unwind).
        struct Done(u64, Arc<Mutex<Pending>>, Arc<tokio::sync::Notify>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.1
                    .lock()
                    .expect("background lock")
                    .running
                    .remove(&self.0);
                self.2.notify_waiters();
            }
        }
        let done = Done(id, self.state.clone(), self.done.clone());
        tokio::spawn(async move {
            let _done = done;
            work.await;
        });
    }

    /// Returns once every write spawned before this call is done.
    async fn wait(&self) {
        let last = self.state.lock().expect("background lock").next;
        loop {
            let notified = self.done.notified();
            let oldest = self
                .state
                .lock()
                .expect("background lock")
                .running
                .first()
                .copied();
            if oldest.is_none_or(|id| id > last) {
                return;
            }
            notified.await;
        }
    }
}

/// Runs CPU work on the blocking pool; a panic there becomes `E_INTERNAL`.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Internal(format!("worker failed: {e}"))))
}

/// Writes `e` to Redis as the TypeScript code writes a value (the transition
/// mode), converted on the blocking pool.
async fn put_typescript(r: &RedisTier, e: &Entry) -> Result<()> {
    let entry = e.clone();
    let value = blocking(move || {
        let zlib = codec::encode_legacy_zlib(&entry.decode()?);
        Ok(crate::tier::redis::typescript_value(&entry, &zlib))
    })
    .await?;
    r.put_typescript(&e.metadata.config_hash, &value).await
}

/// Runs its closure when dropped (also when the future holding it is).
struct DropFn<F: FnMut()>(F);

impl<F: FnMut()> Drop for DropFn<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// A sealed payload as the bytes of an entry.
struct SealedBytes(Arc<sealed::Sealed>);

impl AsRef<[u8]> for SealedBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().as_ref()
    }
}

async fn generate(cfg: ScenarioConfig) -> Result<(Entry, Arc<Vec<f32>>)> {
    blocking(move || {
        let (s, matrix) = scenario::run_with_matrix(&cfg)?;
        Ok((
            Entry::new(s.envelope.into(), Codec::Zstd, s.metadata),
            Arc::new(matrix),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_target_prefers_options_then_cluster_then_url() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[
            ("REDIS_CLUSTER_NODES", "redis://c1:1, redis://c2:2,"),
            ("REDIS_URL", "redis://one:6379"),
        ]);
        let nodes = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let cluster = |v: &[&str]| Some(RedisTarget::Cluster(nodes(v).unwrap()));
        let single = |u: &str| Some(RedisTarget::Single(u.into()));
        // Options beat the environment; the cluster option beats redisUrl.
        assert_eq!(
            redis_target(nodes(&["redis://o:1"]), Some("redis://u:1".into()), &both),
            cluster(&["redis://o:1"])
        );
        assert_eq!(
            redis_target(None, Some("redis://u:1".into()), &both),
            single("redis://u:1")
        );
        assert_eq!(redis_target(None, Some(String::new()), &both), None);
        // Then REDIS_CLUSTER_NODES (trimmed, empty items dropped), then REDIS_URL.
        assert_eq!(
            redis_target(None, None, &both),
            cluster(&["redis://c1:1", "redis://c2:2"])
        );
        let commas = env(&[
            ("REDIS_CLUSTER_NODES", " , "),
            ("REDIS_URL", "redis://one:6379"),
        ]);
        assert_eq!(
            redis_target(None, None, &commas),
            single("redis://one:6379")
        );
        assert_eq!(redis_target(None, None, env(&[])), None);
    }
}
