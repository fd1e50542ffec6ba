//! Cost of computing a canonical key (collation sort + JSON text + SHA-256),
//! for a small and a maximal bucket count.

use criterion::{criterion_group, criterion_main, Criterion};
use scenario_matrix_cache::config::{Bucket, CorrelationWeights, Recycling};
use scenario_matrix_cache::key::canonical_key;
use scenario_matrix_cache::ScenarioConfig;
use std::hint::black_box;

fn config(buckets: usize) -> ScenarioConfig {
    // Names in reverse order with mixed case and accents, so the sort does
    // real collation work rather than confirming an already sorted list.
    let stems = ["Série", "seed", "Growth", "angel", "Pre-Seed"];
    ScenarioConfig {
        fund_id: "fund-bench-0001".into(),
        taxonomy_version: "v1.2".into(),
        num_scenarios: 100_000,
        buckets: (0..buckets)
            .rev()
            .map(|i| Bucket {
                name: format!("{} {}", stems[i % stems.len()], i),
                capital_allocation: 100.0 / buckets as f64,
                median: 1.0 + i as f64 * 0.013_579,
                p90: 3.0 + i as f64 * 0.024_681,
            })
            .collect(),
        correlation_weights: CorrelationWeights {
            macro_: 0.3,
            systematic: 0.4,
            idiosyncratic: 0.3,
        },
        recycling: Recycling::Enabled {
            mode_given: true,
            reinvestment_rate: 0.25,
            avg_holding_period: 4.5,
            fund_lifetime: 10.0,
        },
        seed: None,
    }
}

fn bench_canonical_key(c: &mut Criterion) {
    for n in [5, 50] {
        let cfg = config(n);
        c.bench_function(&format!("canonical_key/{n}_buckets"), |b| {
            b.iter(|| canonical_key(black_box(&cfg)))
        });
    }
}

criterion_group!(benches, bench_canonical_key);
criterion_main!(benches);
