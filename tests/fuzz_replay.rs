//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the
//! fuzz targets' own code (`fuzz/targets.rs`) on stable Rust, so every input
//! the fuzzer kept, and every reproducer of a fixed bug, is rerun by
//! `cargo test`. A panic in a target fails the test.
//!
//! `cargo test --release --test fuzz_replay -- --ignored write_seed_corpora`
//! (re)writes the hand-made seed inputs the fuzzing started from.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

use scenario_matrix_cache::codec::{self, ChunkCodec, EncodeOptions, Filter};
use scenario_matrix_cache::tier::redis;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs `f` on every file of the target's corpus; returns how many.
fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        eprintln!("{}", path.display());
        f(&data);
    }
    files.len()
}

#[test]
fn config_json_corpus_replays() {
    let n = replay("config_json", targets::config_json);
    assert!(n > 0, "empty corpus");
}

#[test]
fn payload_decode_corpus_replays() {
    let n = replay("payload_decode", targets::payload_decode);
    assert!(n > 0, "empty corpus");
}

/// The 4 bytes the `payload_decode` target reads before the payload.
fn dims(rows: u16, cols: u8, label: u8) -> Vec<u8> {
    let mut v = rows.to_le_bytes().to_vec();
    v.extend([cols, label]);
    v
}

fn matrix(rows: u32, cols: u32) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0)
        .collect()
}

/// A Redis record (version 2) for `payload`, as `tier::redis` writes one.
fn redis_record(key: &str, rows: u32, cols: u32, payload: &[u8]) -> Vec<u8> {
    let mut meta = Vec::new();
    meta.extend(key.as_bytes());
    meta.extend(rows.to_le_bytes());
    meta.extend(cols.to_le_bytes());
    meta.push(3); // generatedAt and durationMs known
    let t = b"2026-01-01T00:00:00.000Z";
    meta.push(t.len() as u8);
    meta.extend(t);
    meta.extend(12.5f64.to_le_bytes());
    meta.extend((cols as u16).to_le_bytes());
    for i in 0..cols {
        meta.extend((1.0 + f64::from(i)).to_le_bytes());
    }
    meta.extend((cols as u16).to_le_bytes());
    for i in 0..cols {
        let name = format!("Bucket {i}");
        meta.extend((name.len() as u16).to_le_bytes());
        meta.extend(name.as_bytes());
    }
    let mut rec = b"SMCR\x02".to_vec();
    rec.extend((meta.len() as u32).to_le_bytes());
    rec.extend(meta);
    rec.extend(payload);
    rec
}

#[test]
#[ignore = "writes the seed corpora; run by hand"]
fn write_seed_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures");

    // config_json: every config of the fixtures.
    let dir = corpus_dir("config_json");
    std::fs::create_dir_all(&dir).unwrap();
    let mut configs = Vec::new();
    for file in ["canonical-keys-v1.2.jsonl", "canonical-keys-mode.jsonl"] {
        let text = std::fs::read_to_string(fixtures.join(file)).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let j: serde_json::Value = serde_json::from_str(line).unwrap();
            configs.push(j["config"].to_string());
        }
    }
    let legacy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("legacy-rows.json")).unwrap())
            .unwrap();
    for row in legacy.as_array().unwrap() {
        configs.push(serde_json::to_string_pretty(&row["config"]).unwrap());
    }
    for (i, c) in configs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}.json")), c).unwrap();
    }

    // payload_decode: envelopes of every codec and filter, one with several
    // chunks, one with a column map; legacy zlib and raw payloads; Redis
    // records (ours and the TypeScript JSON value).
    let dir = corpus_dir("payload_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (rows, cols) in [(1u32, 1u32), (3, 2), (16, 5)] {
        let env = codec::encode(&matrix(rows, cols), rows, cols).unwrap();
        let mut s = dims(rows as u16, cols as u8, 0);
        s.extend(&env);
        seeds.push((format!("envelope-{rows}x{cols}"), s));
    }
    for (ci, chunk_codec) in [ChunkCodec::None, ChunkCodec::Zstd].into_iter().enumerate() {
        for (fi, filter) in [Filter::None, Filter::Shuffle4, Filter::ExponentShuffle4]
            .into_iter()
            .enumerate()
        {
            let opts = EncodeOptions {
                chunk_codec,
                filter,
                level: 1,
                chunk_bytes: 40,
            };
            let env = codec::encode_with(&matrix(7, 3), 7, 3, &opts).unwrap();
            let mut s = dims(7, 3, 0);
            s.extend(&env);
            seeds.push((format!("envelope-c{ci}-f{fi}-chunked"), s));
        }
    }
    let env = codec::encode(&matrix(4, 3), 4, 3).unwrap();
    let mapped = codec::with_column_map(&env, &[2, 0, 1]).unwrap();
    let mut s = dims(4, 3, 0);
    s.extend(&mapped);
    seeds.push(("envelope-column-map".into(), s));

    use base64::Engine;
    for (i, row) in legacy.as_array().unwrap().iter().enumerate() {
        let (rows, cols) = (
            row["numScenarios"].as_u64().unwrap(),
            row["numBuckets"].as_u64().unwrap(),
        );
        let b64 = row["payloadBase64"].as_str().unwrap();
        let z = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        if z.len() > 4096 {
            continue;
        }
        assert!(codec::decode_legacy_zlib(&z, rows as u32, cols as u32).is_ok());
        let mut s = dims(rows as u16, cols as u8, 1);
        s.extend(&z);
        seeds.push((format!("legacy-zlib-{i}"), s));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(row["float32LeBase64"].as_str().unwrap())
            .unwrap();
        if raw.len() <= 4096 {
            let mut s = dims(rows as u16, cols as u8, 2);
            s.extend(&raw);
            seeds.push((format!("raw-{i}"), s));
        }
        let json = serde_json::json!({
            "data": b64, "numScenarios": rows, "numBuckets": cols, "version": 1,
        });
        let mut s = dims(0, 0, 0);
        s.extend(json.to_string().as_bytes());
        seeds.push((format!("redis-legacy-json-{i}"), s));
    }
    let key = "ab".repeat(32);
    let env = codec::encode(&matrix(5, 2), 5, 2).unwrap();
    let rec = redis_record(&key, 5, 2, &env);
    match redis::decode_value(&key, rec.clone().into()) {
        redis::Lookup::Hit(e) => assert_eq!(e.decode().unwrap(), matrix(5, 2)),
        other => panic!("{other:?}"),
    }
    let mut s = dims(0, 0, 0);
    s.extend(rec);
    seeds.push(("redis-record".into(), s));

    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}
