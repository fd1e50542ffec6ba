//! Redis tier: the hot copy, shared by every server process, with a TTL.
//!
//! A value is one binary record (no JSON, no base64):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `SMCR` |
//! | 1 | record version (1) |
//! | 4 | u32 LE: length M of the metadata block |
//! | M | metadata (all LE): 64 ASCII key, u32 scenarios, u32 buckets, u8 flags (bit 0: `generatedAt` known, bit 1: `durationMs` known), then if known u8 length + ISO `generatedAt`, if known f64 `durationMs`, u16 count + f64 recycling multiples, u16 count + bucket names (u16 length + UTF-8 each) in column order |
//! | rest | the codec envelope (self-checking), columns in the key's bucket order |
//!
//! Record version 1 (before columns followed the key's bucket order) carried no
//! bucket names, so its column order is unknown: such values read as
//! [`Lookup::Outdated`], a miss that the next write replaces.
//!
//! Values the TypeScript code wrote (JSON `{data: base64 zlib, numScenarios,
//! numBuckets, version: 1, ...}`) are recognised and returned as legacy entries
//! for the cache to verify and rewrite. In the transition mode
//! (`writeLegacyFormat`) the cache writes that JSON itself
//! ([`typescript_value`]), with one member more that the TypeScript code
//! ignores: its metadata and the names of its columns, in the key's order.
//!
//! Redis is an optimisation, so a sick Redis must cost calls next to nothing:
//! - "No answer" is bounded by `timeout` (connecting, and each reply's wait);
//!   a transfer of N bytes gets N / `min_rate` on top, so a large value that
//!   is still streaming is not cut off. A lookup asks `STRLEN` first (small
//!   reply, plain `timeout`) so the `GET` deadline can be scaled to the size.
//! - A circuit breaker: the first transport failure, or a timeout while Redis
//!   is silent, opens it. Silent means no reply to any request on the
//!   connection for `timeout`: a request that runs out of time while others
//!   are being answered is given up (the caller goes on to the durable store)
//!   but says Redis is busy, not sick, so it does not open the breaker. (Under
//!   load on a saturated host, one slow reply used to send every lookup to
//!   the durable store for a cool-down, which raised the load run's p99.) While
//!   open, no call asks Redis (lookups and writes are skipped, deletes fail),
//!   and a background probe pings Redis every `cooldown` on a new connection;
//!   the first answer closes the breaker. So a hung Redis costs the calls in
//!   flight at most `timeout`, and later calls nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::Mutex;

use super::Entry;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind, Events};
use crate::scenario::Metadata;

const MAGIC: &[u8; 4] = b"SMCR";
const RECORD_VERSION: u8 = 2;
const HAS_GENERATED_AT: u8 = 1;
const HAS_DURATION: u8 = 2;
/// The least a probe waits for its answer. A probe delays no caller, so it
/// can be patient: on a machine whose cores are saturated, a healthy Redis
/// may take longer than `timeout` to be heard, and the breaker should not
/// stay open for that.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a Redis lookup found.
#[derive(Debug)]
pub enum Lookup {
    Miss,
    /// Our record, or a TypeScript-era value (codec `Zlib`, no generation metadata).
    Hit(Entry),
    /// Bytes that are neither; the cache counts and overwrites them.
    Undecodable(String),
    /// A record of an earlier version whose columns cannot be attributed to
    /// buckets: a miss, overwritten by the next write.
    Outdated,
    /// Not asked: the breaker is open.
    Skipped,
}

/// How the tier talks to Redis; see the module docs for the rules.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub prefix: String,
    pub ttl_seconds: u64,
    /// Bound on connecting and on waiting for a reply.
    pub timeout: Duration,
    /// Slowest transfer accepted, in bytes per second.
    pub min_rate: f64,
    /// Pause between probes while the breaker is open.
    pub cooldown: Duration,
    /// Told when the breaker opens and closes.
    pub events: Events,
}

/// The breaker's counters, for `stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSnapshot {
    pub open: bool,
    /// Times it opened.
    pub openings: u64,
    /// Lookups and writes not sent to Redis because it was open.
    pub skipped: u64,
}

pub struct RedisTier {
    link: Arc<Link>,
    prefix: String,
    ttl_seconds: u64,
}

/// The connection and the breaker, shared with the probe task.
struct Link {
    client: redis::Client,
    /// The connection and its generation (bumped by every new connection).
    conn: Mutex<Option<(MultiplexedConnection, u64)>>,
    generation: AtomicU64,
    /// Bytes of transfers under way. Replies come back in order on the one
    /// connection, so a small reply queued behind a large transfer is
    /// allowed that transfer's time too (no head-of-line false alarm).
    in_flight: AtomicUsize,
    /// When a reply last arrived (or the connection was made), in ms since `born`.
    last_reply_ms: AtomicU64,
    born: Instant,
    timeout: Duration,
    min_rate: f64,
    cooldown: Duration,
    open: AtomicBool,
    events: Events,
    openings: AtomicU64,
    skipped: AtomicU64,
    /// Set by `close`: no more connections, the probe stops.
    shut: AtomicBool,
}

fn redis_err(e: impl std::fmt::Display) -> Error {
    Error::Redis(crate::tier::durable::redact_password(&e.to_string()))
}

/// Whether an error says Redis (or the way to it) is sick, as opposed to a
/// reply Redis gave (which proves it is alive).
fn is_transport(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

impl Link {
    /// `base` plus the time to transfer `bytes` at the slowest rate accepted.
    fn allowance(&self, base: Duration, bytes: usize) -> Duration {
        let transfer =
            Duration::try_from_secs_f64(bytes as f64 / self.min_rate).unwrap_or(Duration::MAX);
        base.saturating_add(transfer)
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn heard(&self) {
        self.last_reply_ms.fetch_max(self.now_ms(), SeqCst);
    }

    /// Whether some reply arrived (or the connection was made) within `timeout`.
    fn answering(&self) -> bool {
        let silent_ms = self
            .now_ms()
            .saturating_sub(self.last_reply_ms.load(SeqCst));
        u128::from(silent_ms) < self.timeout.as_millis()
    }

    /// The shared connection and its generation, connecting (within
    /// `timeout`) when there is none.
    async fn connection(
        &self,
        timeout: Duration,
    ) -> std::result::Result<(MultiplexedConnection, u64), String> {
        let mut c = self.conn.lock().await;
        if self.shut.load(SeqCst) {
            return Err("closed".into());
        }
        if let Some((m, g)) = &*c {
            return Ok((m.clone(), *g));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            // Replies are bounded here, by size (see `allowance`).
            .set_response_timeout(None);
        match tokio::time::timeout(
            timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(m)) => {
                let g = self.generation.fetch_add(1, SeqCst) + 1;
                self.heard();
                *c = Some((m.clone(), g));
                Ok((m, g))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("connect timed out after {timeout:?}")),
        }
    }

    /// Sends `cmd` unless the breaker is open, allowing `bytes` of transfer.
    /// A transport failure or timeout opens the breaker.
    async fn run<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        cmd: &redis::Cmd,
        bytes: usize,
    ) -> Result<T> {
        if self.open.load(SeqCst) {
            return Err(Error::Redis(
                "not asked: the circuit breaker is open after a failure (a probe retries it)"
                    .into(),
            ));
        }
        match self.send(cmd, self.timeout, self.timeout, bytes).await {
            Ok(v) => Ok(v),
            Err(Failure { message, transport }) => {
                if let Some(generation) = transport {
                    self.trip(generation, &message);
                }
                Err(redis_err(message))
            }
        }
    }

    /// Sends `cmd`, connecting first (within `connect`) if needed, and waits
    /// for the reply at most `base` plus the time to transfer `bytes` and the
    /// transfers already under way.
    async fn send<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        connect: Duration,
        base: Duration,
        bytes: usize,
    ) -> std::result::Result<T, Failure> {
        let (mut conn, generation) = self.connection(connect).await.map_err(|message| Failure {
            message,
            transport: Some(None),
        })?;
        let ahead = self.in_flight.fetch_add(bytes, SeqCst);
        struct Done<'a>(&'a AtomicUsize, usize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(self.1, SeqCst);
            }
        }
        let _done = Done(&self.in_flight, bytes);
        let allowed = self.allowance(base, bytes.saturating_add(ahead));
        match tokio::time::timeout(allowed, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.heard();
                Ok(v)
            }
            Ok(Err(e)) => {
                let transport = is_transport(&e);
                if !transport {
                    self.heard();
                }
                Err(Failure {
                    message: e.to_string(),
                    transport: transport.then_some(Some(generation)),
                })
            }
            Err(_) if self.answering() => Err(Failure {
                message: format!(
                    "no answer within {allowed:?}, while other requests were answered (busy)"
                ),
                transport: None,
            }),
            Err(_) => Err(Failure {
                message: format!("no answer within {allowed:?}"),
                transport: Some(Some(generation)),
            }),
        }
    }

    /// Opens the breaker (once) and starts the probe that closes it. A
    /// failure on an older connection than the current one (a request sent
    /// before the last recovery) is stale and changes nothing.
    fn trip(self: &Arc<Self>, generation: Option<u64>, why: &str) {
        if self.shut.load(SeqCst)
            || generation.is_some_and(|g| g != self.generation.load(SeqCst))
            || self.open.swap(true, SeqCst)
        {
            return;
        }
        self.openings.fetch_add(1, SeqCst);
        self.events.emit(|| {
            Event::new(EventKind::BreakerOpened)
                .tier("redis")
                .message(crate::tier::durable::redact_password(why))
        });
        let link = self.clone();
        tokio::spawn(async move {
            // The sick connection is dropped: the probe, and then calls, use a new one.
            *link.conn.lock().await = None;
            loop {
                tokio::time::sleep(link.cooldown).await;
                if link.shut.load(SeqCst) {
                    return;
                }
                let patience = link.timeout.max(PROBE_TIMEOUT);
                let answered = link
                    .send::<String>(&redis::cmd("PING"), patience, patience, 0)
                    .await
                    .is_ok();
                if answered {
                    link.open.store(false, SeqCst);
                    link.events.emit(|| {
                        Event::new(EventKind::BreakerClosed)
                            .tier("redis")
                            .message("a probe got an answer: Redis is used again")
                    });
                    return;
                }
                *link.conn.lock().await = None;
            }
        });
    }
}

/// Why a command failed; `transport` is set when Redis (or the way to it)
/// is sick, with the generation of the connection used (None: connecting failed).
struct Failure {
    message: String,
    transport: Option<Option<u64>>,
}

impl RedisTier {
    /// Never fails for an unreachable server (it is tried again later); only a
    /// malformed URL is an error.
    pub fn new(url: &str, opts: RedisOptions) -> Result<Self> {
        if url.starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; keep one already installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(url).map_err(|e| {
            // The URL is not echoed: a malformed one has no shape to find its
            // password by. The parser's own message is scrubbed of any it has.
            let mut msg = format!("redisUrl is not a valid Redis URL: {e}");
            for secret in crate::tier::durable::passwords_of(url) {
                msg = msg.replace(&secret, "***");
            }
            Error::InvalidArgument(msg)
        })?;
        Ok(RedisTier {
            link: Arc::new(Link {
                client,
                conn: Mutex::new(None),
                generation: AtomicU64::new(0),
                in_flight: AtomicUsize::new(0),
                last_reply_ms: AtomicU64::new(0),
                born: Instant::now(),
                timeout: opts.timeout,
                min_rate: opts.min_rate,
                cooldown: opts.cooldown,
                open: AtomicBool::new(false),
                events: opts.events,
                openings: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                shut: AtomicBool::new(false),
            }),
            prefix: opts.prefix,
            ttl_seconds: opts.ttl_seconds,
        })
    }

    /// Connects once, within the timeout; if that fails the breaker opens
    /// and its probe keeps trying, so no call ever waits to connect.
    pub async fn connect(&self) {
        if let Err(why) = self.link.connection(self.link.timeout).await {
            self.link.trip(None, &format!("connecting: {why}"));
        }
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// True (and counted) when the breaker is open and a lookup or write
    /// should not be sent.
    fn skip(&self) -> bool {
        let open = self.link.open.load(SeqCst);
        if open {
            self.link.skipped.fetch_add(1, SeqCst);
        }
        open
    }

    pub fn breaker(&self) -> BreakerSnapshot {
        BreakerSnapshot {
            open: self.link.open.load(SeqCst),
            openings: self.link.openings.load(SeqCst),
            skipped: self.link.skipped.load(SeqCst),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Lookup> {
        if self.skip() {
            return Ok(Lookup::Skipped);
        }
        let k = self.redis_key(key);
        // The size first, so a large value still streaming is told apart from
        // a server that does not answer.
        let len: usize = self.link.run(&redis::Cmd::strlen(&k), 0).await?;
        if len == 0 {
            return Ok(Lookup::Miss);
        }
        let value: Option<Bytes> = self.link.run(&redis::Cmd::get(&k), len).await?;
        Ok(match value {
            None => Lookup::Miss,
            Some(v) => decode_value(key, v),
        })
    }

    /// Writes `entry` (skipped while the breaker is open).
    pub async fn put(&self, entry: &Entry) -> Result<()> {
        if self.skip() {
            return Ok(());
        }
        let head = record_head(entry)?;
        let bytes = head.len() + entry.payload.len();
        let record = Record {
            head,
            payload: &entry.payload,
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.redis_key(&entry.metadata.config_hash))
            .arg(record)
            .arg("EX")
            .arg(self.ttl_seconds);
        self.link.run::<()>(&cmd, bytes).await
    }

    /// Writes a [`typescript_value`] under `key` (skipped while the breaker is open).
    pub async fn put_typescript(&self, key: &str, value: &[u8]) -> Result<()> {
        if self.skip() {
            return Ok(());
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.redis_key(key))
            .arg(value)
            .arg("EX")
            .arg(self.ttl_seconds);
        self.link.run::<()>(&cmd, value.len()).await
    }

    /// A `PING` within the timeout, whatever the breaker says, and without
    /// moving it: a readiness probe looks, it does not decide.
    pub async fn ping(&self) -> Result<()> {
        let t = self.link.timeout;
        self.link
            .send::<String>(&redis::cmd("PING"), t, t, 0)
            .await
            .map(drop)
            .map_err(|f| redis_err(f.message))
    }

    /// Deletes the keys; returns how many existed. Fails while the breaker is
    /// open: an invalidation must know its deletes did not happen.
    pub async fn delete(&self, keys: &[String]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("DEL");
        for k in keys {
            cmd.arg(self.redis_key(k));
        }
        self.link.run(&cmd, 0).await
    }

    /// How many of `keys` have a copy now (`EXISTS`, 1000 keys a request).
    pub async fn count_existing(&self, keys: &[String]) -> Result<u64> {
        let mut n = 0;
        for chunk in keys.chunks(1000) {
            let mut cmd = redis::cmd("EXISTS");
            for k in chunk {
                cmd.arg(self.redis_key(k));
            }
            n += self.link.run::<u64>(&cmd, 0).await?;
        }
        Ok(n)
    }

    /// How many keys exist under the prefix (`SCAN`, 1000 at a time; the
    /// count can miss or repeat keys written or expiring meanwhile).
    pub async fn count_keys(&self) -> Result<u64> {
        let pattern = super::catalog::redis_match_pattern(&self.prefix);
        let (mut cursor, mut n) = (String::from("0"), 0u64);
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(&cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            // Like `ping`: an operator's question, sent even while the
            // breaker is open, and without moving it.
            let t = self.link.timeout;
            let (next, keys): (String, Vec<Bytes>) = self
                .link
                .send(&cmd, t, t, 0)
                .await
                .map_err(|f| redis_err(f.message))?;
            n += keys.len() as u64;
            if next == "0" {
                return Ok(n);
            }
            cursor = next;
        }
    }

    /// Drops the connection and stops the probe; later calls fail.
    pub async fn close(&self) {
        self.link.shut.store(true, SeqCst);
        *self.link.conn.lock().await = None;
    }
}

impl Drop for RedisTier {
    /// A cache dropped without `close` (a JS object collected) stops its
    /// probe too; the connection goes with the last handle.
    fn drop(&mut self) {
        self.link.shut.store(true, SeqCst);
    }
}

/// A record as one Redis argument, written from its two parts, so the
/// payload (up to 20 MB) is not first copied into a joined buffer.
struct Record<'a> {
    head: BytesMut,
    payload: &'a [u8],
}

impl redis::ToRedisArgs for Record<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut w = out.writer_for_next_arg();
        // Writing into the command's own buffer cannot fail.
        let _ = w.write_all(&self.head);
        let _ = w.write_all(self.payload);
    }
}

/// The record's bytes before the payload, for an envelope entry. Legacy
/// payloads are re-encoded by the cache before they reach Redis, so anything
/// else is a bug.
fn record_head(e: &Entry) -> Result<BytesMut> {
    if e.codec != Codec::Zstd {
        return Err(Error::Internal(
            "only envelope payloads are written to Redis".into(),
        ));
    }
    let m = &e.metadata;
    let generated_at = m.generated_at.as_deref().unwrap_or("");
    if m.config_hash.len() != 64
        || generated_at.len() > 255
        || m.recycling_multiples.len() > u16::MAX as usize
        || m.bucket_names.len() > u16::MAX as usize
        || m.bucket_names.iter().any(|n| n.len() > u16::MAX as usize)
    {
        return Err(Error::Internal(
            "metadata does not fit the Redis record".into(),
        ));
    }
    let names_len: usize = m.bucket_names.iter().map(|n| 2 + n.len()).sum();
    let meta_len = 64
        + 4
        + 4
        + 1
        + 1
        + generated_at.len()
        + 8
        + 2
        + 8 * m.recycling_multiples.len()
        + 2
        + names_len;
    let mut b = BytesMut::with_capacity(4 + 1 + 4 + meta_len);
    b.put_slice(MAGIC);
    b.put_u8(RECORD_VERSION);
    let len_at = b.len();
    b.put_u32_le(0); // metadata length, filled in below
    b.put_slice(m.config_hash.as_bytes());
    b.put_u32_le(m.num_scenarios);
    b.put_u32_le(m.num_buckets);
    let flags = if m.generated_at.is_some() {
        HAS_GENERATED_AT
    } else {
        0
    } | if m.duration_ms.is_some() {
        HAS_DURATION
    } else {
        0
    };
    b.put_u8(flags);
    if let Some(t) = &m.generated_at {
        b.put_u8(t.len() as u8);
        b.put_slice(t.as_bytes());
    }
    if let Some(d) = m.duration_ms {
        b.put_f64_le(d);
    }
    b.put_u16_le(m.recycling_multiples.len() as u16);
    for r in &m.recycling_multiples {
        b.put_f64_le(*r);
    }
    b.put_u16_le(m.bucket_names.len() as u16);
    for n in &m.bucket_names {
        b.put_u16_le(n.len() as u16);
        b.put_slice(n.as_bytes());
    }
    let written = (b.len() - len_at - 4) as u32;
    b[len_at..len_at + 4].copy_from_slice(&written.to_le_bytes());
    Ok(b)
}

/// Reads a stored value: our record, a legacy JSON value, or neither.
pub fn decode_value(key: &str, v: Bytes) -> Lookup {
    if v.starts_with(MAGIC) {
        return decode_record(key, &v).unwrap_or_else(Lookup::Undecodable);
    }
    if v.first() == Some(&b'{') {
        return match decode_legacy(key, &v) {
            Ok(e) => Lookup::Hit(e),
            Err(why) => Lookup::Undecodable(why),
        };
    }
    Lookup::Undecodable("neither a record nor a legacy JSON value".into())
}

/// A bounds-checked reader over the record bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("record truncated")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn f64(&mut self) -> std::result::Result<f64, String> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
}

fn decode_record(key: &str, v: &Bytes) -> std::result::Result<Lookup, String> {
    let mut r = Reader { buf: v, pos: 4 };
    let version = r.u8()?;
    if version == 1 {
        return Ok(Lookup::Outdated);
    }
    if version != RECORD_VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let meta_len = r.u32()? as usize;
    let meta_end = r
        .pos
        .checked_add(meta_len)
        .filter(|&e| e <= v.len())
        .ok_or("record truncated")?;
    let config_hash = std::str::from_utf8(r.take(64)?)
        .map_err(|_| "key is not ASCII")?
        .to_string();
    if config_hash != key {
        return Err("record belongs to another key".into());
    }
    let num_scenarios = r.u32()?;
    let num_buckets = r.u32()?;
    let flags = r.u8()?;
    if flags & !(HAS_GENERATED_AT | HAS_DURATION) != 0 {
        return Err(format!("unknown record flags {flags:#04x}"));
    }
    let generated_at = if flags & HAS_GENERATED_AT != 0 {
        let len = r.u8()? as usize;
        Some(
            std::str::from_utf8(r.take(len)?)
                .map_err(|_| "generatedAt is not UTF-8")?
                .to_string(),
        )
    } else {
        None
    };
    let duration_ms = if flags & HAS_DURATION != 0 {
        Some(r.f64()?)
    } else {
        None
    };
    let n = r.u16()? as usize;
    let recycling_multiples = (0..n)
        .map(|_| r.f64())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let n = r.u16()? as usize;
    let bucket_names = (0..n)
        .map(|_| {
            let len = r.u16()? as usize;
            std::str::from_utf8(r.take(len)?)
                .map(str::to_string)
                .map_err(|_| "bucket name is not UTF-8".to_string())
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if r.pos != meta_end {
        return Err("metadata length mismatch".into());
    }
    if bucket_names.len() != num_buckets as usize {
        return Err(format!(
            "record names {} buckets for {num_buckets} columns",
            bucket_names.len()
        ));
    }
    Ok(Lookup::Hit(Entry {
        payload: v.slice(meta_end..),
        codec: Codec::Zstd,
        metadata: Metadata {
            config_hash,
            num_scenarios,
            num_buckets,
            generated_at,
            duration_ms,
            recycling_multiples,
            bucket_names,
        },
    }))
}

/// The member this package adds to the TypeScript values it writes. The
/// TypeScript code ignores it and replaces values whole, so a value holding it
/// was written by this package, and its columns are the buckets it names.
const OURS: &str = "scenarioMatrixCache";

/// `e` (an envelope entry) as the TypeScript code writes a value, its members
/// in that code's order, with `zlib` (the matrix in its format) as `data`,
/// and the [`OURS`] member.
pub fn typescript_value(e: &Entry, zlib: &[u8]) -> Vec<u8> {
    let m = &e.metadata;
    let ours = serde_json::json!({
        "key": m.config_hash,
        "bucketNames": m.bucket_names,
        "recyclingMultiples": m.recycling_multiples,
        "generatedAt": m.generated_at,
        "durationMs": m.duration_ms,
    });
    format!(
        r#"{{"data":"{}","numScenarios":{},"numBuckets":{},"version":1,"uncompressedSize":{},"compressedSize":{},"{OURS}":{ours}}}"#,
        base64::engine::general_purpose::STANDARD.encode(zlib),
        m.num_scenarios,
        m.num_buckets,
        m.num_scenarios as u64 * m.num_buckets as u64 * 4,
        zlib.len(),
    )
    .into_bytes()
}

fn decode_legacy(key: &str, v: &[u8]) -> std::result::Result<Entry, String> {
    let j: serde_json::Value =
        serde_json::from_slice(v).map_err(|e| format!("legacy JSON unreadable: {e}"))?;
    let dim = |name: &str| {
        j.get(name)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("legacy value has no valid {name}"))
    };
    let (num_scenarios, num_buckets) = (dim("numScenarios")?, dim("numBuckets")?);
    let data = j
        .get("data")
        .and_then(serde_json::Value::as_str)
        .ok_or("legacy value has no data")?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("legacy base64: {e}"))?;
    let mut metadata = Metadata {
        config_hash: key.to_string(),
        num_scenarios,
        num_buckets,
        // The TypeScript value recorded none of these.
        generated_at: None,
        duration_ms: None,
        recycling_multiples: Vec::new(),
        bucket_names: Vec::new(),
    };
    if let Some(ours) = j.get(OURS) {
        read_ours(ours, &mut metadata).map_err(|why| format!("legacy value's {OURS}: {why}"))?;
    }
    Ok(Entry {
        payload: payload.into(),
        codec: Codec::Zlib,
        metadata,
    })
}

/// Fills `m` from the [`OURS`] member, which must be of `m`'s key and name
/// every column.
fn read_ours(ours: &serde_json::Value, m: &mut Metadata) -> std::result::Result<(), String> {
    use serde_json::Value as J;
    if ours.get("key").and_then(J::as_str) != Some(m.config_hash.as_str()) {
        return Err("written for another key".into());
    }
    let names: Option<Vec<String>> = ours
        .get("bucketNames")
        .and_then(J::as_array)
        .and_then(|a| a.iter().map(|n| n.as_str().map(str::to_string)).collect());
    m.bucket_names = names
        .filter(|n| n.len() == m.num_buckets as usize)
        .ok_or("does not name every column")?;
    m.recycling_multiples = ours
        .get("recyclingMultiples")
        .and_then(J::as_array)
        .and_then(|a| a.iter().map(J::as_f64).collect())
        .ok_or("recyclingMultiples is not a list of numbers")?;
    m.generated_at = ours
        .get("generatedAt")
        .and_then(J::as_str)
        .map(str::to_string);
    m.duration_ms = ours.get("durationMs").and_then(J::as_f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            payload: Bytes::from_static(b"envelope bytes"),
            codec: Codec::Zstd,
            metadata: Metadata {
                config_hash: "ab".repeat(32),
                num_scenarios: 10,
                num_buckets: 2,
                generated_at: Some("2026-11-24T06:00:00.123Z".into()),
                duration_ms: Some(3.25),
                recycling_multiples: vec![1.5, 2.0],
                bucket_names: vec!["Seed".into(), "Série A".into()],
            },
        }
    }

    #[test]
    fn record_round_trips() {
        let e = entry();
        let mut rec = record_head(&e).unwrap();
        rec.put_slice(&e.payload);
        let rec = rec.freeze();
        match decode_value(&e.metadata.config_hash, rec.clone()) {
            Lookup::Hit(got) => assert_eq!(got, e),
            other => panic!("{other:?}"),
        }
        // Unknown metadata round-trips as unknown.
        let mut legacyish = e.clone();
        legacyish.metadata.generated_at = None;
        legacyish.metadata.duration_ms = None;
        legacyish.metadata.recycling_multiples.clear();
        let mut rec2 = record_head(&legacyish).unwrap();
        rec2.put_slice(&e.payload);
        match decode_value(&e.metadata.config_hash, rec2.freeze()) {
            Lookup::Hit(got) => assert_eq!(got, legacyish),
            other => panic!("{other:?}"),
        }
        // A version 1 record (no bucket names) is outdated, not corrupt.
        let mut v1 = rec.to_vec();
        v1[4] = 1;
        assert!(matches!(
            decode_value(&e.metadata.config_hash, Bytes::from(v1)),
            Lookup::Outdated
        ));
        // Under another key it is refused, and every truncation is undecodable.
        assert!(matches!(
            decode_value(&"cd".repeat(32), rec.clone()),
            Lookup::Undecodable(_)
        ));
        for n in 0..(rec.len() - e.payload.len()) {
            assert!(
                matches!(
                    decode_value(&e.metadata.config_hash, rec.slice(..n)),
                    Lookup::Undecodable(_)
                ),
                "{n}"
            );
        }
    }

    #[test]
    fn typescript_values_of_ours_name_their_columns() {
        let e = entry();
        let v = typescript_value(&e, b"zlib bytes");
        let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["data"], "emxpYiBieXRlcw==");
        assert_eq!(
            (&j["numScenarios"], &j["numBuckets"]),
            (&10.into(), &2.into())
        );
        assert_eq!(
            (&j["version"], &j["uncompressedSize"]),
            (&1.into(), &80.into())
        );
        assert_eq!(j["compressedSize"], 10);
        match decode_value(&e.metadata.config_hash, Bytes::from(v.clone())) {
            Lookup::Hit(got) => {
                assert_eq!(got.codec, Codec::Zlib);
                assert_eq!(&got.payload[..], b"zlib bytes");
                assert_eq!(got.metadata, e.metadata);
            }
            other => panic!("{other:?}"),
        }
        // Under another key, or naming too few columns: never attributed.
        assert!(matches!(
            decode_value(&"cd".repeat(32), Bytes::from(v)),
            Lookup::Undecodable(_)
        ));
        let mut short = e.clone();
        short.metadata.bucket_names.pop();
        assert!(matches!(
            decode_value(
                &e.metadata.config_hash,
                Bytes::from(typescript_value(&short, b"z"))
            ),
            Lookup::Undecodable(_)
        ));
    }

    #[test]
    fn reads_legacy_json() {
        let v = br#"{"data":"eJz7uSfDPj8mx6H8Rp39NbU/9puft9o7He62v/az0+5sspw9ABWJEGc=","numScenarios":4,"numBuckets":2,"version":1,"uncompressedSize":32,"compressedSize":41}"#;
        match decode_value("k", Bytes::from_static(v)) {
            Lookup::Hit(e) => {
                assert_eq!(e.codec, Codec::Zlib);
                assert_eq!((e.metadata.num_scenarios, e.metadata.num_buckets), (4, 2));
                assert_eq!(e.payload.len(), 41);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_value("k", Bytes::from_static(b"{\"data\":1}")),
            Lookup::Undecodable(_)
        ));
        assert!(matches!(
            decode_value("k", Bytes::from_static(b"garbage")),
            Lookup::Undecodable(_)
        ));
    }
}
