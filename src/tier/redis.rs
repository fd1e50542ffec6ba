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
//!   is still streaming is not cut off. A lookup of a matrix expected to be
//!   small reads its first `FIRST_READ` bytes (a bounded reply), which is
//!   the whole of a shorter value; otherwise it asks `STRLEN` (small reply,
//!   plain `timeout`) so the `GET` deadline can be scaled to the size.
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
//!   flight at most `timeout` plus their size allowance (a small lookup's
//!   first read: FIRST_READ / `min_rate`), and later calls nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::AsyncConnectionConfig;
use tokio::sync::Mutex;

use super::redis_bulk::{self, Bulk, BulkError};
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
/// A lookup of a matrix expected to be smaller than this (a 10,000 x 5 one is
/// 200 KB raw, about 160 KB stored) reads it in one request of at most this
/// many bytes, instead of two (`STRLEN`, then `GET`). Larger ones are sized
/// first: a first read of every value would put this much of each large
/// one through the shared connection too, where it holds up small replies
/// on a slow link (`tests/faults.rs`, the busy-Redis test).
const FIRST_READ: usize = 256 << 10;
/// Room for the record's header and the envelope's, and for a stored size a
/// little above the raw one (chunks stored as they are), below FIRST_READ.
const FIRST_READ_MARGIN: usize = 16 << 10;

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
    client: Client,
    /// The connection and its generation (bumped by every new connection).
    conn: Mutex<Option<(Conn, u64)>>,
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
    /// Large values of one plain-TCP server are moved here (see there).
    bulk: Option<Bulk>,
    /// Bytes of bulk transfers under way (one at a time on that connection,
    /// so a transfer queued behind another is allowed its time too).
    bulk_in_flight: AtomicUsize,
}

/// Bytes of a transfer under way, counted off when it ends (or is dropped).
struct InFlight<'a>(&'a AtomicUsize, usize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, SeqCst);
    }
}

/// What a call is told while the breaker is open.
fn breaker_open() -> Error {
    Error::Redis(
        "not asked: the circuit breaker is open after a failure (a probe retries it)".into(),
    )
}

fn redis_err(e: impl std::fmt::Display) -> Error {
    Error::Redis(crate::tier::durable::redact_password(&e.to_string()))
}

/// Whether an error says Redis (or the way to it) is sick, as opposed to a
/// reply Redis gave (which proves it is alive). A cluster that answers
/// `CLUSTERDOWN` (a master lost, its slots uncovered) is sick too: every
/// lookup would be refused until it recovers.
fn is_transport(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
}

/// Where Redis is: one server, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// One multiplexed connection, or a cluster connection (one per node
/// inside, commands routed by key slot; `DEL` and `EXISTS` of many keys are
/// split by slot and their counts summed by redis-rs).
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The message of a URL the client refused, with any password in it scrubbed.
fn invalid_url(option: &str, url: &str, e: &redis::RedisError) -> Error {
    // The URL is not echoed: a malformed one has no shape to find its
    // password by. The parser's own message is scrubbed of any it has.
    let mut msg = format!("{option} is not a valid Redis URL: {e}");
    for secret in crate::tier::durable::passwords_of(url) {
        msg = msg.replace(&secret, "***");
    }
    Error::InvalidArgument(msg)
}

impl Client {
    fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(_))
    }

    fn new(target: &RedisTarget, timeout: Duration) -> Result<Client> {
        let urls: Vec<&String> = match target {
            RedisTarget::Single(url) => vec![url],
            RedisTarget::Cluster(nodes) => nodes.iter().collect(),
        };
        if urls.iter().any(|u| u.starts_with("rediss://")) {
            // rustls needs a process-wide crypto provider; keep one already installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        match target {
            RedisTarget::Single(url) => redis::Client::open(url.as_str())
                .map(Client::Single)
                .map_err(|e| invalid_url("redisUrl", url, &e)),
            RedisTarget::Cluster(nodes) => {
                for url in nodes {
                    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                        return Err(Error::InvalidArgument(format!(
                            "redisClusterNodes: each seed node is a redis:// or rediss:// URL, got {:?}",
                            crate::tier::durable::redact_password(url)
                        )));
                    }
                    let node = redis::Client::open(url.as_str())
                        .map_err(|e| invalid_url("redisClusterNodes", url, &e))?;
                    if node.get_connection_info().redis_settings().db() != 0 {
                        return Err(Error::InvalidArgument(format!(
                            "redisClusterNodes: a cluster has only database 0, got {:?}",
                            crate::tier::durable::redact_password(url)
                        )));
                    }
                }
                ClusterClient::builder(nodes.iter().map(String::as_str))
                    // Each node's connection; callers are bounded by `Link::send`
                    // anyway, and the probe may be patient (see PROBE_TIMEOUT).
                    .connection_timeout(timeout.max(PROBE_TIMEOUT))
                    // Replies are bounded by `Link::send`, by size; redis-rs's
                    // default of 16 retries with waits of seconds would outlast
                    // it. Two quick retries follow a MOVED during resharding.
                    .retries(2)
                    .min_retry_wait(5)
                    .max_retry_wait(50)
                    .build()
                    .map(Client::Cluster)
                    .map_err(|e| invalid_url("redisClusterNodes", &nodes.join(","), &e))
            }
        }
    }
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
    async fn connection(&self, timeout: Duration) -> std::result::Result<(Conn, u64), String> {
        let mut c = self.conn.lock().await;
        if self.shut.load(SeqCst) {
            return Err("closed".into());
        }
        if let Some((m, g)) = &*c {
            return Ok((m.clone(), *g));
        }
        let connecting = async {
            match &self.client {
                Client::Single(client) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(timeout))
                        // Replies are bounded here, by size (see `allowance`).
                        .set_response_timeout(None);
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Conn::Single)
                }
                Client::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
            }
        };
        match tokio::time::timeout(timeout, connecting).await {
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
        self.run_within(cmd, self.timeout, bytes).await
    }

    /// Like `run`, for a reply of at most `bound` bytes, most often far
    /// fewer: its own wait allows `bound`, but it is not counted as a
    /// transfer under way. Every lookup sends one; counted, the deadlines of
    /// concurrent lookups would add up to seconds on a hung server.
    async fn run_bounded<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        cmd: &redis::Cmd,
        bound: usize,
    ) -> Result<T> {
        self.run_within(cmd, self.allowance(self.timeout, bound), 0)
            .await
    }

    async fn run_within<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        cmd: &redis::Cmd,
        base: Duration,
        bytes: usize,
    ) -> Result<T> {
        if self.open.load(SeqCst) {
            return Err(breaker_open());
        }
        match self.send(cmd, self.timeout, base, bytes).await {
            Ok(v) => Ok(v),
            Err(Failure { message, transport }) => {
                if let Some(generation) = transport {
                    self.trip(generation, &message);
                }
                Err(redis_err(message))
            }
        }
    }

    /// Runs `work` (an exchange on the bulk connection, moving `bytes`) with
    /// `run`'s breaker and allowance. A failure on the way to Redis opens
    /// the breaker; a reply that does not come while other requests are
    /// answered is taken as busy, as in `send`.
    async fn bulk_run<T>(
        self: &Arc<Self>,
        bytes: usize,
        work: impl std::future::Future<Output = std::result::Result<T, BulkError>>,
    ) -> Result<T> {
        if self.open.load(SeqCst) || self.shut.load(SeqCst) {
            return Err(breaker_open());
        }
        // A failure seen after the breaker closed again (a newer shared
        // connection) must not open it once more.
        let generation = self.generation.load(SeqCst);
        let ahead = self.bulk_in_flight.fetch_add(bytes, SeqCst);
        let _done = InFlight(&self.bulk_in_flight, bytes);
        let allowed = self.allowance(self.timeout, bytes.saturating_add(ahead));
        match tokio::time::timeout(allowed, work).await {
            Ok(Ok(v)) => {
                self.heard();
                Ok(v)
            }
            Ok(Err(BulkError::Reply(r))) => {
                self.heard();
                Err(redis_err(r))
            }
            // While the shared connection is answered, a failure of this one
            // alone (a connection limit, a proxy) fails the call, not Redis.
            Ok(Err(e)) if self.answering() => Err(redis_err(e)),
            Ok(Err(e)) => {
                self.trip(Some(generation), &e.to_string());
                Err(redis_err(e))
            }
            Err(_) if self.answering() => Err(redis_err(format!(
                "no answer within {allowed:?}, while other requests were answered (busy)"
            ))),
            Err(_) => {
                let why = format!("no answer within {allowed:?}");
                self.trip(Some(generation), &why);
                Err(redis_err(why))
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
        let _done = InFlight(&self.in_flight, bytes);
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
            // One cluster node can hang while the others answer, so in a
            // cluster a reply that does not come is always taken as sickness.
            Err(_) if self.answering() && !self.client.is_cluster() => Err(Failure {
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

    /// Whether Redis can be used again: one server answers a `PING`; a
    /// cluster says `cluster_state:ok`, lists no master of slots as failing,
    /// and each such master answers a `PING` over this (new) connection, so
    /// a master that is down or not reached keeps the breaker open.
    async fn probe(&self, patience: Duration) -> std::result::Result<(), String> {
        let ping = redis::cmd("PING");
        if !self.client.is_cluster() {
            return self
                .send::<String>(&ping, patience, patience, 0)
                .await
                .map(drop)
                .map_err(|f| f.message);
        }
        let (conn, _) = self.connection(patience).await?;
        let Conn::Cluster(mut c) = conn else {
            return Err("not a cluster connection".into());
        };
        let info: String = within(
            patience,
            redis::cmd("CLUSTER").arg("INFO").query_async(&mut c),
        )
        .await
        .map_err(|e| e.to_string())?;
        if !info.contains("cluster_state:ok") {
            return Err("the cluster state is not ok".into());
        }
        for m in cluster_masters(&mut c, patience)
            .await
            .map_err(|e| e.to_string())?
        {
            if m.failing {
                return Err(format!("master {} is failing", m.addr));
            }
            within(patience, c.route_command(ping.clone(), m.route()))
                .await
                .map_err(|e| format!("master {}: {e}", m.addr))?;
        }
        self.heard();
        Ok(())
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
                let answered = link.probe(patience).await.is_ok();
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
    pub fn new(target: &RedisTarget, opts: RedisOptions) -> Result<Self> {
        let client = Client::new(target, opts.timeout)?;
        let bulk = match &client {
            Client::Single(c) => Bulk::for_server(c.get_connection_info()),
            Client::Cluster(_) => None,
        };
        Ok(RedisTier {
            link: Arc::new(Link {
                bulk,
                client,
                conn: Mutex::new(None),
                generation: AtomicU64::new(0),
                in_flight: AtomicUsize::new(0),
                bulk_in_flight: AtomicUsize::new(0),
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

    /// The value under `key`. `raw_len`, when the caller knows the matrix's
    /// shape, is its size as raw f32s: a value expected to be shorter than
    /// FIRST_READ is asked for whole in one round trip; any other is sized
    /// first (the hint only picks the order of the requests: a value longer
    /// than expected is read whole all the same).
    pub async fn get(&self, key: &str, raw_len: Option<usize>) -> Result<Lookup> {
        if self.skip() {
            return Ok(Lookup::Skipped);
        }
        let k = self.redis_key(key);
        if raw_len.is_some_and(|n| n.saturating_add(FIRST_READ_MARGIN) < FIRST_READ) {
            // Its first FIRST_READ bytes, fewer when that is all there is: a
            // bounded reply, so a bounded deadline. A missing key reads as "".
            // GETRANGE is atomic: a short reply is one whole value, and a
            // full one is dropped and the value read again whole, never joined.
            let head: Bytes = self
                .link
                .run_bounded(
                    redis::cmd("GETRANGE").arg(&k).arg(0).arg(FIRST_READ - 1),
                    FIRST_READ,
                )
                .await?;
            if head.is_empty() {
                return Ok(Lookup::Miss);
            }
            if head.len() < FIRST_READ {
                return Ok(decode_value(key, head));
            }
        }
        // The size first, so a large value still streaming is told apart
        // from a server that does not answer.
        let len: usize = self.link.run(&redis::Cmd::strlen(&k), 0).await?;
        if len == 0 {
            return Ok(Lookup::Miss);
        }
        let value: Option<Bytes> = match &self.link.bulk {
            Some(bulk) if len >= redis_bulk::MIN_LEN => self
                .link
                .bulk_run(len, bulk.get(k.as_bytes(), len))
                .await?
                .map(Bytes::from),
            _ => self.link.run(&redis::Cmd::get(&k), len).await?,
        };
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
        if let Some(bulk) = self
            .link
            .bulk
            .as_ref()
            .filter(|_| bytes >= redis_bulk::MIN_LEN)
        {
            let k = self.redis_key(&entry.metadata.config_hash);
            let parts: [&[u8]; 2] = [&head, &entry.payload];
            return self
                .link
                .bulk_run(bytes, bulk.set(k.as_bytes(), &parts, self.ttl_seconds))
                .await;
        }
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

    /// The probe's check (a `PING`; for a cluster, its state and every
    /// master) within the timeout, whatever the breaker says, and without
    /// moving it: a readiness probe looks, it does not decide.
    pub async fn ping(&self) -> Result<()> {
        self.link.probe(self.link.timeout).await.map_err(redis_err)
    }

    /// Deletes the keys; returns how many existed. Fails while the breaker is
    /// open: an invalidation must know its deletes did not happen.
    pub async fn delete(&self, keys: &[String]) -> Result<u64> {
        self.count_of("DEL", keys).await
    }

    /// How many of `keys` have a copy now (`EXISTS`).
    pub async fn count_existing(&self, keys: &[String]) -> Result<u64> {
        self.count_of("EXISTS", keys).await
    }

    /// `DEL` or `EXISTS` of `keys`: the sum of the counts. One server gets
    /// 1000 keys a request. A cluster gets one key a request (64 at a time):
    /// redis-rs would split a many-key request by slot, but silently leave
    /// out the slots of a master it has no connection to, and an
    /// invalidation must know when a delete did not happen.
    async fn count_of(&self, command: &str, keys: &[String]) -> Result<u64> {
        let per_request = if self.link.client.is_cluster() {
            1
        } else {
            1000
        };
        let mut n = 0;
        for batch in keys.chunks(64 * per_request) {
            let requests = batch.chunks(per_request).map(|chunk| {
                let mut cmd = redis::cmd(command);
                for k in chunk {
                    cmd.arg(self.redis_key(k));
                }
                async move { self.link.run::<u64>(&cmd, 0).await }
            });
            n += futures::future::try_join_all(requests)
                .await?
                .into_iter()
                .sum::<u64>();
        }
        Ok(n)
    }

    /// How many keys exist under the prefix (`SCAN`, 1000 at a time, on
    /// every master of a cluster; the count can miss or repeat keys written
    /// or expiring meanwhile). Like `ping`: an operator's question, sent even
    /// while the breaker is open, and without moving it. A cluster is
    /// scanned over a connection of its own, so the scan's routing cannot
    /// disturb the calls on the shared one.
    pub async fn count_keys(&self) -> Result<u64> {
        let pattern = super::catalog::redis_match_pattern(&self.prefix);
        let t = self.link.timeout;
        let scan = |cursor: &str| {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            cmd
        };
        let mut n = 0u64;
        match &self.link.client {
            Client::Single(_) => {
                let (Conn::Single(mut c), _) = self.link.connection(t).await.map_err(redis_err)?
                else {
                    return Err(Error::Internal("not a single-server connection".into()));
                };
                let mut cursor = String::from("0");
                loop {
                    let (next, keys): (String, Vec<Bytes>) =
                        within(t, scan(&cursor).query_async(&mut c)).await?;
                    n += keys.len() as u64;
                    if next == "0" {
                        return Ok(n);
                    }
                    cursor = next;
                }
            }
            Client::Cluster(client) => {
                let mut c = within(t, client.get_async_connection()).await?;
                for m in cluster_masters(&mut c, t).await? {
                    if m.failing {
                        return Err(redis_err(format!(
                            "master {} is failing: its keys cannot be counted",
                            m.addr
                        )));
                    }
                    let mut cursor = String::from("0");
                    loop {
                        let v = within(t, c.route_command(scan(&cursor), m.route())).await?;
                        let (next, keys): (String, Vec<Bytes>) =
                            redis::from_redis_value(v).map_err(redis_err)?;
                        n += keys.len() as u64;
                        if next == "0" {
                            break;
                        }
                        cursor = next;
                    }
                }
                Ok(n)
            }
        }
    }

    /// Drops the connection and stops the probe; later calls fail.
    pub async fn close(&self) {
        self.link.shut.store(true, SeqCst);
        *self.link.conn.lock().await = None;
        if let Some(b) = &self.link.bulk {
            b.disconnect();
        }
    }
}

impl Drop for RedisTier {
    /// A cache dropped without `close` (a JS object collected) stops its
    /// probe too; the connection goes with the last handle.
    fn drop(&mut self) {
        self.link.shut.store(true, SeqCst);
    }
}

/// `fut`'s reply, or an error after `t`.
async fn within<T>(
    t: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(t, fut).await {
        Ok(reply) => reply.map_err(redis_err),
        Err(_) => Err(redis_err(format!("no answer within {t:?}"))),
    }
}

/// A master that owns slots, as `CLUSTER NODES` lists it.
struct Master {
    addr: String,
    host: String,
    port: u16,
    /// Flagged `fail` or `fail?` by the node asked.
    failing: bool,
}

impl Master {
    /// Routing to this master's own connection. Not by one of its slots:
    /// redis-rs sends a slot's command to another node when the slot's
    /// master is not connected, so a `PING` or `SCAN` would quietly go
    /// elsewhere; by address it fails instead.
    fn route(&self) -> RoutingInfo {
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: self.host.clone(),
            port: self.port,
        })
    }
}

/// The masters that own slots, from `CLUSTER NODES` (lines of `id
/// host:port@bus flags master-id ping pong epoch link slot...`). A master
/// whose slots went to its replica after a failover owns none and is left out.
async fn cluster_masters(c: &mut ClusterConnection, t: Duration) -> Result<Vec<Master>> {
    let text: String = within(t, redis::cmd("CLUSTER").arg("NODES").query_async(c)).await?;
    let mut masters = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags: Vec<&str> = fields.get(2).map_or(vec![], |f| f.split(',').collect());
        // Slot fields (from the ninth on) are `a-b` or `a`; `[...]` entries are slots moving.
        let owns_slots = fields.iter().skip(8).any(|f| !f.starts_with('['));
        if !flags.contains(&"master") || !owns_slots {
            continue;
        }
        let addr = fields[1].split('@').next().unwrap_or(fields[1]);
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse() else {
            continue;
        };
        masters.push(Master {
            addr: addr.to_string(),
            host: host.to_string(),
            port,
            failing: flags.iter().any(|f| f.starts_with("fail")),
        });
    }
    if masters.is_empty() {
        return Err(redis_err("CLUSTER NODES names no master that owns slots"));
    }
    Ok(masters)
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
        derived: Default::default(),
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
    Ok(Entry::new(payload.into(), Codec::Zlib, metadata))
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
            derived: Default::default(),
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
