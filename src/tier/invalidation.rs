//! Invalidations that reach every instance sharing the durable store.
//!
//! Each invalidation (`invalidate`, `invalidateFund`, `gc`) deletes its rows
//! and appends a record to `scenario_matrix_invalidations` in one
//! transaction: the audit trail, and the log other instances follow to drop
//! their in-process (memory tier) copies. PostgreSQL also sends `NOTIFY` from
//! that transaction, so followers hear of it when it commits and never of
//! one that rolled back; SQLite processes (one machine) poll the log.
//! A follower that lost its connection may have missed records: it reports
//! [`Notice::Missed`] and the cache drops its whole memory tier.

use std::time::Duration;

use serde_json::Value as Json;

/// What an invalidation removes.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Key(&'a str),
    Fund {
        fund_id: &'a str,
        taxonomy_version: Option<&'a str>,
    },
    /// Rows created more than `age_ms` ago (of one fund when given).
    OlderThan {
        age_ms: u64,
        fund_id: Option<&'a str>,
    },
}

impl Scope<'_> {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Scope::Key(_) => "key",
            Scope::Fund { .. } => "fund",
            Scope::OlderThan { .. } => "gc",
        }
    }

    pub(super) fn key(&self) -> Option<&str> {
        match self {
            Scope::Key(k) => Some(k),
            _ => None,
        }
    }

    pub(super) fn fund_id(&self) -> Option<&str> {
        match self {
            Scope::Fund { fund_id, .. } => Some(fund_id),
            Scope::OlderThan { fund_id, .. } => *fund_id,
            Scope::Key(_) => None,
        }
    }

    pub(super) fn taxonomy_version(&self) -> Option<&str> {
        match self {
            Scope::Fund {
                taxonomy_version, ..
            } => *taxonomy_version,
            _ => None,
        }
    }

    /// The keys other instances must forget: the key itself (a copy may
    /// outlive its row), else the rows deleted.
    pub(super) fn keys_to_forget(&self, deleted: &[String]) -> Vec<String> {
        match self {
            Scope::Key(k) => vec![k.to_string()],
            _ => deleted.to_vec(),
        }
    }

    /// Whether a record is kept when nothing was deleted: always for calls
    /// of the application (the audit trail shows them), not for a `gc` that
    /// found nothing old enough.
    pub(super) fn recorded_when_empty(&self) -> bool {
        !matches!(self, Scope::OlderThan { .. })
    }
}

/// What a follower hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Copies of these keys are stale.
    Forget(Vec<String>),
    /// Records may have been missed: no in-process copy can be trusted.
    Missed,
}

/// Rows one `gc` transaction deletes at most.
pub const GC_BATCH: usize = 200;

/// The channel PostgreSQL notifies on; the payload is the record's id.
pub(super) const CHANNEL: &str = "scenario_matrix_cache_invalidations";

/// How often an SQLite follower reads the log.
pub(super) const POLL: Duration = Duration::from_millis(25);

/// `host:pid#n` for the n-th store opened by this process: the record's
/// `origin`, and how a follower knows its own invalidations (already applied
/// to its memory tier, which meanwhile may hold a fresh copy).
pub(super) fn new_origin() -> String {
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}#{n}", PROCESS.get_or_init(read_origin))
}

fn read_origin() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}:{}", std::process::id())
}

/// The keys of a record's JSON array (a record we cannot read is treated as
/// a miss of unknown keys by the caller).
pub(super) fn keys_of(json_text: &str) -> Option<Vec<String>> {
    let v: Json = serde_json::from_str(json_text).ok()?;
    v.as_array()?
        .iter()
        .map(|k| k.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_name_what_they_remove() {
        let key = Scope::Key("k");
        assert_eq!((key.name(), key.key()), ("key", Some("k")));
        assert_eq!(key.keys_to_forget(&[]), ["k"]);
        let fund = Scope::Fund {
            fund_id: "f",
            taxonomy_version: Some("v1.2"),
        };
        assert_eq!(
            (fund.fund_id(), fund.taxonomy_version()),
            (Some("f"), Some("v1.2"))
        );
        assert_eq!(fund.keys_to_forget(&["a".into()]), ["a"]);
        let gc = Scope::OlderThan {
            age_ms: 1,
            fund_id: None,
        };
        assert!(!gc.recorded_when_empty() && fund.recorded_when_empty());
        assert_eq!(keys_of(r#"["a","b"]"#), Some(vec!["a".into(), "b".into()]));
        assert_eq!(keys_of("[1]"), None);
        let (a, b) = (new_origin(), new_origin());
        assert!(a.contains(&format!(":{}#", std::process::id())), "{a}");
        assert_ne!(a, b);
    }
}
