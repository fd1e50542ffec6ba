//! Capital recycling multiples: how much capital a bucket deploys in total,
//! per unit of its allocation, when returned capital is reinvested in the same
//! bucket. Owns the round-by-round rule of the spec (mission.md, "The
//! generator's model"); the generator supplies each bucket's mean MOIC.
//!
//! Only + - * / and floor: the results are bit-identical on every platform.

use crate::config::{Bucket, Recycling};

/// Upper bound on recycling rounds. Real funds have a handful
/// (lifetime / holding period); the bound only stops a crafted config
/// (lifetime 1e300, holding 1e-300) from looping for ever.
pub const MAX_ROUNDS: f64 = 100_000.0;

/// One multiple per bucket, in bucket order; `mean_moic[b]` is bucket b's mean.
pub fn multiples(recycling: &Recycling, buckets: &[Bucket], mean_moic: &[f64]) -> Vec<f64> {
    buckets
        .iter()
        .zip(mean_moic)
        .map(|(b, &m)| multiple(recycling, b.capital_allocation, m))
        .collect()
}

/// The recycling multiple of a bucket with capital `capital` and mean MOIC `m`:
/// 1 when recycling is disabled or the bucket has no capital; otherwise
/// total deployed / capital, finite and >= 1 (saturating at f64::MAX).
pub fn multiple(recycling: &Recycling, capital: f64, m: f64) -> f64 {
    let Recycling::Enabled {
        reinvestment_rate: rate,
        avg_holding_period: hold,
        fund_lifetime: life,
        ..
    } = *recycling
    else {
        return 1.0;
    };
    if capital <= 0.0 || !capital.is_finite() || !m.is_finite() {
        // No capital: nothing to recycle (and 0 / 0 must not become NaN).
        return 1.0;
    }
    let max_rounds = ((life / hold).floor() - 1.0).clamp(0.0, MAX_ROUNDS);
    let max_rounds = if max_rounds.is_nan() { 0.0 } else { max_rounds };
    let mut deployed = capital;
    let mut avail = capital * m * rate;
    let mut round = 1.0;
    while round <= max_rounds && avail > 0.0 {
        deployed += avail;
        avail = avail * m * rate;
        if avail < 0.01 * capital || !deployed.is_finite() {
            break;
        }
        round += 1.0;
    }
    let multiple = deployed / capital;
    if multiple.is_finite() {
        multiple
    } else {
        f64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(rate: f64, hold: f64, life: f64) -> Recycling {
        Recycling::Enabled {
            mode_given: true,
            reinvestment_rate: rate,
            avg_holding_period: hold,
            fund_lifetime: life,
        }
    }

    #[test]
    fn spec_examples() {
        // Fixture Seed bucket: m = 2.225, rate 0.8, lifetime 10, holding 5:
        // one extra round, 1 + 2.225 * 0.8 = 2.78.
        let x = multiple(&on(0.8, 5.0, 10.0), 40.0, 2.225);
        assert!((x - 2.78).abs() < 1e-12, "{x}");
        assert_eq!(multiple(&Recycling::Disabled, 40.0, 2.225), 1.0);
        assert_eq!(multiple(&on(0.8, 5.0, 10.0), 0.0, 2.225), 1.0);
        assert_eq!(multiple(&on(0.0, 5.0, 10.0), 40.0, 2.225), 1.0);
        assert_eq!(multiple(&on(0.8, 5.0, 10.0), 40.0, 0.0), 1.0);
        // Lifetime shorter than two holding periods: no recycling round.
        assert_eq!(multiple(&on(0.8, 5.0, 9.0), 40.0, 2.225), 1.0);
        assert_eq!(multiple(&on(0.8, 5.0, 1.0), 40.0, 2.225), 1.0);
    }

    #[test]
    fn rounds_follow_the_rule() {
        // 3 rounds (lifetime 20 / holding 5 - 1), m * rate = 0.5:
        // 1 + 0.5 + 0.25 + 0.125.
        assert_eq!(multiple(&on(0.5, 5.0, 20.0), 10.0, 1.0), 1.875);
        // Stops after the round whose new avail falls below 1% of capital:
        // g = 0.1: deploys 1 + 0.1 + 0.01 (avail then 0.001 < 0.01) and stops.
        let x = multiple(&on(0.1, 1.0, 1000.0), 10.0, 1.0);
        assert!((x - 1.11).abs() < 1e-12, "{x}");
    }

    #[test]
    fn crafted_configs_stay_finite_and_terminate() {
        for (rate, hold, life, m) in [
            (1.0, 1e-300, 1e300, 1.0),
            (1.0, 1e-300, 1e300, 3.4e38),
            (1.0, 1.0, 1e300, 2.0),
            (1.0, f64::MIN_POSITIVE, f64::MAX, 1.0),
        ] {
            let x = multiple(&on(rate, hold, life), 50.0, m);
            assert!(x.is_finite() && x >= 1.0, "{x}");
        }
        assert_eq!(multiple(&on(1.0, 1.0, 1e300), 50.0, 1.0), MAX_ROUNDS + 1.0);
    }
}
