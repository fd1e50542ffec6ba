//! The `ScenarioMatrixCache` class: a thin shell over [`crate::cache::Cache`].
//! Configs are read on the JS thread; everything else runs on napi's tokio
//! runtime and settles a promise, rejecting with a coded error.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use napi::bindgen_prelude::{
    BufferSlice, Float32Array, Function, JsObjectValue, Object, PromiseRaw, ToNapiValue, Unknown,
};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::Env;
use napi::ValueType;
use napi_derive::napi;
use tokio::sync::OwnedSemaphorePermit;

use super::handoff::Handoff;
use super::{
    compressed_matrix, copy_js, js_error, metadata_js, panic_message, parse_config,
    read_optional_string, read_string, read_value, ScenarioMetadata, ScenarioResult,
};
use crate::cache::{self, Cache, CallerCopy, Hit};
use crate::config::ScenarioConfig;
use crate::events::Events;
use crate::scenario::Metadata;
use crate::stats::{LatencySnapshot, StatsSnapshot, TierSnapshot};
use crate::tier::Source;
use crate::view::ColumnOrder;
use crate::Error;

/// Runs `fut` on the runtime (a panic becomes `E_INTERNAL`) and converts its
/// value with `to_js` on the JS thread; errors reject with a coded JS error.
pub(super) fn promise<'e, T, J, F, C>(
    env: &'e Env,
    fut: F,
    to_js: C,
) -> napi::Result<PromiseRaw<'e, J>>
where
    T: Send + 'static,
    J: ToNapiValue,
    F: Future<Output = crate::Result<T>> + Send + 'static,
    C: FnOnce(&Env, T) -> napi::Result<J> + 'static,
{
    // An argument's getter may have thrown while it was read (see there).
    super::clear_pending_exception(env);
    let guarded = async move {
        Ok(AssertUnwindSafe(fut)
            .catch_unwind()
            .await
            .unwrap_or_else(|p| Err(Error::Internal(panic_message(&*p)))))
    };
    env.spawn_future_with_callback(guarded, move |env, r: crate::Result<T>| match r {
        Ok(t) => to_js(env, t),
        Err(e) => Err(js_error(env, &e)),
    })
}

/// Payloads up to this size are copied on the JS thread when a memory hit is
/// answered synchronously (about 0.1 ms); larger ones are copied off it.
const SYNC_COPY_MAX: usize = 1 << 20;

/// A caller's copy and its room in the hand-off budget, given back once the
/// copy is a JS value.
type Handed<T> = (T, OwnedSemaphorePermit);

/// The caller's own copy of a hit, in its bucket order (the stored order for
/// a lookup by key), made once the hand-off budget has room for it. Built off
/// the JS thread, where the reference to the stored payload is dropped too;
/// mutating it never touches the cache (a payload nothing else holds is
/// handed over rather than copied).
async fn owned(
    cache: &Cache,
    handoff: &Handoff,
    hit: Hit,
    cfg: Option<&ScenarioConfig>,
) -> crate::Result<Handed<CallerCopy>> {
    let room = handoff.reserve(hit.entry.payload.len()).await;
    Ok((cache.for_caller(hit, cfg).await?, room))
}

fn handed_js(env: &Env, (copy, _room): Handed<CallerCopy>) -> napi::Result<ScenarioResult> {
    copy_js(env, copy)
}

/// Times a call as its caller sees it, up to the result handed to JS.
#[derive(Clone)]
struct Clock(Arc<Cache>, Instant);

impl Clock {
    fn start(cache: &Arc<Cache>) -> Self {
        Clock(cache.clone(), Instant::now())
    }

    fn stop(&self, source: Source) {
        self.0.record_to_caller(source, self.1.elapsed());
    }

    /// `handed_js`, timed.
    fn handed_js(self) -> impl FnOnce(&Env, Handed<CallerCopy>) -> napi::Result<ScenarioResult> {
        move |env, h| {
            let source = h.0.source;
            let r = handed_js(env, h);
            self.stop(source);
            r
        }
    }
}

/// The synchronous path for small memory hits: the copy goes straight into a
/// Node-allocated buffer, cheaper to create and collect than an external one.
/// A caller in another bucket order gets the copy with a column map (a
/// header rewrite plus the copy, a few microseconds at this size).
fn result_js_now(env: &Env, hit: Hit, cfg: &ScenarioConfig) -> napi::Result<ScenarioResult> {
    let order = ColumnOrder::for_config(cfg);
    let (rows, cols) = (
        hit.entry.metadata.num_scenarios,
        hit.entry.metadata.num_buckets,
    );
    let data = if order.is_identity() {
        BufferSlice::copy_from(env, &hit.entry.payload)?
    } else {
        let mapped = order
            .envelope(&hit.entry.payload)
            .map_err(|e| js_error(env, &e))?;
        BufferSlice::copy_from(env, &mapped)?
    };
    Ok(ScenarioResult {
        compressed: compressed_matrix(data.into_buffer(env)?, rows, cols),
        metadata: metadata_js(order.metadata(&hit.entry.metadata), hit.source),
    })
}

/// What `onEvent` receives (README "Events").
#[napi(object)]
pub struct CacheEvent {
    #[napi(
        ts_type = "'tierError' | 'breakerOpened' | 'breakerClosed' | 'corruptEntry' | 'repair' | 'slowCall'"
    )]
    pub kind: String,
    /// `redis` or `durable`, when one tier is concerned.
    pub tier: Option<String>,
    pub key: Option<String>,
    /// What happened, in words (never with a password).
    pub message: Option<String>,
    /// The call's duration, for `slowCall`.
    pub ms: Option<f64>,
    /// When it happened: milliseconds since the Unix epoch.
    pub time: f64,
}

/// Events waiting for the JS thread; beyond this many, new ones are dropped
/// rather than pile up while it is busy.
const EVENT_QUEUE: usize = 1024;

/// The `onEvent` option as a sink the runtime's threads can call: a
/// threadsafe function that does not keep the process alive. Its type was
/// checked with the other options; anything but a function is left to that.
fn event_sink(options: &Unknown) -> crate::Result<Option<Events>> {
    let unreadable = |e: napi::Error| Error::InvalidArgument(format!("onEvent: {}", e.reason));
    if options.get_type().map_err(unreadable)? != ValueType::Object {
        return Ok(None);
    }
    // SAFETY: napi just reported an object.
    let obj: Object = unsafe { options.cast() }.map_err(unreadable)?;
    let f: Unknown = obj.get_named_property("onEvent").map_err(unreadable)?;
    if f.get_type().map_err(unreadable)? != ValueType::Function {
        return Ok(None);
    }
    // SAFETY: napi just reported a function.
    let f: Function<CacheEvent, Unknown> = unsafe { f.cast() }.map_err(unreadable)?;
    let tsfn = f
        .build_threadsafe_function()
        .callee_handled::<false>()
        .weak::<true>()
        .max_queue_size::<EVENT_QUEUE>()
        .build()
        .map_err(unreadable)?;
    Ok(Some(Events::to(move |e| {
        let event = CacheEvent {
            kind: e.kind.as_str().to_string(),
            tier: e.tier.map(str::to_string),
            key: e.key,
            message: e.message,
            ms: e.ms,
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        };
        // Non-blocking: a full queue drops the event rather than stall a call.
        // Asking for the return value is what lets an exception the listener
        // throws come back here instead of crashing the process.
        tsfn.call_with_return_value(
            event,
            ThreadsafeFunctionCallMode::NonBlocking,
            |returned, env| {
                if let Err(e) = returned {
                    warn(&env, &format!("onEvent threw: {}", e.reason));
                }
                Ok(())
            },
        );
    })))
}

/// `process.emitWarning(message)`, best effort.
fn warn(env: &Env, message: &str) {
    let emitted = (|| -> napi::Result<()> {
        let process: Object = env.get_global()?.get_named_property("process")?;
        let emit: Function<String, Unknown> = process.get_named_property("emitWarning")?;
        emit.call(message.to_string())?;
        Ok(())
    })();
    drop(emitted);
}

/// One store's answer to `ping()`.
#[napi(object)]
pub struct TierHealth {
    pub ok: bool,
    pub latency_ms: f64,
    /// Why not, when not ok (never with a password).
    pub error: Option<String>,
}

impl From<cache::TierHealth> for TierHealth {
    fn from(h: cache::TierHealth) -> Self {
        TierHealth {
            ok: h.ok,
            latency_ms: h.latency_ms,
            error: h.error,
        }
    }
}

#[napi(object)]
pub struct HealthReport {
    /// The store a server needs: not ok means not ready.
    pub durable: TierHealth,
    /// Absent without Redis. Not ok means slower, not broken: calls go on without it.
    pub redis: Option<TierHealth>,
}

#[napi(object)]
pub struct MatrixResult {
    pub matrix: Float32Array,
    pub num_scenarios: u32,
    pub num_buckets: u32,
    pub metadata: ScenarioMetadata,
}

#[napi(object)]
pub struct TierStats {
    pub hits: f64,
    pub misses: f64,
    pub errors: f64,
    /// Payload bytes served by this tier's hits.
    pub bytes: f64,
}

impl From<TierSnapshot> for TierStats {
    fn from(t: TierSnapshot) -> Self {
        TierStats {
            hits: t.hits as f64,
            misses: t.misses as f64,
            errors: t.errors as f64,
            bytes: t.bytes as f64,
        }
    }
}

#[napi(object)]
pub struct MemoryTierStats {
    pub entries: f64,
    /// Payload bytes held now.
    pub bytes: f64,
    pub max_bytes: f64,
    /// Entries pushed out by the byte bound after admission.
    pub evictions: f64,
    /// Entries refused because they alone exceed the bound.
    pub rejected_too_large: f64,
}

#[napi(object)]
pub struct RedisBreakerStats {
    /// Open now: Redis is not asked until a probe gets an answer.
    pub open: bool,
    /// Times it opened (after a Redis failure or timeout).
    pub openings: f64,
    /// Lookups and writes not sent to Redis because it was open.
    pub skipped: f64,
}

#[napi(object)]
pub struct LatencyStats {
    pub count: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[napi(object)]
pub struct CacheStats {
    pub memory: TierStats,
    pub redis: TierStats,
    /// The durable store (PostgreSQL or SQLite).
    pub durable: TierStats,
    /// Occupancy of the memory tier; absent when it is off.
    pub memory_tier: Option<MemoryTierStats>,
    /// The Redis circuit breaker; absent without Redis.
    pub redis_breaker: Option<RedisBreakerStats>,
    pub generations: f64,
    pub single_flight_joins: f64,
    pub corrupt_entries: f64,
    pub legacy_rewrites: f64,
    /// Legacy copies of several buckets not served (their column order was
    /// never recorded); their keys are generated afresh.
    pub legacy_unattributable: f64,
    /// Damaged durable rows regenerated, proven equal to what they held
    /// (through their surviving checksums) and rewritten.
    pub repairs: f64,
    /// Durable-store hits answered by regenerating the matrix and proving it
    /// equal to the stored row, which was read only in part (`regenerateMinBytes`).
    pub regenerated_hits: f64,
    /// Such regenerations that did not match the stored row (written by
    /// another version, or a damaged header): the row was then read whole.
    pub regenerations_unproven: f64,
    /// Lookup calls (`getOrGenerate`, `getMatrix`, `get`) that finished, each counted
    /// once by its outcome: the sum of the `latency` counts.
    pub calls: f64,
    /// Share of `calls` a tier answered (memory, Redis, PostgreSQL or SQLite).
    pub hit_rate: f64,
    /// Calls and their latency by outcome, from the call to its result ready for the copy
    /// to the caller (`README` "Stats" says what each covers).
    #[napi(ts_type = "Record<CallOutcome, LatencyStats>")]
    pub latency: std::collections::HashMap<String, LatencyStats>,
    /// Calls answered with a result, as the caller waits: from the call to the result
    /// handed to JavaScript (its copy included), by the result's source.
    #[napi(ts_type = "Record<MatrixSource, LatencyStats>")]
    pub latency_to_caller: std::collections::HashMap<String, LatencyStats>,
}

fn latency_js(l: Vec<LatencySnapshot>) -> std::collections::HashMap<String, LatencyStats> {
    l.into_iter()
        .map(|l| {
            let v = LatencyStats {
                count: l.count as f64,
                p50_ms: l.p50_ms,
                p95_ms: l.p95_ms,
                p99_ms: l.p99_ms,
            };
            (l.outcome.as_str().to_string(), v)
        })
        .collect()
}

fn stats_js(s: StatsSnapshot) -> CacheStats {
    CacheStats {
        memory: s.memory.into(),
        redis: s.redis.into(),
        durable: s.durable.into(),
        memory_tier: s.memory_tier.map(|m| MemoryTierStats {
            entries: m.entries as f64,
            bytes: m.bytes as f64,
            max_bytes: m.max_bytes as f64,
            evictions: m.evictions as f64,
            rejected_too_large: m.rejected_too_large as f64,
        }),
        redis_breaker: s.redis_breaker.map(|b| RedisBreakerStats {
            open: b.open,
            openings: b.openings as f64,
            skipped: b.skipped as f64,
        }),
        generations: s.generations as f64,
        single_flight_joins: s.single_flight_joins as f64,
        corrupt_entries: s.corrupt_entries as f64,
        legacy_rewrites: s.legacy_rewrites as f64,
        legacy_unattributable: s.legacy_unattributable as f64,
        repairs: s.repairs as f64,
        regenerated_hits: s.regenerated_hits as f64,
        regenerations_unproven: s.regenerations_unproven as f64,
        calls: s.calls as f64,
        hit_rate: s.hit_rate,
        latency: latency_js(s.latency),
        latency_to_caller: latency_js(s.latency_to_caller),
    }
}

/// The tiered cache: memory -> Redis -> PostgreSQL or SQLite -> generator.
#[napi]
pub struct ScenarioMatrixCache {
    pub(super) inner: Arc<Cache>,
    handoff: Handoff,
}

impl ScenarioMatrixCache {
    /// The cache itself, for the methods other binding modules add.
    pub(super) fn core(&self) -> &Arc<Cache> {
        &self.inner
    }
}

#[napi]
impl ScenarioMatrixCache {
    /// Connects the tiers (and runs migrations unless `runMigrations: false`).
    /// Unknown options, wrong types and out-of-range values reject with `E_INVALID_ARGUMENT`.
    #[napi(
        ts_args_type = "options?: CacheOptions",
        ts_return_type = "Promise<ScenarioMatrixCache>"
    )]
    pub fn open<'e>(
        env: &'e Env,
        options: Option<Unknown>,
    ) -> napi::Result<PromiseRaw<'e, ScenarioMatrixCache>> {
        let opts = match &options {
            Some(v) => read_value(v, "the options")
                .and_then(|value| crate::options::from_value(&value))
                .and_then(|mut o| {
                    if let Some(sink) = event_sink(v)? {
                        o.on_event = sink;
                    }
                    Ok(o)
                }),
            None => Ok(cache::CacheOptions::default()),
        };
        promise(env, async move { Cache::open(opts?).await }, |_, c| {
            Ok(ScenarioMatrixCache {
                inner: Arc::new(c),
                handoff: Handoff::new(),
            })
        })
    }

    /// The matrix for `config`: from the fastest tier that has it, else generated and stored.
    #[napi(
        ts_args_type = "config: ScenarioConfig, options?: CallOptions",
        ts_return_type = "Promise<ScenarioResult>"
    )]
    pub fn get_or_generate<'e>(
        &self,
        env: &'e Env,
        config: Unknown,
    ) -> napi::Result<PromiseRaw<'e, ScenarioResult>> {
        let clock = Clock::start(&self.inner);
        let cfg = parse_config(&config);
        if cfg.is_err() {
            self.inner.record_refused();
        }
        if let Ok(c) = &cfg {
            let key = crate::key::canonical_key(c);
            if let Ok(Some(hit)) = self.inner.get_from_memory(c, &key) {
                // A small memory hit is answered right here, without a thread hop.
                if hit.entry.payload.len() <= SYNC_COPY_MAX {
                    let answer = result_js_now(env, hit, c);
                    clock.stop(Source::Memory);
                    return match answer {
                        Ok(r) => PromiseRaw::resolve(env, r),
                        Err(e) => PromiseRaw::reject(env, e),
                    };
                }
                let (c, cache, handoff) = (c.clone(), self.inner.clone(), self.handoff.clone());
                let work = async move { owned(&cache, &handoff, hit, Some(&c)).await };
                return promise(env, work, clock.handed_js());
            }
        }
        let (cache, handoff) = (self.inner.clone(), self.handoff.clone());
        let work = async move {
            let cfg = cfg?;
            let key = crate::key::canonical_key(&cfg);
            let hit = cache.get_or_generate_keyed(&cfg, key, false).await?;
            owned(&cache, &handoff, hit, Some(&cfg)).await
        };
        promise(env, work, clock.handed_js())
    }

    /// Like `getOrGenerate`, decompressed (and verified) into a `Float32Array`, row-major.
    #[napi(
        ts_args_type = "config: ScenarioConfig, options?: CallOptions",
        ts_return_type = "Promise<MatrixResult>"
    )]
    pub fn get_matrix<'e>(
        &self,
        env: &'e Env,
        config: Unknown,
    ) -> napi::Result<PromiseRaw<'e, MatrixResult>> {
        let clock = Clock::start(&self.inner);
        let cfg = parse_config(&config);
        if cfg.is_err() {
            self.inner.record_refused();
        }
        let (cache, handoff) = (self.inner.clone(), self.handoff.clone());
        let work = async move {
            let cfg = cfg?;
            let key = crate::key::canonical_key(&cfg);
            let hit = cache.get_or_generate_keyed(&cfg, key, true).await?;
            let m = &hit.entry.metadata;
            let bytes = m.num_scenarios as usize * m.num_buckets as usize * 4;
            let room = handoff.reserve(bytes).await;
            let (hit, matrix) = Cache::matrix_for_caller(hit, &cfg).await?;
            // The matrix is already in the caller's order; its metadata follows.
            let metadata = ColumnOrder::for_config(&cfg).metadata(&hit.entry.metadata);
            Ok(((metadata, hit.source, matrix), room))
        };
        promise(
            env,
            work,
            move |_, ((metadata, source, matrix), _room): Handed<(Metadata, Source, Vec<f32>)>| {
                let answer = MatrixResult {
                    matrix: Float32Array::new(matrix),
                    num_scenarios: metadata.num_scenarios,
                    num_buckets: metadata.num_buckets,
                    metadata: metadata_js(metadata, source),
                };
                clock.stop(source);
                Ok(answer)
            },
        )
    }

    /// Lookup only, by canonical key: never generates. Resolves to null when no tier has it.
    #[napi(
        ts_args_type = "key: string, options?: CallOptions",
        ts_return_type = "Promise<ScenarioResult | null>"
    )]
    pub fn get<'e>(
        &self,
        env: &'e Env,
        key: Unknown,
    ) -> napi::Result<PromiseRaw<'e, Option<ScenarioResult>>> {
        let clock = Clock::start(&self.inner);
        let key = read_string(&key, "key");
        if key.is_err() {
            self.inner.record_refused();
        }
        let (cache, handoff) = (self.inner.clone(), self.handoff.clone());
        let work = async move {
            match cache.get(&key?).await? {
                Some(hit) => Ok(Some(owned(&cache, &handoff, hit, None).await?)),
                None => Ok(None),
            }
        };
        promise(env, work, move |env, hit| {
            hit.map(|h| clock.handed_js()(env, h)).transpose()
        })
    }

    /// Removes a key from every tier; resolves to whether any tier had it.
    #[napi(ts_args_type = "key: string", ts_return_type = "Promise<boolean>")]
    pub fn invalidate<'e>(&self, env: &'e Env, key: Unknown) -> napi::Result<PromiseRaw<'e, bool>> {
        let key = read_string(&key, "key");
        let cache = self.inner.clone();
        promise(env, async move { cache.invalidate(&key?).await }, |_, b| {
            Ok(b)
        })
    }

    /// Removes every matrix of a fund (optionally one taxonomy version); resolves to the count.
    #[napi(
        ts_args_type = "fundId: string, taxonomyVersion?: string | undefined | null",
        ts_return_type = "Promise<number>"
    )]
    pub fn invalidate_fund<'e>(
        &self,
        env: &'e Env,
        fund_id: Unknown,
        taxonomy_version: Option<Unknown>,
    ) -> napi::Result<PromiseRaw<'e, f64>> {
        let fund_id = read_string(&fund_id, "fundId");
        let taxonomy_version = read_optional_string(taxonomy_version.as_ref(), "taxonomyVersion");
        let cache = self.inner.clone();
        promise(
            env,
            async move {
                cache
                    .invalidate_fund(&fund_id?, taxonomy_version?.as_deref())
                    .await
            },
            |_, n| Ok(n as f64),
        )
    }

    /// Whether each store answers now, for readiness probes (one trivial request each).
    #[napi(ts_return_type = "Promise<HealthReport>")]
    pub fn ping<'e>(&self, env: &'e Env) -> napi::Result<PromiseRaw<'e, HealthReport>> {
        let cache = self.inner.clone();
        promise(env, async move { cache.ping().await }, |_, h| {
            Ok(HealthReport {
                durable: h.durable.into(),
                redis: h.redis.map(Into::into),
            })
        })
    }

    /// Counters and latency quantiles; cheap.
    #[napi]
    pub fn stats(&self) -> CacheStats {
        stats_js(self.inner.stats())
    }

    /// Resolves once the background writes pending now (Redis fills after a miss or a durable hit) are done; later ones are not waited for.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn flush<'e>(&self, env: &'e Env) -> napi::Result<PromiseRaw<'e, ()>> {
        let cache = self.inner.clone();
        let work = async move {
            cache.flush().await;
            Ok(())
        };
        promise(env, work, |_, ()| Ok(()))
    }

    /// Waits for background writes and closes the connections; later calls reject with `E_CLOSED`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'e>(&self, env: &'e Env) -> napi::Result<PromiseRaw<'e, ()>> {
        let cache = self.inner.clone();
        promise(
            env,
            async move {
                cache.close().await;
                Ok(())
            },
            |_, ()| Ok(()),
        )
    }
}
