//! The fuzz targets' bodies, shared by the libFuzzer binaries
//! (`fuzz/fuzz_targets/*.rs`) and the stable replay test
//! (`tests/fuzz_replay.rs`), both as `#[path = ...] mod targets;`.
//!
//! Each function takes arbitrary bytes and must return normally: errors from
//! the library are expected, a panic (including a failed assertion below, each
//! a documented guarantee) is a bug.

#![allow(dead_code)]

use bytes::Bytes;
use scenario_matrix_cache::codec::{self, Codec};
use scenario_matrix_cache::config::Recycling;
use scenario_matrix_cache::config::ScenarioConfig;
use scenario_matrix_cache::key;
use scenario_matrix_cache::tier::redis::{self, Lookup};

/// Target `config_json`: bytes -> (UTF-8) -> `ScenarioConfig::from_json_str`;
/// on success the key, its JSON text and the normalised config.
pub fn config_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = ScenarioConfig::from_json_str(text) else {
        return;
    };
    let k = key::canonical_key(&cfg);
    assert!(
        k.len() == 64
            && k.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "key {k:?}"
    );
    // The key's text is JSON.
    let json = key::canonical_json(&cfg);
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
        panic!("canonical JSON does not parse ({e}): {json}");
    }
    // The generator works from the normalised config; the README promises
    // that the rules still hold for its rounded values.
    let n = key::normalised(&cfg);
    assert_eq!(n.num_scenarios, cfg.num_scenarios);
    assert_eq!(n.buckets.len(), cfg.buckets.len());
    for b in &n.buckets {
        assert!(
            b.capital_allocation.is_finite() && b.median.is_finite() && b.p90.is_finite(),
            "{b:?}"
        );
        assert!(b.median >= 0.0 && b.p90 >= b.median, "{b:?}");
        assert!(
            b.p90 == b.median || (b.median > 0.0 && b.p90 / b.median < 5.0),
            "rounded tail is infinite: {b:?}"
        );
    }
    let w = &n.correlation_weights;
    assert!(
        [w.macro_, w.systematic, w.idiosyncratic]
            .iter()
            .all(|x| x.is_finite() && *x >= 0.0),
        "{w:?}"
    );
    if let Recycling::Enabled {
        reinvestment_rate,
        avg_holding_period,
        fund_lifetime,
        ..
    } = n.recycling
    {
        assert!(
            (0.0..=1.0).contains(&reinvestment_rate),
            "{:?}",
            n.recycling
        );
        assert!(
            avg_holding_period > 0.0 && fund_lifetime > 0.0,
            "{:?}",
            n.recycling
        );
    }
    // The order is a permutation of the buckets.
    let mut order = key::canonical_order(&cfg.buckets);
    order.sort_unstable();
    assert!(order.iter().copied().eq(0..cfg.buckets.len()));
}

/// Target `payload_decode`. Layout of the input:
/// - bytes 0..2: rows (u16 LE), byte 2: columns, byte 3: label (mod 3), for
///   the calls whose dimensions and label come from metadata. Rows up to
///   65,535 and columns up to 255 cover both sides of the codec's limits
///   (1..=100,000 x 1..=50), and the largest in-limit request (65,535 x 50
///   f32, 13 MB) stays below the codec's own maximum.
/// - the rest, the payload, given to every decoder: envelope (`read_header`,
///   `verify`, `decode`), legacy zlib, raw, labelled, and the Redis record.
///
/// A random envelope cannot get past its checksums, so the envelope is also
/// decoded "resealed": with its header checksum and every chunk's
/// stored-bytes checksum recomputed, which lets the fuzzer reach the zstd
/// and unshuffle paths behind them.
pub fn payload_decode(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let rows = u32::from(u16::from_le_bytes([data[0], data[1]]));
    let cols = u32::from(data[2]);
    let label = [Codec::Zstd, Codec::Zlib, Codec::None][usize::from(data[3] % 3)];
    let body = &data[4..];

    envelope(body);
    if let Some(resealed) = reseal(body) {
        envelope(&resealed);
    }

    if let Ok(m) = codec::decode_legacy_zlib(body, rows, cols) {
        assert_eq!(m.len(), rows as usize * cols as usize);
    }
    if let Ok(m) = codec::decode_raw(body, rows, cols) {
        assert_eq!(m.len(), rows as usize * cols as usize);
    }
    if let Ok(m) = codec::decode_labelled(body, label, rows, cols) {
        assert_eq!(m.len(), rows as usize * cols as usize);
    }

    redis_record(body);
}

/// Every envelope entry point on `bytes`, and the relations between them.
fn envelope(bytes: &[u8]) {
    let _ = codec::is_envelope(bytes);
    let header = codec::read_header(bytes);
    let verified = codec::verify(bytes);
    if let Ok(v) = &verified {
        assert_eq!(
            header.as_ref().ok(),
            Some(v),
            "verify passed, read_header differs"
        );
    }
    let decoded = codec::decode(bytes);
    let Ok(m) = decoded else {
        return;
    };
    let h = verified.expect("decode passed, verify failed");
    assert_eq!(h.total_len, bytes.len());
    assert_eq!(m.len(), h.num_scenarios as usize * h.num_buckets as usize);
    if h.column_map.is_none() {
        assert!(
            codec::raw_checksums_match(bytes, &m).unwrap(),
            "decoded matrix does not match its own raw checksums"
        );
        // Round trip: the encoder's envelope decodes to the same bits.
        let again = codec::encode(&m, h.num_scenarios, h.num_buckets).unwrap();
        let back = codec::decode(&again).unwrap();
        assert!(m
            .iter()
            .map(|x| x.to_bits())
            .eq(back.iter().map(|x| x.to_bits())));
        // A reversed column map reverses each row.
        let map: Vec<u8> = (0..h.num_buckets as u8).rev().collect();
        let mapped = codec::with_column_map(bytes, &map).unwrap();
        let reversed = codec::decode(&mapped).unwrap();
        for (r, o) in reversed
            .chunks_exact(map.len())
            .zip(m.chunks_exact(map.len()))
        {
            assert!(r
                .iter()
                .rev()
                .map(|x| x.to_bits())
                .eq(o.iter().map(|x| x.to_bits())));
        }
    } else {
        // A copy that already carries a map cannot get another.
        assert!(codec::with_column_map(bytes, &[0]).is_err());
    }
}

/// `bytes` with the envelope's header checksum and the chunks' stored-bytes
/// checksums recomputed, as far as the layout can be followed; `None` when
/// it is not an envelope or too short to hold its chunk table.
fn reseal(bytes: &[u8]) -> Option<Vec<u8>> {
    use xxhash_rust::xxh3::{xxh3_64, Xxh3};
    const FIXED: usize = codec::FIXED_HEADER_LEN;
    const ENTRY: usize = codec::CHUNK_ENTRY_LEN;
    if !codec::is_envelope(bytes) || bytes.len() < FIXED {
        return None;
    }
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let count = u32_at(bytes, 36) as usize;
    let map_len = if bytes[15] & 1 != 0 {
        u32_at(bytes, 20) as usize
    } else {
        0
    };
    let header_len = FIXED
        .checked_add(count.checked_mul(ENTRY)?)?
        .checked_add(map_len)?;
    if header_len > bytes.len() {
        return None;
    }
    let mut out = bytes.to_vec();
    let mut at = header_len;
    for i in 0..count {
        let e = FIXED + i * ENTRY;
        let len = u32_at(&out, e) as usize;
        let Some(end) = at.checked_add(len).filter(|&end| end <= out.len()) else {
            break;
        };
        let h = xxh3_64(&out[at..end]);
        out[e + 4..e + 12].copy_from_slice(&h.to_le_bytes());
        at = end;
    }
    let mut h = Xxh3::new();
    h.update(&out[..40]);
    h.update(&out[FIXED..header_len]);
    let sum = h.digest();
    out[40..48].copy_from_slice(&sum.to_le_bytes());
    Some(out)
}

/// `redis::decode_value`, under the key the record itself names (so the key
/// check passes and the rest is reached), then, on a hit, the entry's decode.
fn redis_record(bytes: &[u8]) {
    let key = bytes
        .get(9..73)
        .and_then(|k| std::str::from_utf8(k).ok())
        .unwrap_or("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    match redis::decode_value(key, Bytes::copy_from_slice(bytes)) {
        Lookup::Hit(entry) => {
            if let Ok(m) = entry.decode() {
                assert_eq!(
                    m.len(),
                    entry.metadata.num_scenarios as usize * entry.metadata.num_buckets as usize
                );
            }
        }
        Lookup::Miss | Lookup::Undecodable(_) | Lookup::Outdated | Lookup::Skipped => {}
    }
}
