//! Codec tests through the public API: round trips, the TypeScript fixtures,
//! and hostile input (truncation, bit flips, garbage, lying headers, zlib
//! bombs), which must give `Error::Corrupt` without a panic and without a
//! large allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use base64::Engine as _;
use scenario_matrix_cache::codec::{
    self, ChunkCodec, Codec, EncodeOptions, Filter, FORMAT_VERSION, MAX_COLS, MAX_ROWS,
};
use scenario_matrix_cache::Error;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

#[path = "common/sample.rs"]
mod sample;
use sample::matrix;

// ---------------------------------------------------------------------------
// Allocation watch: the largest single allocation made on the current thread
// since the last reset. Hostile-input checks run on the calling thread
// (before any rayon hand-off), so this sees everything they allocate.

struct Watch;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note(size: usize) {
    // `try_with`: the slot may be gone while the thread is being torn down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

#[global_allocator]
static GLOBAL: Watch = Watch;

/// Runs `f` and returns its result with the largest allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

// ---------------------------------------------------------------------------
// Inputs

fn splitmix(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn assert_corrupt<T>(r: Result<T, Error>, what: &str) -> String {
    match r {
        Err(Error::Corrupt(msg)) => msg,
        Err(other) => panic!("{what}: expected Corrupt, got {other:?}"),
        Ok(_) => panic!("{what}: expected Corrupt, decoded fine"),
    }
}

/// A small envelope of several chunks (tiny chunk size), for exhaustive
/// corruption tests.
fn small_envelope() -> (Vec<f32>, Vec<u8>) {
    let m = matrix(13, 5, 7);
    let opts = EncodeOptions {
        chunk_bytes: 64,
        ..EncodeOptions::default()
    };
    let env = codec::encode_with(&m, 13, 5, &opts).unwrap();
    assert_eq!(codec::read_header(&env).unwrap().chunk_count, 5);
    (m, env)
}

// ---------------------------------------------------------------------------
// Round trips

#[test]
fn round_trips_many_shapes() {
    let row_bytes = 50 * 4;
    let rows_per_mib = (codec::DEFAULT_CHUNK_BYTES / row_bytes) as u32;
    for (rows, cols) in [
        (1, 1),
        (1, 50),
        (2, 1),
        (7, 3),
        (10_000, 5),
        (rows_per_mib, 50),
        (rows_per_mib + 1, 50),
        (3 * rows_per_mib + 17, 50),
        (99_999, 49),
        (100_000, 1),
        (100_000, 50),
    ] {
        let m = matrix(rows, cols, u64::from(rows * 31 + cols));
        let env = codec::encode(&m, rows, cols).unwrap();
        assert!(codec::is_envelope(&env));
        let h = codec::read_header(&env).unwrap();
        assert_eq!(
            (h.version, h.num_scenarios, h.num_buckets, h.raw_len),
            (FORMAT_VERSION, rows, cols, u64::from(rows * cols) * 4)
        );
        assert_eq!(h.total_len, env.len());
        let back = codec::decode(&env).unwrap();
        assert!(same_bits(&m, &back), "{rows} x {cols}");
        let back = codec::decode_labelled(&env, Codec::Zstd, rows, cols).unwrap();
        assert!(same_bits(&m, &back), "{rows} x {cols} labelled");
    }
}

#[test]
fn every_bit_pattern_survives() {
    let specials = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling NaN
        f32::from_bits(0xffc1_2345), // negative NaN with payload
        f32::from_bits(1),           // smallest subnormal
        f32::from_bits(0x807f_ffff), // largest negative subnormal
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        f32::EPSILON,
    ];
    let mut next = splitmix(99);
    let mut m: Vec<f32> = specials.to_vec();
    m.extend((0..50_000 - specials.len()).map(|_| f32::from_bits(next() as u32)));
    for filter in [Filter::None, Filter::Shuffle4, Filter::ExponentShuffle4] {
        for chunk_codec in [ChunkCodec::None, ChunkCodec::Zstd] {
            let opts = EncodeOptions {
                chunk_codec,
                filter,
                chunk_bytes: 40_000,
                ..EncodeOptions::default()
            };
            let env = codec::encode_with(&m, 1000, 50, &opts).unwrap();
            let back = codec::decode(&env).unwrap();
            assert!(same_bits(&m, &back), "{filter:?} {chunk_codec:?}");
        }
    }
}

#[test]
fn encoding_is_deterministic_whatever_the_thread_count() {
    let m = matrix(30_000, 50, 5);
    let a = codec::encode(&m, 30_000, 50).unwrap();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let b = one.install(|| codec::encode(&m, 30_000, 50).unwrap());
    assert!(codec::read_header(&a).unwrap().chunk_count > 1);
    assert_eq!(a, b);
}

#[test]
fn generator_output_compresses_to_at_most_0_82() {
    for (rows, cols) in [(100_000, 50), (10_000, 5)] {
        let m = matrix(rows, cols, 42);
        let env = codec::encode(&m, rows, cols).unwrap();
        let ratio = env.len() as f64 / (m.len() * 4) as f64;
        eprintln!("{rows} x {cols}: compressed / raw = {ratio:.4}");
        assert!(ratio <= 0.82, "{rows} x {cols}: ratio {ratio}");
    }
}

#[test]
fn encode_rejects_bad_arguments() {
    let cases: [(usize, u32, u32); 6] = [
        (0, 0, 1),
        (0, 1, 0),
        (51, 1, 51),
        (100_001, 100_001, 1),
        (9, 2, 5),
        (11, 2, 5),
    ];
    for (len, rows, cols) in cases {
        match codec::encode(&vec![1.0; len], rows, cols) {
            Err(e @ Error::InvalidArgument(_)) => assert_eq!(e.code(), "E_INVALID_ARGUMENT"),
            other => panic!("{len} values, {rows} x {cols}: {other:?}"),
        }
    }
    let bad_level = EncodeOptions {
        level: 1000,
        ..EncodeOptions::default()
    };
    assert!(codec::encode_with(&[1.0], 1, 1, &bad_level).is_err());
    assert_eq!((MAX_ROWS, MAX_COLS), (100_000, 50));
}

// ---------------------------------------------------------------------------
// Legacy (format version 1) and labels

#[derive(Debug)]
struct LegacyRow {
    payload: Vec<u8>,
    floats: Vec<f32>,
    rows: u32,
    cols: u32,
    label: String,
}

fn legacy_rows() -> Vec<LegacyRow> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/legacy-rows.json"
    ))
    .unwrap();
    let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let bytes = |k: &str| b64.decode(r[k].as_str().unwrap()).unwrap();
            let le = bytes("float32LeBase64");
            LegacyRow {
                payload: bytes("payloadBase64"),
                floats: le
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                rows: r["numScenarios"].as_u64().unwrap() as u32,
                cols: r["numBuckets"].as_u64().unwrap() as u32,
                label: r["compressionCodecLabel"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

#[test]
fn legacy_fixture_rows_decode_to_the_exact_floats() {
    let rows = legacy_rows();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r.floats.len(), (r.rows * r.cols) as usize);
        assert!(!codec::is_envelope(&r.payload));
        let got = codec::decode_legacy_zlib(&r.payload, r.rows, r.cols).unwrap();
        assert!(same_bits(&got, &r.floats), "{} x {}", r.rows, r.cols);
        // As the cache reads them: by the stored (wrong) label.
        let label = Codec::parse(&r.label).unwrap();
        assert_eq!(label, Codec::Zstd);
        let got = codec::decode_labelled(&r.payload, label, r.rows, r.cols).unwrap();
        assert!(same_bits(&got, &r.floats));
        let got = codec::decode_labelled(&r.payload, Codec::Zlib, r.rows, r.cols).unwrap();
        assert!(same_bits(&got, &r.floats));
        // And an envelope is no legacy stream.
        assert!(codec::read_header(&r.payload).is_err());
    }
}

#[test]
fn legacy_with_wrong_dimensions_or_damage_is_corrupt() {
    for r in &legacy_rows() {
        assert_corrupt(
            codec::decode_legacy_zlib(&r.payload, r.rows + 1, r.cols),
            "rows + 1",
        );
        assert_corrupt(
            codec::decode_legacy_zlib(&r.payload, r.rows, r.cols + 1),
            "cols + 1",
        );
        if r.rows > 1 {
            let msg = assert_corrupt(
                codec::decode_legacy_zlib(&r.payload, r.rows - 1, r.cols),
                "rows - 1",
            );
            assert!(msg.contains("more than"), "{msg}");
        }
        assert_corrupt(codec::decode_legacy_zlib(&r.payload, 0, r.cols), "0 rows");
        for cut in 0..r.payload.len() {
            assert_corrupt(
                codec::decode_legacy_zlib(&r.payload[..cut], r.rows, r.cols),
                "truncated legacy",
            );
        }
        // Flipping a bit breaks the stream or the Adler-32 check, except in
        // the padding bits after the last deflate code, which nothing reads:
        // those decode to the same floats.
        let mut padding = 0;
        for bit in 0..r.payload.len() * 8 {
            let mut p = r.payload.clone();
            p[bit / 8] ^= 1 << (bit % 8);
            match codec::decode_legacy_zlib(&p, r.rows, r.cols) {
                Err(Error::Corrupt(_)) => {}
                Ok(v) if same_bits(&v, &r.floats) => {
                    assert!(bit / 8 == r.payload.len() - 5, "byte {}", bit / 8);
                    padding += 1;
                }
                Ok(_) => panic!("bit {bit}: decoded to different floats"),
                Err(e) => panic!("bit {bit}: {e:?}"),
            }
        }
        assert!(padding < 8);
    }
}

/// A hand-made zlib stream of `n` zero bytes: one fixed-Huffman deflate block
/// of a literal 0, then <length 258, distance 1> matches (13 bits per 258
/// bytes), then literal zeros for the rest. A stream of 1.6 MB claims 258 MB.
fn zlib_zeros(n: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        len: u32,
    }
    impl Bits {
        fn put(&mut self, value: u32, n: u32) {
            self.acc |= u64::from(value) << self.len;
            self.len += n;
            while self.len >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.len -= 8;
            }
        }
        /// Huffman codes go most significant bit first.
        fn code(&mut self, code: u32, n: u32) {
            self.put(code.reverse_bits() >> (32 - n), n);
        }
    }
    assert!(n >= 1);
    let mut b = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        len: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE = fixed Huffman
    b.code(0x30, 8); // literal 0
    for _ in 0..(n - 1) / 258 {
        b.code(0b1100_0101, 8); // length symbol 285 = 258
        b.code(0, 5); // distance symbol 0 = 1
    }
    for _ in 0..(n - 1) % 258 {
        b.code(0x30, 8);
    }
    b.code(0, 7); // end of block
    if b.len > 0 {
        b.put(0, 8 - b.len);
    }
    // Adler-32 of n zeros: a stays 1, b adds 1 per byte.
    let adler = (((n % 65_521) as u32) << 16) | 1;
    b.out.extend_from_slice(&adler.to_be_bytes());
    b.out
}

#[test]
fn zlib_bomb_is_corrupt_quickly_and_small() {
    // The hand-made stream is valid: at its exact size it decodes.
    let z = zlib_zeros(4 * 1000);
    assert_eq!(
        codec::decode_legacy_zlib(&z, 1000, 1).unwrap(),
        vec![0.0; 1000]
    );
    assert_corrupt(codec::decode_legacy_zlib(&z, 999, 1), "one value too many");

    let bomb = zlib_zeros(1 + 258 * 1_000_000);
    assert!(bomb.len() < 1_700_000);
    for (rows, cols) in [(10, 5), (100_000, 50)] {
        let start = Instant::now();
        let (r, largest) = largest_allocation(|| codec::decode_legacy_zlib(&bomb, rows, cols));
        let elapsed = start.elapsed();
        let msg = assert_corrupt(r, "zlib bomb");
        assert!(msg.contains("more than"), "{msg}");
        let cap = (rows * cols) as usize * 4 + 1;
        assert!(
            largest <= cap.max(64 << 10),
            "allocated {largest} for {rows} x {cols}"
        );
        if rows == 10 {
            // Stops after 201 bytes of output, not 258 MB (even unoptimised).
            assert!(elapsed < Duration::from_millis(200), "took {elapsed:?}");
        }
    }
}

#[test]
fn raw_payloads() {
    let m = matrix(3, 4, 1);
    let raw: Vec<u8> = m.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(same_bits(&codec::decode_raw(&raw, 3, 4).unwrap(), &m));
    assert!(same_bits(
        &codec::decode_labelled(&raw, Codec::None, 3, 4).unwrap(),
        &m
    ));
    for len in [0, 1, 47, 49, 96] {
        let mut r = raw.clone();
        r.resize(len, 0);
        assert_corrupt(codec::decode_raw(&r, 3, 4), "raw length");
    }
    assert_corrupt(codec::decode_raw(&raw, 4, 3 + 1), "dims");
    assert_corrupt(codec::decode_raw(&[], 0, 0), "zero dims");
}

#[test]
fn labels_and_envelope_recognition() {
    let m = matrix(20, 3, 2);
    let env = codec::encode(&m, 20, 3).unwrap();
    // An envelope is recognised by its magic, whatever the label says.
    for label in [Codec::Zstd, Codec::Zlib, Codec::None] {
        assert!(same_bits(
            &codec::decode_labelled(&env, label, 20, 3).unwrap(),
            &m
        ));
        let msg = assert_corrupt(
            codec::decode_labelled(&env, label, 3, 20),
            "metadata disagrees",
        );
        assert!(msg.contains("metadata"), "{msg}");
    }
    let garbage = vec![0x42u8; 240];
    let msg = assert_corrupt(
        codec::decode_labelled(&garbage, Codec::Zstd, 20, 3),
        "zstd label, garbage",
    );
    assert!(msg.contains("neither"), "{msg}");
    assert_corrupt(
        codec::decode_labelled(&garbage, Codec::Zlib, 20, 3),
        "zlib label, garbage",
    );
    for s in ["zstd", "zlib", "none"] {
        assert_eq!(Codec::parse(s).unwrap().as_str(), s);
    }
    assert_eq!(Codec::parse("lz4"), None);
}

// ---------------------------------------------------------------------------
// Damaged envelopes

#[test]
fn every_truncation_is_corrupt() {
    for (m, env) in [small_envelope(), {
        let m = matrix(10_000, 5, 3);
        let env = codec::encode(&m, 10_000, 5).unwrap();
        (m, env)
    }] {
        assert!(same_bits(&codec::decode(&env).unwrap(), &m));
        // Every length for the small one; for the larger one, every length
        // around the header and table and a stride through the frames.
        let lens: Vec<usize> = if env.len() < 5_000 {
            (0..env.len()).collect()
        } else {
            (0..200).chain((200..env.len()).step_by(97)).collect()
        };
        for len in lens {
            let msg = assert_corrupt(codec::decode(&env[..len]), "truncated");
            assert!(msg.contains("truncated"), "{len}: {msg}");
            assert_corrupt(codec::read_header(&env[..len]), "truncated header");
            assert_corrupt(
                codec::decode_labelled(&env[..len], Codec::Zstd, 13, 5),
                "truncated, labelled",
            );
        }
        let mut longer = env.clone();
        longer.push(0);
        let msg = assert_corrupt(codec::decode(&longer), "trailing byte");
        assert!(msg.contains("trailing"), "{msg}");
    }
}

#[test]
fn every_bit_flip_is_caught() {
    let (_, env) = small_envelope();
    let h = codec::read_header(&env).unwrap();
    for bit in 0..env.len() * 8 {
        let mut e = env.clone();
        e[bit / 8] ^= 1 << (bit % 8);
        let msg = assert_corrupt(codec::decode(&e), "bit flip");
        if bit / 8 < h.header_len {
            // Header and table: the header checksum (or the magic, version or
            // chunk count, read before it) names the problem.
            assert!(
                [
                    "header checksum",
                    "magic",
                    "version",
                    "chunk count",
                    "truncated",
                    // Read before the checksum too: they say where the table ends.
                    "flags",
                    "column"
                ]
                .iter()
                .any(|w| msg.contains(w)),
                "byte {}: {msg}",
                bit / 8
            );
        } else {
            // Frames: caught by the stored-bytes checksum, before zstd sees
            // them (zstd itself ignores some bits, e.g. an unused header bit).
            assert!(
                msg.starts_with("chunk ") && msg.contains("stored bytes checksum"),
                "byte {}: {msg}",
                bit / 8
            );
        }
    }
}

#[test]
fn bit_flips_in_a_large_envelope_are_caught() {
    // 4 MB in 4 chunks: big enough for realistic frames, small enough to
    // decode 100 times in an unoptimised test build.
    let m = matrix(20_000, 50, 11);
    let env = codec::encode(&m, 20_000, 50).unwrap();
    assert_eq!(codec::read_header(&env).unwrap().chunk_count, 4);
    let mut next = splitmix(3);
    for i in 0..100 {
        // Half in the header and table, half anywhere.
        let span = if i % 2 == 0 { 400 } else { env.len() };
        let at = (next() % span as u64) as usize;
        let mut e = env.clone();
        e[at] ^= 1 << (next() % 8);
        assert_corrupt(codec::decode(&e), "flip in a large envelope");
    }
}

#[test]
fn random_garbage_is_corrupt() {
    let mut next = splitmix(1234);
    for len in (0..600).chain([1_000, 4_096, 65_536, 1 << 20]) {
        let mut g: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        assert_corrupt(codec::decode(&g), "garbage");
        assert_corrupt(codec::read_header(&g), "garbage header");
        assert_corrupt(codec::decode_legacy_zlib(&g, 100, 5), "garbage legacy");
        // The same garbage behind a valid magic and version.
        if len >= 12 {
            g[..8].copy_from_slice(&codec::MAGIC);
            g[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
            let (r, largest) = largest_allocation(|| codec::decode(&g));
            assert_corrupt(r, "garbage after magic");
            assert!(largest < 64 << 10, "allocated {largest}");
        }
    }
}

// ---------------------------------------------------------------------------
// Hostile headers: well-formed, with a correct header checksum, but lying.

/// Builds an envelope byte by byte from the documented layout.
struct Forge {
    codec: u8,
    filter: u8,
    layout: u8,
    flags: u8,
    rows: u32,
    cols: u32,
    raw_len: u64,
    rows_per_chunk: u32,
    chunk_count: u32,
    /// Stored length, stored checksum, raw checksum.
    table: Vec<(u32, u64, u64)>,
    frames: Vec<u8>,
}

impl Forge {
    /// A valid envelope of `rows` x `cols` zeros, stored uncompressed.
    fn zeros(rows: u32, cols: u32) -> Self {
        let raw = vec![0u8; (rows * cols * 4) as usize];
        Forge {
            codec: 0,
            filter: 0,
            layout: 1,
            flags: 0,
            rows,
            cols,
            raw_len: raw.len() as u64,
            rows_per_chunk: rows,
            chunk_count: 1,
            table: vec![(raw.len() as u32, xxh3_64(&raw), xxh3_64(&raw))],
            frames: raw,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = codec::MAGIC.to_vec();
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&[self.codec, self.filter, self.layout, self.flags]);
        b.extend_from_slice(&self.rows.to_le_bytes());
        b.extend_from_slice(&self.cols.to_le_bytes());
        b.extend_from_slice(&self.raw_len.to_le_bytes());
        b.extend_from_slice(&self.rows_per_chunk.to_le_bytes());
        b.extend_from_slice(&self.chunk_count.to_le_bytes());
        let mut table = vec![];
        for (len, stored, raw) in &self.table {
            table.extend_from_slice(&len.to_le_bytes());
            table.extend_from_slice(&stored.to_le_bytes());
            table.extend_from_slice(&raw.to_le_bytes());
        }
        let mut h = Xxh3::new();
        h.update(&b);
        h.update(&table);
        b.extend_from_slice(&h.digest().to_le_bytes());
        b.extend_from_slice(&table);
        b.extend_from_slice(&self.frames);
        b
    }
}

#[test]
fn forged_envelope_matches_the_documented_layout() {
    let f = Forge::zeros(3, 2);
    let bytes = f.bytes();
    assert_eq!(codec::decode(&bytes).unwrap(), vec![0.0; 6]);
    // And the encoder writes that same layout.
    let opts = EncodeOptions {
        chunk_codec: ChunkCodec::None,
        filter: Filter::None,
        ..EncodeOptions::default()
    };
    assert_eq!(codec::encode_with(&[0.0; 6], 3, 2, &opts).unwrap(), bytes);
}

#[test]
fn hostile_headers_are_corrupt_before_any_large_allocation() {
    let base = || Forge::zeros(4, 2);
    let four_gb = 1u64 << 32;
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Box<dyn Fn(&mut Forge)>)> = vec![
        ("too many rows", Box::new(|f| f.rows = MAX_ROWS + 1)),
        ("too many columns", Box::new(|f| f.cols = MAX_COLS + 1)),
        ("zero rows", Box::new(|f| f.rows = 0)),
        ("zero columns", Box::new(|f| f.cols = 0)),
        (
            "huge dims",
            Box::new(|f| (f.rows, f.cols) = (u32::MAX, u32::MAX)),
        ),
        ("raw length 4 GB", Box::new(move |f| f.raw_len = four_gb)),
        ("raw length max", Box::new(|f| f.raw_len = u64::MAX)),
        ("unknown codec", Box::new(|f| f.codec = 9)),
        ("unknown filter", Box::new(|f| f.filter = 3)),
        ("unknown layout", Box::new(|f| f.layout = 0)),
        // Bit 0 announces a column map; the others are unknown.
        ("flags", Box::new(|f| f.flags = 2)),
        ("zero rows per chunk", Box::new(|f| f.rows_per_chunk = 0)),
        ("rows per chunk > rows", Box::new(|f| f.rows_per_chunk = 5)),
        (
            "chunk count disagrees",
            Box::new(|f| {
                f.rows_per_chunk = 2;
                f.chunk_count = 3;
                f.table = vec![(8, 0, 0); 3];
            }),
        ),
        (
            "chunk count huge",
            Box::new(|f| {
                f.chunk_count = u32::MAX;
            }),
        ),
        ("chunk claims 4 GB", Box::new(|f| f.table[0].0 = u32::MAX)),
        ("stored length != raw", Box::new(|f| f.table[0].0 = 31)),
        ("wrong stored checksum", Box::new(|f| f.table[0].1 ^= 1)),
        ("wrong raw checksum", Box::new(|f| f.table[0].2 ^= 1)),
        (
            "claims 100000 x 50 with 32 bytes of data",
            Box::new(|f| {
                (f.rows, f.cols, f.raw_len) = (100_000, 50, 20_000_000);
                f.rows_per_chunk = 100_000;
            }),
        ),
        (
            "claims 100000 x 50, chunk of 20 MB missing",
            Box::new(|f| {
                (f.rows, f.cols, f.raw_len) = (100_000, 50, 20_000_000);
                f.rows_per_chunk = 100_000;
                f.table[0].0 = 20_000_000;
            }),
        ),
        ("a zstd frame that is not one", Box::new(|f| f.codec = 1)),
    ];
    for (what, change) in cases {
        let mut f = base();
        change(&mut f);
        let bytes = f.bytes();
        let (r, largest) = largest_allocation(|| codec::decode(&bytes));
        let msg = assert_corrupt(r, what);
        assert!(!msg.contains("header checksum"), "{what}: {msg}");
        assert!(
            largest < 64 << 10,
            "{what}: allocated {largest} bytes ({msg})"
        );
        let (r, _) = largest_allocation(|| codec::read_header(&bytes));
        if !what.starts_with("wrong") && what != "a zstd frame that is not one" {
            assert_corrupt(r, what);
        }
    }
}

/// zstd frames that lie about their size: the frame's declared content size
/// is checked against the chunk before decompressing, and the output buffer is
/// exactly the chunk's size.
#[test]
fn lying_zstd_frames_are_corrupt() {
    let zeros_frame = |n: usize| zstd::bulk::compress(&vec![0u8; n], 1).unwrap();
    let raw = [0u8; 32];
    let forge = |frame: Vec<u8>| {
        let mut f = Forge::zeros(4, 2);
        f.codec = 1;
        f.table = vec![(frame.len() as u32, xxh3_64(&frame), xxh3_64(&raw))];
        f.frames = frame;
        f.bytes()
    };
    assert_eq!(
        codec::decode(&forge(zeros_frame(32))).unwrap(),
        vec![0.0; 8]
    );
    // A frame of 8 MB of zeros (a few hundred bytes) where the chunk is 32 bytes.
    let big = zeros_frame(8 << 20);
    let bytes = forge(big);
    let (r, largest) = largest_allocation(|| codec::decode(&bytes));
    let msg = assert_corrupt(r, "8 MB frame");
    assert!(msg.contains("declares"), "{msg}");
    assert!(largest < 64 << 10, "allocated {largest}");
    // A frame without a content size, of the right length.
    let mut c = zstd::bulk::Compressor::new(1).unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
        .unwrap();
    let unsized_frame = c.compress(&raw).unwrap();
    assert_corrupt(codec::decode(&forge(unsized_frame)), "no content size");
    // Two frames back to back.
    let mut two = zeros_frame(16);
    two.extend(zeros_frame(16));
    assert_corrupt(codec::decode(&forge(two)), "two frames");
    // Right size, wrong bytes.
    let ones = zstd::bulk::compress(&[1u8; 32], 1).unwrap();
    let msg = assert_corrupt(codec::decode(&forge(ones)), "wrong content");
    assert!(msg.contains("checksum"), "{msg}");
}

#[test]
fn errors_carry_the_corrupt_code() {
    let e = codec::decode(b"nope").unwrap_err();
    assert_eq!(e.code(), "E_CORRUPT");
    assert!(e.to_string().contains("magic"), "{e}");
    let e = codec::decode(&codec::MAGIC).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let mut v3 = Forge::zeros(1, 1).bytes();
    v3[8] = 3;
    let e = codec::decode(&v3).unwrap_err();
    assert!(e.to_string().contains("version 3"), "{e}");
}

#[test]
fn verify_checks_stored_bytes_without_decoding() {
    let m = matrix(30_000, 50, 5);
    let env = codec::encode(&m, 30_000, 50).unwrap();
    let h = codec::verify(&env).unwrap();
    assert_eq!((h.num_scenarios, h.num_buckets), (30_000, 50));
    for at in [env.len() - 1, env.len() / 2, env.len() / 3] {
        let mut bad = env.clone();
        bad[at] ^= 0x01;
        let err = codec::verify(&bad).unwrap_err();
        assert_eq!(err.code(), "E_CORRUPT", "flip at {at}: {err}");
    }
}

/// The encoder's bytes, pinned: one chunk, many chunks with a short last
/// one, small chunks, stored chunks (no zstd), no filter. The hashes are of
/// the output of the encoder before it assembled envelopes in place (commit
/// 2c689f8); a change to the layout or the order of what it writes shows here.
#[test]
fn encoder_output_is_pinned() {
    let small = |chunk_bytes| EncodeOptions {
        chunk_bytes,
        ..EncodeOptions::default()
    };
    let cases: [(u32, u32, EncodeOptions, u64); 6] = [
        (10, 1, EncodeOptions::default(), 0xf6fff808a6330438),
        (10_000, 5, EncodeOptions::default(), 0x0682e36a9125b639),
        (77_777, 13, EncodeOptions::default(), 0xfa6b37dc298bdf93),
        (5_000, 7, small(4096), 0x4fddce2a7c03e850),
        (
            3_000,
            9,
            EncodeOptions {
                chunk_codec: ChunkCodec::None,
                ..small(8192)
            },
            0x9b44b1a0300bb7ce,
        ),
        (
            3_000,
            9,
            EncodeOptions {
                filter: Filter::None,
                ..small(16_384)
            },
            0xdd504d5772a1337b,
        ),
    ];
    let got: Vec<u64> = cases
        .iter()
        .map(|(rows, cols, opts, _)| {
            let m = matrix(*rows, *cols, 7);
            let e = codec::encode_with(&m, *rows, *cols, opts).unwrap();
            xxh3_64(&e)
        })
        .collect();
    let want: Vec<u64> = cases.iter().map(|c| c.3).collect();
    assert_eq!(got, want);
}
