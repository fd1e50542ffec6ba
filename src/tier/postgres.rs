//! PostgreSQL durable store (the production source of truth), and the stored
//! row format that the SQLite store shares with it.
//!
//! The table `scenario_matrices` belongs to the TypeScript app as much as to us:
//! migrations only add columns and an index (`migrations/postgres`), reads
//! accept the app's legacy rows (zlib payload labelled 'zstd', scenario count
//! only in `scenario_states.scenarios`), and writes fill every column its
//! schema requires of a 'complete' row. Cross-process single flight is a
//! transaction-scoped advisory lock per key.

use std::fmt::Display;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value as Json};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

use super::durable::{redact_password, DurableOptions};
use super::Entry;
use crate::codec::Codec;
use crate::config::{Recycling, ScenarioConfig};
use crate::error::{Error, Result};
use crate::scenario::Metadata;

/// Our own bookkeeping table instead of sqlx's default `_sqlx_migrations`: the
/// database is shared with the TypeScript app and maybe other services, and two
/// sqlx-migrated programs sharing one bookkeeping table reject each other's
/// versions.
pub(super) const MIGRATIONS_TABLE: &str = "_scenario_matrix_cache_migrations";

/// `payload_format` of rows holding this library's checksummed zstd envelope.
/// NULL marks a legacy TypeScript row.
pub(super) const PAYLOAD_FORMAT_ENVELOPE: i64 = 2;

/// A `get_or_insert` waits this long at least for another process generating
/// the same key (in SQLite: any key), whatever the (short) statement timeout
/// is: the holder is bounded by one generation plus one insert, and giving up
/// early would only turn a slow generation into an error.
pub(super) const MIN_LOCK_WAIT: Duration = Duration::from_secs(60);

pub(super) fn migrator(mut m: Migrator) -> Migrator {
    m.dangerous_set_table_name(MIGRATIONS_TABLE);
    // Migrations are additive only, so a process of an older version must keep
    // working against a database that a newer one already migrated further
    // (rolling deploys) instead of refusing to open.
    m.set_ignore_missing(true);
    m
}

// ---------------------------------------------------------------------------
// The stored row, shared by both stores.
// ---------------------------------------------------------------------------

/// One row as read, before validation. Both stores select into this shape so
/// the legacy rules and corruption checks exist once.
pub(super) struct StoredRow {
    pub key: String,
    pub payload: Option<Vec<u8>>,
    pub codec_label: Option<String>,
    pub payload_format: Option<i64>,
    /// Our column, or for legacy rows the length of `scenario_states.scenarios`.
    pub num_scenarios: Option<i64>,
    pub bucket_count: Option<i64>,
    /// ISO 8601 UTC with milliseconds: our column, or for legacy rows the
    /// row's creation time. NULL (unknown) for a legacy matrix that reached
    /// us only through Redis.
    pub generated_at: Option<String>,
    pub duration_ms: Option<f64>,
    /// JSON text of an array of numbers.
    pub recycling_multiples: Option<String>,
    /// JSON text: our rows list the buckets in column order.
    pub bucket_params: Option<String>,
}

impl StoredRow {
    pub fn into_entry(self) -> Result<Entry> {
        let key = self.key;
        let codec = match (self.payload_format, self.codec_label.as_deref()) {
            (Some(PAYLOAD_FORMAT_ENVELOPE), Some("zstd")) => Codec::Zstd,
            // The TypeScript app deflated with zlib but labelled the row 'zstd'.
            (None, Some("zstd")) => Codec::Zlib,
            (None, Some("none")) => Codec::None,
            (Some(f), _) if f != PAYLOAD_FORMAT_ENVELOPE => {
                return Err(Error::corrupt(format!(
                    "durable row {key}: unknown payload_format {f} (written by a newer version?)"
                )))
            }
            (_, label) => {
                return Err(Error::corrupt(format!(
                    "durable row {key}: compression_codec {label:?} cannot be read (payload_format {:?})",
                    self.payload_format
                )))
            }
        };
        let count = |v: Option<i64>, what: &str| -> Result<u32> {
            match v {
                Some(n) if n >= 1 && n <= i64::from(u32::MAX) => Ok(n as u32),
                Some(n) => Err(Error::corrupt(format!(
                    "durable row {key}: invalid {what} {n}"
                ))),
                None => Err(Error::corrupt(format!("durable row {key}: {what} missing"))),
            }
        };
        let num_scenarios = count(self.num_scenarios, "scenario count")?;
        let num_buckets = count(self.bucket_count, "bucket count")?;
        let payload = self
            .payload
            .ok_or_else(|| Error::corrupt(format!("durable row {key}: payload missing")))?;
        // Unreadable multiples are not fatal: they are derived data the cache
        // recomputes from the config when the list does not fit the buckets.
        let recycling_multiples = self
            .recycling_multiples
            .and_then(|t| parse_number_array(&t))
            .unwrap_or_default();
        // Our rows record their column order; without it the columns could
        // not be attributed to buckets. Legacy rows recorded none we can trust.
        let bucket_names = if codec == Codec::Zstd {
            let names = self
                .bucket_params
                .as_deref()
                .and_then(bucket_names)
                .filter(|n| n.len() == num_buckets as usize);
            names.ok_or_else(|| {
                Error::corrupt(format!(
                    "durable row {key}: bucket_params does not name its {num_buckets} columns"
                ))
            })?
        } else {
            Vec::new()
        };
        Ok(Entry {
            payload: Bytes::from(payload),
            codec,
            metadata: Metadata {
                num_scenarios,
                num_buckets,
                generated_at: self.generated_at,
                duration_ms: self.duration_ms,
                recycling_multiples,
                bucket_names,
                config_hash: key,
            },
        })
    }
}

/// The `name` of every bucket in a `bucket_params` array, in order.
fn bucket_names(text: &str) -> Option<Vec<String>> {
    let j: Json = serde_json::from_str(text).ok()?;
    j.as_array()?
        .iter()
        .map(|b| b.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// A JSON array of numbers, parsed with std's correctly rounded `f64` parser:
/// serde_json's default parser (without its `float_roundtrip` feature) can be
/// one ulp off, and a hit must return exactly the multiples the miss returned.
/// Accepts PostgreSQL's jsonb rendering (`[1.5, 2]`) and ours.
fn parse_number_array(text: &str) -> Option<Vec<f64>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(|t| {
            let t = t.trim();
            // JSON number characters only (Rust would also accept "inf", "NaN").
            let numeric = !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
            if numeric {
                t.parse::<f64>().ok()
            } else {
                None
            }
        })
        .collect()
}

/// What a write stores, derived from the config and the generated entry.
pub(super) struct NewRow<'a> {
    pub key: &'a str,
    pub fund_id: &'a str,
    pub taxonomy_version: &'a str,
    pub payload: &'a [u8],
    pub num_scenarios: i64,
    pub bucket_count: i64,
    /// JSON texts.
    pub scenario_states: String,
    pub bucket_params: String,
    pub s_opt: String,
    pub recycling_multiples: String,
    pub generated_at: Option<&'a str>,
    pub duration_ms: Option<f64>,
}

impl<'a> NewRow<'a> {
    /// Refuses entries that do not describe `cfg` under `key`: the durable
    /// store is the source of truth, and every later hit returns what it holds.
    pub fn new(cfg: &'a ScenarioConfig, key: &'a str, entry: &'a Entry) -> Result<Self> {
        let m = &entry.metadata;
        if entry.codec != Codec::Zstd {
            // Only the envelope is ever written; a zlib payload would recreate
            // the TypeScript mislabelling.
            return Err(Error::Internal(format!(
                "refusing to store a {:?} payload for {key}: only the zstd envelope is written",
                entry.codec
            )));
        }
        if m.config_hash != key
            || m.num_buckets as usize != cfg.buckets.len()
            || m.num_scenarios != cfg.num_scenarios
        {
            return Err(Error::Internal(format!(
                "refusing to store an entry for {} ({} x {}) under key {key} ({} x {})",
                m.config_hash,
                m.num_scenarios,
                m.num_buckets,
                cfg.num_scenarios,
                cfg.buckets.len()
            )));
        }
        // The stored matrix is in the key's bucket order, and bucket_params
        // records that order (with the values the key hashed).
        let norm = crate::key::normalised(cfg);
        if !norm
            .buckets
            .iter()
            .map(|b| &b.name)
            .eq(m.bucket_names.iter())
        {
            return Err(Error::Internal(format!(
                "refusing to store columns {:?} for {key}: the key's bucket order differs",
                m.bucket_names
            )));
        }
        let buckets: Vec<Json> = norm
            .buckets
            .iter()
            .map(|b| {
                json!({
                    "name": b.name,
                    "capitalAllocation": number(b.capital_allocation),
                    "moicCalibration": {"median": number(b.median), "p90": number(b.p90)},
                })
            })
            .collect();
        let w = &norm.correlation_weights;
        let recycling = match norm.recycling {
            Recycling::Disabled => json!({"enabled": false, "mode": "same-bucket"}),
            Recycling::Enabled {
                reinvestment_rate,
                avg_holding_period,
                fund_lifetime,
                ..
            } => json!({
                "enabled": true,
                "mode": "same-bucket",
                "reinvestmentRate": number(reinvestment_rate),
                "avgHoldingPeriod": number(avg_holding_period),
                "fundLifetime": number(fund_lifetime),
            }),
        };
        let s_opt = json!({
            "correlationWeights": {
                "macro": number(w.macro_),
                "systematic": number(w.systematic),
                "idiosyncratic": number(w.idiosyncratic),
            },
            "recycling": recycling,
        });
        Ok(NewRow {
            key,
            fund_id: &cfg.fund_id,
            taxonomy_version: &cfg.taxonomy_version,
            payload: &entry.payload,
            num_scenarios: i64::from(m.num_scenarios),
            bucket_count: i64::from(m.num_buckets),
            // Only the count: the TypeScript app stored one element per
            // scenario (2.9 MB at 100k) just to remember this number.
            scenario_states: json!({"numScenarios": m.num_scenarios}).to_string(),
            bucket_params: Json::Array(buckets).to_string(),
            s_opt: s_opt.to_string(),
            recycling_multiples: serde_json::to_string(&m.recycling_multiples)
                .unwrap_or_else(|_| "[]".into()),
            generated_at: m.generated_at.as_deref(),
            duration_ms: m.duration_ms,
        })
    }
}

/// A float as JavaScript would write it in JSON: integral values without `.0`.
fn number(v: f64) -> Json {
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// Error messages mention the store but never its password, whether the URL
/// carries it in the authority or as a `password=` query parameter, raw or
/// percent-encoded.
pub(super) struct Redactor {
    shown: String,
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(url: &str) -> Self {
        let mut secrets = Vec::new();
        if let Some((_, rest)) = url.split_once("://") {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                if let Some((_, pw)) = userinfo.split_once(':') {
                    secrets.push(pw.to_string());
                }
            }
        }
        if let Some((_, query)) = url.split_once('?') {
            for pair in query.split('&') {
                if let Some(pw) = pair.strip_prefix("password=") {
                    secrets.push(pw.to_string());
                }
            }
        }
        let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
        secrets.extend(decoded);
        secrets.retain(|s| !s.is_empty());
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let mut r = Redactor {
            shown: redact_password(url),
            secrets,
        };
        r.shown = r.scrub(r.shown.clone());
        r
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn scrub(&self, mut s: String) -> String {
        for secret in &self.secrets {
            if s.contains(secret.as_str()) {
                s = s.replace(secret.as_str(), "***");
            }
        }
        s
    }

    pub fn msg(&self, what: &str, err: &dyn Display) -> String {
        self.scrub(format!("{what} ({}): {err}", self.shown))
    }

    pub fn unavailable(&self, what: &str, err: &dyn Display) -> Error {
        Error::DurableUnavailable(self.msg(what, err))
    }

    pub fn write_failed(&self, what: &str, err: &dyn Display) -> Error {
        Error::DurableWrite(self.msg(what, err))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The advisory-lock id of a key. Keys are 64 hex digits, so their first 16
/// are already uniformly distributed; anything else is hashed (FNV-1a, stable
/// across processes and versions, unlike std's hasher).
pub(super) fn lock_id(key: &str) -> i64 {
    if let Some(head) = key.get(..16) {
        if let Ok(v) = u64::from_str_radix(head, 16) {
            return v as i64;
        }
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// Complete rows only; legacy rows get their scenario count from the
/// `scenario_states.scenarios` array and their time from `created_at` (ours
/// keep `generated_at`, NULL when unknown). The
/// count is computed by the server so a legacy row's multi-megabyte JSON never
/// crosses the wire.
const SELECT_ROW: &str = r#"
SELECT matrix_key,
       moic_matrix,
       compression_codec,
       payload_format::int8 AS payload_format,
       bucket_count::int8 AS bucket_count,
       COALESCE(num_scenarios,
                CASE WHEN jsonb_typeof(scenario_states -> 'scenarios') = 'array'
                     THEN jsonb_array_length(scenario_states -> 'scenarios') END)::int8 AS num_scenarios,
       to_char(CASE WHEN payload_format IS NULL THEN created_at ELSE generated_at END
                 AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS generated_at,
       duration_ms,
       recycling_multiples::text AS recycling_multiples,
       CASE WHEN payload_format IS NOT NULL THEN bucket_params::text END AS bucket_params
  FROM scenario_matrices
 WHERE matrix_key = $1 AND status = 'complete'
"#;

/// Also takes over a row the TypeScript app left 'pending', 'processing' or
/// 'failed' under the same key (a plain DO NOTHING would leave the key
/// unreadable forever), and a complete TypeScript row, which is only ever
/// replaced when it cannot be served (see `Durable::get_or_insert`). A
/// complete row of ours is never overwritten.
const UPSERT_ROW: &str = r#"
INSERT INTO scenario_matrices AS m (
    matrix_key, fund_id, taxonomy_version, matrix_type, moic_matrix,
    scenario_states, bucket_params, compression_codec, matrix_layout, bucket_count,
    s_opt, status, error_message,
    num_scenarios, payload_format, generated_at, duration_ms, recycling_multiples)
VALUES ($1, $2, $3, 'moic', $4,
        $5::jsonb, $6::jsonb, 'zstd', 'row-major', $7,
        $8::jsonb, 'complete', NULL,
        $9, $10, $11::timestamptz, $12, $13::jsonb)
ON CONFLICT (matrix_key) DO UPDATE SET
    fund_id = EXCLUDED.fund_id,
    taxonomy_version = EXCLUDED.taxonomy_version,
    matrix_type = EXCLUDED.matrix_type,
    moic_matrix = EXCLUDED.moic_matrix,
    scenario_states = EXCLUDED.scenario_states,
    bucket_params = EXCLUDED.bucket_params,
    compression_codec = EXCLUDED.compression_codec,
    matrix_layout = EXCLUDED.matrix_layout,
    bucket_count = EXCLUDED.bucket_count,
    s_opt = EXCLUDED.s_opt,
    status = EXCLUDED.status,
    error_message = NULL,
    num_scenarios = EXCLUDED.num_scenarios,
    payload_format = EXCLUDED.payload_format,
    generated_at = EXCLUDED.generated_at,
    duration_ms = EXCLUDED.duration_ms,
    recycling_multiples = EXCLUDED.recycling_multiples,
    created_at = now(),
    updated_at = now()
WHERE m.status IS DISTINCT FROM 'complete' OR m.payload_format IS NULL
"#;

pub struct PgStore {
    pool: PgPool,
    redact: Redactor,
    /// `statement_timeout` value for the lock wait of `get_or_insert`.
    lock_wait_ms: String,
}

impl PgStore {
    pub async fn open(url: &str, opts: &DurableOptions) -> Result<Self> {
        let redact = Redactor::new(url);
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| redact.unavailable("invalid PostgreSQL URL", &e))?;
        // Every statement is bounded by the timeout (server side, so a slow
        // query is cancelled cleanly instead of poisoning a connection),
        // unless the URL already chose its own statement_timeout.
        if !connect
            .get_options()
            .is_some_and(|o| o.contains("statement_timeout"))
        {
            connect = connect.options([("statement_timeout", millis(opts.timeout))]);
        }
        // One plain connection first: an unreachable server then fails fast
        // with its real cause ("connection refused", a TLS or auth error),
        // where a pool would retry until acquire_timeout and report only
        // "pool timed out".
        let probe = tokio::time::timeout(opts.timeout, PgConnection::connect_with(&connect))
            .await
            .map_err(|_| redact.unavailable("connecting to PostgreSQL", &"timed out"))?
            .map_err(|e| redact.unavailable("connecting to PostgreSQL", &e))?;
        let _ = probe.close().await;
        if opts.run_migrations {
            migrate(&connect, opts.timeout, &redact).await?;
        }
        let pool_opts = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.timeout);
        // connect_with opens one connection within acquire_timeout; the outer
        // bound only guards against a connect attempt that ignores it.
        let pool = tokio::time::timeout(
            opts.timeout + Duration::from_millis(500),
            pool_opts.connect_with(connect),
        )
        .await
        .map_err(|_| redact.unavailable("connecting to PostgreSQL", &"timed out"))?
        .map_err(|e| redact.unavailable("connecting to PostgreSQL", &e))?;
        Ok(PgStore {
            pool,
            redact,
            lock_wait_ms: millis(opts.timeout.max(MIN_LOCK_WAIT)),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let row = sqlx::query(SELECT_ROW)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.redact.unavailable("reading scenario_matrices", &e))?;
        row.map(|r| self.stored_row(&r)?.into_entry()).transpose()
    }

    pub async fn get_or_insert<F, Fut>(
        &self,
        cfg: &ScenarioConfig,
        key: &str,
        usable: impl Fn(&Entry) -> bool + Send,
        make: F,
    ) -> Result<(Entry, bool)>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Entry>> + Send,
    {
        let unavailable = |e: sqlx::Error| self.redact.unavailable("locking the key", &e);
        // The lock is transaction-scoped: if this future is dropped anywhere
        // below (caller cancelled, process dies), the transaction rolls back
        // and PostgreSQL releases the lock; no path can leak it.
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(&self.lock_wait_ms)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_id(key))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // Another process may have stored it while we waited.
        if let Some(entry) = self.read_in(&mut tx, key).await?.filter(&usable) {
            // Only releases the lock; nothing was written.
            let _ = tx.commit().await;
            return Ok((entry, false));
        }
        let entry = make().await?;
        let row = NewRow::new(cfg, key, &entry)?;
        let written = sqlx::query(UPSERT_ROW)
            .bind(row.key)
            .bind(row.fund_id)
            .bind(row.taxonomy_version)
            .bind(row.payload)
            .bind(&row.scenario_states)
            .bind(&row.bucket_params)
            .bind(row.bucket_count as i32)
            .bind(&row.s_opt)
            .bind(row.num_scenarios as i32)
            .bind(PAYLOAD_FORMAT_ENVELOPE as i16)
            .bind(row.generated_at)
            .bind(row.duration_ms)
            .bind(&row.recycling_multiples)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.redact.write_failed("storing the matrix", &e))?;
        if written.rows_affected() == 0 {
            // A writer that does not take our lock (the TypeScript app)
            // completed the row meanwhile: it is the truth now.
            if let Some(existing) = self.read_in(&mut tx, key).await? {
                let _ = tx.commit().await;
                return Ok((existing, false));
            }
            return Err(Error::DurableWrite(format!(
                "storing the matrix ({}): row {key} was neither inserted nor readable",
                self.redact.shown()
            )));
        }
        tx.commit()
            .await
            .map_err(|e| self.redact.write_failed("committing the matrix", &e))?;
        Ok((entry, true))
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM scenario_matrices WHERE matrix_key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(|e| self.delete_failed("deleting a matrix", e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes the fund's cached matrices ('complete' rows) only: the
    /// TypeScript app's 'pending', 'processing' and 'failed' rows are its own.
    pub async fn delete_fund(
        &self,
        fund_id: &str,
        taxonomy_version: Option<&str>,
    ) -> Result<Vec<String>> {
        let q = match taxonomy_version {
            Some(t) => sqlx::query_scalar(
                "DELETE FROM scenario_matrices \
                 WHERE fund_id = $1 AND taxonomy_version = $2 AND status = 'complete' \
                 RETURNING matrix_key",
            )
            .bind(fund_id)
            .bind(t),
            None => sqlx::query_scalar(
                "DELETE FROM scenario_matrices WHERE fund_id = $1 AND status = 'complete' \
                 RETURNING matrix_key",
            )
            .bind(fund_id),
        };
        q.fetch_all(&self.pool)
            .await
            .map_err(|e| self.delete_failed("deleting a fund's matrices", e))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The database refusing a delete is a write failure; not reaching it is
    /// unavailability, as for reads.
    fn delete_failed(&self, what: &str, e: sqlx::Error) -> Error {
        match e {
            sqlx::Error::Database(_) => self.redact.write_failed(what, &e),
            _ => self.redact.unavailable(what, &e),
        }
    }

    async fn read_in(&self, conn: &mut PgConnection, key: &str) -> Result<Option<Entry>> {
        let row = sqlx::query(SELECT_ROW)
            .bind(key)
            .fetch_optional(conn)
            .await
            .map_err(|e| self.redact.unavailable("reading scenario_matrices", &e))?;
        row.map(|r| self.stored_row(&r)?.into_entry()).transpose()
    }

    fn stored_row(&self, r: &PgRow) -> Result<StoredRow> {
        let get = |e: sqlx::Error| {
            self.redact
                .unavailable("decoding a scenario_matrices row", &e)
        };
        Ok(StoredRow {
            key: r.try_get("matrix_key").map_err(get)?,
            payload: r.try_get("moic_matrix").map_err(get)?,
            codec_label: r.try_get("compression_codec").map_err(get)?,
            payload_format: r.try_get("payload_format").map_err(get)?,
            num_scenarios: r.try_get("num_scenarios").map_err(get)?,
            bucket_count: r.try_get("bucket_count").map_err(get)?,
            generated_at: r.try_get("generated_at").map_err(get)?,
            duration_ms: r.try_get("duration_ms").map_err(get)?,
            recycling_multiples: r.try_get("recycling_multiples").map_err(get)?,
            bucket_params: r.try_get("bucket_params").map_err(get)?,
        })
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

/// How long one migration attempt waits for a table lock. Our `ALTER TABLE`
/// needs an exclusive lock, and while its request waits every other
/// session's reads of the table queue behind it: so it waits only this long,
/// then gives way, and tries again a little later.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_millis(100);
const MIGRATION_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Runs the migrations, retrying while a lock they need is held by another
/// session, for at most `timeout`; then `E_MIGRATION_BLOCKED`.
async fn migrate(connect: &PgConnectOptions, timeout: Duration, redact: &Redactor) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match migrate_once(connect, timeout, redact).await? {
            Ok(()) => return Ok(()),
            Err(_) if std::time::Instant::now() + MIGRATION_RETRY_PAUSE < deadline => {
                tokio::time::sleep(MIGRATION_RETRY_PAUSE).await;
            }
            Err(holder) => {
                return Err(Error::MigrationBlocked(format!(
                    "the migrations of scenario_matrices could not take the lock they need within {} ms ({attempts} attempts of {} ms each; {holder}). Another session holds the table (a long transaction of the app, or another process migrating); nothing was changed. Retry later, or apply the migrations at deploy time and open with runMigrations: false.",
                    timeout.as_millis(),
                    MIGRATION_LOCK_WAIT.as_millis(),
                )))
            }
        }
    }
}

/// One attempt through a one-connection pool of its own: sqlx's migrator
/// holds a session-level advisory lock (so concurrent opens from several
/// processes apply each migration once), and closing that pool releases the
/// lock whatever happened, so a failed run never leaves it in a connection
/// the store keeps using. No statement timeout here (building the index on a
/// large table is legitimate), but lock waits are bounded: `Ok(Err(why))`
/// when one ran out. Each migration is one transaction, so a failed attempt
/// leaves nothing behind. (A pool rather than a bare connection because
/// `Migrator::run` on `&mut PgConnection` makes the future not provably `Send`.)
async fn migrate_once(
    connect: &PgConnectOptions,
    timeout: Duration,
    redact: &Redactor,
) -> Result<std::result::Result<(), String>> {
    let pool = tokio::time::timeout(
        timeout + Duration::from_millis(500),
        PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(timeout)
            .connect_with(connect.clone().options([
                ("statement_timeout", "0".to_string()),
                ("lock_timeout", millis(MIGRATION_LOCK_WAIT)),
            ])),
    )
    .await
    .map_err(|_| redact.unavailable("connecting to PostgreSQL", &"timed out"))?
    .map_err(|e| redact.unavailable("connecting to PostgreSQL", &e))?;
    let result = migrator(sqlx::migrate!("./migrations/postgres"))
        .run(&pool)
        .await;
    pool.close().await;
    match result {
        Ok(()) => Ok(Ok(())),
        Err(e) if lock_not_available(&e) => Ok(Err(e.to_string())),
        Err(e) => Err(redact.unavailable("migrating scenario_matrices", &e)),
    }
}

/// SQLSTATE 55P03: a lock wait ran into `lock_timeout`.
fn lock_not_available(e: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError;
    let db = match e {
        MigrateError::Execute(sqlx::Error::Database(d))
        | MigrateError::ExecuteMigration(sqlx::Error::Database(d), _) => d,
        _ => return false,
    };
    db.code().as_deref() == Some("55P03")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_come_from_the_key() {
        assert_eq!(lock_id("0000000000000001ffff"), 1);
        assert_eq!(
            lock_id("ffffffffffffffff0000000000000000000000000000000000000000000000aa"),
            -1
        );
        // Anything else: FNV-1a, pinned (other processes and versions must agree).
        assert_eq!(lock_id(""), -3_750_763_034_362_895_579);
        assert_eq!(lock_id("not hex at all"), 4_096_467_540_552_539_131);
        assert_eq!(lock_id("not hex at all!"), 2_815_179_666_291_364_718);
        assert_eq!(lock_id("000000000000000g"), -4_426_441_419_151_540_112);
    }

    #[test]
    fn redactor_hides_passwords_everywhere() {
        let r = Redactor::new("postgres://bob:p%40ss@db:5432/x?password=other&sslmode=disable");
        let m = r.msg("oops", &"p@ss and p%40ss and other");
        assert!(
            !m.contains("p@ss") && !m.contains("p%40ss") && !m.contains("other"),
            "{m}"
        );
        assert!(m.contains("bob:***@db:5432"), "{m}");
        let plain = Redactor::new("postgres://bob@db/x");
        assert_eq!(plain.msg("x", &"bob"), "x (postgres://bob@db/x): bob");
    }

    #[test]
    fn number_arrays_parse_exactly() {
        assert_eq!(
            parse_number_array("[1.6440483296822455, 2.474736686520292]"),
            Some(vec![1.6440483296822455, 2.474736686520292])
        );
        assert_eq!(parse_number_array(" [] "), Some(vec![]));
        assert_eq!(
            parse_number_array("[1e-7,0.0000001,2]"),
            Some(vec![1e-7, 1e-7, 2.0])
        );
        assert_eq!(parse_number_array("[1, null]"), None);
        assert_eq!(parse_number_array("[inf]"), None);
        assert_eq!(parse_number_array("{}"), None);
    }

    #[test]
    fn legacy_rows_read_as_zlib_and_bad_counts_are_corrupt() {
        let row = |format: Option<i64>, label: &str, n: Option<i64>| StoredRow {
            key: "k".into(),
            payload: Some(vec![1, 2, 3]),
            codec_label: Some(label.into()),
            payload_format: format,
            num_scenarios: n,
            bucket_count: Some(2),
            generated_at: Some("2026-01-01T00:00:00.000Z".into()),
            duration_ms: None,
            recycling_multiples: None,
            bucket_params: Some(r#"[{"name": "b"}, {"name": "a"}]"#.into()),
        };
        let legacy = row(None, "zstd", Some(4)).into_entry().unwrap();
        assert_eq!(legacy.codec, Codec::Zlib);
        assert_eq!(legacy.metadata.duration_ms, None);
        assert!(legacy.metadata.recycling_multiples.is_empty());
        assert!(legacy.metadata.bucket_names.is_empty());
        let ours = row(Some(2), "zstd", Some(4)).into_entry().unwrap();
        assert_eq!(ours.codec, Codec::Zstd);
        // Column order as recorded.
        assert_eq!(ours.metadata.bucket_names, ["b", "a"]);
        let mut unnamed = row(Some(2), "zstd", Some(4));
        unnamed.bucket_params = Some(r#"[{"name": "b"}]"#.into());
        assert_eq!(unnamed.into_entry().unwrap_err().code(), "E_CORRUPT");
        assert_eq!(
            row(None, "none", Some(4)).into_entry().unwrap().codec,
            Codec::None
        );
        for bad in [
            row(None, "zstd", None),
            row(None, "zstd", Some(0)),
            row(None, "lz4", Some(4)),
            row(Some(3), "zstd", Some(4)),
        ] {
            let e = bad.into_entry().unwrap_err();
            assert_eq!(e.code(), "E_CORRUPT");
            assert!(e.to_string().contains("row k"), "{e}");
        }
    }
}
