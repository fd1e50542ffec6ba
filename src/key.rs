//! Canonical cache key v1.2: the normalised JSON text of a config and its
//! SHA-256, byte for byte what the TypeScript server computes under en-US.
//!
//! This module owns the three things that must match JavaScript exactly:
//! number formatting (`JSON.stringify` / `Number.prototype.toString`), string
//! escaping (`JSON.stringify`), and the bucket order (`String.prototype.localeCompare`
//! with the CLDR root collation, which is what en-US resolves to). It also owns the
//! one deliberate extension: a `seed` member, written only when a seed is given,
//! so configs without a seed keep their v1.2 key.

use std::cmp::Ordering;
use std::sync::LazyLock;

use icu_collator::options::CollatorOptions;
use icu_collator::{CollatorBorrowed, CollatorPreferences};
use sha2::{Digest, Sha256};

use crate::config::{Bucket, Recycling, ScenarioConfig, Seed};
use crate::js_number::{push_js_number, round5};

/// The CLDR root collation with default options (tertiary strength, punctuation
/// not ignored, no case-first override). en-US has no tailoring of its own, so
/// this is the order Node's `localeCompare` gives there; building it from root
/// rather than the process locale is what makes the key machine-independent.
///
/// Known divergence from Node (full ICU): ICU4X's compiled data uses the
/// "implicithan" root, Node's ICU the "unihan" root. They differ only in how
/// Han ideographs order among themselves (code point by block vs radical-stroke),
/// so names that first differ at two ideographs can sort differently: mixed
/// simplified/traditional forms of one radical (议 vs 識), extension-block or
/// late-added ideographs, and the radicals/enclosed ideographs derived from them.
/// The ICU4X data is also one Unicode version newer (characters new in it sort
/// as unassigned in Node). Everything else agreed in differential tests.
static COLLATOR: LazyLock<CollatorBorrowed<'static>> = LazyLock::new(|| {
    CollatorBorrowed::try_new(CollatorPreferences::default(), CollatorOptions::default())
        .expect("the root collation is compiled into icu_collator")
});

/// Orders two bucket names as `a.localeCompare(b)` does in an en-US Node.
pub fn compare_names(a: &str, b: &str) -> Ordering {
    COLLATOR.compare(a, b)
}

/// The canonical JSON text whose SHA-256 is the key.
pub fn canonical_json(cfg: &ScenarioConfig) -> String {
    // Roughly 110 bytes per bucket plus the fixed members; one allocation in
    // the common case.
    let mut out = String::with_capacity(256 + 112 * cfg.buckets.len());

    out.push_str("{\"fundId\":");
    push_js_string(&mut out, &cfg.fund_id);
    out.push_str(",\"taxonomyVersion\":");
    push_js_string(&mut out, &cfg.taxonomy_version);
    out.push_str(",\"numScenarios\":");
    push_js_number(&mut out, f64::from(cfg.num_scenarios));

    let buckets = canonical_order(&cfg.buckets);

    out.push_str(",\"buckets\":[");
    for (i, b) in buckets.iter().map(|&i| &cfg.buckets[i]).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        push_js_string(&mut out, &b.name);
        out.push_str(",\"capitalAllocation\":");
        push_js_number(&mut out, round5(b.capital_allocation));
        out.push_str(",\"moicCalibration\":{\"median\":");
        push_js_number(&mut out, round5(b.median));
        out.push_str(",\"p90\":");
        push_js_number(&mut out, round5(b.p90));
        out.push_str("}}");
    }

    let w = &cfg.correlation_weights;
    out.push_str("],\"correlationWeights\":{\"macro\":");
    push_js_number(&mut out, round5(w.macro_));
    out.push_str(",\"systematic\":");
    push_js_number(&mut out, round5(w.systematic));
    out.push_str(",\"idiosyncratic\":");
    push_js_number(&mut out, round5(w.idiosyncratic));

    out.push_str("},\"recycling\":");
    match cfg.recycling {
        // The TypeScript code drops the numeric fields when disabled, so two
        // disabled configs that differ only there share a key (and a matrix,
        // which is right: the generator ignores them too).
        Recycling::Disabled => out.push_str("{\"enabled\":false,\"mode\":\"same-bucket\"}"),
        Recycling::Enabled {
            mode_given,
            reinvestment_rate,
            avg_holding_period,
            fund_lifetime,
        } => {
            // The TypeScript key object holds `mode: config.recycling.mode`;
            // when the caller left it out that is `undefined`, which
            // `JSON.stringify` drops, so the member is absent from the key.
            out.push_str("{\"enabled\":true,");
            if mode_given {
                out.push_str("\"mode\":\"same-bucket\",");
            }
            out.push_str("\"reinvestmentRate\":");
            push_js_number(&mut out, round5(reinvestment_rate));
            out.push_str(",\"avgHoldingPeriod\":");
            push_js_number(&mut out, round5(avg_holding_period));
            out.push_str(",\"fundLifetime\":");
            push_js_number(&mut out, round5(fund_lifetime));
            out.push('}');
        }
    }

    // Our extension (fixes the TypeScript defect where the seed was ignored):
    // the seed is written as given, never rounded, since two seeds that round
    // alike still produce different matrices.
    match &cfg.seed {
        None => {}
        Some(Seed::Text(s)) => {
            out.push_str(",\"seed\":");
            push_js_string(&mut out, s);
        }
        Some(Seed::Number(n)) => {
            out.push_str(",\"seed\":");
            push_js_number(&mut out, *n);
        }
    }

    out.push('}');
    out
}

/// The key's bucket order: indices into `buckets`, sorted by name as
/// `localeCompare` sorts them. A stable sort, like V8's Array.prototype.sort:
/// names that collate equal (e.g. differing only in ignorable control
/// characters, or canonically equivalent spellings) keep their input order.
pub fn canonical_order(buckets: &[Bucket]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..buckets.len()).collect();
    order.sort_by(|&a, &b| compare_names(&buckets[a].name, &buckets[b].name));
    order
}

/// The config exactly as its key sees it: buckets in the key's order and every
/// number rounded to 5 decimals as the key rounds it. The generator and the
/// recycling multiples work from this, so their output is a function of the
/// key alone: every config that shares a key gets the same bytes, whatever
/// its bucket order or rounding noise. (Never hash this again: the key is
/// [`canonical_key`] of the caller's config.)
pub fn normalised(cfg: &ScenarioConfig) -> ScenarioConfig {
    let buckets = canonical_order(&cfg.buckets)
        .into_iter()
        .map(|i| {
            let b = &cfg.buckets[i];
            Bucket {
                name: b.name.clone(),
                capital_allocation: round5(b.capital_allocation),
                median: round5(b.median),
                p90: round5(b.p90),
            }
        })
        .collect();
    let w = &cfg.correlation_weights;
    let recycling = match cfg.recycling {
        Recycling::Disabled => Recycling::Disabled,
        Recycling::Enabled {
            mode_given,
            reinvestment_rate,
            avg_holding_period,
            fund_lifetime,
        } => Recycling::Enabled {
            mode_given,
            reinvestment_rate: round5(reinvestment_rate),
            avg_holding_period: round5(avg_holding_period),
            fund_lifetime: round5(fund_lifetime),
        },
    };
    ScenarioConfig {
        fund_id: cfg.fund_id.clone(),
        taxonomy_version: cfg.taxonomy_version.clone(),
        num_scenarios: cfg.num_scenarios,
        buckets,
        correlation_weights: crate::config::CorrelationWeights {
            macro_: round5(w.macro_),
            systematic: round5(w.systematic),
            idiosyncratic: round5(w.idiosyncratic),
        },
        recycling,
        seed: cfg.seed.clone(),
    }
}

/// Lowercase hex SHA-256 of [`canonical_json`].
pub fn canonical_key(cfg: &ScenarioConfig) -> String {
    let digest = Sha256::digest(canonical_json(cfg).as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(64);
    for byte in digest.iter() {
        key.push(HEX[usize::from(byte >> 4)] as char);
        key.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    key
}

/// Appends `s` as a JSON string literal escaped like `JSON.stringify`: the
/// short escapes it uses, `\u00xx` (lowercase hex) for the other C0 controls,
/// and everything else raw, including DEL, U+2028/U+2029 and non-ASCII.
/// (Rust strings cannot hold lone surrogates, the one case where
/// `JSON.stringify` would also write `\udxxx`.)
fn push_js_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        // Every byte that needs escaping is ASCII, so slicing at `i` always
        // falls on a char boundary.
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CorrelationWeights;

    fn cfg(names: &[&str]) -> ScenarioConfig {
        ScenarioConfig {
            fund_id: "f".into(),
            taxonomy_version: "v1.2".into(),
            num_scenarios: 10,
            buckets: names
                .iter()
                .map(|n| Bucket {
                    name: (*n).into(),
                    capital_allocation: 100.0 / names.len() as f64,
                    median: 1.0,
                    p90: 3.0,
                })
                .collect(),
            correlation_weights: CorrelationWeights {
                macro_: 0.5,
                systematic: 0.25,
                idiosyncratic: 0.25,
            },
            recycling: Recycling::Disabled,
            seed: None,
        }
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut v: Vec<&str> = names.to_vec();
        v.sort_by(|a, b| compare_names(a, b));
        v.into_iter().map(String::from).collect()
    }

    #[test]
    fn strings_escape_as_json_stringify() {
        let esc = |s: &str| {
            let mut o = String::new();
            push_js_string(&mut o, s);
            o
        };
        assert_eq!(esc("plain"), "\"plain\"");
        assert_eq!(esc("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(esc("\u{8}\u{c}\n\r\t"), r#""\b\f\n\r\t""#);
        assert_eq!(
            esc("\u{0}\u{1}\u{1f}\u{b}"),
            r#""\u0000\u0001\u001f\u000b""#
        );
        assert_eq!(esc("\u{7f}/<>"), "\"\u{7f}/<>\"");
        assert_eq!(esc("é\u{2028}\u{2029}中🚀"), "\"é\u{2028}\u{2029}中🚀\"");
        assert_eq!(esc("x\u{1a}é\""), "\"x\\u001aé\\\"\"");
        assert_eq!(esc(""), "\"\"");
    }

    #[test]
    fn names_sort_like_locale_compare() {
        // Expected orders from Node 20 (full ICU):
        // [..].sort((x, y) => x.localeCompare(y))
        assert_eq!(
            sorted(&["b", "A", "a", "é", "E", "e"]),
            ["a", "A", "b", "e", "E", "é"]
        );
        assert_eq!(
            sorted(&["Series B", "seed", "Seed", "Series A", "series a", "Pre-Seed"]),
            ["Pre-Seed", "seed", "Seed", "series a", "Series A", "Series B"]
        );
        // Punctuation and spaces sort before digits, digits before letters.
        assert_eq!(
            sorted(&["b", "1st", "_x", " lead", "#hash", "(paren)", "Z"]),
            [" lead", "_x", "(paren)", "#hash", "1st", "b", "Z"]
        );
        // Symbols before digits, then Latin, Greek, kana, Han.
        assert_eq!(
            sorted(&[
                "日本",
                "中文",
                "😀 fund",
                "Ω",
                "ω",
                "Ärger",
                "über",
                "Uber",
                "Zebra",
                "zeta",
                "シード",
                "あ",
                "10x",
                "9",
                "Stage 10",
                "Stage 9",
                "_under",
                "-dash",
                " space",
                "Ångström",
                "Apple",
                "apple",
                "#hash",
            ]),
            [
                " space",
                "_under",
                "-dash",
                "#hash",
                "😀 fund",
                "10x",
                "9",
                "Ångström",
                "apple",
                "Apple",
                "Ärger",
                "Stage 10",
                "Stage 9",
                "Uber",
                "über",
                "Zebra",
                "zeta",
                "ω",
                "Ω",
                "あ",
                "シード",
                "中文",
                "日本",
            ]
        );
        // Not numeric: "10" before "9".
        assert_eq!(sorted(&["9", "10", "1"]), ["1", "10", "9"]);
        // Accents are secondary: "cote" < "coté" < "côte" < "côté" (no French backwards).
        assert_eq!(
            sorted(&["côté", "côte", "coté", "cote"]),
            ["cote", "coté", "côte", "côté"]
        );
    }

    #[test]
    fn equal_collating_names_keep_input_order() {
        // Control characters are ignorable; NFC and NFD spellings are equivalent.
        assert_eq!(compare_names("a\u{1}", "a"), Ordering::Equal);
        assert_eq!(compare_names("e\u{301}", "é"), Ordering::Equal);
        assert_eq!(sorted(&["é", "b", "e\u{301}"]), ["b", "é", "e\u{301}"]);
        assert_eq!(sorted(&["e\u{301}", "b", "é"]), ["b", "e\u{301}", "é"]);
        assert_eq!(sorted(&["a\u{1}", "b", "a"]), ["a\u{1}", "a", "b"]);
        assert_eq!(sorted(&["a", "b", "a\u{1}"]), ["a", "a\u{1}", "b"]);
    }

    #[test]
    fn canonical_json_has_the_v1_2_shape() {
        let mut c = cfg(&["Seed", "Angel"]);
        c.buckets[0].capital_allocation = 60.0;
        c.buckets[1].capital_allocation = 40.0;
        c.buckets[1].median = 1.5;
        c.buckets[1].p90 = 3.5;
        assert_eq!(
            canonical_json(&c),
            concat!(
                r#"{"fundId":"f","taxonomyVersion":"v1.2","numScenarios":10,"buckets":["#,
                r#"{"name":"Angel","capitalAllocation":40,"moicCalibration":{"median":1.5,"p90":3.5}},"#,
                r#"{"name":"Seed","capitalAllocation":60,"moicCalibration":{"median":1,"p90":3}}],"#,
                r#""correlationWeights":{"macro":0.5,"systematic":0.25,"idiosyncratic":0.25},"#,
                r#""recycling":{"enabled":false,"mode":"same-bucket"}}"#
            )
        );
        c.recycling = Recycling::Enabled {
            mode_given: true,
            reinvestment_rate: 0.123456789,
            avg_holding_period: 4.0,
            fund_lifetime: 10.0,
        };
        assert!(canonical_json(&c).ends_with(
            r#""recycling":{"enabled":true,"mode":"same-bucket","reinvestmentRate":0.12346,"avgHoldingPeriod":4,"fundLifetime":10}}"#
        ));
    }

    #[test]
    fn seed_is_part_of_the_key_only_when_given() {
        let base = cfg(&["a"]);
        let k0 = canonical_key(&base);
        assert_eq!(k0.len(), 64);
        assert!(k0
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

        let with = |seed: Seed| {
            let mut c = base.clone();
            c.seed = Some(seed);
            c
        };
        let text = with(Seed::Text("1".into()));
        let num = with(Seed::Number(1.0));
        let other = with(Seed::Number(2.0));
        assert!(canonical_json(&text).ends_with(r#""same-bucket"},"seed":"1"}"#));
        assert!(canonical_json(&num).ends_with(r#""same-bucket"},"seed":1}"#));
        // Not rounded to five decimals.
        assert!(
            canonical_json(&with(Seed::Number(0.123456789))).ends_with(r#","seed":0.123456789}"#)
        );
        assert!(canonical_json(&with(Seed::Text("q\"\n".into()))).ends_with(r#","seed":"q\"\n"}"#));
        let keys = [
            k0,
            canonical_key(&text),
            canonical_key(&num),
            canonical_key(&other),
        ];
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j], "keys {i} and {j} collide");
            }
        }
    }

    #[test]
    fn disabled_recycling_ignores_its_other_fields() {
        // The parser keeps only `Disabled` when enabled is false, whatever the
        // numeric fields said; check that at the config level too.
        let parse = |rec: &str| {
            let text = format!(
                r#"{{"fundId":"f","taxonomyVersion":"t","numScenarios":5,
                "buckets":[{{"name":"a","capitalAllocation":100,"moicCalibration":{{"median":1,"p90":2}}}}],
                "correlationWeights":{{"macro":0.2,"systematic":0.3,"idiosyncratic":0.5}},
                "recycling":{rec}}}"#
            );
            canonical_key(&ScenarioConfig::from_json_str(&text).unwrap())
        };
        let bare = parse(r#"{"enabled":false}"#);
        assert_eq!(bare, parse(r#"{"enabled":false,"mode":"same-bucket"}"#));
        assert_eq!(
            bare,
            parse(
                r#"{"enabled":false,"reinvestmentRate":0.5,"avgHoldingPeriod":3,"fundLifetime":10}"#
            )
        );
        assert_ne!(
            bare,
            parse(
                r#"{"enabled":true,"reinvestmentRate":0.5,"avgHoldingPeriod":3,"fundLifetime":10}"#
            )
        );
    }

    #[test]
    fn a_mode_left_out_is_left_out_of_the_key() {
        let mut c = cfg(&["a"]);
        let on = |mode_given| Recycling::Enabled {
            mode_given,
            reinvestment_rate: 0.5,
            avg_holding_period: 3.0,
            fund_lifetime: 10.0,
        };
        c.recycling = on(false);
        assert!(canonical_json(&c).ends_with(
            r#""recycling":{"enabled":true,"reinvestmentRate":0.5,"avgHoldingPeriod":3,"fundLifetime":10}}"#
        ));
        let without = canonical_key(&c);
        c.recycling = on(true);
        assert_ne!(canonical_key(&c), without);
        // Disabled recycling always writes the mode (the TypeScript literal).
        c.recycling = Recycling::Disabled;
        assert!(canonical_json(&c).ends_with(r#"{"enabled":false,"mode":"same-bucket"}}"#));
    }

    #[test]
    fn normalised_is_what_the_key_hashes() {
        let mut c = cfg(&["Seed", "angel", "Alpha"]);
        c.buckets[0].median = 1.000004;
        c.correlation_weights.macro_ = 0.500004;
        let n = normalised(&c);
        let names: Vec<&str> = n.buckets.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["Alpha", "angel", "Seed"]);
        assert_eq!(n.buckets[2].median, 1.0);
        assert_eq!(n.correlation_weights.macro_, 0.5);
        // Every number the key writes is the normalised one.
        let json = canonical_json(&c);
        assert!(json.contains(r#""name":"Seed","capitalAllocation":"#));
        assert!(json.contains(r#""macro":0.5,"#));
        assert_eq!(canonical_order(&c.buckets), [2, 1, 0]);
    }

    #[test]
    fn bucket_order_and_rounding_noise_do_not_change_the_key() {
        let a = cfg(&["Seed", "Series A", "angel"]);
        let mut b = a.clone();
        b.buckets.rotate_left(1);
        b.buckets[0].median += 1e-9;
        assert_eq!(canonical_key(&a), canonical_key(&b));
    }
}
