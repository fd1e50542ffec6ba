//! The durable tier, the source of truth: PostgreSQL in production, SQLite as
//! the zero-setup embedded default. Both give the same semantics; this module
//! picks one from the URL and dispatches.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
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
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "databaseUrl {s:?} names no SQLite file"
                )));
            }
            return Ok(DurableUrl::Sqlite(PathBuf::from(path)));
        }
        if s.contains("://") {
            let scheme = s.split("://").next().unwrap_or_default();
            return Err(Error::InvalidArgument(format!(
                "databaseUrl scheme {scheme:?} is not supported (expected postgres://, postgresql://, sqlite:// or a file path)"
            )));
        }
        Ok(DurableUrl::Sqlite(PathBuf::from(s)))
    }

    /// For logs and errors: the URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            DurableUrl::Postgres(u) => redact_password(u),
            DurableUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
        }
    }
}

/// Replaces the password of `scheme://user:password@host...` with `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct DurableOptions {
    /// Apply the embedded migrations on open.
    pub run_migrations: bool,
    /// Bound on connecting, acquiring a connection and each statement.
    pub timeout: Duration,
    pub max_connections: u32,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions {
            run_migrations: true,
            timeout: Duration::from_secs(10),
            max_connections: 8,
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

    /// Removes the row; true when one existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        match self {
            Durable::Postgres(s) => s.delete(key).await,
            Durable::Sqlite(s) => s.delete(key).await,
        }
    }

    /// Removes every cached matrix ('complete' row) of a fund (optionally one
    /// taxonomy version); returns their keys. Rows of other statuses stay.
    pub async fn delete_fund(
        &self,
        fund_id: &str,
        taxonomy_version: Option<&str>,
    ) -> Result<Vec<String>> {
        match self {
            Durable::Postgres(s) => s.delete_fund(fund_id, taxonomy_version).await,
            Durable::Sqlite(s) => s.delete_fund(fund_id, taxonomy_version).await,
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
