//! What the CLI's `inspect` shows of one matrix: each bucket's mean and
//! quantiles, its recycling multiple, the correlation matrix of log-MOIC
//! (what the generator's model correlates), and a picture of each bucket's
//! distribution (`plot`).

mod plot;

pub use plot::svg;

use crate::portfolio::quantile::{lerp, linear_ranks};

/// One column of a matrix, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSummary {
    pub name: String,
    pub mean: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub recycling_multiple: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    pub buckets: Vec<BucketSummary>,
    /// Pearson correlation of ln(MOIC) between columns, over the scenarios
    /// where both cells are positive; None where a column has no spread
    /// there (a bucket of median 0, say).
    pub log_correlation: Vec<Vec<Option<f64>>>,
}

/// Summarises a row-major matrix of `names.len()` columns. `multiples` are
/// per column, or empty when unknown.
pub fn inspect(matrix: &[f32], names: &[String], multiples: &[f64]) -> Inspection {
    let cols = names.len().max(1);
    let columns: Vec<Vec<f32>> = (0..names.len())
        .map(|b| matrix.iter().skip(b).step_by(cols).copied().collect())
        .collect();
    let buckets = columns
        .iter()
        .zip(names)
        .enumerate()
        .map(|(b, (col, name))| {
            let mut sorted = col.clone();
            sorted.sort_by(f32::total_cmp);
            let mean = col.iter().map(|&v| f64::from(v)).sum::<f64>() / col.len().max(1) as f64;
            BucketSummary {
                name: name.clone(),
                mean,
                p10: quantile(&sorted, 0.10),
                p50: quantile(&sorted, 0.50),
                p90: quantile(&sorted, 0.90),
                p99: quantile(&sorted, 0.99),
                recycling_multiple: multiples.get(b).copied(),
            }
        })
        .collect();
    let logs: Vec<Vec<f64>> = columns
        .iter()
        .map(|c| {
            c.iter()
                .map(|&v| if v > 0.0 { f64::from(v).ln() } else { f64::NAN })
                .collect()
        })
        .collect();
    let log_correlation = (0..logs.len())
        .map(|i| {
            (0..logs.len())
                .map(|j| pearson(&logs[i], &logs[j]))
                .collect()
        })
        .collect();
    Inspection {
        buckets,
        log_correlation,
    }
}

/// NumPy's default (linear) quantile of ascending `sorted`, q in [0, 1].
pub fn quantile(sorted: &[f32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let (i, j, frac) = linear_ranks(sorted.len(), q);
    lerp(f64::from(sorted[i]), f64::from(sorted[j]), frac)
}

/// Correlation over the pairs where both values are finite (NaN marks a
/// cell of zero).
fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let pairs = || {
        a.iter()
            .zip(b)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let n = pairs().count() as f64;
    if n < 2.0 {
        return None;
    }
    let (ma, mb) = pairs().fold((0.0, 0.0), |(sa, sb), (x, y)| (sa + x, sb + y));
    let (ma, mb) = (ma / n, mb / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in pairs() {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    let r = sab / (saa * sbb).sqrt();
    r.is_finite().then_some(r.clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_numpy_linear() {
        // numpy.quantile([1, 2, 3, 4], [0.1, 0.5, 0.9, 0.99])
        let s = [1.0, 2.0, 3.0, 4.0];
        let want = [1.3, 2.5, 3.7, 3.97];
        for (q, w) in [0.1, 0.5, 0.9, 0.99].iter().zip(want) {
            assert!((quantile(&s, *q) - w).abs() < 1e-12, "{q}");
        }
        assert_eq!(quantile(&[5.0], 0.9), 5.0);
    }

    #[test]
    fn summarises_columns_and_correlates_their_logs() {
        let names = vec!["a".to_string(), "b".into(), "zero".into()];
        // b = a^2 (log-linear: correlation 1); the third column is all zero.
        let a = [1.0f32, 2.0, 4.0, 8.0];
        let matrix: Vec<f32> = a.iter().flat_map(|&v| [v, v * v, 0.0]).collect();
        let r = inspect(&matrix, &names, &[1.5, 1.0, 1.0]);
        assert_eq!(r.buckets[0].mean, 3.75);
        assert_eq!(r.buckets[1].p50, 10.0);
        assert_eq!(r.buckets[0].recycling_multiple, Some(1.5));
        assert!((r.log_correlation[0][1].unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(r.log_correlation[0][2], None);
        assert_eq!(r.log_correlation[2][2], None);
        assert!(inspect(&matrix, &names, &[]).buckets[0]
            .recycling_multiple
            .is_none());
    }
}
