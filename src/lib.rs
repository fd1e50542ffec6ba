//! scenario-matrix-cache: Monte Carlo scenario matrices for venture-fund models.
//!
//! The data path reads like the problem:
//! config (parse + validate) -> canonical key -> cache (memory -> Redis ->
//! PostgreSQL or SQLite) -> on a miss, generator -> codec -> the tiers.
//! Matrices are generated and stored in the key's bucket order; `view` hands
//! each caller its columns in its own order.
//! Everything here is plain Rust; `js` (behind the `node` feature) is the only
//! module that knows about napi.

pub mod cache;
pub mod codec;
pub mod config;
pub mod error;
pub mod events;
pub mod generator;
pub mod inspect;
pub mod js_number;
pub mod key;
pub mod metrics;
pub mod options;
pub mod pages;
pub mod portfolio;
pub mod scenario;
pub mod sealed;
pub mod stats;
pub mod tier;
pub mod view;
pub mod workers;

#[cfg(feature = "node")]
mod js;

pub use config::ScenarioConfig;
pub use error::{ConfigIssue, Error, Result};
