//! Order statistics and percentiles with NumPy's default (linear) method: for
//! q in [0, 1] and sorted values x, `h = (n - 1) q` and the percentile is
//! `x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])`.
//!
//! Columns of f32 cells are not sorted: a radix select finds the few order
//! statistics needed (one counting pass over the top bits, one pass gathering
//! the values of the bins that hold them, a select within those), about ten
//! times cheaper than sorting 100,000 values.

use std::cmp::Ordering;

/// The two ranks `floor h` and `floor h + 1` (clamped to the last) the linear
/// method reads for quantile `q` of `n` values, and the fraction between them.
pub fn linear_ranks(n: usize, q: f64) -> (usize, usize, f64) {
    debug_assert!(n > 0);
    let h = (n - 1) as f64 * q;
    let lo = h.floor();
    let i = (lo as usize).min(n - 1);
    (i, (i + 1).min(n - 1), h - lo)
}

/// The linear-method value between order statistics `a` (rank floor h) and
/// `b` (the next one).
pub fn lerp(a: f64, b: f64, frac: f64) -> f64 {
    a + frac * (b - a)
}

/// Quantile `q` of values sorted ascending.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let (i, j, frac) = linear_ranks(sorted.len(), q);
    lerp(sorted[i], sorted[j], frac)
}

/// An f32's bits mapped so that unsigned order is `f32::total_cmp` order.
fn key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

const BIN_BITS: u32 = 12;
const BINS: usize = 1 << BIN_BITS;
const NO_SLOT: u8 = u8::MAX;

/// The values at `ranks` (0-based positions in ascending `total_cmp` order)
/// of `values`, without sorting them. `ranks` must be below `values.len()`.
pub fn order_stats_f32(values: &[f32], ranks: &[usize]) -> Vec<f32> {
    let n = values.len();
    assert!(ranks.iter().all(|&r| r < n), "rank out of range");
    if n <= 256 {
        let mut v = values.to_vec();
        v.sort_unstable_by(f32::total_cmp);
        return ranks.iter().map(|&r| v[r]).collect();
    }
    // Pass 1: how many values fall in each bin of the top key bits.
    let mut counts = vec![0u32; BINS];
    for &x in values {
        counts[(key(x) >> (32 - BIN_BITS)) as usize] += 1;
    }
    // Each rank's bin and its rank within that bin.
    let mut below = 0usize;
    let mut start = vec![0usize; BINS];
    for (b, &c) in counts.iter().enumerate() {
        start[b] = below;
        below += c as usize;
    }
    let bin_of = |r: usize| start.partition_point(|&s| s <= r) - 1;
    // Pass 2: the values of the bins that hold a rank (at most one slot per rank).
    let mut slot = vec![NO_SLOT; BINS];
    let mut bins: Vec<usize> = Vec::new();
    for &r in ranks {
        let b = bin_of(r);
        if slot[b] == NO_SLOT {
            slot[b] = bins.len() as u8;
            bins.push(b);
        }
    }
    let mut gathered: Vec<Vec<f32>> = bins.iter().map(|&b| Vec::with_capacity(counts[b] as usize)).collect();
    for &x in values {
        let s = slot[(key(x) >> (32 - BIN_BITS)) as usize];
        if s != NO_SLOT {
            gathered[s as usize].push(x);
        }
    }
    ranks
        .iter()
        .map(|&r| {
            let b = bin_of(r);
            let v = &mut gathered[slot[b] as usize];
            *v.select_nth_unstable_by(r - start[b], f32::total_cmp).1
        })
        .collect()
}

/// Quantiles `qs` of f32 values (linear method, in f64).
pub fn percentiles_f32(values: &[f32], qs: &[f64]) -> Vec<f64> {
    let n = values.len();
    let spans: Vec<(usize, usize, f64)> = qs.iter().map(|&q| linear_ranks(n, q)).collect();
    let ranks: Vec<usize> = spans.iter().flat_map(|&(i, j, _)| [i, j]).collect();
    let at = order_stats_f32(values, &ranks);
    spans
        .iter()
        .enumerate()
        .map(|(k, &(_, _, frac))| lerp(at[2 * k] as f64, at[2 * k + 1] as f64, frac))
        .collect()
}

/// `f64::total_cmp`, for sorting.
pub fn cmp_f64(a: &f64, b: &f64) -> Ordering {
    a.total_cmp(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_method_by_hand() {
        // numpy.percentile([1, 2, 3, 4], 50) == 2.5; 10 -> 1.3; 100 -> 4.
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_sorted(&x, 0.5), 2.5);
        assert!((percentile_sorted(&x, 0.1) - 1.3).abs() < 1e-15);
        assert_eq!(percentile_sorted(&x, 1.0), 4.0);
        assert_eq!(percentile_sorted(&x, 0.0), 1.0);
        assert_eq!(percentile_sorted(&[7.0], 0.3), 7.0);
    }

    #[test]
    fn radix_select_agrees_with_sorting() {
        // Values with heavy ties, negatives, zeros of both signs and a wide
        // range, so ranks land in crowded and sparse bins alike.
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for n in [1usize, 2, 3, 255, 256, 257, 1000, 10_007] {
            let v: Vec<f32> = (0..n)
                .map(|i| match next() % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => (next() % 7) as f32 * 0.5,
                    3 => -((next() % 1000) as f32) / 3.0,
                    _ => f32::from_bits((next() % 0x7F00_0000) as u32),
                } + i as f32 * 0.0)
                .collect();
            let mut sorted = v.clone();
            sorted.sort_unstable_by(f32::total_cmp);
            let ranks: Vec<usize> = [0, n / 10, n / 2, n / 2 + 1, n - 1]
                .iter()
                .map(|&r| r.min(n - 1))
                .collect();
            let got = order_stats_f32(&v, &ranks);
            for (r, g) in ranks.iter().zip(&got) {
                assert_eq!(g.to_bits(), sorted[*r].to_bits(), "n {n} rank {r}");
            }
        }
    }
}
