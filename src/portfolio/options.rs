//! The options of `portfolioStats`, read from a [`Value`] and checked against
//! the config's buckets. Every refusal is `E_INVALID_ARGUMENT` naming the
//! field (`weights.Seed`, `confidence`, ...), so a caller can fix its input.

use std::time::Duration;

use super::optimize::{CvarCap, Group, OptimizeParams, Tweaks, Winners};
use crate::config::{ScenarioConfig, Value};
use crate::error::{Error, Result};

pub const DEFAULT_CONFIDENCE: f64 = 0.95;
pub const DEFAULT_WINNER_MULTIPLE: f64 = 10.0;
pub const DEFAULT_HISTOGRAM_BINS: usize = 50;
/// More bins than this would only be a way to make the call allocate.
pub const MAX_HISTOGRAM_BINS: usize = 100_000;

const OPTION_NAMES: [&str; 4] = ["weights", "confidence", "winnerMultiple", "histogramBins"];

/// Validated statistics parameters; weights in the config's bucket order,
/// normalised to sum 1.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsParams {
    pub weights: Vec<f64>,
    pub confidence: f64,
    pub winner_multiple: f64,
    pub histogram_bins: usize,
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

impl StatsParams {
    /// The defaults for `cfg`: its capital allocation as the weights.
    pub fn defaults(cfg: &ScenarioConfig) -> Result<Self> {
        let raw: Vec<f64> = cfg.buckets.iter().map(|b| b.capital_allocation).collect();
        Ok(StatsParams {
            weights: normalise(&raw, "capitalAllocation")?,
            confidence: DEFAULT_CONFIDENCE,
            winner_multiple: DEFAULT_WINNER_MULTIPLE,
            histogram_bins: DEFAULT_HISTOGRAM_BINS,
        })
    }

    /// From the JS options object (`undefined` / `null`: every default).
    pub fn from_value(cfg: &ScenarioConfig, v: &Value) -> Result<Self> {
        let mut p = Self::defaults(cfg)?;
        let members = match v {
            Value::Undefined | Value::Null => return Ok(p),
            Value::Object(m) => m,
            other => {
                return Err(invalid(format!(
                    "options must be an object, got {}",
                    other.describe()
                )))
            }
        };
        for (name, value) in members {
            if *value == Value::Undefined {
                continue;
            }
            match name.as_str() {
                "weights" => p.weights = weights_by_name(cfg, value)?,
                "confidence" => p.confidence = confidence(value, "confidence")?,
                "winnerMultiple" => p.winner_multiple = finite(value, "winnerMultiple")?,
                "histogramBins" => {
                    p.histogram_bins = whole(value, "histogramBins", 1, MAX_HISTOGRAM_BINS)?
                }
                other => {
                    return Err(invalid(format!(
                        "{other}: not an option of portfolioStats; the options are {}",
                        OPTION_NAMES.join(", ")
                    )))
                }
            }
        }
        Ok(p)
    }
}

/// A confidence level: strictly between 0 and 1.
pub fn confidence(v: &Value, field: &str) -> Result<f64> {
    match v {
        Value::Number(c) if *c > 0.0 && *c < 1.0 => Ok(*c),
        other => Err(invalid(format!(
            "{field}: expected a number strictly between 0 and 1, got {}",
            other.describe()
        ))),
    }
}

pub fn finite(v: &Value, field: &str) -> Result<f64> {
    match v {
        Value::Number(x) if x.is_finite() => Ok(*x),
        other => Err(invalid(format!(
            "{field}: expected a finite number, got {}",
            other.describe()
        ))),
    }
}

pub fn whole(v: &Value, field: &str, min: usize, max: usize) -> Result<usize> {
    match v {
        Value::Number(x) if x.fract() == 0.0 && *x >= min as f64 && *x <= max as f64 => {
            Ok(*x as usize)
        }
        other => Err(invalid(format!(
            "{field}: expected an integer from {min} to {max}, got {}",
            other.describe()
        ))),
    }
}

/// The index of the bucket named `name` in `cfg`, or an error naming `field`.
pub fn bucket_index(cfg: &ScenarioConfig, name: &str, field: &str) -> Result<usize> {
    cfg.buckets
        .iter()
        .position(|b| b.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = cfg.buckets.iter().map(|b| b.name.as_str()).collect();
            invalid(format!(
                "{field}: the config has no bucket named {name:?} (its buckets: {})",
                names.join(", ")
            ))
        })
}

/// `{ [bucket name]: weight }`: buckets left out weigh 0; normalised.
fn weights_by_name(cfg: &ScenarioConfig, v: &Value) -> Result<Vec<f64>> {
    let Value::Object(members) = v else {
        return Err(invalid(format!(
            "weights: expected an object of bucket name to weight, got {}",
            v.describe()
        )));
    };
    let mut raw = vec![0.0; cfg.buckets.len()];
    for (name, w) in members {
        if *w == Value::Undefined {
            continue;
        }
        let field = format!("weights.{name}");
        let i = bucket_index(cfg, name, &field)?;
        raw[i] = match w {
            Value::Number(x) if x.is_finite() && *x >= 0.0 => *x,
            other => {
                return Err(invalid(format!(
                    "{field}: expected a finite number of at least 0, got {}",
                    other.describe()
                )))
            }
        };
    }
    normalise(&raw, "weights")
}

/// Non-negative weights scaled to sum 1; all zero is refused.
pub fn normalise(raw: &[f64], field: &str) -> Result<Vec<f64>> {
    let total: f64 = raw.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(invalid(format!(
            "{field}: the weights sum to {total}; at least one must be above 0"
        )));
    }
    Ok(raw.iter().map(|w| w / total).collect())
}

// ---------- optimizePortfolio ----------

const OPTIMIZE_NAMES: [&str; 11] = [
    "scenarios",
    "minWeight",
    "maxWeight",
    "bounds",
    "groups",
    "maxLossProbability",
    "cvar",
    "minExpectedWinners",
    "relax",
    "mipRelGap",
    "timeLimitMs",
];

pub const DEFAULT_OPTIMIZE_SCENARIOS: usize = 400;
pub const DEFAULT_MIP_REL_GAP: f64 = 1e-4;
pub const DEFAULT_TIME_LIMIT_MS: u64 = 10_000;
pub const MAX_TIME_LIMIT_MS: usize = 3_600_000;

/// A number in [0, 1].
fn share(v: &Value, field: &str) -> Result<f64> {
    match v {
        Value::Number(x) if (0.0..=1.0).contains(x) => Ok(*x),
        other => Err(invalid(format!(
            "{field}: expected a number from 0 to 1, got {}",
            other.describe()
        ))),
    }
}

fn members<'v>(v: &'v Value, field: &str, allowed: &[&str]) -> Result<&'v [(String, Value)]> {
    let Value::Object(m) = v else {
        return Err(invalid(format!(
            "{field}: expected an object, got {}",
            v.describe()
        )));
    };
    for (k, x) in m {
        if *x != Value::Undefined && !allowed.contains(&k.as_str()) {
            return Err(invalid(format!(
                "{field}.{k}: not an option here; the options are {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(m)
}

fn member<'v>(m: &'v [(String, Value)], name: &str) -> Option<&'v Value> {
    m.iter()
        .find(|(k, v)| k == name && *v != Value::Undefined)
        .map(|(_, v)| v)
}

fn required<'v>(m: &'v [(String, Value)], field: &str, name: &str) -> Result<&'v Value> {
    member(m, name).ok_or_else(|| invalid(format!("{field}.{name}: required")))
}

/// `[min, max]` within [0, 1], min <= max.
fn range(v: &Value, field: &str) -> Result<(f64, f64)> {
    match v {
        Value::Array(a) if a.len() == 2 => {
            let lo = share(&a[0], &format!("{field}[0]"))?;
            let hi = share(&a[1], &format!("{field}[1]"))?;
            if lo > hi {
                return Err(invalid(format!(
                    "{field}: the minimum {lo} is above the maximum {hi}"
                )));
            }
            Ok((lo, hi))
        }
        other => Err(invalid(format!(
            "{field}: expected [min, max], got {}",
            other.describe()
        ))),
    }
}

impl OptimizeParams {
    /// From the JS options object, checked against `cfg` (bucket names, the
    /// matrix's rows). Bounds that cannot sum to 1 are refused here.
    pub fn from_value(cfg: &ScenarioConfig, v: &Value) -> Result<Self> {
        let nb = cfg.buckets.len();
        let rows = cfg.num_scenarios as usize;
        let mut p = OptimizeParams {
            scenarios: DEFAULT_OPTIMIZE_SCENARIOS.min(rows),
            lower: vec![0.0; nb],
            upper: vec![1.0; nb],
            groups: Vec::new(),
            max_loss_probability: None,
            cvar: None,
            min_expected_winners: None,
            relax: true,
            mip_rel_gap: DEFAULT_MIP_REL_GAP,
            time_limit: Duration::from_millis(DEFAULT_TIME_LIMIT_MS),
            tweaks: Tweaks::default(),
        };
        let m: &[(String, Value)] = match v {
            Value::Undefined | Value::Null => &[],
            Value::Object(_) => members(v, "options", &OPTIMIZE_NAMES).map_err(|e| match e {
                // Top-level names read without the "options." prefix.
                Error::InvalidArgument(msg) => Error::InvalidArgument(
                    msg.strip_prefix("options.")
                        .map(str::to_string)
                        .unwrap_or(msg),
                ),
                other => other,
            })?,
            other => {
                return Err(invalid(format!(
                    "options must be an object, got {}",
                    other.describe()
                )))
            }
        };
        if let Some(x) = member(m, "scenarios") {
            p.scenarios = whole(x, "scenarios", 1, rows).map_err(|_| {
                invalid(format!(
                    "scenarios: expected an integer from 1 to {rows} (the matrix's rows), got {}",
                    x.describe()
                ))
            })?;
        }
        let min_w = member(m, "minWeight")
            .map(|x| share(x, "minWeight"))
            .transpose()?;
        let max_w = member(m, "maxWeight")
            .map(|x| share(x, "maxWeight"))
            .transpose()?;
        if let (Some(lo), Some(hi)) = (min_w, max_w) {
            if lo > hi {
                return Err(invalid(format!("minWeight: {lo} is above maxWeight {hi}")));
            }
        }
        p.lower = vec![min_w.unwrap_or(0.0); nb];
        p.upper = vec![max_w.unwrap_or(1.0); nb];
        if let Some(b) = member(m, "bounds") {
            let Value::Object(entries) = b else {
                return Err(invalid(format!(
                    "bounds: expected an object of bucket name to [min, max], got {}",
                    b.describe()
                )));
            };
            for (name, r) in entries.iter().filter(|(_, r)| *r != Value::Undefined) {
                let field = format!("bounds.{name}");
                let i = bucket_index(cfg, name, &field)?;
                (p.lower[i], p.upper[i]) = range(r, &field)?;
            }
        }
        let (lo_sum, hi_sum): (f64, f64) = (p.lower.iter().sum(), p.upper.iter().sum());
        if lo_sum > 1.0 + 1e-9 || hi_sum < 1.0 - 1e-9 {
            return Err(invalid(format!(
                "bounds: the weights cannot sum to 1 (their minimums sum to {lo_sum}, their maximums to {hi_sum})"
            )));
        }
        if let Some(g) = member(m, "groups") {
            let Value::Array(items) = g else {
                return Err(invalid(format!(
                    "groups: expected an array, got {}",
                    g.describe()
                )));
            };
            for (k, item) in items.iter().enumerate() {
                let field = format!("groups[{k}]");
                let gm = members(item, &field, &["name", "buckets", "min", "max"])?;
                let name = match required(gm, &field, "name")? {
                    Value::String(s) => s.clone(),
                    other => {
                        return Err(invalid(format!(
                            "{field}.name: expected a string, got {}",
                            other.describe()
                        )))
                    }
                };
                let Value::Array(bs) = required(gm, &field, "buckets")? else {
                    return Err(invalid(format!(
                        "{field}.buckets: expected an array of bucket names"
                    )));
                };
                if bs.is_empty() {
                    return Err(invalid(format!(
                        "{field}.buckets: expected at least one bucket name"
                    )));
                }
                let mut idx = Vec::new();
                for (j, bn) in bs.iter().enumerate() {
                    let bf = format!("{field}.buckets[{j}]");
                    let Value::String(bn) = bn else {
                        return Err(invalid(format!(
                            "{bf}: expected a bucket name, got {}",
                            bn.describe()
                        )));
                    };
                    let i = bucket_index(cfg, bn, &bf)?;
                    if !idx.contains(&i) {
                        idx.push(i);
                    }
                }
                let min = member(gm, "min")
                    .map(|x| share(x, &format!("{field}.min")))
                    .transpose()?;
                let max = member(gm, "max")
                    .map(|x| share(x, &format!("{field}.max")))
                    .transpose()?;
                if let (Some(lo), Some(hi)) = (min, max) {
                    if lo > hi {
                        return Err(invalid(format!("{field}: min {lo} is above max {hi}")));
                    }
                }
                p.groups.push(Group {
                    name,
                    members: idx,
                    min,
                    max,
                });
            }
        }
        if let Some(x) = member(m, "maxLossProbability") {
            p.max_loss_probability = Some(share(x, "maxLossProbability")?);
        }
        if let Some(c) = member(m, "cvar") {
            let cm = members(c, "cvar", &["confidence", "max"])?;
            let confidence = confidence(required(cm, "cvar", "confidence")?, "cvar.confidence")?;
            let max = match required(cm, "cvar", "max")? {
                Value::Number(x) if x.is_finite() && *x >= 0.0 => *x,
                other => {
                    return Err(invalid(format!(
                        "cvar.max: expected a finite number of at least 0, got {}",
                        other.describe()
                    )))
                }
            };
            p.cvar = Some(CvarCap { confidence, max });
        }
        if let Some(wv) = member(m, "minExpectedWinners") {
            let f = "minExpectedWinners";
            let wm = members(wv, f, &["count", "capital", "allInCost", "winnerMultiple"])?;
            let positive = |x: &Value, field: String| match x {
                Value::Number(n) if n.is_finite() && *n > 0.0 => Ok(*n),
                other => Err(invalid(format!(
                    "{field}: expected a finite number above 0, got {}",
                    other.describe()
                ))),
            };
            let count = match required(wm, f, "count")? {
                Value::Number(n) if n.is_finite() && *n >= 0.0 => *n,
                other => {
                    return Err(invalid(format!(
                        "{f}.count: expected a finite number of at least 0, got {}",
                        other.describe()
                    )))
                }
            };
            let capital = positive(required(wm, f, "capital")?, format!("{f}.capital"))?;
            let Value::Object(costs) = required(wm, f, "allInCost")? else {
                return Err(invalid(format!(
                    "{f}.allInCost: expected an object of bucket name to cost"
                )));
            };
            let mut all_in_cost = vec![None; nb];
            for (name, c) in costs.iter().filter(|(_, c)| *c != Value::Undefined) {
                let field = format!("{f}.allInCost.{name}");
                let i = bucket_index(cfg, name, &field)?;
                all_in_cost[i] = Some(positive(c, field)?);
            }
            let winner_multiple = member(wm, "winnerMultiple")
                .map(|x| finite(x, &format!("{f}.winnerMultiple")))
                .transpose()?
                .unwrap_or(DEFAULT_WINNER_MULTIPLE);
            p.min_expected_winners = Some(Winners {
                count,
                capital,
                all_in_cost,
                winner_multiple,
            });
        }
        if let Some(x) = member(m, "relax") {
            p.relax = match x {
                Value::Bool(b) => *b,
                other => {
                    return Err(invalid(format!(
                        "relax: expected true or false, got {}",
                        other.describe()
                    )))
                }
            };
        }
        if let Some(x) = member(m, "mipRelGap") {
            p.mip_rel_gap = match x {
                Value::Number(g) if (0.0..1.0).contains(g) => *g,
                other => {
                    return Err(invalid(format!(
                        "mipRelGap: expected a number from 0 up to (not including) 1, got {}",
                        other.describe()
                    )))
                }
            };
        }
        if let Some(x) = member(m, "timeLimitMs") {
            p.time_limit =
                Duration::from_millis(whole(x, "timeLimitMs", 1, MAX_TIME_LIMIT_MS)? as u64);
        }
        Ok(p)
    }
}
