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

/// Recycling enabled with `mode` given and left out: the TypeScript key has
/// no `mode` member when the caller left it out (keys computed by the
/// TypeScript algorithm in Node: `scripts/key-fixture-mode.mjs`).
#[test]
fn keys_without_mode_match_the_typescript_implementation() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/canonical-keys-mode.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("fixture file readable");
    let (mut with_mode, mut without_mode) = (0, 0);
    for (line_no, line) in text.lines().enumerate() {
        let entry: serde_json::Value = serde_json::from_str(line).expect("fixture line is JSON");
        let cfg = ScenarioConfig::from_json_str(&entry["config"].to_string())
            .unwrap_or_else(|e| panic!("line {}: config rejected: {e:?}", line_no + 1));
        assert_eq!(
            canonical_key(&cfg),
            entry["key"].as_str().unwrap(),
            "line {}: {}",
            line_no + 1,
            scenario_matrix_cache::key::canonical_json(&cfg)
        );
        if entry["config"]["recycling"].get("mode").is_some() {
            with_mode += 1;
        } else {
            without_mode += 1;
        }
    }
    assert!(
        with_mode >= 3 && without_mode >= 6,
        "{with_mode} / {without_mode}"
    );
}

/// Differential check against a file of `{config, json}` lines whose `json` is
/// the canonical text computed by a JavaScript reference (Node, en-US). Run
/// with `KEY_CROSSCHECK=/path/cases.jsonl cargo test --test key -- --ignored`.
/// Configs our validator rejects are counted and skipped.
#[test]
#[ignore = "needs KEY_CROSSCHECK=<file> produced by a Node reference"]
fn cross_check_against_javascript_reference() {
    let path = std::env::var("KEY_CROSSCHECK").expect("set KEY_CROSSCHECK to a jsonl file");
    let text = std::fs::read_to_string(&path).expect("cross-check file readable");
    let (mut same, mut skipped, mut wrong) = (0, 0, Vec::new());
    for (line_no, line) in text.lines().enumerate() {
        let entry: serde_json::Value = serde_json::from_str(line).expect("line is JSON");
        let want = entry["json"].as_str().expect("line has json");
        let cfg = match ScenarioConfig::from_json_str(&entry["config"].to_string()) {
            Ok(c) => c,
            Err(_) => {
                skipped += 1;
                continue;
            }
        };
        let got = scenario_matrix_cache::key::canonical_json(&cfg);
        if got == want {
            same += 1;
        } else {
            // Show only the neighbourhood of the first difference.
            let at = got
                .char_indices()
                .zip(want.chars())
                .find(|((_, g), w)| g != w)
                .map_or(got.len().min(want.len()), |((i, _), _)| i);
            let from = got[..at].char_indices().rev().nth(60).map_or(0, |(i, _)| i);
            let tail = |s: &str| {
                s.get(from..)
                    .unwrap_or("")
                    .chars()
                    .take(140)
                    .collect::<String>()
            };
            wrong.push(format!(
                "line {}:\n  got  ...{:?}\n  want ...{:?}",
                line_no + 1,
                tail(&got),
                tail(want)
            ));
        }
    }
    eprintln!(
        "cross-check: {same} equal, {} differ, {skipped} rejected",
        wrong.len()
    );
    let shown: Vec<&String> = wrong.iter().take(10).collect();
    assert!(wrong.is_empty(), "{shown:#?}");
}
