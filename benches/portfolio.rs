//! Portfolio statistics of generator output, 10,000 x 5 and 100,000 x 50:
//! the computation alone (the matrix already decoded); decode plus
//! computation (what `portfolioStats` does on its first call on a
//! memory-tier payload); and the payload read chunk by chunk with the column
//! statistics kept from that first call (what every later call does).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use scenario_matrix_cache::codec::{self, Codec};
use scenario_matrix_cache::portfolio::stats::{assemble, column_stats, RowPass};
use scenario_matrix_cache::portfolio::{portfolio_stats, StatsParams};

#[path = "../tests/common/sample.rs"]
mod sample;
use sample::{matrix, sample_config};

fn bench_stats(c: &mut Criterion) {
    for (rows, cols) in [(10_000u32, 5u32), (100_000, 50)] {
        let cfg = sample_config(rows, cols, 42);
        let m = matrix(rows, cols, 42);
        let env = codec::encode(&m, rows, cols).unwrap();
        let names: Vec<String> = cfg.buckets.iter().map(|b| b.name.clone()).collect();
        let params = StatsParams::defaults(&cfg).unwrap();
        let mut g = c.benchmark_group(format!("portfolio/{rows}x{cols}"));
        if rows * cols > 1_000_000 {
            g.sample_size(30);
        }
        g.bench_function("stats", |b| {
            b.iter(|| portfolio_stats(black_box(&m), &names, &params).unwrap())
        });
        g.bench_function("decode + stats", |b| {
            b.iter(|| {
                let m = codec::decode(black_box(&env)).unwrap();
                portfolio_stats(&m, &names, &params).unwrap()
            })
        });
        let kept = column_stats(&m, cols as usize);
        let map: Vec<usize> = (0..cols as usize).collect();
        g.bench_function("payload in chunks + stats, columns kept", |b| {
            b.iter(|| {
                let pass = RowPass::new(&params, &map);
                let blocks = codec::decode_blocks_labelled(
                    black_box(&env),
                    Codec::Zstd,
                    rows,
                    cols,
                    |r, cells| pass.block(r, cells),
                )
                .unwrap();
                assemble(&names, &params, &map, &kept, blocks).unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench_stats);
criterion_main!(benches);
