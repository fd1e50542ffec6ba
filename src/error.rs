//! The crate's one error type. Every kind has a stable string `code` that the
//! Node binding copies onto the JS error, so callers can branch on it.

use std::fmt;

/// One problem found in a scenario config: where, what was expected, what was given.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    /// Field path in JS notation, e.g. `buckets[2].moicCalibration.p90`.
    pub path: String,
    pub expected: String,
    pub given: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.path, self.expected, self.given
        )
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The config broke one or more rules; every problem is listed.
    #[error("invalid scenario config: {}", join_issues(.0))]
    Config(Vec<ConfigIssue>),
    /// A call got an argument of the wrong shape (not a config problem).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A payload failed a structural or checksum check.
    #[error("corrupt matrix payload: {0}")]
    Corrupt(String),
    /// The durable store (PostgreSQL / SQLite) could not be reached or read.
    #[error("durable store unavailable: {0}")]
    DurableUnavailable(String),
    /// Writing the durable store failed; nothing was cached anywhere.
    #[error("durable store write failed: {0}")]
    DurableWrite(String),
    /// Redis failed. Never fails a cache call (Redis is an optimisation); seen in logs and stats.
    #[error("redis error: {0}")]
    Redis(String),
    /// An invalidation removed the durable rows but could not reach Redis:
    /// the copies there are not served by this process and the next
    /// invalidation call retries them.
    #[error("invalidation incomplete: {0}")]
    InvalidationIncomplete(String),
    /// Applying the migrations on open needed a table lock that other
    /// sessions held for longer than the database timeout; nothing changed.
    #[error("migrations blocked: {0}")]
    MigrationBlocked(String),
    /// The cache was closed; no call is accepted after `close()`.
    #[error("the cache is closed")]
    Closed,
    /// Something that should not happen (a caught panic, a broken invariant).
    #[error("internal error: {0}")]
    Internal(String),
}

fn join_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The stable code a caller can match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config(_) => "E_CONFIG",
            Error::InvalidArgument(_) => "E_INVALID_ARGUMENT",
            Error::Corrupt(_) => "E_CORRUPT",
            Error::DurableUnavailable(_) => "E_DURABLE_UNAVAILABLE",
            Error::DurableWrite(_) => "E_DURABLE_WRITE",
            Error::Redis(_) => "E_REDIS",
            Error::InvalidationIncomplete(_) => "E_INVALIDATION_INCOMPLETE",
            Error::MigrationBlocked(_) => "E_MIGRATION_BLOCKED",
            Error::Closed => "E_CLOSED",
            Error::Internal(_) => "E_INTERNAL",
        }
    }

    pub(crate) fn corrupt(msg: impl Into<String>) -> Self {
        Error::Corrupt(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
