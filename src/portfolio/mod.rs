//! Portfolio analytics over a scenario matrix, computed beside the cache so
//! only the answers cross into JavaScript.
//!
//! - [`stats`]: the distribution of the portfolio's MOIC for given bucket
//!   weights (mean, spread, percentiles, loss probability, VaR, CVaR, a
//!   histogram) and per-bucket summaries.
//! - [`optimize`]: the weights that maximise expected MOIC under loss-probability,
//!   CVaR, group and expected-winner constraints (a MILP solved by HiGHS).
//! - [`quantile`]: the order statistics the statistics need (NumPy's linear method).
//! - [`options`]: the JS-facing options of both, validated from a [`crate::config::Value`].
//!
//! Everything takes the matrix row-major with its columns in the config's
//! bucket order (what [`crate::cache::Cache::get_matrix`] hands a caller).

pub mod optimize;
pub mod options;
pub mod quantile;
pub mod stats;

pub use optimize::{optimize, OptimizeParams, Optimized};
pub use options::StatsParams;
pub use stats::{portfolio_stats, BucketStats, Histogram, Percentiles, PortfolioStats};
