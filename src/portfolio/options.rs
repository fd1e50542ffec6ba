//! The options of `portfolioStats`, read from a [`Value`] and checked against
//! the config's buckets. Every refusal is `E_INVALID_ARGUMENT` naming the
//! field (`weights.Seed`, `confidence`, ...), so a caller can fix its input.

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
    cfg.buckets.iter().position(|b| b.name == name).ok_or_else(|| {
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
