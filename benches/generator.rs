//! Generator throughput: 10,000 x 5 and 100,000 x 50, on one thread and on
//! all threads (rayon's global pool). Targets on the 2-core dev machine:
//! 10,000 x 5 <= 0.5 ms, 100,000 x 50 <= 35 ms (all threads).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use scenario_matrix_cache::generator::generate_with_threads;
use scenario_matrix_cache::ScenarioConfig;

/// A config of `scenarios` x `buckets` with varied calibrations.
fn config(scenarios: u32, buckets: usize) -> ScenarioConfig {
    let alloc = 100.0 / buckets as f64;
    let list: Vec<serde_json::Value> = (0..buckets)
        .map(|i| {
            let median = 1.0 + (i % 7) as f64 * 0.25;
            serde_json::json!({
                "name": format!("bucket-{i:02}"),
                "capitalAllocation": alloc,
                "moicCalibration": {"median": median, "p90": median * (1.8 + (i % 5) as f64 * 0.5)}
            })
        })
        .collect();
    let j = serde_json::json!({
        "fundId": "bench-fund", "taxonomyVersion": "v1.2", "numScenarios": scenarios,
        "buckets": list,
        "correlationWeights": {"macro": 0.5, "systematic": 0.25, "idiosyncratic": 0.25},
        "recycling": {"enabled": true, "mode": "same-bucket", "reinvestmentRate": 0.8,
                      "avgHoldingPeriod": 5, "fundLifetime": 10}
    });
    ScenarioConfig::from_json_str(&j.to_string()).expect("valid bench config")
}

const KEY: &str = "5f0c4e7a3b9d2e1f8a6c0b4d7e3f9a2c1b8d6e4f0a3c7b9e2d5f1a8c6b0e4d7a";

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("generate");
    for (name, scenarios, buckets) in [("10k_x_5", 10_000, 5), ("100k_x_50", 100_000, 50)] {
        let cfg = config(scenarios, buckets);
        for (label, threads) in [("1_thread", 1), ("all_threads", 0)] {
            if buckets == 50 {
                g.measurement_time(Duration::from_secs(8));
            } else {
                g.measurement_time(Duration::from_secs(3));
            }
            g.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| generate_with_threads(black_box(&cfg), black_box(KEY), threads))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
