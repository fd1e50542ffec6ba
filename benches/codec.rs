//! Codec benchmarks: encode and decode of the version 2 envelope on
//! generator output of 10,000 x 5 and 100,000 x 50.
//!
//! `cargo bench --bench codec` prints each size's compressed / raw ratio once.
//! `SMC_CODEC_SWEEP=1 cargo bench --bench codec` also prints a table of
//! ratio and best-of-N encode / decode times per zstd level and chunk size
//! (the measurement behind `DEFAULT_LEVEL` and `DEFAULT_CHUNK_BYTES`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scenario_matrix_cache::codec::{self, ChunkCodec, EncodeOptions, Filter};

#[path = "../tests/common/sample.rs"]
mod sample;
use sample::matrix;

const SIZES: [(u32, u32); 2] = [(10_000, 5), (100_000, 50)];

fn bench_codec(c: &mut Criterion) {
    for (rows, cols) in SIZES {
        let m = matrix(rows, cols, 42);
        let raw = m.len() * 4;
        let env = codec::encode(&m, rows, cols).unwrap();
        let h = codec::read_header(&env).unwrap();
        eprintln!(
            "codec {rows}x{cols}: raw {raw} B, envelope {} B, ratio {:.4}, {} chunk(s)",
            env.len(),
            env.len() as f64 / raw as f64,
            h.chunk_count
        );
        let mut g = c.benchmark_group(format!("codec/{rows}x{cols}"));
        g.throughput(Throughput::Bytes(raw as u64));
        if rows * cols > 1_000_000 {
            g.sample_size(30);
        }
        g.bench_function("encode", |b| {
            b.iter(|| codec::encode(black_box(&m), rows, cols).unwrap())
        });
        g.bench_function("decode", |b| {
            b.iter(|| codec::decode(black_box(&env)).unwrap())
        });
        // What a caller whose bucket order is not the key's decodes: the same
        // chunks, each row's columns reordered (columns reversed here).
        let map: Vec<u8> = (0..cols as u8).rev().collect();
        let mapped = codec::with_column_map(&env, &map).unwrap();
        g.bench_function("decode with column map", |b| {
            b.iter(|| codec::decode(black_box(&mapped)).unwrap())
        });
        g.bench_function("caller copy with column map", |b| {
            b.iter(|| codec::with_column_map(black_box(&env), &map).unwrap())
        });
        g.bench_function("caller copy", |b| {
            b.iter(|| codec::copy_large(black_box(&env)))
        });
        g.finish();
    }
    if std::env::var_os("SMC_CODEC_SWEEP").is_some() {
        sweep();
    }
}

/// Best of `n` runs: on a shared 2-core machine the minimum is the least noisy.
fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn sweep() {
    let (rows, cols) = (100_000, 50);
    let m = matrix(rows, cols, 42);
    let raw = (m.len() * 4) as f64;
    eprintln!(
        "sweep on {rows}x{cols}: codec/filter, level, chunk -> ratio, encode ms, decode ms \
         (all threads, best of 15; then one thread, best of 7)"
    );
    let (zstd, none, shuffle) = (ChunkCodec::Zstd, ChunkCodec::None, Filter::ExponentShuffle4);
    let chunk = codec::DEFAULT_CHUNK_BYTES;
    let mut configs = vec![(none, Filter::None, 0, chunk), (none, shuffle, 0, chunk)];
    for level in [-1, 1, 2, 3, 4, 6] {
        configs.push((zstd, shuffle, level, chunk));
    }
    for chunk in [256 << 10, 512 << 10, 2 << 20, 4 << 20, 32 << 20] {
        configs.push((zstd, shuffle, codec::DEFAULT_LEVEL, chunk));
    }
    configs.push((zstd, Filter::Shuffle4, codec::DEFAULT_LEVEL, chunk));
    configs.push((zstd, Filter::Shuffle4, 3, chunk));
    configs.push((zstd, Filter::None, codec::DEFAULT_LEVEL, chunk));
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (chunk_codec, filter, level, chunk_bytes) in configs {
        let opts = EncodeOptions {
            chunk_codec,
            filter,
            level,
            chunk_bytes,
        };
        let env = codec::encode_with(&m, rows, cols, &opts).unwrap();
        let enc = best_of(15, || codec::encode_with(&m, rows, cols, &opts).unwrap());
        let dec = best_of(15, || codec::decode(&env).unwrap());
        let (enc1, dec1) = one_thread.install(|| {
            (
                best_of(7, || codec::encode_with(&m, rows, cols, &opts).unwrap()),
                best_of(7, || codec::decode(&env).unwrap()),
            )
        });
        eprintln!(
            "  {chunk_codec:?}/{filter:?} level {level:>2} chunk {:>6} KiB -> {:.4}  {:>6.2}  {:>6.2}   1 thread: {:>6.2}  {:>6.2}",
            chunk_bytes >> 10,
            env.len() as f64 / raw,
            enc.as_secs_f64() * 1e3,
            dec.as_secs_f64() * 1e3,
            enc1.as_secs_f64() * 1e3,
            dec1.as_secs_f64() * 1e3
        );
    }
    // The TypeScript format for reference: zlib (default level, as Node's
    // deflateSync) of the raw bytes, and our capped legacy decoder.
    let bytes: Vec<u8> = m.iter().flat_map(|v| v.to_le_bytes()).collect();
    let deflate = || {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&bytes).unwrap();
        z.finish().unwrap()
    };
    let z = deflate();
    let enc = best_of(3, deflate);
    let dec = best_of(3, || codec::decode_legacy_zlib(&z, rows, cols).unwrap());
    eprintln!(
        "  legacy zlib (one thread) -> {:.4}  {:>6.2}  {:>6.2}",
        z.len() as f64 / raw,
        enc.as_secs_f64() * 1e3,
        dec.as_secs_f64() * 1e3
    );
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
