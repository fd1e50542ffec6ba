//! One scenario run, from a validated config to a compressed matrix and the
//! metadata that travels with it (the same metadata on a miss and on every hit).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::ScenarioConfig;
use crate::error::Result;
use crate::{codec, generator, key};

/// What a generation produced, as the cache stores it: in the key's bucket
/// order (see [`crate::view`] for the caller's order). Fields a legacy
/// (TypeScript) copy did not record are `None` / empty: unknown, never invented.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The canonical key of the config.
    pub config_hash: String,
    pub num_scenarios: u32,
    pub num_buckets: u32,
    /// ISO 8601 UTC, millisecond precision. `None`: unknown (a legacy copy
    /// with no durable row to date it).
    pub generated_at: Option<String>,
    /// Wall time of generation and compression; `None` for legacy copies.
    pub duration_ms: Option<f64>,
    /// Per bucket, in the order of `bucket_names`. Empty: not known yet (a
    /// legacy copy read by key; completed once a call brings the config).
    pub recycling_multiples: Vec<f64>,
    /// The bucket names in the order of the payload's columns. Empty: not
    /// recorded (a legacy single-bucket copy read by key).
    pub bucket_names: Vec<String>,
}

impl Metadata {
    /// Legacy copies carry no recycling multiples; the cache computes them when it knows the config.
    pub fn lacks_recycling(&self) -> bool {
        self.recycling_multiples.len() != self.num_buckets as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The codec envelope (see [`codec`]), columns in the key's bucket order.
    pub envelope: Vec<u8>,
    pub metadata: Metadata,
}

/// Generates and compresses the matrix for `cfg`.
pub fn run(cfg: &ScenarioConfig) -> Result<Scenario> {
    run_with_matrix(cfg).map(|(s, _)| s)
}

/// [`run`], also handing back the uncompressed matrix (row-major, key order).
///
/// The generator sees [`key::normalised`]: the buckets in the key's order and
/// the numbers the key hashes. So the output is a function of the key: two
/// configs that share a key (bucket order, rounding noise) get the same bytes.
pub fn run_with_matrix(cfg: &ScenarioConfig) -> Result<(Scenario, Vec<f32>)> {
    let started = Instant::now();
    let generated_at = iso8601_now();
    let key = key::canonical_key(cfg);
    let norm = key::normalised(cfg);
    let g = generator::generate(&norm, &key);
    let envelope = codec::encode(&g.matrix, g.num_scenarios, g.num_buckets)?;
    let scenario = Scenario {
        envelope,
        metadata: Metadata {
            config_hash: key,
            num_scenarios: g.num_scenarios,
            num_buckets: g.num_buckets,
            generated_at: Some(generated_at),
            duration_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
            recycling_multiples: g.recycling_multiples,
            bucket_names: norm.buckets.into_iter().map(|b| b.name).collect(),
        },
    };
    Ok((scenario, g.matrix))
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (what JS `toISOString` prints).
pub fn iso8601_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    iso8601_from_millis(since.as_millis() as i64)
}

fn iso8601_from_millis(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (proleptic Gregorian), by 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::iso8601_from_millis;

    #[test]
    fn formats_like_to_iso_string() {
        assert_eq!(iso8601_from_millis(0), "1970-01-01T00:00:00.000Z");
        // new Date(1795500000123).toISOString()
        assert_eq!(
            iso8601_from_millis(1_795_500_000_123),
            "2026-11-24T06:00:00.123Z"
        );
        assert_eq!(
            iso8601_from_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
