//! What operators ask of the durable store as a whole (the CLI's `stats`,
//! `verify` and `gc`): a summary of its rows, its keys page by page, and the
//! config a row records. Each backend runs its own SQL into these shapes.

use serde_json::{json, Value as Json};

use crate::config::ScenarioConfig;
use crate::config::Value;
use crate::key;

/// Complete rows (the cached matrices) of the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSummary {
    pub rows: u64,
    /// Stored payload bytes.
    pub bytes: u64,
    /// Rows in the TypeScript app's format.
    pub legacy_rows: u64,
    /// `created_at` of the oldest and newest row, ISO 8601 UTC.
    pub oldest: Option<String>,
    pub newest: Option<String>,
    pub by_fund: Vec<FundSummary>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FundSummary {
    pub fund_id: Option<String>,
    pub taxonomy_version: Option<String>,
    pub rows: u64,
    pub bytes: u64,
}

/// The columns of a row that describe the config it was made from.
#[derive(Debug, Clone, Default)]
pub struct RowDescription {
    pub key: String,
    pub fund_id: Option<String>,
    pub taxonomy_version: Option<String>,
    pub num_scenarios: Option<i64>,
    /// JSON texts.
    pub bucket_params: Option<String>,
    pub s_opt: Option<String>,
}

impl RowDescription {
    /// The config this row was made from, when its columns record one whose
    /// canonical key is the row's key. A seeded config cannot be rebuilt (the
    /// seed is not stored), nor can a row whose `s_opt` lacks the recycling
    /// settings; both give `None`.
    pub fn config(&self) -> Option<ScenarioConfig> {
        let buckets: Json = serde_json::from_str(self.bucket_params.as_deref()?).ok()?;
        let s_opt: Json = serde_json::from_str(self.s_opt.as_deref()?).ok()?;
        let buckets: Vec<Json> = buckets
            .as_array()?
            .iter()
            .map(|b| {
                Some(json!({
                    "name": b.get("name")?,
                    "capitalAllocation": b.get("capitalAllocation")?,
                    "moicCalibration": {
                        "median": b.get("moicCalibration")?.get("median")?,
                        "p90": b.get("moicCalibration")?.get("p90")?,
                    },
                }))
            })
            .collect::<Option<_>>()?;
        let recycling = s_opt.get("recycling")?;
        let mut cfg = json!({
            "fundId": self.fund_id.as_deref()?,
            "taxonomyVersion": self.taxonomy_version.as_deref()?,
            "numScenarios": self.num_scenarios?,
            "buckets": buckets,
            "correlationWeights": s_opt.get("correlationWeights")?,
            "recycling": recycling,
        });
        // The key hashes `mode` only when the caller gave it, and the row
        // always records it: try both.
        let mut without_mode = recycling.clone();
        without_mode.as_object_mut()?.remove("mode");
        let candidates = [recycling.clone(), without_mode];
        candidates.into_iter().find_map(|r| {
            cfg["recycling"] = r;
            let c = ScenarioConfig::from_value(&Value::from_json(&cfg)).ok()?;
            (key::canonical_key(&c) == self.key).then_some(c)
        })
    }
}

/// `prefix` as a Redis `SCAN MATCH` pattern of the keys under it.
pub fn redis_match_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('*');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_json() -> Json {
        json!({
            "fundId": "f", "taxonomyVersion": "v1.2", "numScenarios": 10,
            "buckets": [
                {"name": "Seed", "capitalAllocation": 60, "moicCalibration": {"median": 1, "p90": 3}},
                {"name": "A", "capitalAllocation": 40, "moicCalibration": {"median": 1.5, "p90": 3.5}},
            ],
            "correlationWeights": {"macro": 0.5, "systematic": 0.25, "idiosyncratic": 0.25},
            "recycling": {"enabled": true, "reinvestmentRate": 0.8, "avgHoldingPeriod": 5, "fundLifetime": 10},
        })
    }

    fn described(cfg: &Json, key: String) -> RowDescription {
        RowDescription {
            key,
            fund_id: Some("f".into()),
            taxonomy_version: Some("v1.2".into()),
            num_scenarios: Some(10),
            // As our rows record them: extra members, mode always written.
            bucket_params: Some(cfg["buckets"].to_string()),
            s_opt: Some(
                json!({
                    "correlationWeights": cfg["correlationWeights"],
                    "recycling": {"enabled": true, "mode": "same-bucket", "reinvestmentRate": 0.8,
                                  "avgHoldingPeriod": 5, "fundLifetime": 10},
                })
                .to_string(),
            ),
        }
    }

    #[test]
    fn rebuilds_a_config_whose_key_matches_the_row() {
        let mut j = config_json();
        let c = ScenarioConfig::from_value(&Value::from_json(&j)).unwrap();
        let row = described(&j, key::canonical_key(&c));
        assert_eq!(
            row.config().map(|r| key::canonical_key(&r)),
            Some(row.key.clone())
        );

        // Given with mode: the key differs, and the other candidate matches.
        j["recycling"]["mode"] = json!("same-bucket");
        let with_mode = ScenarioConfig::from_value(&Value::from_json(&j)).unwrap();
        let row = described(&j, key::canonical_key(&with_mode));
        assert_eq!(
            row.config().map(|r| key::canonical_key(&r)),
            Some(row.key.clone())
        );

        // A seeded config's key cannot be matched; nor can a row without recycling.
        j["seed"] = json!(7);
        let seeded = ScenarioConfig::from_value(&Value::from_json(&j)).unwrap();
        assert!(described(&j, key::canonical_key(&seeded))
            .config()
            .is_none());
        let mut bare = described(&j, key::canonical_key(&c));
        bare.s_opt = Some(json!({"correlationWeights": j["correlationWeights"]}).to_string());
        assert!(bare.config().is_none());
    }

    #[test]
    fn match_patterns_escape_glob_characters() {
        assert_eq!(redis_match_pattern("scenario-matrix:"), "scenario-matrix:*");
        assert_eq!(redis_match_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
