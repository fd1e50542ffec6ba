//! Deterministic Monte Carlo generator: config + key -> scenario matrix and
//! recycling multiples.
//!
//! Owns the model of mission.md ("The generator's model") and its
//! determinism contract: the output bytes are a pure function of the config
//! and the key, identical for every run, thread count and platform.
//! - `rng`: counter-based SplitMix64 draws, seeded from the key;
//! - `fastmath`: own ln/exp/sin/cos from IEEE basic operations (no libm);
//! - `kernel`: per-bucket constants, row partition, the cell arithmetic;
//! - `recycling`: multiples from each bucket's mean MOIC.
//!
//! This file schedules blocks of rows on threads and combines their column
//! sums in block order, so the means (and the multiples) do not depend on
//! which thread ran what either.

pub(crate) mod fastmath;
mod kernel;
mod recycling;
pub(crate) mod rng;

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::config::ScenarioConfig;

/// A generated matrix: `num_scenarios` rows x `num_buckets` columns, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub matrix: Vec<f32>,
    pub num_scenarios: u32,
    pub num_buckets: u32,
    /// Per bucket, in the config's bucket order.
    pub recycling_multiples: Vec<f64>,
}

/// Below this many cells the calling thread does all the work: handing blocks
/// to other threads costs more than it saves (10,000 x 5 takes ~0.3 ms).
const PARALLEL_MIN_CELLS: usize = 64 * 1024;

/// Thread counts above this are treated as this (a 100,000 x 50 matrix has
/// about 150 blocks; more threads than that only idle).
const MAX_THREADS: usize = 256;

/// Generates on all cores. `key` is the canonical key (it seeds the streams).
pub fn generate(cfg: &ScenarioConfig, key: &str) -> Generated {
    generate_with_threads(cfg, key, 0)
}

/// Generates on `threads` threads (0 = all cores: rayon's global pool, or the
/// pool the caller is already running in). The bytes never depend on it.
pub fn generate_with_threads(cfg: &ScenarioConfig, key: &str, threads: usize) -> Generated {
    let plan = kernel::Plan::new(cfg, rng::seed_from_key(key));
    let (ns, nb) = (plan.num_scenarios, plan.num_buckets);
    let mut matrix = crate::pages::zeroed_f32(ns * nb);
    let block_len = plan.block_rows * nb;

    let fill = |(i, block): (usize, &mut [f32])| plan.fill_block(i * plan.block_rows, block);
    let sequential = |m: &mut [f32]| -> Vec<Vec<f64>> {
        m.chunks_mut(block_len).enumerate().map(fill).collect()
    };
    // `collect` on an indexed parallel iterator keeps block order.
    let parallel = |m: &mut [f32]| -> Vec<Vec<f64>> {
        m.par_chunks_mut(block_len).enumerate().map(fill).collect()
    };
    let partial_sums = if matrix.len() < PARALLEL_MIN_CELLS || threads == 1 {
        sequential(&mut matrix)
    } else if threads == 0 {
        parallel(&mut matrix)
    } else {
        match pool(threads.min(MAX_THREADS)) {
            Some(pool) => pool.install(|| parallel(&mut matrix)),
            // Could not start threads: same bytes, just slower.
            None => sequential(&mut matrix),
        }
    };

    // Column sums in block order, then means in f64.
    let mut sums = vec![0.0f64; nb];
    for block in &partial_sums {
        for (s, &b) in sums.iter_mut().zip(block) {
            *s += b;
        }
    }
    let means: Vec<f64> = sums.iter().map(|s| s / ns as f64).collect();
    let recycling_multiples = recycling::multiples(&cfg.recycling, &cfg.buckets, &means);

    Generated {
        matrix,
        num_scenarios: ns as u32,
        num_buckets: nb as u32,
        recycling_multiples,
    }
}

/// Recycling multiples of an existing row-major matrix (legacy payloads are
/// stored without them): column means in f64, then the same rule as `generate`.
pub fn recycling_multiples(cfg: &ScenarioConfig, matrix: &[f32]) -> Vec<f64> {
    let nb = cfg.buckets.len();
    let mut sums = vec![0.0f64; nb];
    for row in matrix.chunks_exact(nb) {
        for (s, &x) in sums.iter_mut().zip(row) {
            *s += f64::from(x);
        }
    }
    let rows = (matrix.len() / nb).max(1) as f64;
    let means: Vec<f64> = sums.iter().map(|s| s / rows).collect();
    recycling::multiples(&cfg.recycling, &cfg.buckets, &means)
}

/// A pool of exactly `threads` threads, built on first use and kept: a
/// caller that asks for n threads usually asks again (a CLI flag, a server
/// setting, the benchmarks), and spawning threads per call would cost
/// 0.1-0.5 ms each time. Idle rayon threads sleep, so a kept pool costs
/// only memory. `None` if the OS refuses threads.
fn pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    static POOLS: Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
        return Some(Arc::clone(p));
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("scenario-gen-{i}"))
        .build()
        .ok()?;
    let p = Arc::new(p);
    pools.push((threads, Arc::clone(&p)));
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_constants_match_the_model() {
        // Fixture: Seed median 1, p90 3 -> alpha = ln 5 / ln 3.
        let (lx, ia) = kernel::bucket_constants(1.0, 3.0);
        let alpha = 5f64.ln() / 3f64.ln();
        assert!((1.0 / ia - alpha).abs() < 1e-14);
        assert!((lx - (0.5f64.powf(1.0 / alpha)).ln()).abs() < 1e-14);
        let (lx, ia) = kernel::bucket_constants(2.0, 4.0);
        assert!((1.0 / ia - 2.321928094887362).abs() < 1e-13);
        assert!((lx.exp() - 2.0 * 0.5f64.powf(ia)).abs() < 1e-14);
        let (lx, ia) = kernel::bucket_constants(2.0, 2.0);
        assert_eq!(ia, 0.01);
        assert!((lx - 2f64.ln()).abs() < 1e-15);
        assert_eq!(kernel::bucket_constants(0.0, 0.0).0, f64::NEG_INFINITY);
    }
}
