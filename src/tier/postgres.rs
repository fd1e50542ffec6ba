//! PostgreSQL durable store (the production source of truth). The row format
//! it shares with the SQLite store is in [`super::rows`].
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

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

use super::catalog::{FundSummary, RowDescription, StoreSummary};
use super::durable::{passwords_of, percent_decode, redact_password, DurableOptions};
use super::invalidation::{keys_of, new_origin, Notice, Scope, CHANNEL, GC_BATCH};
use super::rows::{
    migrator, typescript_payload, NewRow, StoredRow, MIN_LOCK_WAIT, PAYLOAD_FORMAT_ENVELOPE,
};
use super::Entry;
use crate::config::ScenarioConfig;
use crate::error::{Error, Result};

/// Error messages mention the store but never its password, whether the URL
/// carries it in the authority or as a `password=` query parameter, raw or
/// percent-encoded.
pub(super) struct Redactor {
    shown: String,
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(url: &str) -> Self {
        let mut secrets = passwords_of(url);
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

/// A connection keeps its socket buffers at their largest: after a payload
/// of megabytes each pooled connection would hold two or three times that
/// for its whole life (about 32 MB for a 100,000 x 50 row, measured with
/// heaptrack). Shrinking them costs one small reallocation on the next use.
fn release_large_buffers(conn: &mut PgConnection, payload_len: usize) {
    const LARGE: usize = 1 << 20;
    if payload_len >= LARGE {
        conn.shrink_buffers();
    }
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

/// A failed first connection, said plainly where the cause is common: a
/// missing database gets its name and how to create it (the server's own
/// text trails off into the source line that raised it).
fn connect_failed(redact: &Redactor, connect: &PgConnectOptions, e: &sqlx::Error) -> Error {
    let code = e
        .as_database_error()
        .and_then(|d| d.code().map(|c| c.into_owned()));
    if code.as_deref() == Some("3D000") {
        let db = connect.get_database().unwrap_or(connect.get_username());
        return Error::DurableUnavailable(redact.scrub(format!(
            "connecting to PostgreSQL ({}): database \"{db}\" does not exist on {}:{}; \
             create it (createdb -h {} -p {} -U {} '{db}', or CREATE DATABASE \"{db}\") \
             or point databaseUrl at one that exists",
            redact.shown(),
            connect.get_host(),
            connect.get_port(),
            connect.get_host(),
            connect.get_port(),
            connect.get_username(),
        )));
    }
    redact.unavailable("connecting to PostgreSQL", e)
}

/// A complete row's query, the payload given as `$payload` (the whole of it
/// or a part).
macro_rules! select_row {
    ($payload:literal) => {
        concat!(
            "SELECT matrix_key, ",
            $payload,
            r#" AS moic_matrix,
       octet_length(moic_matrix)::int8 AS payload_len,
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
"#
        )
    };
}

/// Complete rows only; legacy rows get their scenario count from the
/// `scenario_states.scenarios` array and their time from `created_at` (ours
/// keep `generated_at`, NULL when unknown). The
/// count is computed by the server so a legacy row's multi-megabyte JSON never
/// crosses the wire.
const SELECT_ROW: &str = select_row!("moic_matrix");

/// The same row with only the payload's first `$2` bytes (and its whole
/// length): on the `EXTERNAL` storage of the payload PostgreSQL reads just
/// the toast chunks those bytes are in, about a millisecond for a 16 MB row.
const SELECT_HEAD: &str = select_row!("substring(moic_matrix from 1 for $2)");

/// Also takes over a row the TypeScript app left 'pending', 'processing' or
/// 'failed' under the same key (a plain DO NOTHING would leave the key
/// unreadable forever), and a complete row in the TypeScript format (the
/// app's, or payload_format 1: ours from the transition mode), which is only
/// ever replaced when it cannot be served (see `Durable::get_or_insert`) or is
/// converted to the envelope. A complete envelope row is never overwritten.
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
WHERE m.status IS DISTINCT FROM 'complete' OR m.payload_format IS NULL OR m.payload_format = 1
"#;

/// A row the transition mode wrote (payload_format 1), converted to the
/// envelope in place: only while it is still complete and in that format, so
/// a conversion never brings back a row that an invalidation deleted meanwhile.
const CONVERT_ROW: &str = r#"
UPDATE scenario_matrices SET
    moic_matrix = $2,
    scenario_states = $3::jsonb,
    bucket_params = $4::jsonb,
    recycling_multiples = $5::jsonb,
    payload_format = $6,
    updated_at = now()
 WHERE matrix_key = $1 AND status = 'complete' AND payload_format = 1
"#;

pub struct PgStore {
    pool: PgPool,
    /// This store's `origin` in the invalidation records.
    origin: String,
    /// For the invalidation listener's own connection.
    connect: PgConnectOptions,
    connect_timeout: Duration,
    redact: Redactor,
    /// `statement_timeout` value for the lock wait of `get_or_insert`.
    lock_wait_ms: String,
    /// The same bound, for the wait for a lock slot.
    lock_wait: Duration,
    /// Bounds the connections held by `get_or_insert` (waiting for a key's
    /// lock, generating, writing) to half the pool (at least one), so a burst of new keys
    /// leaves the other half to hits and reads instead of taking every
    /// connection and failing them with "pool timed out". Generation is
    /// CPU-bound, so more of them at once would not finish sooner.
    lock_slots: tokio::sync::Semaphore,
    /// Rows are written in the TypeScript app's format (`writeLegacyFormat`).
    typescript_format: bool,
}

impl PgStore {
    pub async fn open(url: &str, opts: &DurableOptions) -> Result<Self> {
        let redact = Redactor::new(url);
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::InvalidArgument(redact.msg("invalid PostgreSQL URL", &e)))?;
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
            .map_err(|e| connect_failed(&redact, &connect, &e))?;
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
            pool_opts.connect_with(connect.clone()),
        )
        .await
        .map_err(|_| redact.unavailable("connecting to PostgreSQL", &"timed out"))?
        .map_err(|e| redact.unavailable("connecting to PostgreSQL", &e))?;
        Ok(PgStore {
            pool,
            origin: new_origin(),
            connect,
            connect_timeout: opts.timeout,
            redact,
            lock_wait_ms: millis(opts.timeout.max(MIN_LOCK_WAIT)),
            lock_wait: opts.timeout.max(MIN_LOCK_WAIT),
            lock_slots: tokio::sync::Semaphore::new((opts.max_connections / 2).max(1) as usize),
            typescript_format: opts.write_legacy_format,
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.redact.unavailable("reading scenario_matrices", &e))?;
        self.read_in(&mut conn, key).await
    }

    /// The complete row of `key` with only the first `n` bytes of its
    /// payload, and the payload's whole length.
    pub async fn head(&self, key: &str, n: usize) -> Result<Option<(Entry, usize)>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.redact.unavailable("reading scenario_matrices", &e))?;
        let row = sqlx::query(SELECT_HEAD)
            .bind(key)
            .bind(i32::try_from(n).unwrap_or(i32::MAX))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.redact.unavailable("reading scenario_matrices", &e))?;
        row.map(|r| {
            let len: Option<i64> = r.try_get("payload_len").map_err(|e| {
                self.redact
                    .unavailable("decoding a scenario_matrices row", &e)
            })?;
            let entry = self.stored_row(&r)?.into_entry()?;
            Ok((entry, len.unwrap_or(0).max(0) as usize))
        })
        .transpose()
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
        // A turn is awaited as long as a key's lock would be: the calls
        // ahead are generating, and each of them is bounded.
        let _slot = tokio::time::timeout(self.lock_wait, self.lock_slots.acquire())
            .await
            .map_err(|_| {
                self.redact.unavailable(
                    "waiting for a turn to generate",
                    &format!(
                        "the misses ahead of this one held every turn for {:?}",
                        self.lock_wait
                    ),
                )
            })?
            .map_err(|_| Error::Internal("the durable store's turns were closed".into()))?;
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
        let zlib;
        let row = if self.typescript_format {
            zlib = typescript_payload(&entry).await?;
            row.in_typescript_format(&zlib)
        } else {
            row
        };
        let payload_len = row.payload.len();
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
            .bind(row.payload_format as i16)
            .bind(row.generated_at)
            .bind(row.duration_ms)
            .bind(&row.recycling_multiples)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.redact.write_failed("storing the matrix", &e))?;
        release_large_buffers(&mut *tx, payload_len);
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

    /// Rewrites a row of the transition mode as `entry` (its matrix, in
    /// the envelope); false when the row is gone or no longer in that format.
    pub async fn convert(&self, cfg: &ScenarioConfig, key: &str, entry: &Entry) -> Result<bool> {
        let row = NewRow::new(cfg, key, entry)?;
        let done = sqlx::query(CONVERT_ROW)
            .bind(row.key)
            .bind(row.payload)
            .bind(&row.scenario_states)
            .bind(&row.bucket_params)
            .bind(&row.recycling_multiples)
            .bind(PAYLOAD_FORMAT_ENVELOPE as i16)
            .execute(&self.pool)
            .await
            .map_err(|e| self.redact.write_failed("converting the matrix", &e))?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| self.redact.unavailable("pinging PostgreSQL", &e))
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM scenario_matrices WHERE matrix_key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(|e| self.delete_failed("deleting a matrix", e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes what `scope` names (for a fund or by age, 'complete' rows only:
    /// the TypeScript app's 'pending', 'processing' and 'failed' rows are its
    /// own; for a key, whatever row holds it) and
    /// records it, in one transaction that also notifies the other
    /// instances. Returns the deleted rows' keys.
    pub async fn invalidate(&self, scope: Scope<'_>) -> Result<Vec<String>> {
        let fail = |e: sqlx::Error| self.delete_failed("invalidating", e);
        let mut tx = self.pool.begin().await.map_err(fail)?;
        if let Scope::Key(key) = scope {
            // Waits for a generation of the key under way in any process, so
            // its row is committed before this deletes it, not after.
            sqlx::query("SELECT set_config('statement_timeout', $1, true)")
                .bind(&self.lock_wait_ms)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock_id(key))
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        let deleted: Vec<String> = match scope {
            Scope::Key(key) => sqlx::query_scalar(
                "DELETE FROM scenario_matrices WHERE matrix_key = $1 RETURNING matrix_key",
            )
            .bind(key),
            Scope::Fund {
                fund_id,
                taxonomy_version,
            } => sqlx::query_scalar(
                "DELETE FROM scenario_matrices \
                  WHERE fund_id = $1 AND ($2::text IS NULL OR taxonomy_version = $2) \
                    AND status = 'complete' RETURNING matrix_key",
            )
            .bind(fund_id)
            .bind(taxonomy_version),
            Scope::OlderThan { age_ms, fund_id } => sqlx::query_scalar(
                "DELETE FROM scenario_matrices WHERE matrix_key IN ( \
                   SELECT matrix_key FROM scenario_matrices \
                    WHERE status = 'complete' AND created_at < now() - $1 * interval '1 millisecond' \
                      AND ($2::text IS NULL OR fund_id = $2) \
                    ORDER BY created_at LIMIT $3) \
                 RETURNING matrix_key",
            )
            .bind(age_ms as f64)
            .bind(fund_id)
            .bind(GC_BATCH as i64),
        }
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
        if deleted.is_empty() && !scope.recorded_when_empty() {
            return Ok(deleted);
        }
        let keys = serde_json::to_string(&scope.keys_to_forget(&deleted))
            .map_err(|e| Error::Internal(format!("listing keys: {e}")))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO scenario_matrix_invalidations \
                    (scope, matrix_key, fund_id, taxonomy_version, removed, keys, origin) \
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) RETURNING id",
        )
        .bind(scope.name())
        .bind(scope.key())
        .bind(scope.fund_id())
        .bind(scope.taxonomy_version())
        .bind(deleted.len() as i32)
        .bind(keys)
        .bind(&self.origin)
        .fetch_one(&mut *tx)
        .await
        .map_err(fail)?;
        // Delivered when (and only if) the transaction commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(deleted)
    }

    /// Follows the invalidations of other instances (and this one), on a
    /// connection of its own, listening before it returns when it can (so
    /// nothing filled from now on goes unheard); otherwise it keeps trying.
    pub async fn follower(&self) -> PgFollower {
        let mut f = PgFollower {
            own: self.origin.clone(),
            listen: PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(self.connect.clone()),
            listener: None,
        };
        f.listener = tokio::time::timeout(self.connect_timeout, f.connect())
            .await
            .ok()
            .and_then(|r| r.ok());
        f
    }

    /// Complete rows only. `octet_length` reads the stored size from the
    /// TOAST pointer, so no payload is fetched.
    pub async fn summary(&self) -> Result<StoreSummary> {
        let fail = |e: sqlx::Error| self.redact.unavailable("summarising scenario_matrices", &e);
        let totals = sqlx::query(
            r#"SELECT count(*)::int8 AS rows,
                      COALESCE(sum(octet_length(moic_matrix)), 0)::int8 AS bytes,
                      (count(*) FILTER (WHERE payload_format IS NULL OR payload_format = 1))::int8 AS legacy,
                      to_char(min(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS oldest,
                      to_char(max(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS newest
                 FROM scenario_matrices WHERE status = 'complete'"#,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(fail)?;
        let by_fund = sqlx::query(
            "SELECT fund_id, taxonomy_version, count(*)::int8 AS rows, \
                    COALESCE(sum(octet_length(moic_matrix)), 0)::int8 AS bytes \
               FROM scenario_matrices WHERE status = 'complete' \
              GROUP BY fund_id, taxonomy_version ORDER BY fund_id, taxonomy_version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(fail)?;
        let count = |r: &PgRow, c: &str| r.try_get::<i64, _>(c).map(|n| n.max(0) as u64);
        Ok(StoreSummary {
            rows: count(&totals, "rows").map_err(fail)?,
            bytes: count(&totals, "bytes").map_err(fail)?,
            legacy_rows: count(&totals, "legacy").map_err(fail)?,
            oldest: totals.try_get("oldest").map_err(fail)?,
            newest: totals.try_get("newest").map_err(fail)?,
            by_fund: by_fund
                .iter()
                .map(|r| {
                    Ok(FundSummary {
                        fund_id: r.try_get("fund_id")?,
                        taxonomy_version: r.try_get("taxonomy_version")?,
                        rows: count(r, "rows")?,
                        bytes: count(r, "bytes")?,
                    })
                })
                .collect::<std::result::Result<_, sqlx::Error>>()
                .map_err(fail)?,
        })
    }

    /// Keys of complete rows after `after`, ascending, at most `limit`.
    pub async fn keys_after(&self, after: &str, limit: u32) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT matrix_key FROM scenario_matrices \
              WHERE status = 'complete' AND matrix_key > $1 ORDER BY matrix_key LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.redact.unavailable("listing scenario_matrices", &e))
    }

    pub async fn describe(&self, key: &str) -> Result<Option<RowDescription>> {
        let row = sqlx::query(
            "SELECT matrix_key, fund_id, taxonomy_version, \
                    COALESCE(num_scenarios, \
                             CASE WHEN jsonb_typeof(scenario_states -> 'scenarios') = 'array' \
                                  THEN jsonb_array_length(scenario_states -> 'scenarios') END)::int8 AS num_scenarios, \
                    bucket_params::text AS bucket_params, s_opt::text AS s_opt \
               FROM scenario_matrices WHERE matrix_key = $1 AND status = 'complete'",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.redact.unavailable("reading scenario_matrices", &e))?;
        row.map(|r| {
            Ok(RowDescription {
                key: r.try_get("matrix_key")?,
                fund_id: r.try_get("fund_id")?,
                taxonomy_version: r.try_get("taxonomy_version")?,
                num_scenarios: r.try_get("num_scenarios")?,
                bucket_params: r.try_get("bucket_params")?,
                s_opt: r.try_get("s_opt")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| {
            self.redact
                .unavailable("decoding a scenario_matrices row", &e)
        })
    }

    /// Keys of the complete rows created more than `age_ms` ago (of one
    /// fund, when given): what a `gc` would delete.
    pub async fn older_than(&self, age_ms: u64, fund_id: Option<&str>) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT matrix_key FROM scenario_matrices \
              WHERE status = 'complete' AND created_at < now() - $1 * interval '1 millisecond' \
                AND ($2::text IS NULL OR fund_id = $2) ORDER BY matrix_key",
        )
        .bind(age_ms as f64)
        .bind(fund_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.redact.unavailable("listing old matrices", &e))
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
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.redact.unavailable("reading scenario_matrices", &e))?;
        let entry = row.map(|r| self.stored_row(&r)?.into_entry()).transpose()?;
        release_large_buffers(conn, entry.as_ref().map_or(0, |e| e.payload.len()));
        Ok(entry)
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

/// Hears each invalidation record's id by `NOTIFY` and reads its keys. Ids
/// are taken one by one (not as a range): concurrent transactions commit out
/// of id order.
pub struct PgFollower {
    /// Records of this origin are skipped: the invalidating call already
    /// cleared this instance's memory tier.
    own: String,
    /// A pool of one for the listening connection, so the store's own pool
    /// keeps all of its connections.
    listen: PgPool,
    listener: Option<PgListener>,
}

impl PgFollower {
    async fn connect(&self) -> std::result::Result<PgListener, sqlx::Error> {
        let mut l = PgListener::connect_with(&self.listen).await?;
        l.listen(CHANNEL).await?;
        Ok(l)
    }

    /// The next notice. A lost connection is retried every second, and
    /// `Missed` once it is back, so what may have been missed meanwhile is
    /// dropped. While it is down the memory tier keeps serving (copies an
    /// instance elsewhere invalidates meanwhile can be served until then).
    pub async fn next(&mut self) -> Notice {
        loop {
            let listener = match &mut self.listener {
                Some(l) => l,
                None => match self.connect().await {
                    Ok(l) => {
                        self.listener = Some(l);
                        return Notice::Missed;
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            // A connection dropped without a word (a NAT or firewall idle
            // timeout, a half-open socket) would leave the wait silent
            // forever: after a quiet spell, ask the connection to answer.
            let received = match tokio::time::timeout(QUIET, listener.try_recv()).await {
                Ok(r) => r,
                Err(_) => {
                    let alive = tokio::time::timeout(
                        Duration::from_secs(5),
                        sqlx::query("SELECT 1").execute(&mut *listener),
                    )
                    .await;
                    if !matches!(alive, Ok(Ok(_))) {
                        self.listener = None;
                    }
                    continue;
                }
            };
            match received {
                Ok(Some(n)) => {
                    let Ok(id) = n.payload().parse::<i64>() else {
                        continue;
                    };
                    // Over the listening connection: the store's pool may be
                    // taken by long generations.
                    let keys: std::result::Result<Option<(String, String)>, _> = sqlx::query_as(
                        "SELECT keys::text, origin FROM scenario_matrix_invalidations WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *listener)
                    .await;
                    match keys {
                        Ok(Some((_, origin))) if origin == self.own => continue,
                        Ok(Some((text, _))) => match keys_of(&text) {
                            Some(keys) if keys.is_empty() => continue,
                            Some(keys) => return Notice::Forget(keys),
                            None => return Notice::Missed,
                        },
                        // Deleted from the log meanwhile: nothing to forget.
                        Ok(None) => continue,
                        Err(_) => return Notice::Missed,
                    }
                }
                // Reconnected (eagerly) after losing the connection.
                Ok(None) => return Notice::Missed,
                Err(_) => self.listener = None,
            }
        }
    }
}

/// How long the listening connection may stay silent before it is asked to
/// answer a query.
const QUIET: Duration = Duration::from_secs(30);

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
        // Connecting gets what is left of the bound (but at least a second,
        // or a retry late in the window would fail as "unreachable").
        let left = deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_secs(1))
            .min(timeout);
        match migrate_once(connect, left, redact).await? {
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
}
