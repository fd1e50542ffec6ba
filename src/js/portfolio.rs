//! `portfolioStats` and `optimizePortfolio` on `ScenarioMatrixCache`: reads the config and options
//! on the JS thread, computes with [`crate::portfolio`] beside the cached
//! matrix, and converts the answer. Only the statistics cross into JS.

use napi::bindgen_prelude::{PromiseRaw, ToNapiValue, TypeName, Unknown};
use napi::{sys, Env, ValueType};
use napi_derive::napi;

use super::cache::{promise, ScenarioMatrixCache};
use super::{metadata_js, parse_config, read_value, ScenarioMetadata};
use crate::config::Value;
use crate::portfolio::{self, optimize, OptimizeParams, StatsParams};
use crate::view::ColumnOrder;

/// Bucket name to number, as a JS object whose keys follow the config's
/// bucket order (a `HashMap` would shuffle them).
pub struct ByName(pub Vec<(String, f64)>);

impl TypeName for ByName {
    fn type_name() -> &'static str {
        "Record<string, number>"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for ByName {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        // Own data properties, defined rather than assigned: assigning a
        // bucket named "__proto__" would call Object.prototype's setter and
        // leave that bucket out of the object.
        use sys::PropertyAttributes::{configurable, enumerable, writable};
        let mut obj = std::ptr::null_mut();
        napi::check_status!(sys::napi_create_object(env, &mut obj))?;
        let mut props = Vec::with_capacity(val.0.len());
        for (k, v) in val.0 {
            props.push(sys::napi_property_descriptor {
                utf8name: std::ptr::null(),
                name: String::to_napi_value(env, k)?,
                method: None,
                getter: None,
                setter: None,
                value: f64::to_napi_value(env, v)?,
                attributes: writable | enumerable | configurable,
                data: std::ptr::null_mut(),
            });
        }
        napi::check_status!(sys::napi_define_properties(
            env,
            obj,
            props.len(),
            props.as_ptr()
        ))?;
        Ok(obj)
    }
}

#[napi(object)]
pub struct PortfolioPercentiles {
    pub p1: f64,
    pub p5: f64,
    pub p10: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

#[napi(object)]
pub struct PortfolioBucketStats {
    pub name: String,
    pub mean: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    /// Share of scenarios with this bucket's MOIC at least `winnerMultiple`.
    pub winner_probability: f64,
}

#[napi(object)]
pub struct PortfolioHistogram {
    /// `histogramBins + 1` edges from min to max portfolio MOIC.
    pub edges: Vec<f64>,
    /// Scenarios per bin (`[edge_i, edge_i+1)`, the last bin closed); they sum to `numScenarios`.
    pub counts: Vec<f64>,
}

/// The distribution of a portfolio's MOIC over a matrix's scenarios (README "Portfolio analytics").
/// Only ever returned, never read from JS.
#[napi(object, object_from_js = false)]
pub struct PortfolioStats {
    pub num_scenarios: u32,
    /// The weights used, normalised to sum 1, by bucket name in the config's order.
    #[napi(ts_type = "Record<string, number>")]
    pub weights: ByName,
    pub mean: f64,
    /// Population standard deviation (divided by the scenario count).
    pub std_dev: f64,
    pub percentiles: PortfolioPercentiles,
    /// Share of scenarios whose portfolio MOIC is below 1.
    pub loss_probability: f64,
    /// The `confidence` percentile of the loss `max(0, 1 - M)`.
    pub value_at_risk: f64,
    /// Rockafellar-Uryasev CVaR of the loss at `confidence`.
    pub conditional_value_at_risk: f64,
    /// In the config's bucket order.
    pub buckets: Vec<PortfolioBucketStats>,
    pub histogram: PortfolioHistogram,
    pub metadata: ScenarioMetadata,
}

pub(super) fn stats_js(s: portfolio::PortfolioStats, metadata: ScenarioMetadata) -> PortfolioStats {
    let p = s.percentiles;
    PortfolioStats {
        num_scenarios: s.num_scenarios as u32,
        weights: ByName(s.weights),
        mean: s.mean,
        std_dev: s.std_dev,
        percentiles: PortfolioPercentiles {
            p1: p.p1,
            p5: p.p5,
            p10: p.p10,
            p25: p.p25,
            p50: p.p50,
            p75: p.p75,
            p90: p.p90,
            p95: p.p95,
            p99: p.p99,
        },
        loss_probability: s.loss_probability,
        value_at_risk: s.value_at_risk,
        conditional_value_at_risk: s.conditional_value_at_risk,
        buckets: s
            .buckets
            .into_iter()
            .map(|b| PortfolioBucketStats {
                name: b.name,
                mean: b.mean,
                p10: b.p10,
                p50: b.p50,
                p90: b.p90,
                winner_probability: b.winner_probability,
            })
            .collect(),
        histogram: PortfolioHistogram {
            edges: s.histogram.edges,
            counts: s.histogram.counts.into_iter().map(|c| c as f64).collect(),
        },
        metadata,
    }
}

/// The options argument as a value tree (`undefined` when left out).
pub(super) fn read_options(options: Option<&Unknown>) -> crate::Result<Value> {
    match options {
        Some(o) => read_value(o, "the options"),
        None => Ok(Value::Undefined),
    }
}

#[napi]
impl ScenarioMatrixCache {
    /// Statistics of a weighted portfolio over `config`'s matrix (got or generated like
    /// `getMatrix`), computed off the JS thread. Bad options reject with `E_INVALID_ARGUMENT`.
    #[napi(
        ts_args_type = "config: ScenarioConfig, options?: PortfolioStatsOptions",
        ts_return_type = "Promise<PortfolioStats>"
    )]
    pub fn portfolio_stats<'e>(
        &self,
        env: &'e Env,
        config: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<PromiseRaw<'e, PortfolioStats>> {
        let args = parse_config(&config).and_then(|cfg| {
            let p = StatsParams::from_value(&cfg, &read_options(options.as_ref())?)?;
            Ok((cfg, p))
        });
        let cache = self.core().clone();
        let work = async move {
            let (cfg, p) = args?;
            let (hit, stats) = cache.portfolio_stats(&cfg, p).await?;
            let metadata = ColumnOrder::for_config(&cfg).metadata(&hit.entry.metadata);
            Ok((stats, metadata, hit.source))
        };
        promise(env, work, |_, (stats, metadata, source)| {
            Ok(stats_js(stats, metadata_js(metadata, source)))
        })
    }
}

#[napi(object)]
pub struct PortfolioRelaxation {
    /// Which bound was loosened: `groups.<name>.min|max`, `minExpectedWinners.count`, `cvar.max`, `maxLossProbability`.
    pub constraint: String,
    pub from: f64,
    pub to: f64,
}

#[napi(object, use_nullable = true)]
pub struct SolverReport {
    pub name: String,
    pub version: String,
    /// Relative MIP gap of the answer's solve (0 for a model without binaries;
    /// Infinity when time ran out before any bound was proven).
    pub mip_gap: f64,
    /// Branch-and-bound nodes over every solve of the call.
    pub nodes: f64,
    pub duration_ms: f64,
    /// The first solve's optimum E* (the tie-break may give up 0.001 of it); null without one.
    pub objective: Option<f64>,
}

/// What `optimizePortfolio` found (README "Portfolio analytics"). Only ever returned.
#[napi(object, use_nullable = true, object_from_js = false)]
pub struct OptimizedPortfolio {
    #[napi(ts_type = "'optimal' | 'relaxed' | 'infeasible' | 'time-limit'")]
    pub status: String,
    /// By bucket name in the config's order; empty when no feasible portfolio was found.
    #[napi(ts_type = "Record<string, number>")]
    pub weights: ByName,
    /// Mean portfolio MOIC over the S scenarios; null without weights.
    pub expected_moic: Option<f64>,
    /// Share of the S scenarios with portfolio MOIC below 1 (less 1e-6, the solver's tolerance); null without weights.
    pub loss_probability: Option<f64>,
    /// CVaR of the loss over the S scenarios, at `cvar.confidence` (default 0.95); null without weights.
    pub conditional_value_at_risk: Option<f64>,
    pub relaxations: Vec<PortfolioRelaxation>,
    /// The weights evaluated on every scenario of the matrix; null without weights.
    pub validation: Option<PortfolioStats>,
    pub solver: SolverReport,
}

fn optimized_js(o: optimize::Optimized, metadata: ScenarioMetadata) -> OptimizedPortfolio {
    OptimizedPortfolio {
        status: o.status.as_str().to_string(),
        weights: ByName(o.weights),
        expected_moic: o.expected_moic,
        loss_probability: o.loss_probability,
        conditional_value_at_risk: o.conditional_value_at_risk,
        relaxations: o
            .relaxations
            .into_iter()
            .map(|r| PortfolioRelaxation {
                constraint: r.constraint,
                from: r.from,
                to: r.to,
            })
            .collect(),
        validation: o.validation.map(|v| stats_js(v, metadata)),
        solver: SolverReport {
            name: o.solver.name.to_string(),
            version: o.solver.version,
            // HiGHS reports no gap for a model without integer variables
            // (then 0: an LP's optimum is exact); out of time before any
            // bound was proven, the gap is unknown: Infinity.
            mip_gap: match (o.solver.mip_gap.is_finite(), o.status) {
                (true, _) => o.solver.mip_gap,
                (false, optimize::Status::Optimal | optimize::Status::Relaxed) => 0.0,
                (false, _) => f64::INFINITY,
            },
            nodes: o.solver.nodes as f64,
            duration_ms: o.solver.duration_ms,
            objective: o.solver.objective.is_finite().then_some(o.solver.objective),
        },
    }
}

#[napi]
impl ScenarioMatrixCache {
    /// The weights that maximise expected MOIC over the first S scenarios of `config`'s
    /// matrix under the given caps, solved by HiGHS off the JS thread (README "Portfolio
    /// analytics"). Bad options reject with `E_INVALID_ARGUMENT` naming the field.
    #[napi(
        ts_args_type = "config: ScenarioConfig, options?: OptimizePortfolioOptions",
        ts_return_type = "Promise<OptimizedPortfolio>"
    )]
    pub fn optimize_portfolio<'e>(
        &self,
        env: &'e Env,
        config: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<PromiseRaw<'e, OptimizedPortfolio>> {
        let args = parse_config(&config).and_then(|cfg| {
            let p = OptimizeParams::from_value(&cfg, &read_options(options.as_ref())?)?;
            Ok((cfg, p))
        });
        let cache = self.core().clone();
        let work = async move {
            let (cfg, p) = args?;
            let names: Vec<String> = cfg.buckets.iter().map(|b| b.name.clone()).collect();
            let (hit, out) = cache
                .with_matrix(&cfg, move |m| optimize::optimize(m, &names, &p))
                .await?;
            let metadata = ColumnOrder::for_config(&cfg).metadata(&hit.entry.metadata);
            Ok((out, metadata, hit.source))
        };
        promise(env, work, |_, (out, metadata, source)| {
            Ok(optimized_js(out, metadata_js(metadata, source)))
        })
    }
}
