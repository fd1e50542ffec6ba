//! `ScenarioMatrixCache.open` options as they arrive from JavaScript: a value
//! tree read strictly, so a typo or a wrong type is an error instead of a
//! silent default (`redisPrefix` for `redisKeyPrefix` would have let two apps
//! share Redis keys). Every problem is reported at once, each naming the
//! option and what it accepts; all are `E_INVALID_ARGUMENT`.

use crate::cache::CacheOptions;
use crate::config::Value;
use crate::error::{Error, Result};

/// Largest integer a JS number holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Every option, in the order the README lists them.
pub const NAMES: [&str; 16] = [
    "databaseUrl",
    "redisUrl",
    "redisClusterNodes",
    "memoryMaxBytes",
    "redisTtlSeconds",
    "redisKeyPrefix",
    "runMigrations",
    "redisTimeoutMs",
    "redisMinThroughputMbps",
    "redisBreakerCooldownMs",
    "databaseTimeoutMs",
    "databaseMaxConnections",
    "slowCallMs",
    "regenerateMinBytes",
    "onEvent",
    "writeLegacyFormat",
];

/// Reads the options object (`undefined` or `null`: all defaults). A member
/// set to `undefined` counts as absent, as JavaScript spreads leave them.
pub fn from_value(v: &Value) -> Result<CacheOptions> {
    let members = match v {
        Value::Undefined | Value::Null => return Ok(CacheOptions::default()),
        Value::Object(m) => m,
        other => {
            return Err(Error::InvalidArgument(format!(
                "options must be an object, got {}",
                other.describe()
            )))
        }
    };
    let mut o = CacheOptions::default();
    let mut problems = Vec::new();
    for (name, value) in members {
        if matches!(value, Value::Undefined) {
            continue;
        }
        let read = match name.as_str() {
            "databaseUrl" => string(value).map(|s| o.database_url = Some(s)),
            "redisUrl" => string(value).map(|s| o.redis_url = Some(s)),
            "redisClusterNodes" => strings(value).map(|s| o.redis_cluster_nodes = Some(s)),
            "redisKeyPrefix" => string(value).map(|s| o.redis_key_prefix = Some(s)),
            "runMigrations" => boolean(value).map(|b| o.run_migrations = Some(b)),
            "memoryMaxBytes" => {
                integer(value, 0.0, MAX_SAFE_INTEGER).map(|n| o.memory_max_bytes = Some(n))
            }
            "redisTtlSeconds" => {
                integer(value, 1.0, u32::MAX as f64).map(|n| o.redis_ttl_seconds = Some(n))
            }
            "redisTimeoutMs" => {
                integer(value, 1.0, 600_000.0).map(|n| o.redis_timeout_ms = Some(n))
            }
            "redisMinThroughputMbps" => {
                positive(value).map(|n| o.redis_min_throughput_mbps = Some(n))
            }
            "redisBreakerCooldownMs" => {
                integer(value, 10.0, 3_600_000.0).map(|n| o.redis_breaker_cooldown_ms = Some(n))
            }
            "databaseTimeoutMs" => {
                integer(value, 1.0, 3_600_000.0).map(|n| o.database_timeout_ms = Some(n))
            }
            "databaseMaxConnections" => {
                integer(value, 1.0, 1000.0).map(|n| o.database_max_connections = Some(n as u32))
            }
            "slowCallMs" => integer(value, 1.0, 3_600_000.0).map(|n| o.slow_call_ms = Some(n)),
            "regenerateMinBytes" => integer(value, 0.0, 9_007_199_254_740_991.0)
                .map(|n| o.regenerate_min_bytes = Some(n)),
            "writeLegacyFormat" => boolean(value).map(|b| o.write_legacy_format = Some(b)),
            // The binding takes the function itself; here it is only checked.
            "onEvent" => match value {
                Value::Unsupported("function") => Ok(()),
                other => Err(format!("expected a function, got {}", other.describe())),
            },
            unknown => Err(unknown_name(unknown)),
        };
        if let Err(wanted) = read {
            problems.push(format!("{name}: {wanted}"));
        }
    }
    if problems.is_empty() {
        Ok(o)
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid options: {}",
            problems.join("; ")
        )))
    }
}

fn unknown_name(name: &str) -> String {
    let near = NAMES
        .iter()
        .find(|known| close(name, known))
        .map(|known| format!(" (did you mean {known}?)"))
        .unwrap_or_default();
    format!("not an option{near}; the options are {}", NAMES.join(", "))
}

/// Same letters ignoring case, or one contains the other (`redisPrefix` and
/// `redisKeyPrefix` do not; a shared prefix and suffix catches those).
fn close(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    let common_prefix = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let common_suffix = a
        .chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .count();
    a == b || a.contains(&b) || b.contains(&a) || (common_prefix >= 4 && common_suffix >= 4)
}

fn string(v: &Value) -> std::result::Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, got {}", other.describe())),
    }
}

fn strings(v: &Value) -> std::result::Result<Vec<String>, String> {
    let wanted = |got: &Value| format!("expected an array of strings, got {}", got.describe());
    match v {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(wanted(other)),
            })
            .collect(),
        other => Err(wanted(other)),
    }
}

fn boolean(v: &Value) -> std::result::Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(format!("expected true or false, got {}", other.describe())),
    }
}

fn integer(v: &Value, min: f64, max: f64) -> std::result::Result<u64, String> {
    match v {
        Value::Number(n) if n.fract() == 0.0 && (min..=max).contains(n) => Ok(*n as u64),
        other => Err(format!(
            "expected an integer from {} to {}, got {}",
            min as u64,
            max as u64,
            other.describe()
        )),
    }
}

fn positive(v: &Value) -> std::result::Result<f64, String> {
    match v {
        Value::Number(n) if n.is_finite() && *n > 0.0 => Ok(*n),
        other => Err(format!(
            "expected a finite number above 0, got {}",
            other.describe()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<CacheOptions> {
        from_value(&Value::from_json(&serde_json::from_str(json).unwrap()))
    }

    fn message(json: &str) -> String {
        match read(json) {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("{json}: expected E_INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn reads_every_option() {
        let o = read(
            r#"{"databaseUrl":"sqlite://x.db","redisUrl":"","memoryMaxBytes":0,
                "redisTtlSeconds":60,"redisKeyPrefix":"app:","runMigrations":false,
                "redisTimeoutMs":250,"redisMinThroughputMbps":0.5,
                "redisBreakerCooldownMs":10,"databaseTimeoutMs":2000,
                "databaseMaxConnections":4,"redisClusterNodes":["redis://a:1","redis://b:2"],
                "writeLegacyFormat":true}"#,
        )
        .unwrap();
        assert_eq!(
            o.redis_cluster_nodes,
            Some(vec!["redis://a:1".to_string(), "redis://b:2".to_string()])
        );
        assert_eq!(o.database_url.as_deref(), Some("sqlite://x.db"));
        assert_eq!(o.redis_url.as_deref(), Some(""));
        assert_eq!(o.memory_max_bytes, Some(0));
        assert_eq!(o.redis_ttl_seconds, Some(60));
        assert_eq!(o.redis_key_prefix.as_deref(), Some("app:"));
        assert_eq!(o.run_migrations, Some(false));
        assert_eq!(o.redis_timeout_ms, Some(250));
        assert_eq!(o.redis_min_throughput_mbps, Some(0.5));
        assert_eq!(o.redis_breaker_cooldown_ms, Some(10));
        assert_eq!(o.database_timeout_ms, Some(2000));
        assert_eq!(o.database_max_connections, Some(4));
        assert_eq!(o.write_legacy_format, Some(true));
        assert_eq!(
            read("{}").unwrap().redis_key_prefix,
            None,
            "absent is the default"
        );
        assert!(from_value(&Value::Undefined).is_ok());
        assert!(from_value(&Value::Object(vec![("redisUrl".into(), Value::Undefined)])).is_ok());
    }

    #[test]
    fn a_misspelt_option_is_named_with_the_one_meant() {
        let m = message(r#"{"redisPrefix":"x:"}"#);
        assert!(m.contains("redisPrefix: not an option"), "{m}");
        assert!(m.contains("did you mean redisKeyPrefix?"), "{m}");
        let m = message(r#"{"databaseurl":"x"}"#);
        assert!(m.contains("did you mean databaseUrl?"), "{m}");
        let m = message(r#"{"colour":"x"}"#);
        assert!(!m.contains("did you mean"), "{m}");
        assert!(
            m.contains("databaseMaxConnections"),
            "lists the options: {m}"
        );
    }

    #[test]
    fn wrong_types_and_ranges_name_the_option_and_what_it_accepts() {
        for (json, want) in [
            (
                r#"{"redisTimeoutMs":"500"}"#,
                r#"redisTimeoutMs: expected an integer from 1 to 600000, got "500" (string)"#,
            ),
            (
                r#"{"redisTtlSeconds":0}"#,
                "redisTtlSeconds: expected an integer from 1 to 4294967295, got 0",
            ),
            (
                r#"{"memoryMaxBytes":-1}"#,
                "memoryMaxBytes: expected an integer from 0 to 9007199254740991, got -1",
            ),
            (
                r#"{"databaseMaxConnections":2.5}"#,
                "databaseMaxConnections: expected an integer from 1 to 1000, got 2.5",
            ),
            (
                r#"{"redisBreakerCooldownMs":5}"#,
                "redisBreakerCooldownMs: expected an integer from 10 to 3600000, got 5",
            ),
            (
                r#"{"redisMinThroughputMbps":0}"#,
                "redisMinThroughputMbps: expected a finite number above 0, got 0",
            ),
            (
                r#"{"runMigrations":"yes"}"#,
                r#"runMigrations: expected true or false, got "yes" (string)"#,
            ),
            (
                r#"{"redisUrl":null}"#,
                "redisUrl: expected a string, got null",
            ),
            (
                r#"{"redisClusterNodes":"redis://a:1,redis://b:2"}"#,
                r#"redisClusterNodes: expected an array of strings, got "redis://a:1,redis://b:2" (string)"#,
            ),
            (
                r#"{"redisClusterNodes":["redis://a:1",7000]}"#,
                "redisClusterNodes: expected an array of strings, got 7000",
            ),
            (
                r#"{"writeLegacyFormat":1}"#,
                "writeLegacyFormat: expected true or false, got 1",
            ),
        ] {
            let m = message(json);
            assert!(m.contains(want), "{json}: {m}");
        }
        assert!(message("[]").contains("options must be an object"));
    }

    #[test]
    fn on_event_is_a_function_and_slow_call_ms_a_duration() {
        let with = |name: &str, v: Value| from_value(&Value::Object(vec![(name.into(), v)]));
        assert!(with("onEvent", Value::Unsupported("function")).is_ok());
        let m = message(r#"{"onEvent":"log"}"#);
        assert!(
            m.contains(r#"onEvent: expected a function, got "log" (string)"#),
            "{m}"
        );
        assert_eq!(
            read(r#"{"slowCallMs":250}"#).unwrap().slow_call_ms,
            Some(250)
        );
        assert!(message(r#"{"slowCallMs":0}"#).contains("slowCallMs: expected an integer from 1"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let m = message(r#"{"redisTtlSeconds":0,"redisPrefix":"x","runMigrations":1}"#);
        for part in ["redisTtlSeconds:", "redisPrefix:", "runMigrations:"] {
            assert!(m.contains(part), "{m}");
        }
    }
}
