//! SQLite durable store: the zero-setup embedded default, one file that several
//! server processes on a machine share.
//!
//! Same logical row and semantics as the PostgreSQL store (the row format and
//! its legacy/corruption rules live in `postgres.rs` and are shared). SQLite has
//! no advisory locks, so cross-process single flight is the database write lock
//! itself: `get_or_insert` runs in a `BEGIN IMMEDIATE` transaction, re-reads,
//! generates, inserts and commits. WAL mode keeps plain reads going meanwhile.

use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::Row;

use super::catalog::{FundSummary, RowDescription, StoreSummary};
use super::durable::DurableOptions;
use super::invalidation::{keys_of, new_origin, Notice, Scope, GC_BATCH, POLL};
use super::rows::{migrator, NewRow, StoredRow, MIGRATIONS_TABLE, MIN_LOCK_WAIT};
use super::Entry;
use crate::config::ScenarioConfig;
use crate::error::{Error, Result};
/// A complete row's query, the payload given as `$payload` (the whole of it
/// or a part).
macro_rules! select_row {
    ($payload:literal) => {
        concat!(
            "SELECT matrix_key, ",
            $payload,
            r#" AS moic_matrix,
       length(moic_matrix) AS payload_len,
       compression_codec,
       payload_format,
       bucket_count,
       COALESCE(num_scenarios,
                CASE WHEN json_valid(scenario_states) THEN
                     CASE WHEN json_type(scenario_states, '$.scenarios') = 'array'
                          THEN json_array_length(scenario_states, '$.scenarios') END
                END) AS num_scenarios,
       CASE WHEN payload_format IS NULL THEN created_at ELSE generated_at END AS generated_at,
       duration_ms,
       recycling_multiples,
       CASE WHEN payload_format IS NOT NULL THEN bucket_params END AS bucket_params
  FROM scenario_matrices
 WHERE matrix_key = ?1 AND status = 'complete'
"#
        )
    };
}

/// Complete rows only, with the legacy fallbacks of the PostgreSQL store. The
/// nested CASE (SQLite evaluates CASE lazily) keeps malformed JSON from failing
/// the whole query; such a row is reported as corrupt instead.
const SELECT_ROW: &str = select_row!("moic_matrix");

/// The same row with only the payload's first `?2` bytes (and its whole length).
const SELECT_HEAD: &str = select_row!("substr(moic_matrix, 1, ?2)");

/// Like the PostgreSQL upsert: takes over a non-complete or legacy row, never a complete one of ours.
const UPSERT_ROW: &str = r#"
INSERT INTO scenario_matrices (
    matrix_key, fund_id, taxonomy_version, matrix_type, moic_matrix,
    scenario_states, bucket_params, compression_codec, matrix_layout, bucket_count,
    s_opt, status, error_message,
    num_scenarios, payload_format, generated_at, duration_ms, recycling_multiples)
VALUES (?1, ?2, ?3, 'moic', ?4,
        ?5, ?6, 'zstd', 'row-major', ?7,
        ?8, 'complete', NULL,
        ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (matrix_key) DO UPDATE SET
    fund_id = excluded.fund_id,
    taxonomy_version = excluded.taxonomy_version,
    matrix_type = excluded.matrix_type,
    moic_matrix = excluded.moic_matrix,
    scenario_states = excluded.scenario_states,
    bucket_params = excluded.bucket_params,
    compression_codec = excluded.compression_codec,
    matrix_layout = excluded.matrix_layout,
    bucket_count = excluded.bucket_count,
    s_opt = excluded.s_opt,
    status = excluded.status,
    error_message = NULL,
    num_scenarios = excluded.num_scenarios,
    payload_format = excluded.payload_format,
    generated_at = excluded.generated_at,
    duration_ms = excluded.duration_ms,
    recycling_multiples = excluded.recycling_multiples,
    created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE scenario_matrices.status IS NOT 'complete' OR scenario_matrices.payload_format IS NULL
"#;

pub struct SqliteStore {
    pool: SqlitePool,
    /// How long `get_or_insert` waits for the write lock in all.
    lock_wait: Duration,
    /// `sqlite://path`, for messages.
    shown: String,
    /// This store's `origin` in the invalidation records.
    origin: String,
}

impl SqliteStore {
    pub async fn open(path: &Path, opts: &DurableOptions) -> Result<Self> {
        let shown = format!("sqlite://{}", path.display());
        let fail = |what: &str, e: &dyn Display| {
            Error::DurableUnavailable(format!("{what} ({shown}): {e}"))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail("creating the database directory", &e))?;
        }
        // journal_mode is deliberately not a connect option: switching a fresh
        // file to WAL needs a lock that busy_timeout does not wait for, so a
        // connection opened while another process switches would fail. It is
        // switched once below, with retries; the mode then persists in the file.
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(opts.timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.timeout)
            .connect_with(connect)
            .await
            .map_err(|e| fail("opening the SQLite database", &e))?;
        let store = SqliteStore {
            pool,
            shown,
            origin: new_origin(),
            lock_wait: opts.timeout.max(MIN_LOCK_WAIT),
        };
        let ready = async {
            store.enable_wal(opts.timeout).await?;
            if opts.run_migrations {
                store.migrate().await?;
            }
            Ok(())
        };
        if let Err(e) = ready.await {
            store.pool.close().await;
            return Err(e);
        }
        Ok(store)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.unavailable("reading scenario_matrices", &e))?;
        self.read_in(&mut conn, key).await
    }

    /// The complete row of `key` with only the first `n` bytes of its
    /// payload, and the payload's whole length.
    pub async fn head(&self, key: &str, n: usize) -> Result<Option<(Entry, usize)>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.unavailable("reading scenario_matrices", &e))?;
        let row = sqlx::query(SELECT_HEAD)
            .bind(key)
            .bind(i64::try_from(n).unwrap_or(i64::MAX))
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.unavailable("reading scenario_matrices", &e))?;
        row.map(|r| {
            let len: Option<i64> = r
                .try_get("payload_len")
                .map_err(|e| self.unavailable("decoding a scenario_matrices row", &e))?;
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
        // IMMEDIATE takes the database's write lock up front, which serialises
        // generation of new keys across every process sharing the file (of
        // all keys, not just this one: SQLite has only the one lock).
        // Dropping this future rolls back and frees it.
        let mut tx = self.begin_immediate().await?;
        if let Some(entry) = self.read_in(&mut tx, key).await?.filter(&usable) {
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
            .bind(row.bucket_count)
            .bind(&row.s_opt)
            .bind(row.num_scenarios)
            .bind(row.payload_format)
            .bind(row.generated_at)
            .bind(row.duration_ms)
            .bind(&row.recycling_multiples)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.write_failed("storing the matrix", &e))?;
        if written.rows_affected() == 0 {
            // A complete row of ours that `usable` refused: it stays the truth.
            if let Some(existing) = self.read_in(&mut tx, key).await? {
                let _ = tx.commit().await;
                return Ok((existing, false));
            }
            return Err(Error::DurableWrite(format!(
                "storing the matrix ({}): row {key} was neither inserted nor replaced",
                self.shown
            )));
        }
        tx.commit()
            .await
            .map_err(|e| self.write_failed("committing the matrix", &e))?;
        Ok((entry, true))
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| self.unavailable("pinging SQLite", &e))
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM scenario_matrices WHERE matrix_key = ?1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(|e| self.delete_failed("deleting a matrix", e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes what `scope` names (for a fund or by age, 'complete' rows
    /// only; for a key, whatever row holds it) and appends its
    /// record to the log other processes poll, in one transaction.
    pub async fn invalidate(&self, scope: Scope<'_>) -> Result<Vec<String>> {
        let fail = |e: sqlx::Error| self.delete_failed("invalidating", e);
        let mut tx = self.begin_immediate().await?;
        let deleted: Vec<String> = match scope {
            Scope::Key(key) => sqlx::query_scalar(
                "DELETE FROM scenario_matrices WHERE matrix_key = ?1 RETURNING matrix_key",
            )
            .bind(key.to_string()),
            Scope::Fund {
                fund_id,
                taxonomy_version,
            } => sqlx::query_scalar(
                "DELETE FROM scenario_matrices \
                  WHERE fund_id = ?1 AND (?2 IS NULL OR taxonomy_version = ?2) \
                    AND status = 'complete' RETURNING matrix_key",
            )
            .bind(fund_id.to_string())
            .bind(taxonomy_version.map(str::to_string)),
            Scope::OlderThan { age_ms, fund_id } => sqlx::query_scalar(
                "DELETE FROM scenario_matrices WHERE matrix_key IN ( \
                   SELECT matrix_key FROM scenario_matrices \
                    WHERE status = 'complete' \
                      AND created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1) \
                      AND (?2 IS NULL OR fund_id = ?2) \
                    ORDER BY created_at LIMIT ?3) \
                 RETURNING matrix_key",
            )
            .bind(age_modifier(age_ms))
            .bind(fund_id.map(str::to_string))
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
        sqlx::query(
            "INSERT INTO scenario_matrix_invalidations \
                    (scope, matrix_key, fund_id, taxonomy_version, removed, keys, origin) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(scope.name())
        .bind(scope.key().map(str::to_string))
        .bind(scope.fund_id().map(str::to_string))
        .bind(scope.taxonomy_version().map(str::to_string))
        .bind(deleted.len() as i64)
        .bind(keys)
        .bind(&self.origin)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit()
            .await
            .map_err(|e| self.write_failed("committing an invalidation", &e))?;
        Ok(deleted)
    }

    /// Follows the invalidation log by polling it. Ids are assigned under
    /// the database's single write lock, so they commit in order and a range
    /// read misses nothing.
    pub async fn follower(&self) -> SqliteFollower {
        let last: Option<Option<i64>> =
            sqlx::query_scalar("SELECT max(id) FROM scenario_matrix_invalidations")
                .fetch_one(&self.pool)
                .await
                .ok();
        SqliteFollower {
            own: self.origin.clone(),
            pool: self.pool.clone(),
            last: last.map(|m| m.unwrap_or(0)),
        }
    }

    /// Complete rows only (`length` of a blob reads no payload).
    pub async fn summary(&self) -> Result<StoreSummary> {
        let fail = |e: sqlx::Error| self.unavailable("summarising scenario_matrices", &e);
        let totals = sqlx::query(
            "SELECT count(*) AS rows, COALESCE(sum(length(moic_matrix)), 0) AS bytes, \
                    COALESCE(sum(payload_format IS NULL), 0) AS legacy, \
                    min(created_at) AS oldest, max(created_at) AS newest \
               FROM scenario_matrices WHERE status = 'complete'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(fail)?;
        let by_fund = sqlx::query(
            "SELECT fund_id, taxonomy_version, count(*) AS rows, \
                    COALESCE(sum(length(moic_matrix)), 0) AS bytes \
               FROM scenario_matrices WHERE status = 'complete' \
              GROUP BY fund_id, taxonomy_version ORDER BY fund_id, taxonomy_version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(fail)?;
        let count = |r: &SqliteRow, c: &str| r.try_get::<i64, _>(c).map(|n| n.max(0) as u64);
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
              WHERE status = 'complete' AND matrix_key > ?1 ORDER BY matrix_key LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.unavailable("listing scenario_matrices", &e))
    }

    pub async fn describe(&self, key: &str) -> Result<Option<RowDescription>> {
        let row = sqlx::query(
            "SELECT matrix_key, fund_id, taxonomy_version, \
                    COALESCE(num_scenarios, \
                             CASE WHEN json_valid(scenario_states) THEN \
                                  CASE WHEN json_type(scenario_states, '$.scenarios') = 'array' \
                                       THEN json_array_length(scenario_states, '$.scenarios') END \
                             END) AS num_scenarios, \
                    bucket_params, s_opt \
               FROM scenario_matrices WHERE matrix_key = ?1 AND status = 'complete'",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.unavailable("reading scenario_matrices", &e))?;
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
        .map_err(|e: sqlx::Error| self.unavailable("decoding a scenario_matrices row", &e))
    }

    /// Keys of the complete rows created more than `age_ms` ago (of one
    /// fund, when given): what a `gc` would delete. `created_at` is ISO 8601
    /// UTC text, so it compares as a string.
    pub async fn older_than(&self, age_ms: u64, fund_id: Option<&str>) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT matrix_key FROM scenario_matrices \
              WHERE status = 'complete' \
                AND created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1) \
                AND (?2 IS NULL OR fund_id = ?2) ORDER BY matrix_key",
        )
        .bind(age_modifier(age_ms))
        .bind(fund_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.unavailable("listing old matrices", &e))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// WAL lets readers proceed while a generator holds the write lock. The
    /// switch is retried while another process holds the file busy (it
    /// happens only on a fresh file opened by several processes at once).
    async fn enable_wal(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
                .fetch_one(&self.pool)
                .await
            {
                // Some filesystems refuse WAL; the store still works (with
                // readers waiting on writers), so that is not an error.
                Ok(_) => return Ok(()),
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(self.unavailable("switching to WAL mode", &e)),
            }
        }
    }

    /// One process at a time: the whole run happens inside a `BEGIN IMMEDIATE`
    /// transaction (sqlx's SQLite migrator takes no lock of its own, and two
    /// processes applying the same migration would collide on its bookkeeping
    /// row). Each migration's own transaction becomes a savepoint.
    async fn migrate(&self) -> Result<()> {
        let fail = |e: &dyn Display| self.unavailable("migrating scenario_matrices", e);
        let m = migrator(sqlx::migrate!("./migrations/sqlite"));
        // Waits out a generation in another process like get_or_insert does,
        // so a process starting meanwhile does not fail to open.
        let mut tx = self.begin_immediate().await?;
        apply_pending(&mut tx, &m).await.map_err(|e| fail(&e))?;
        tx.commit().await.map_err(|e| fail(&e))
    }

    async fn read_in(&self, conn: &mut SqliteConnection, key: &str) -> Result<Option<Entry>> {
        let row = sqlx::query(SELECT_ROW)
            .bind(key)
            .fetch_optional(conn)
            .await
            .map_err(|e| self.unavailable("reading scenario_matrices", &e))?;
        row.map(|r| self.stored_row(&r)?.into_entry()).transpose()
    }

    fn stored_row(&self, r: &SqliteRow) -> Result<StoredRow> {
        let get = |e: sqlx::Error| self.unavailable("decoding a scenario_matrices row", &e);
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

    fn unavailable(&self, what: &str, e: &dyn Display) -> Error {
        Error::DurableUnavailable(format!("{what} ({}): {e}", self.shown))
    }

    fn write_failed(&self, what: &str, e: &dyn Display) -> Error {
        Error::DurableWrite(format!("{what} ({}): {e}", self.shown))
    }

    /// The database refusing a delete is a write failure; a locked or
    /// unreadable file is unavailability, as for reads.
    fn delete_failed(&self, what: &str, e: sqlx::Error) -> Error {
        if matches!(e, sqlx::Error::Database(_)) && !is_busy(&e) {
            self.write_failed(what, &e)
        } else {
            self.unavailable(what, &e)
        }
    }

    /// `BEGIN IMMEDIATE`, retried while the database stays busy for up to
    /// `lock_wait`: another process may legitimately hold the write lock for a
    /// whole generation (of any key), longer than one busy_timeout.
    async fn begin_immediate(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        let deadline = Instant::now() + self.lock_wait;
        loop {
            match self.pool.begin_with("BEGIN IMMEDIATE").await {
                Ok(tx) => return Ok(tx),
                Err(e) if is_busy(&e) && Instant::now() < deadline => {}
                Err(e) => return Err(self.unavailable("taking the write lock", &e)),
            }
        }
    }
}

/// What `Migrator::run` does, minus its lock (a no-op on SQLite; our caller
/// holds the write lock instead). Spelled out because `Migrator::run` only
/// accepts a connection through `Acquire`, and on `&mut SqliteConnection` that
/// makes the enclosing future not provably `Send`.
async fn apply_pending(conn: &mut SqliteConnection, m: &Migrator) -> Result<(), MigrateError> {
    conn.ensure_migrations_table(MIGRATIONS_TABLE).await?;
    if let Some(v) = conn.dirty_version(MIGRATIONS_TABLE).await? {
        return Err(MigrateError::Dirty(v));
    }
    let applied = conn.list_applied_migrations(MIGRATIONS_TABLE).await?;
    for mig in m.iter().filter(|x| !x.migration_type.is_down_migration()) {
        match applied.iter().find(|a| a.version == mig.version) {
            Some(a) if a.checksum != mig.checksum => {
                return Err(MigrateError::VersionMismatch(mig.version))
            }
            Some(_) => {}
            None => {
                conn.apply(MIGRATIONS_TABLE, mig).await?;
            }
        }
    }
    Ok(())
}

/// SQLITE_BUSY / SQLITE_LOCKED, with any extended code.
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// SQLite's date modifier for "`age_ms` ago".
fn age_modifier(age_ms: u64) -> String {
    format!("-{:.3} seconds", age_ms as f64 / 1000.0)
}

/// Polls the invalidation log for records after the last one seen.
pub struct SqliteFollower {
    /// Records of this origin are skipped (see `PgFollower::own`).
    own: String,
    pool: SqlitePool,
    /// The newest record seen; None until the log could be read (records
    /// from before this process started concern copies it never had).
    last: Option<i64>,
}

impl SqliteFollower {
    pub async fn next(&mut self) -> Notice {
        loop {
            tokio::time::sleep(POLL).await;
            let Some(last) = self.last else {
                let max: std::result::Result<Option<i64>, _> =
                    sqlx::query_scalar("SELECT max(id) FROM scenario_matrix_invalidations")
                        .fetch_one(&self.pool)
                        .await;
                if let Ok(max) = max {
                    self.last = Some(max.unwrap_or(0));
                }
                continue;
            };
            let rows: std::result::Result<Vec<(i64, String, String)>, _> = sqlx::query_as(
                "SELECT id, keys, origin FROM scenario_matrix_invalidations WHERE id > ?1 ORDER BY id LIMIT 1000",
            )
            .bind(last)
            .fetch_all(&self.pool)
            .await;
            let Ok(rows) = rows else {
                // The file is busy or gone; nothing was missed until it answers.
                continue;
            };
            let Some((newest, _, _)) = rows.last() else {
                continue;
            };
            self.last = Some(*newest);
            let mut keys = Vec::new();
            for (_, text, _) in rows.iter().filter(|(_, _, origin)| *origin != self.own) {
                match keys_of(text) {
                    Some(k) => keys.extend(k),
                    None => return Notice::Missed,
                }
            }
            if !keys.is_empty() {
                return Notice::Forget(keys);
            }
        }
    }
}
