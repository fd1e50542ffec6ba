//! The durable tier, the source of truth: PostgreSQL in production, SQLite as
//! the zero-setup embedded default. Both give the same semantics; this module
//! picks one from the URL and dispatches.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use super::catalog::{RowDescription, StoreSummary};
use super::invalidation::{Notice, Scope};
use super::postgres::{PgFollower, PgStore};
use super::sqlite::{SqliteFollower, SqliteStore};
use super::{Entry, Source};
use crate::config::ScenarioConfig;
use crate::error::{Error, Result};

/// Where the durable store lives.
#[derive(Debug, Clone, PartialEq)]
pub enum DurableUrl {
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
    /// A database file (from `sqlite://path`, `sqlite:path` or a plain path).
    Sqlite(PathBuf),
}

/// The embedded default when neither the option nor `DATABASE_URL` is set.
pub const DEFAULT_SQLITE_PATH: &str = ".scenario-matrix-cache/cache.db";

impl DurableUrl {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::InvalidArgument("databaseUrl is empty".into()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DurableUrl::Postgres(s.to_string()));
        }
        if let Some(rest) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            // `mode=rwc` (read, write, create) is what the store does anyway;
            // any other parameter would be silently ignored, so it is refused.
            let ignored: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && *p != "mode=rwc")
                .collect();
            if !ignored.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "databaseUrl {}: SQLite URL parameters are not supported ({}); the file is opened read-write and created if missing",
                    redact_password(s),
                    ignored.join("&")
                )));
            }
            return Self::sqlite_path(&percent_decode(path), s);
        }
        if let Some(scheme) = url_scheme(s) {
            // Not echoed: a malformed URL (`postgres:/u:secret@...`) has no
            // shape to find its password by.
            return Err(Error::InvalidArgument(format!(
                "databaseUrl starting {scheme:?}: not a supported URL (expected postgres://, postgresql://, sqlite:path or a file path)"
            )));
        }
        Self::sqlite_path(s, s)
    }

    fn sqlite_path(path: &str, given: &str) -> Result<Self> {
        if path.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "databaseUrl {given:?} names no SQLite file"
            )));
        }
        // Each pooled connection would open its own empty in-memory database.
        if path == ":memory:" || path.starts_with("file::memory:") {
            return Err(Error::InvalidArgument(format!(
                "databaseUrl {given:?}: in-memory SQLite is not supported (each pooled connection would get its own empty database); give a file path"
            )));
        }
        Ok(DurableUrl::Sqlite(PathBuf::from(path)))
    }

    /// For logs and errors: the URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            DurableUrl::Postgres(u) => redact_password(u),
            DurableUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
        }
    }
}

/// A URL-like scheme at the start of `s` (`postgres:`, `redis+unix:`): two
/// or more characters, so a Windows drive letter (`C:\...`) is a path.
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let starts = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    (starts && rest_ok && scheme.len() >= 2).then_some(scheme)
}

/// The userinfo of `scheme://userinfo@host...`: up to the last `@` before
/// any fragment, since a password may hold `/`, `?` or `@` (generated secrets
/// often do) where a URL parser expects the path or query to begin. An `@`
/// in the path or query makes this take too much, which only redacts more.
fn split_userinfo(rest: &str) -> Option<(&str, &str)> {
    let end = rest.find('#').unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    Some((&rest[..at], &rest[at..]))
}

/// The password of a URL, from its userinfo or a `password=` / `pass=`
/// query parameter, as written (perhaps percent-encoded).
pub fn passwords_of(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        if let Some((userinfo, _)) = split_userinfo(rest) {
            if let Some((_, pw)) = userinfo.split_once(':') {
                found.push(pw.to_string());
            }
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if is_password_param(k) {
                    found.push(v.to_string());
                }
            }
        }
    }
    found.retain(|s| !s.is_empty());
    found
}

fn is_password_param(name: &str) -> bool {
    name.eq_ignore_ascii_case("password") || name.eq_ignore_ascii_case("pass")
}

/// Replaces every password of a URL (userinfo, `password=` or `pass=`) with `***`.
pub fn redact_password(url: &str) -> String {
    // The userinfo first, over the whole URL: its password may hold `?`.
    let (mut out, tail) = match url.split_once("://") {
        Some((scheme, rest)) => match split_userinfo(rest) {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => (format!("{scheme}://{user}:***"), host),
                None => (format!("{scheme}://{userinfo}"), host),
            },
            None => (format!("{scheme}://"), rest),
        },
        None => (String::new(), url),
    };
    match tail.split_once('?') {
        None => out.push_str(tail),
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_password_param(k) => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            out.push_str(&format!("{path}?{}", pairs.join("&")));
        }
    }
    out
}

/// `%XX` escapes decoded (a malformed one is kept as written).
pub(crate) fn percent_decode(s: &str) -> String {
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

#[derive(Debug, Clone)]
pub struct DurableOptions {
    /// Apply the embedded migrations on open.
    pub run_migrations: bool,
    /// Bound on connecting, acquiring a connection and each statement.
    pub timeout: Duration,
    pub max_connections: u32,
    /// Write rows in the TypeScript app's format (`writeLegacyFormat`);
    /// PostgreSQL only.
    pub write_legacy_format: bool,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions {
            run_migrations: true,
            timeout: Duration::from_secs(10),
            max_connections: 8,
            write_legacy_format: false,
        }
    }
}

pub enum Follower {
    Postgres(PgFollower),
    Sqlite(SqliteFollower),
}

impl Follower {
    /// Waits for the next invalidation notice.
    pub async fn next(&mut self) -> Notice {
        match self {
            Follower::Postgres(f) => f.next().await,
            Follower::Sqlite(f) => f.next().await,
        }
    }
}

pub enum Durable {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Durable {
    pub async fn open(url: &DurableUrl, opts: &DurableOptions) -> Result<Self> {
        Ok(match url {
            DurableUrl::Postgres(u) => Durable::Postgres(PgStore::open(u, opts).await?),
            // Nothing reads the TypeScript format from SQLite: the app only
            // ever ran on PostgreSQL.
            DurableUrl::Sqlite(_) if opts.write_legacy_format => {
                return Err(Error::InvalidArgument(format!(
                    "writeLegacyFormat is for a PostgreSQL database shared with instances of the TypeScript implementation, which never used SQLite; databaseUrl is {}",
                    url.redacted()
                )))
            }
            DurableUrl::Sqlite(p) => Durable::Sqlite(SqliteStore::open(p, opts).await?),
        })
    }

    pub fn source(&self) -> Source {
        match self {
            Durable::Postgres(_) => Source::Postgres,
            Durable::Sqlite(_) => Source::Sqlite,
        }
    }

    /// The complete row for `key`, legacy rows included.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>> {
        match self {
            Durable::Postgres(s) => s.get(key).await,
            Durable::Sqlite(s) => s.get(key).await,
        }
    }

    /// The complete row of `key` with only the first `n` bytes of its
    /// payload (less when it is shorter), and the payload's whole length.
    pub async fn head(&self, key: &str, n: usize) -> Result<Option<(Entry, usize)>> {
        match self {
            Durable::Postgres(s) => s.head(key, n).await,
            Durable::Sqlite(s) => s.head(key, n).await,
        }
    }

    /// Cross-process single flight. Under a per-key lock: if a row for `key`
    /// exists (another process stored it meanwhile) returns it with `false`;
    /// else awaits `make`, stores its entry and returns it with `true`.
    /// A failed store is `E_DURABLE_WRITE`; `make`'s own errors pass through.
    pub async fn get_or_insert<F, Fut>(
        &self,
        cfg: &ScenarioConfig,
        key: &str,
        make: F,
    ) -> Result<(Entry, bool)>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Entry>> + Send,
    {
        self.get_or_replace(cfg, key, |_| true, make).await
    }

    /// [`Durable::get_or_insert`] that treats a row failing `usable` as
    /// absent: `make` runs and its entry replaces the row. Only legacy
    /// (TypeScript) rows are ever replaced; a complete row of ours stays, and
    /// is returned with `false` whatever `usable` says.
    pub async fn get_or_replace<F, Fut>(
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
        match self {
            Durable::Postgres(s) => s.get_or_insert(cfg, key, usable, make).await,
            Durable::Sqlite(s) => s.get_or_insert(cfg, key, usable, make).await,
        }
    }

    /// Converts a row that the transition mode wrote in the TypeScript
    /// format to the envelope `entry` holds (the same matrix); false when
    /// there is no such row any more (converted, replaced or deleted
    /// meanwhile). SQLite never holds one: the mode is PostgreSQL only.
    pub async fn convert(&self, cfg: &ScenarioConfig, key: &str, entry: &Entry) -> Result<bool> {
        match self {
            Durable::Postgres(s) => s.convert(cfg, key, entry).await,
            Durable::Sqlite(_) => Ok(false),
        }
    }

    /// One trivial query through the pool: can the store be used now?
    pub async fn ping(&self) -> Result<()> {
        match self {
            Durable::Postgres(s) => s.ping().await,
            Durable::Sqlite(s) => s.ping().await,
        }
    }

    /// Removes the row; true when one existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        match self {
            Durable::Postgres(s) => s.delete(key).await,
            Durable::Sqlite(s) => s.delete(key).await,
        }
    }

    /// Counts of the complete rows, overall and by fund and taxonomy version.
    pub async fn summary(&self) -> Result<StoreSummary> {
        match self {
            Durable::Postgres(s) => s.summary().await,
            Durable::Sqlite(s) => s.summary().await,
        }
    }

    /// Keys of complete rows after `after`, ascending, at most `limit`.
    pub async fn keys_after(&self, after: &str, limit: u32) -> Result<Vec<String>> {
        match self {
            Durable::Postgres(s) => s.keys_after(after, limit).await,
            Durable::Sqlite(s) => s.keys_after(after, limit).await,
        }
    }

    /// The config columns of the complete row for `key`, read even when its
    /// payload columns are unreadable.
    pub async fn describe(&self, key: &str) -> Result<Option<RowDescription>> {
        match self {
            Durable::Postgres(s) => s.describe(key).await,
            Durable::Sqlite(s) => s.describe(key).await,
        }
    }

    /// Keys of the complete rows created more than `age_ms` ago, of
    /// `fund_id` when given: what a `gc` would delete.
    pub async fn older_than(&self, age_ms: u64, fund_id: Option<&str>) -> Result<Vec<String>> {
        match self {
            Durable::Postgres(s) => s.older_than(age_ms, fund_id).await,
            Durable::Sqlite(s) => s.older_than(age_ms, fund_id).await,
        }
    }

    /// Deletes the complete rows `scope` names and records the invalidation
    /// for the audit trail and the other instances (`tier::invalidation`), in
    /// one transaction. Returns the deleted rows' keys.
    pub async fn invalidate(&self, scope: Scope<'_>) -> Result<Vec<String>> {
        match self {
            Durable::Postgres(s) => s.invalidate(scope).await,
            Durable::Sqlite(s) => s.invalidate(scope).await,
        }
    }

    /// Follows the invalidations recorded by every instance sharing the store.
    pub async fn follower(&self) -> Follower {
        match self {
            Durable::Postgres(s) => Follower::Postgres(s.follower().await),
            Durable::Sqlite(s) => Follower::Sqlite(s.follower().await),
        }
    }

    /// Closes the pool (inside the runtime, so no "no reactor" panic on drop).
    pub async fn close(&self) {
        match self {
            Durable::Postgres(s) => s.close().await,
            Durable::Sqlite(s) => s.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_would_misread() {
        let refused = |url: &str| {
            let e = DurableUrl::parse(url).unwrap_err();
            assert_eq!(e.code(), "E_INVALID_ARGUMENT", "{url}");
            e.to_string()
        };
        // A typo of a PostgreSQL URL is not a file path, and its password is not echoed.
        let m = refused("postgres:/u:secret@127.0.0.1:5432/db");
        assert!(m.contains("\"postgres\"") && !m.contains("secret"), "{m}");
        assert!(!refused("redis://x").contains("://x"));
        for memory in [
            "sqlite::memory:",
            ":memory:",
            "sqlite://:memory:",
            "sqlite:file::memory:",
        ] {
            let m = refused(memory);
            assert!(
                m.contains("in-memory SQLite is not supported"),
                "{memory}: {m}"
            );
        }
        let m = refused("sqlite://x.db?mode=ro");
        assert!(m.contains("parameters are not supported (mode=ro)"), "{m}");
        // Percent-escapes are decoded; a drive letter is a path.
        assert_eq!(
            DurableUrl::parse("sqlite://abs%20enc.db").unwrap(),
            DurableUrl::Sqlite("abs enc.db".into())
        );
        assert_eq!(
            DurableUrl::parse("C:\\data\\x.db").unwrap(),
            DurableUrl::Sqlite("C:\\data\\x.db".into())
        );
    }

    #[test]
    fn redacts_every_form_of_password() {
        for (url, shown) in [
            ("postgres://u:pa/ss@h:5432/db", "postgres://u:***@h:5432/db"),
            ("redis://:pa/ss@h:6379", "redis://:***@h:6379"),
            (
                "redis://h:6379/0?password=x1",
                "redis://h:6379/0?password=***",
            ),
            (
                "redis+unix:///tmp/r.sock?db=0&pass=x2",
                "redis+unix:///tmp/r.sock?db=0&pass=***",
            ),
            (
                "postgres://u:p@ss@h/db?sslmode=require",
                "postgres://u:***@h/db?sslmode=require",
            ),
            ("postgres://app:Xy?9@db/app", "postgres://app:***@db/app"),
        ] {
            assert_eq!(redact_password(url), shown, "{url}");
        }
        assert_eq!(
            passwords_of("redis://u:a%2Fb@h?password=c"),
            vec!["a%2Fb".to_string(), "c".to_string()]
        );
    }

    #[test]
    fn parses_urls_and_redacts_passwords() {
        assert_eq!(
            DurableUrl::parse("postgres://u:p@h/db").unwrap(),
            DurableUrl::Postgres("postgres://u:p@h/db".into())
        );
        assert_eq!(
            DurableUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DurableUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            DurableUrl::parse("sqlite://rel/x.db?mode=rwc").unwrap(),
            DurableUrl::Sqlite("rel/x.db".into())
        );
        assert_eq!(
            DurableUrl::parse("./a/b.db").unwrap(),
            DurableUrl::Sqlite("./a/b.db".into())
        );
        assert_eq!(
            DurableUrl::parse("mysql://x").unwrap_err().code(),
            "E_INVALID_ARGUMENT"
        );
        assert_eq!(
            redact_password("postgresql://bob:s3cret@db:5432/x?a=b"),
            "postgresql://bob:***@db:5432/x?a=b"
        );
        assert_eq!(
            redact_password("postgres://bob@db/x"),
            "postgres://bob@db/x"
        );
        assert_eq!(
            redact_password("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
    }
}
