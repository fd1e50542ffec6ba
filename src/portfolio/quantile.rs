//! Order statistics and percentiles with NumPy's default (linear) method: for
//! q in [0, 1] and sorted values x, `h = (n - 1) q` and the percentile is
//! `x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])`.
//!
//! Nothing is sorted whole. Columns of f32 cells: a radix select finds the few
//! order statistics needed (one counting pass over the top bits, one pass
//! gathering the values of the bins that hold them, a select within those),
//! about ten times cheaper than sorting 100,000 values. f64 values (the
//! portfolio's M): [`select_ranks`] puts just the ranks needed in place.

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

/// Puts the value of each of `ranks` (0-based, in any order) where a sort by
/// `total_cmp` would put it, and every value left of it is then not greater.
/// Each select splits the slice, and the ranks on either side are found
/// within their own part: O(n log ranks) instead of a sort's O(n log n).
pub fn select_ranks(v: &mut [f64], ranks: &[usize]) {
    let mut r = ranks.to_vec();
    r.sort_unstable();
    r.dedup();
    select_within(v, 0, &r);
}

/// [`select_ranks`] for ascending, distinct `ranks` on the part of a slice
/// that starts at rank `offset`.
fn select_within(v: &mut [f64], offset: usize, ranks: &[usize]) {
    let mid = ranks.len() / 2;
    let Some(&r) = ranks.get(mid) else {
        return;
    };
    let (left, _, right) = v.select_nth_unstable_by(r - offset, f64::total_cmp);
    select_within(left, offset, &ranks[..mid]);
    select_within(right, r + 1, &ranks[mid + 1..]);
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

fn bin(x: f32) -> usize {
    (key(x) >> (32 - BIN_BITS)) as usize
}

/// The values at `ranks` (0-based positions in ascending `total_cmp` order)
/// of `values`, without sorting them. `ranks` must be below `values.len()`.
pub fn order_stats_f32(values: &[f32], ranks: &[usize]) -> Vec<f32> {
    column_order_stats(values, 1, 0..1, ranks, |_, _| {}).remove(0)
}

/// [`order_stats_f32`] for columns `cols` of a row-major matrix with `width`
/// columns, all in the same two passes over the rows (the matrix is read
/// where it is: no column is copied out). `visit(j, x)` sees every value of
/// column `cols.start + j` in row order during the first pass.
pub fn column_order_stats(
    matrix: &[f32],
    width: usize,
    cols: std::ops::Range<usize>,
    ranks: &[usize],
    mut visit: impl FnMut(usize, f32),
) -> Vec<Vec<f32>> {
    let n = matrix.len() / width;
    let k = cols.len();
    assert!(ranks.iter().all(|&r| r < n), "rank out of range");
    let rows = || matrix.chunks_exact(width).map(|r| &r[cols.clone()]);
    if n <= 256 {
        let mut columns: Vec<Vec<f32>> = vec![Vec::with_capacity(n); k];
        for row in rows() {
            for (j, &x) in row.iter().enumerate() {
                visit(j, x);
                columns[j].push(x);
            }
        }
        return columns
            .into_iter()
            .map(|mut v| {
                v.sort_unstable_by(f32::total_cmp);
                ranks.iter().map(|&r| v[r]).collect()
            })
            .collect();
    }
    // Pass 1: how many values of each column fall in each bin of the top key bits.
    let mut counts = vec![0u32; k * BINS];
    for row in rows() {
        for (j, &x) in row.iter().enumerate() {
            visit(j, x);
            counts[j * BINS + bin(x)] += 1;
        }
    }
    // Per column: where each bin starts, the bin of each rank, and a slot
    // (gathering buffer) for each bin that holds a rank.
    let mut start = vec![0usize; k * BINS];
    let mut slot = vec![NO_SLOT; k * BINS];
    let mut rank_at: Vec<Vec<(usize, usize)>> = Vec::with_capacity(k); // (slot, rank within bin)
    let mut gathered: Vec<Vec<Vec<f32>>> = Vec::with_capacity(k);
    for j in 0..k {
        let (c, st) = (&counts[j * BINS..][..BINS], &mut start[j * BINS..][..BINS]);
        let mut below = 0usize;
        for (b, &cnt) in c.iter().enumerate() {
            st[b] = below;
            below += cnt as usize;
        }
        let sl = &mut slot[j * BINS..][..BINS];
        let mut bufs: Vec<Vec<f32>> = Vec::new();
        let mut at = Vec::with_capacity(ranks.len());
        for &r in ranks {
            let b = st.partition_point(|&s| s <= r) - 1;
            if sl[b] == NO_SLOT {
                sl[b] = bufs.len() as u8;
                bufs.push(Vec::with_capacity(c[b] as usize));
            }
            at.push((sl[b] as usize, r - st[b]));
        }
        rank_at.push(at);
        gathered.push(bufs);
    }
    // Pass 2: the values of those bins.
    for row in rows() {
        for (j, &x) in row.iter().enumerate() {
            let s = slot[j * BINS + bin(x)];
            if s != NO_SLOT {
                gathered[j][s as usize].push(x);
            }
        }
    }
    gathered
        .into_iter()
        .zip(rank_at)
        .map(|(mut bufs, at)| {
            // The linear method asks for ranks in adjacent pairs: once a
            // select has put rank r in place, rank r + 1 is the least value
            // after it, a scan instead of a second select.
            let mut placed: Option<(usize, usize)> = None;
            at.iter()
                .map(|&(s, r)| {
                    let v = &mut bufs[s];
                    match placed {
                        Some((ps, pr)) if ps == s && pr + 1 == r => {
                            placed = None;
                            v[r..]
                                .iter()
                                .copied()
                                .min_by(f32::total_cmp)
                                .expect("rank in range")
                        }
                        _ => {
                            placed = Some((s, r));
                            *v.select_nth_unstable_by(r, f32::total_cmp).1
                        }
                    }
                })
                .collect()
        })
        .collect()
}

/// The linear-method quantiles `qs` from the order statistics at the ranks
/// [`quantile_ranks`] listed.
pub fn quantiles_from(n: usize, qs: &[f64], at: &[f32]) -> Vec<f64> {
    qs.iter()
        .enumerate()
        .map(|(k, &q)| lerp(at[2 * k] as f64, at[2 * k + 1] as f64, linear_ranks(n, q).2))
        .collect()
}

/// The ranks the linear method reads for each of `qs` (two per quantile).
pub fn quantile_ranks(n: usize, qs: &[f64]) -> Vec<usize> {
    qs.iter()
        .flat_map(|&q| {
            let (i, j, _) = linear_ranks(n, q);
            [i, j]
        })
        .collect()
}

/// Quantiles `qs` of f32 values (linear method, in f64).
pub fn percentiles_f32(values: &[f32], qs: &[f64]) -> Vec<f64> {
    let n = values.len();
    quantiles_from(n, qs, &order_stats_f32(values, &quantile_ranks(n, qs)))
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

    #[test]
    fn selected_ranks_are_where_sorting_puts_them() {
        // Ties, zeros of both signs, the first and last ranks, repeated ranks.
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        for n in [1usize, 2, 5, 100, 4097] {
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    match s % 4 {
                        0 => -0.0,
                        1 => 0.0,
                        2 => (s % 5) as f64,
                        _ => (s % 100_003) as f64 / 7.0 - 3.0,
                    }
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            let ranks = [n - 1, 0, n / 3, n / 3, (n / 3 + 1).min(n - 1), n / 2, n - 1];
            let mut got = v.clone();
            select_ranks(&mut got, &ranks);
            for &r in &ranks {
                assert_eq!(got[r].to_bits(), sorted[r].to_bits(), "n {n} rank {r}");
                assert!(got[..r].iter().all(|x| x.total_cmp(&got[r]).is_le()));
            }
        }
    }

    #[test]
    fn columns_of_a_row_major_matrix_agree_with_sorting_each() {
        let (rows, width) = (3001usize, 7usize);
        let m: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 7919) % 1009) as f32 * if i % 3 == 0 { 0.5 } else { 1.25 })
            .collect();
        let ranks = [0, 1, 300, 1500, 1501, 2999, 3000];
        let mut seen = vec![0usize; 3];
        let got = column_order_stats(&m, width, 2..5, &ranks, |j, _| seen[j] += 1);
        assert_eq!(seen, vec![rows; 3]);
        for (j, col) in (2..5).enumerate() {
            let mut c: Vec<f32> = m.iter().skip(col).step_by(width).copied().collect();
            c.sort_unstable_by(f32::total_cmp);
            let want: Vec<f32> = ranks.iter().map(|&r| c[r]).collect();
            assert_eq!(got[j], want, "column {col}");
        }
    }
}
