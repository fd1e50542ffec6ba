//! What both durable stores share: the row of `scenario_matrices` as read
//! ([`StoredRow`], with the legacy rules and corruption checks) and as
//! written ([`NewRow`], every column the TypeScript app's schema requires of
//! a 'complete' row), the payload format marker, the lock-wait floor and the
//! migrator's bookkeeping. Each backend file keeps only what differs: its
//! SQL, its connection handling and its locking.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value as Json};
use sqlx::migrate::Migrator;

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

/// `payload_format` of rows this library wrote in the TypeScript app's format
/// (`writeLegacyFormat`), for TypeScript instances to read: the app's zlib
/// payload and `scenario_states`, but unlike the app's own rows (NULL, which
/// it never sets) in the key's column order, named by `bucket_params`, with
/// our generation metadata.
pub(super) const PAYLOAD_FORMAT_TYPESCRIPT: i64 = 1;

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
            // The TypeScript app deflated with zlib but labelled the row
            // 'zstd'; the transition mode writes the same.
            (None | Some(PAYLOAD_FORMAT_TYPESCRIPT), Some("zstd")) => Codec::Zlib,
            (None, Some("none")) => Codec::None,
            (Some(f), _) if f != PAYLOAD_FORMAT_ENVELOPE && f != PAYLOAD_FORMAT_TYPESCRIPT => {
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
        // Our rows (in either format) record their column order; without it
        // the columns could not be attributed to buckets. The TypeScript
        // app's rows recorded none we can trust.
        let bucket_names = if self.payload_format.is_some() {
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
            derived: Default::default(),
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
    pub payload_format: i64,
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
            payload_format: PAYLOAD_FORMAT_ENVELOPE,
        })
    }

    /// The same row in the TypeScript app's format (`writeLegacyFormat`):
    /// `zlib` (from [`typescript_payload`]) as the payload, and the scenario
    /// count as the length of `scenario_states.scenarios`, the only place the
    /// app reads it (one element per scenario, as the app wrote them).
    pub fn in_typescript_format(self, zlib: &'a [u8]) -> Self {
        let scenarios: Vec<String> = (0..self.num_scenarios)
            .map(|i| format!(r#"{{"id":{i},"params":{{}}}}"#))
            .collect();
        NewRow {
            payload: zlib,
            scenario_states: format!(r#"{{"scenarios":[{}]}}"#, scenarios.join(",")),
            payload_format: PAYLOAD_FORMAT_TYPESCRIPT,
            ..self
        }
    }
}

/// The TypeScript app's payload (zlib of the raw f32 bytes) of an envelope
/// entry, made on the blocking pool (about a second for 100,000 x 50).
pub(super) async fn typescript_payload(entry: &Entry) -> Result<Vec<u8>> {
    let entry = entry.clone();
    tokio::task::spawn_blocking(move || Ok(crate::codec::encode_legacy_zlib(&entry.decode()?)))
        .await
        .unwrap_or_else(|e| Err(Error::Internal(format!("worker failed: {e}"))))
}

/// A float as JavaScript would write it in JSON: integral values without `.0`.
fn number(v: f64) -> Json {
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Ours in the TypeScript format: zlib, with its columns named.
        let transition = row(Some(1), "zstd", Some(4)).into_entry().unwrap();
        assert_eq!(transition.codec, Codec::Zlib);
        assert_eq!(transition.metadata.bucket_names, ["b", "a"]);
        let mut unnamed = row(Some(1), "zstd", Some(4));
        unnamed.bucket_params = None;
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
