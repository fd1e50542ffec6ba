//! Deterministic Monte Carlo generator. STUB: to be implemented.

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

/// Generates on all cores. `key` is the canonical key (it seeds the streams).
pub fn generate(cfg: &ScenarioConfig, key: &str) -> Generated {
    generate_with_threads(cfg, key, 0)
}

/// Generates on `threads` threads (0 = all cores). The bytes never depend on it.
pub fn generate_with_threads(_cfg: &ScenarioConfig, _key: &str, _threads: usize) -> Generated {
    todo!()
}

pub fn recycling_multiples(_cfg: &ScenarioConfig, _matrix: &[f32]) -> Vec<f64> {
    todo!()
}
