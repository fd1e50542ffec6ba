#![allow(dead_code)]
//! Real generator output for codec tests and benchmarks: a `rows` x `cols`
//! config shaped like `bench/configs.js` (calibrations spread over the usual
//! range), generated under a key that depends on `seed`.

use scenario_matrix_cache::{generator, key, ScenarioConfig};

pub fn sample_config(rows: u32, cols: u32, seed: u64) -> ScenarioConfig {
    let buckets: Vec<String> = (0..cols)
        .map(|b| {
            let median = 0.8 + f64::from(b % 10) * 0.15;
            let p90 = median * (2.0 + f64::from(b % 5) * 0.4);
            format!(
                r#"{{"name": "Bucket {b:02}", "capitalAllocation": {}, "moicCalibration": {{"median": {median}, "p90": {p90}}}}}"#,
                1.0 / f64::from(cols)
            )
        })
        .collect();
    let json = format!(
        r#"{{"fundId": "sample-{seed}", "taxonomyVersion": "v1", "numScenarios": {rows},
            "buckets": [{}],
            "correlationWeights": {{"macro": 0.5, "systematic": 0.25, "idiosyncratic": 0.25}},
            "recycling": {{"enabled": false}}}}"#,
        buckets.join(",")
    );
    ScenarioConfig::from_json_str(&json).expect("sample config is valid")
}

pub fn matrix(rows: u32, cols: u32, seed: u64) -> Vec<f32> {
    let cfg = sample_config(rows, cols, seed);
    generator::generate(&cfg, &key::canonical_key(&cfg)).matrix
}
