//! Key v1.2 compatibility: every config in the fixture file must hash to the
//! key the TypeScript implementation computed for it (en-US locale).

use scenario_matrix_cache::key::canonical_key;
use scenario_matrix_cache::ScenarioConfig;

#[test]
fn fixture_keys_match_the_typescript_implementation() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/canonical-keys-v1.2.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("fixture file readable");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: serde_json::Value = serde_json::from_str(line).expect("fixture line is JSON");
        let want = entry["key"].as_str().expect("fixture line has a key");
        // Parse through the same path as Rust callers: JSON text -> validated config.
        let cfg = ScenarioConfig::from_json_str(&entry["config"].to_string())
            .unwrap_or_else(|e| panic!("line {}: config rejected: {e:?}", line_no + 1));
        let got = canonical_key(&cfg);
        if got != want {
            wrong.push(format!(
                "line {}: got {got}, want {want}\n  json: {}",
                line_no + 1,
                scenario_matrix_cache::key::canonical_json(&cfg)
            ));
        }
        checked += 1;
    }
    assert_eq!(checked, 60, "fixture file should hold 60 entries");
    assert!(
        wrong.is_empty(),
        "{} of {checked} keys differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
