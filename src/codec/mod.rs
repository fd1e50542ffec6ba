//! Matrix codec: turns a row-major f32 matrix into the bytes that the cache
//! tiers store, and any stored payload (ours or the TypeScript one) back into
//! the matrix, verifying it on the way.
//!
//! Two formats exist:
//! - **version 2**, the envelope below, which [`encode`] writes;
//! - **version 1**, the TypeScript payload: a bare zlib stream of the raw f32
//!   bytes, mislabelled 'zstd', read by [`decode_legacy_zlib`] (and written by
//!   [`encode_legacy_zlib`] in the transition mode, for TypeScript instances).
//!
//! Decoding treats its input as untrusted: every length and count is checked
//! against the limits and against the input's size before anything is
//! allocated, the output is never larger than `MAX_ROWS * MAX_COLS` f32, and
//! any problem is an [`Error::Corrupt`] whose message says what was wrong.
//! (Encoding reports a bad argument as [`Error::InvalidArgument`] instead:
//! there the caller's data is at fault, not stored data.)
//!
//! # Envelope, format version 2
//! All integers little-endian.
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8 | magic `89 53 4D 43 0D 0A 1A 0A` (`\x89SMC\r\n\x1a\n`) |
//! | 8  | 4 | format version, u32 = 2 |
//! | 12 | 1 | chunk codec: 0 none, 1 zstd |
//! | 13 | 1 | filter: 0 none, 1 byte shuffle (4 planes), 2 exponent-first byte shuffle ([`Filter::ExponentShuffle4`]) |
//! | 14 | 1 | layout: 1 = row-major f32 little-endian |
//! | 15 | 1 | flags: bit 0 = a column map follows the chunk table (other bits are rejected) |
//! | 16 | 4 | num_scenarios (rows), u32, 1..=100,000 |
//! | 20 | 4 | num_buckets (columns), u32, 1..=50 |
//! | 24 | 8 | raw length in bytes, u64 = rows * columns * 4 |
//! | 32 | 4 | rows per chunk, u32; the last chunk holds the remaining rows |
//! | 36 | 4 | chunk count, u32 = ceil(rows / rows per chunk) |
//! | 40 | 8 | header checksum: xxh3-64 of bytes 0..40 followed by the chunk table and the column map |
//! | 48 | 20 x count | chunk table, per chunk: stored length u32, xxh3-64 of the stored bytes u64, xxh3-64 of the chunk's raw f32 LE bytes u64 |
//! | 48 + 20 x count | C | only with flag bit 0: the column map, one byte per column (C = num_buckets), a permutation: decoded column j is stored column `map[j]` |
//! | ... | ... | the chunks' stored bytes, in order, back to back; nothing after the last |
//!
//! A chunk is a run of whole rows, taken as raw f32 LE bytes, passed through
//! the filter, then the codec: with zstd, one frame that records its content
//! size. Chunks are independent, so both directions run them in parallel, and
//! a corrupt chunk is reported by index.
//!
//! Three kinds of checksum, each for its own reason: the header checksum, so a
//! flipped bit in a dimension or a length is reported as such rather than as a
//! confusing later failure; per chunk, the stored bytes' checksum, verified
//! before decompressing, so zstd never decodes damaged bytes and even a flip
//! that zstd would ignore (its frames have such bits) is caught; and the raw
//! bytes' checksum, verified after unshuffling, which covers the whole decode
//! path and is independent of codec and filter.
//!
//! What [`encode`] writes: zstd level 1, filter 2, chunks of about 1 MiB
//! (see [`DEFAULT_LEVEL`], [`DEFAULT_CHUNK_BYTES`]); the zstd frame of a
//! shuffled chunk ends a block at each plane boundary. Every value of every
//! field above is part of the stored format: changing what one means, filter
//! 2's bit permutation included, needs a new format version.

#![forbid(unsafe_code)]

mod bytes;
mod envelope;
mod legacy;

pub use envelope::{
    ChunkCodec, EncodeOptions, Filter, Header, CHUNK_ENTRY_LEN, DEFAULT_CHUNK_BYTES, DEFAULT_LEVEL,
    FIXED_HEADER_LEN, MAGIC,
};

use crate::error::{Error, Result};

/// The envelope version [`encode`] writes. The TypeScript payloads count as 1.
pub const FORMAT_VERSION: u32 = 2;
/// Most rows (scenarios) a matrix may have.
pub const MAX_ROWS: u32 = crate::config::MAX_SCENARIOS;
/// Most columns (buckets) a matrix may have.
pub const MAX_COLS: u32 = crate::config::MAX_BUCKETS as u32;

/// How a stored payload's bytes are encoded, as labelled next to it
/// (PostgreSQL's `compression_codec` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Our envelope. The TypeScript code also used this label for zlib.
    Zstd,
    /// A bare zlib stream of the raw f32 bytes (format version 1).
    Zlib,
    /// The raw f32 little-endian bytes.
    None,
}

impl Codec {
    pub fn as_str(&self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Zlib => "zlib",
            Codec::None => "none",
        }
    }

    /// The label as stored; exact, lower case. `None` for anything else
    /// (including 'lz4', which the schema allows but nothing ever wrote).
    pub fn parse(s: &str) -> Option<Codec> {
        match s {
            "zstd" => Some(Codec::Zstd),
            "zlib" => Some(Codec::Zlib),
            "none" => Some(Codec::None),
            _ => None,
        }
    }
}

/// `rows * cols` when both are within the limits.
pub(crate) fn cell_count(rows: u32, cols: u32) -> Option<usize> {
    ((1..=MAX_ROWS).contains(&rows) && (1..=MAX_COLS).contains(&cols))
        .then(|| rows as usize * cols as usize)
}

/// Checks dimensions that come from stored metadata; out of limits is Corrupt.
fn expected_cells(rows: u32, cols: u32) -> Result<usize> {
    cell_count(rows, cols).ok_or_else(|| {
        Error::corrupt(format!(
            "expected dimensions {rows} x {cols} are outside 1..={MAX_ROWS} x 1..={MAX_COLS}"
        ))
    })
}

/// Encodes a row-major f32 matrix into a version 2 envelope: zstd level
/// [`DEFAULT_LEVEL`] over [`Filter::ExponentShuffle4`], in chunks of about
/// [`DEFAULT_CHUNK_BYTES`]. `InvalidArgument` when the dimensions are out of limits or
/// `matrix.len() != num_scenarios * num_buckets`.
pub fn encode(matrix: &[f32], num_scenarios: u32, num_buckets: u32) -> Result<Vec<u8>> {
    encode_with(
        matrix,
        num_scenarios,
        num_buckets,
        &EncodeOptions::default(),
    )
}

/// [`encode`] with explicit options (codec, filter, level, chunk size). Every
/// combination is decodable by [`decode`].
pub fn encode_with(
    matrix: &[f32],
    num_scenarios: u32,
    num_buckets: u32,
    options: &EncodeOptions,
) -> Result<Vec<u8>> {
    envelope::encode_with(matrix, num_scenarios, num_buckets, options)
}

/// True when `bytes` starts with the envelope's magic.
pub fn is_envelope(bytes: &[u8]) -> bool {
    envelope::is_envelope(bytes)
}

/// Reads and validates an envelope's header and chunk table (checksum,
/// limits, lengths) without decompressing anything.
pub fn read_header(bytes: &[u8]) -> Result<Header> {
    envelope::read_header(bytes)
}

/// Checks an envelope's header, table and every chunk's stored-bytes checksum
/// without decompressing (about 1 ms for 100,000 x 50); the raw-data checksums
/// are checked by [`decode`].
pub fn verify(bytes: &[u8]) -> Result<Header> {
    envelope::verify(bytes)
}

/// Whether `matrix` has the raw-data checksums of envelope `bytes`, chunk by
/// chunk; only its header and chunk table need be intact (an error if not).
pub fn raw_checksums_match(bytes: &[u8], matrix: &[f32]) -> Result<bool> {
    envelope::raw_checksums_match(bytes, matrix)
}

/// Decodes an envelope, verifying every checksum.
pub fn decode(bytes: &[u8]) -> Result<Vec<f32>> {
    envelope::decode(bytes)
}

/// Decodes a TypeScript payload (zlib of the raw f32 bytes) that must hold
/// exactly `num_scenarios x num_buckets` values. It is never inflated past
/// that size: a longer stream is Corrupt as soon as it exceeds it.
pub fn decode_legacy_zlib(bytes: &[u8], num_scenarios: u32, num_buckets: u32) -> Result<Vec<f32>> {
    let cells = expected_cells(num_scenarios, num_buckets)?;
    let raw = legacy::inflate_exact(bytes, cells * 4)?;
    Ok(raw_to_f32(&raw))
}

/// Encodes a row-major f32 matrix as the TypeScript code stored it (format
/// version 1: zlib of the raw little-endian bytes, no header of its own).
pub fn encode_legacy_zlib(matrix: &[f32]) -> Vec<u8> {
    let mut raw = vec![0u8; matrix.len() * 4];
    bytes::f32_to_le(matrix, &mut raw);
    legacy::deflate(&raw)
}

/// Decodes raw f32 little-endian bytes of exactly `num_scenarios x num_buckets` values.
pub fn decode_raw(bytes: &[u8], num_scenarios: u32, num_buckets: u32) -> Result<Vec<f32>> {
    let cells = expected_cells(num_scenarios, num_buckets)?;
    if bytes.len() != cells * 4 {
        return Err(Error::corrupt(format!(
            "raw payload is {} bytes, {num_scenarios} x {num_buckets} f32 is {}",
            bytes.len(),
            cells * 4
        )));
    }
    Ok(raw_to_f32(bytes))
}

/// A copy of `bytes` (the caller's own). Large ones are copied by all cores:
/// the cost of a 15 MB copy is mostly first-touch page faults, which run in
/// parallel.
pub fn copy_large(bytes: &[u8]) -> Vec<u8> {
    // Zeroed memory this size comes straight from the OS untouched, so the
    // zeroing is free and the first touch happens in the copy.
    let mut out = crate::pages::zeroed_bytes(bytes.len());
    copy_into(&mut out, bytes);
    out
}

/// `dst.copy_from_slice(src)`, in parallel 1 MiB slices when large.
pub(crate) fn copy_into(dst: &mut [u8], src: &[u8]) {
    use rayon::prelude::*;
    const SLICE: usize = 1 << 20;
    if src.len() < 4 * SLICE {
        dst.copy_from_slice(src);
        return;
    }
    dst.par_chunks_mut(SLICE)
        .zip(src.par_chunks(SLICE))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// A copy of envelope `bytes` that decodes with its columns in another order:
/// output column j is stored column `map[j]` (see [`Header::column_map`]).
/// The compressed chunks are copied unchanged; an identity map gives a plain copy.
pub fn with_column_map(bytes: &[u8], map: &[u8]) -> Result<Vec<u8>> {
    envelope::with_column_map(bytes, map)
}

fn raw_to_f32(raw: &[u8]) -> Vec<f32> {
    let mut out = crate::pages::zeroed_f32(raw.len() / 4);
    bytes::le_to_f32(raw, &mut out);
    out
}

/// Decodes whatever a stored payload is, given its label and the dimensions
/// its metadata records:
/// - an envelope, recognised by its magic whatever the label says; its own
///   dimensions must equal the expected ones;
/// - otherwise by the label: `Zlib`, or `Zstd` (the TypeScript code's label for
///   its zlib payloads), is a legacy zlib stream; `None` is raw f32 bytes.
pub fn decode_labelled(
    bytes: &[u8],
    label: Codec,
    num_scenarios: u32,
    num_buckets: u32,
) -> Result<Vec<f32>> {
    if is_envelope(bytes) {
        check_envelope_shape(bytes, num_scenarios, num_buckets)?;
        return decode(bytes);
    }
    match label {
        Codec::Zlib => decode_legacy_zlib(bytes, num_scenarios, num_buckets),
        Codec::Zstd => {
            if !legacy::looks_like_zlib(bytes) {
                return Err(Error::corrupt(
                    "payload labelled 'zstd' is neither an envelope nor a legacy zlib stream",
                ));
            }
            decode_legacy_zlib(bytes, num_scenarios, num_buckets)
        }
        Codec::None => decode_raw(bytes, num_scenarios, num_buckets),
    }
}

/// `f(first_row, cells)` over blocks of whole rows of a stored payload
/// (called in parallel, in any order; the results in row order), as
/// [`decode_labelled`] would decode it: an envelope chunk by
/// chunk without ever holding the whole matrix, a legacy payload decoded
/// whole and then split into blocks of `LEGACY_BLOCK_ROWS`.
pub fn decode_blocks_labelled<T: Send>(
    bytes: &[u8],
    label: Codec,
    num_scenarios: u32,
    num_buckets: u32,
    f: impl Fn(usize, &[f32]) -> T + Sync,
) -> Result<Vec<T>> {
    const LEGACY_BLOCK_ROWS: usize = 4096;
    if is_envelope(bytes) {
        check_envelope_shape(bytes, num_scenarios, num_buckets)?;
        return envelope::decode_chunks_with(bytes, f);
    }
    use rayon::prelude::*;
    let matrix = decode_labelled(bytes, label, num_scenarios, num_buckets)?;
    let block = LEGACY_BLOCK_ROWS * num_buckets as usize;
    Ok(matrix
        .par_chunks(block)
        .enumerate()
        .map(|(i, cells)| f(i * LEGACY_BLOCK_ROWS, cells))
        .collect())
}

fn check_envelope_shape(bytes: &[u8], num_scenarios: u32, num_buckets: u32) -> Result<()> {
    let header = read_header(bytes)?;
    if (header.num_scenarios, header.num_buckets) != (num_scenarios, num_buckets) {
        return Err(Error::corrupt(format!(
            "envelope holds {} x {}, its metadata says {num_scenarios} x {num_buckets}",
            header.num_scenarios, header.num_buckets
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: u32, cols: u32) -> Vec<f32> {
        (0..rows * cols).map(|i| (i as f32).sqrt() * 0.37).collect()
    }

    #[test]
    fn codec_labels_round_trip() {
        for c in [Codec::Zstd, Codec::Zlib, Codec::None] {
            assert_eq!(Codec::parse(c.as_str()), Some(c));
        }
        assert_eq!(Codec::parse("lz4"), None);
        assert_eq!(Codec::parse("ZSTD"), None);
    }

    #[test]
    fn every_codec_filter_combination_round_trips() {
        let m = matrix(1001, 7);
        for chunk_codec in [ChunkCodec::None, ChunkCodec::Zstd] {
            for filter in [Filter::None, Filter::Shuffle4, Filter::ExponentShuffle4] {
                for chunk_bytes in [1, 1000, 4096, DEFAULT_CHUNK_BYTES] {
                    let opts = EncodeOptions {
                        chunk_codec,
                        filter,
                        level: 3,
                        chunk_bytes,
                    };
                    let env = encode_with(&m, 1001, 7, &opts).unwrap();
                    let h = read_header(&env).unwrap();
                    assert_eq!((h.chunk_codec, h.filter), (chunk_codec, filter));
                    assert_eq!(decode(&env).unwrap(), m, "{opts:?}");
                }
            }
        }
    }

    /// Random bit patterns (NaNs, infinities, subnormals: nothing zstd can
    /// shrink) fit the room each chunk's slot has, in every layout.
    #[test]
    fn incompressible_chunks_fit_their_slots() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let m: Vec<f32> = (0..3001 * 9)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                f32::from_bits(x as u32)
            })
            .collect();
        for filter in [Filter::None, Filter::Shuffle4, Filter::ExponentShuffle4] {
            for chunk_bytes in [1, 4, 1000, (128 << 10) + 1] {
                for level in [1, 3, 19] {
                    let opts = EncodeOptions {
                        chunk_codec: ChunkCodec::Zstd,
                        filter,
                        level,
                        chunk_bytes,
                    };
                    let env = encode_with(&m, 3001, 9, &opts).unwrap();
                    let got = decode(&env).unwrap();
                    assert!(
                        got.iter().zip(&m).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{opts:?}"
                    );
                }
            }
        }
    }

    /// The pool threads keep their zstd contexts between calls: an envelope
    /// is the same bytes after encodes of other sizes and levels, and the
    /// same as from threads that never encoded before.
    #[test]
    fn reused_encoders_give_the_same_bytes() {
        let a = matrix(40_000, 11);
        let b = matrix(7_000, 50);
        let at = |level| EncodeOptions {
            level,
            chunk_bytes: 64 << 10,
            ..EncodeOptions::default()
        };
        let first = encode_with(&a, 40_000, 11, &at(3)).unwrap();
        encode_with(&b, 7_000, 50, &at(9)).unwrap();
        encode_with(&b, 7_000, 50, &at(1)).unwrap();
        assert_eq!(encode_with(&a, 40_000, 11, &at(3)).unwrap(), first);
        let fresh = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| encode_with(&a, 40_000, 11, &at(3)).unwrap());
        assert_eq!(fresh, first);
    }

    #[test]
    fn chunks_are_balanced() {
        // 20 MB in 1 MiB chunks: 20 chunks of 5000 rows, not 19 full + 1 small.
        assert_eq!(envelope_rows_per_chunk(100_000, 50), 5000);
        assert_eq!(envelope_rows_per_chunk(10_000, 5), 10_000);
        assert_eq!(envelope_rows_per_chunk(1, 1), 1);
    }

    fn envelope_rows_per_chunk(rows: u32, cols: u32) -> u32 {
        let m = vec![0f32; rows as usize * cols as usize];
        read_header(&encode(&m, rows, cols).unwrap())
            .unwrap()
            .rows_per_chunk
    }

    /// Blocks cover every row once, in order, with the bytes `decode` gives
    /// (column map included), for envelopes of one and of many chunks and for
    /// legacy payloads; a damaged chunk fails the call as `decode` fails.
    #[test]
    fn blocks_hold_what_decode_gives() {
        let m = matrix(5000, 3);
        let small = EncodeOptions {
            chunk_bytes: 4096,
            ..EncodeOptions::default()
        };
        let many = encode_with(&m, 5000, 3, &small).unwrap();
        let one = encode(&m, 5000, 3).unwrap();
        let mapped = with_column_map(&many, &[2, 0, 1]).unwrap();
        let zlib = encode_legacy_zlib(&m);
        for (what, bytes, label) in [
            ("many chunks", &many, Codec::Zstd),
            ("one chunk", &one, Codec::Zstd),
            ("column map", &mapped, Codec::Zstd),
            ("legacy zlib", &zlib, Codec::Zlib),
        ] {
            let want = decode_labelled(bytes, label, 5000, 3).unwrap();
            let blocks =
                decode_blocks_labelled(bytes, label, 5000, 3, |r, cells| (r, cells.to_vec()))
                    .unwrap();
            assert!(what == "one chunk" || blocks.len() > 1, "{what}");
            let mut next = 0;
            let mut got = Vec::new();
            for (first, cells) in blocks {
                assert_eq!(first, next, "{what}");
                next += cells.len() / 3;
                got.extend(cells);
            }
            assert_eq!(got, want, "{what}");
        }
        assert_eq!(
            decode_blocks_labelled(&many, Codec::Zstd, 5000, 4, |_, _| ())
                .unwrap_err()
                .code(),
            "E_CORRUPT"
        );
        let mut damaged = many.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let err = decode_blocks_labelled(&damaged, Codec::Zstd, 5000, 3, |_, cells| {
            seen.fetch_add(cells.len(), std::sync::atomic::Ordering::Relaxed)
        })
        .unwrap_err();
        assert_eq!(err.code(), "E_CORRUPT");
        assert!(seen.into_inner() < m.len(), "the damaged chunk reached f");
    }

    #[test]
    fn a_column_map_reorders_columns_on_decode() {
        // 3 columns, several chunks, so every chunk applies the map.
        let m = matrix(5000, 3);
        let opts = EncodeOptions {
            chunk_bytes: 4096,
            ..EncodeOptions::default()
        };
        let env = encode_with(&m, 5000, 3, &opts).unwrap();
        let mapped = with_column_map(&env, &[2, 0, 1]).unwrap();
        let h = read_header(&mapped).unwrap();
        assert_eq!(h.column_map.as_deref(), Some(&[2u8, 0, 1][..]));
        assert!(h.chunk_count > 1);
        let got = decode(&mapped).unwrap();
        for (row, want) in got.chunks_exact(3).zip(m.chunks_exact(3)) {
            assert_eq!(row, [want[2], want[0], want[1]]);
        }
        assert!(verify(&mapped).is_ok());
        // Identity: a plain copy.
        assert_eq!(with_column_map(&env, &[0, 1, 2]).unwrap(), env);
        // Not a permutation, wrong length, or a second map: refused.
        for bad in [&[0u8, 0, 1][..], &[0, 1, 3], &[0, 1]] {
            assert!(with_column_map(&env, bad).is_err(), "{bad:?}");
        }
        assert!(with_column_map(&mapped, &[1, 2, 0]).is_err());
        // The map is covered by the header checksum.
        let at = h.header_len - 3;
        let mut flipped = mapped.clone();
        flipped[at] = 1;
        assert_eq!(decode(&flipped).unwrap_err().code(), "E_CORRUPT");
        // Clearing the flag leaves bytes that no longer parse.
        let mut unflagged = mapped.clone();
        unflagged[15] = 0;
        assert_eq!(decode(&unflagged).unwrap_err().code(), "E_CORRUPT");
    }

    #[test]
    fn encode_rejects_bad_arguments() {
        for (len, r, c) in [(0, 0, 1), (50, 1, 51), (10, 2, 4), (0, 100_001, 1)] {
            let err = encode(&vec![0.0; len], r, c).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        }
    }
}
