//! The distribution of a weighted portfolio over the scenarios of a matrix.
//!
//! Definitions (exact; `tests/portfolio.rs` checks each against a direct
//! computation):
//! - portfolio MOIC of scenario s: `M_s = sum_b w_b m[s][b]`, in f64 from
//!   the f32 cells, added in bucket order;
//! - `mean`, `std_dev` (population: divided by S) of M;
//! - percentiles by NumPy's linear method ([`super::quantile`]);
//! - `loss_probability`: the share of scenarios with `M_s < 1`;
//! - loss `L_s = max(0, 1 - M_s)`; `value_at_risk`: the `confidence`
//!   percentile of L; `conditional_value_at_risk`: `min over t of t +
//!   sum_s max(0, L_s - t) / ((1 - confidence) S)` (Rockafellar-Uryasev);
//! - per bucket: mean, p10, p50, p90 of its column and `winner_probability`,
//!   the share of scenarios with `m[s][b] >= winner_multiple`;
//! - histogram: `histogram_bins` equal-width bins over [min M, max M], each
//!   `[edge_i, edge_i+1)` but the last, which is closed; counts sum to S.
//!
//! The work splits in two. What does not depend on the weights (each
//! column's sum and p10 / p50 / p90: [`column_stats`]) is computed once per
//! matrix; the cache keeps it beside the entry. What does (M, winner counts)
//! is one pass over blocks of rows ([`RowPass`]), which reads a cached
//! payload chunk by chunk as it is decoded, never copying the whole matrix
//! out. M is not sorted: a selection puts in place the few ranks the
//! percentiles read, and only the worst tail that VaR and CVaR read is
//! sorted. Every sum runs in a fixed order, so results do not depend on the
//! blocking or the thread count.

use rayon::prelude::*;

use super::quantile::{
    cmp_f64, lerp, linear_ranks, percentile_sorted, percentiles_f32, quantile_ranks, select_ranks,
};
use super::StatsParams;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Percentiles {
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

#[derive(Debug, Clone, PartialEq)]
pub struct BucketStats {
    pub name: String,
    pub mean: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    pub winner_probability: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// `bins + 1` edges from min M to max M.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortfolioStats {
    pub num_scenarios: usize,
    /// Bucket names and normalised weights, in the config's bucket order.
    pub weights: Vec<(String, f64)>,
    pub mean: f64,
    pub std_dev: f64,
    pub percentiles: Percentiles,
    pub loss_probability: f64,
    pub value_at_risk: f64,
    pub conditional_value_at_risk: f64,
    pub buckets: Vec<BucketStats>,
    pub histogram: Histogram,
}

/// Per column of a matrix, what the statistics need whatever the weights:
/// computed once per cached entry and kept beside it (`tier::Derived`), so
/// a call with new weights reads each cell once, for M and the winners.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStats {
    /// Each column's sum (f64, in row order).
    pub sums: Vec<f64>,
    /// Each column's p10, p50 and p90.
    pub deciles: Vec<[f64; 3]>,
}

/// One block of rows' share of the statistics (see [`RowPass`]).
#[derive(Debug)]
pub struct RowBlock {
    first_row: usize,
    /// M of each row of the block.
    moic: Vec<f64>,
    /// Per stored column, the rows with `m[s][b] >= winner_multiple`.
    wins: Vec<u64>,
}

/// Rows per block when the matrix is at hand: a block of 50 columns
/// (200 KiB) stays in L2 while it is read.
const ROW_BLOCK: usize = 1024;
/// Rows whose M sums run side by side (independent chains keep the adder
/// busy; each row still adds its buckets in bucket order).
const ROW_LANES: usize = 8;

/// The portfolio MOIC of every scenario: `M_s = sum_b w_b m[s][b]`.
pub fn portfolio_moic(matrix: &[f32], weights: &[f64]) -> Vec<f64> {
    let mut m = vec![0.0; matrix.len() / weights.len().max(1)];
    let identity: Vec<usize> = (0..weights.len()).collect();
    fill_moic(matrix, weights, &identity, &mut m);
    m
}

/// M of each row of `rows`, whose bucket j (the weights' order) is stored
/// in column `map[j]`; buckets are added in the weights' order.
fn fill_moic(rows: &[f32], w: &[f64], map: &[usize], out: &mut [f64]) {
    let b = w.len();
    let mut lanes = rows.chunks_exact(b * ROW_LANES);
    let mut outs = out.chunks_exact_mut(ROW_LANES);
    for (block, o) in (&mut lanes).zip(&mut outs) {
        let mut acc = [0.0f64; ROW_LANES];
        for (&wj, &c) in w.iter().zip(map) {
            for (r, a) in acc.iter_mut().enumerate() {
                *a += wj * block[r * b + c] as f64;
            }
        }
        o.copy_from_slice(&acc);
    }
    for (row, o) in lanes.remainder().chunks_exact(b).zip(outs.into_remainder()) {
        *o = w
            .iter()
            .zip(map)
            .fold(0.0, |a, (&wj, &c)| a + wj * row[c] as f64);
    }
}

/// The weight-dependent pass over the rows, block by block in any order
/// and on any thread: the matrix can be read where it lies (a cached
/// payload decoded chunk by chunk) instead of being copied out whole.
pub struct RowPass<'a> {
    params: &'a StatsParams,
    /// `map[j]`: the stored column of the caller's bucket j.
    map: &'a [usize],
}

impl<'a> RowPass<'a> {
    /// For `params` (weights in the caller's bucket order) over rows whose
    /// caller's bucket j is stored in column `map[j]` (a permutation:
    /// [`assemble`] refuses the blocks otherwise).
    pub fn new(params: &'a StatsParams, map: &'a [usize]) -> Self {
        RowPass { params, map }
    }

    /// The share of the rows `rows` (whole rows, stored order), the first
    /// of which is row `first_row` of the matrix.
    pub fn block(&self, first_row: usize, rows: &[f32]) -> RowBlock {
        let nb = self.map.len();
        let mut moic = vec![0.0; rows.len() / nb.max(1)];
        fill_moic(rows, &self.params.weights, self.map, &mut moic);
        let wm = self.params.winner_multiple;
        let mut wins = vec![0u64; nb];
        for row in rows.chunks_exact(nb) {
            for (n, &x) in wins.iter_mut().zip(row) {
                *n += u64::from(x as f64 >= wm);
            }
        }
        RowBlock {
            first_row,
            moic,
            wins,
        }
    }

    /// The blocks of a whole matrix at hand, in parallel.
    pub fn over(&self, matrix: &[f32]) -> Vec<RowBlock> {
        matrix
            .par_chunks(ROW_BLOCK * self.map.len().max(1))
            .enumerate()
            .map(|(i, rows)| self.block(i * ROW_BLOCK, rows))
            .collect()
    }
}

/// Each column's sum and p10 / p50 / p90 of a row-major matrix with `nb`
/// columns: a column-major copy (each column then lies contiguous for its
/// selection) made by blocks of rows in parallel, then the columns in parallel.
pub fn column_stats(matrix: &[f32], nb: usize) -> ColumnStats {
    let s = matrix.len() / nb;
    let mut by_column = crate::pages::zeroed_f32(s * nb);
    let mut pieces: Vec<Vec<&mut [f32]>> = (0..s.div_ceil(ROW_BLOCK))
        .map(|_| Vec::with_capacity(nb))
        .collect();
    for column in by_column.chunks_mut(s) {
        for (block, piece) in column.chunks_mut(ROW_BLOCK).enumerate() {
            pieces[block].push(piece);
        }
    }
    matrix
        .par_chunks(ROW_BLOCK * nb)
        .zip(pieces.into_par_iter())
        .for_each(|(rows, mut dst)| {
            for (r, row) in rows.chunks_exact(nb).enumerate() {
                for (j, &x) in row.iter().enumerate() {
                    dst[j][r] = x;
                }
            }
        });
    let qs = [0.10, 0.50, 0.90];
    let (sums, deciles) = by_column
        .par_chunks(s)
        .map(|col| {
            let p = percentiles_f32(col, &qs);
            (
                col.iter().map(|&x| x as f64).sum::<f64>(),
                [p[0], p[1], p[2]],
            )
        })
        .unzip();
    ColumnStats { sums, deciles }
}

fn check_params(nb: usize, params: &StatsParams) -> Result<()> {
    if nb == 0 || params.weights.len() != nb {
        return Err(Error::InvalidArgument(format!(
            "portfolio statistics need {nb} weights, one per column, got {}",
            params.weights.len()
        )));
    }
    if params.histogram_bins == 0 || !(params.confidence > 0.0 && params.confidence < 1.0) {
        return Err(Error::InvalidArgument(
            "histogramBins must be at least 1 and confidence strictly between 0 and 1".into(),
        ));
    }
    Ok(())
}

/// Statistics of the portfolio with `params.weights` over `matrix`
/// (row-major, `names.len()` columns in the config's bucket order).
pub fn portfolio_stats(
    matrix: &[f32],
    names: &[String],
    params: &StatsParams,
) -> Result<PortfolioStats> {
    let nb = names.len();
    check_params(nb, params)?;
    if matrix.is_empty() || matrix.len() % nb != 0 {
        return Err(Error::InvalidArgument(format!(
            "portfolio statistics need a non-empty matrix of {nb} columns, got {} cells",
            matrix.len()
        )));
    }
    let identity: Vec<usize> = (0..nb).collect();
    let pass = RowPass::new(params, &identity);
    let (columns, blocks) = rayon::join(|| column_stats(matrix, nb), || pass.over(matrix));
    assemble(names, params, &identity, &columns, blocks)
}

/// The statistics from the row pass's blocks (covering every row once, in
/// any order) and the matrix's column statistics (stored order; `map` as in
/// [`RowPass::new`]). Results do not depend on how the rows were blocked.
pub fn assemble(
    names: &[String],
    params: &StatsParams,
    map: &[usize],
    columns: &ColumnStats,
    mut blocks: Vec<RowBlock>,
) -> Result<PortfolioStats> {
    let nb = names.len();
    check_params(nb, params)?;
    let mut seen = vec![false; nb];
    for &c in map {
        if c >= nb || std::mem::replace(&mut seen[c], true) {
            return Err(Error::Internal(format!(
                "portfolio statistics: column map {map:?} is not a permutation of {nb} columns"
            )));
        }
    }
    blocks.sort_unstable_by_key(|b| b.first_row);
    let s: usize = blocks.iter().map(|b| b.moic.len()).sum();
    let mut covered = 0;
    for b in &blocks {
        if b.first_row != covered {
            return Err(Error::Internal(format!(
                "portfolio statistics: rows from {covered} missing"
            )));
        }
        covered += b.moic.len();
    }
    if s == 0 || map.len() != nb || columns.sums.len() != nb || columns.deciles.len() != nb {
        return Err(Error::Internal(format!(
            "portfolio statistics: {s} rows, {} mapped and {} summarised columns for {nb} buckets",
            map.len(),
            columns.sums.len()
        )));
    }
    let mut moic = Vec::with_capacity(s);
    let mut col_wins = vec![0u64; nb];
    for b in &blocks {
        moic.extend_from_slice(&b.moic);
        for (n, w) in col_wins.iter_mut().zip(&b.wins) {
            *n += w;
        }
    }
    drop(blocks);
    let ordered = order_moic(&moic, params.confidence);

    let n = s as f64;
    let mean = moic.iter().sum::<f64>() / n;
    let std_dev = (moic.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    // `ordered` has every rank these read in place (see `order_moic`).
    let pct = |q: f64| percentile_sorted(&ordered, q);
    let percentiles = Percentiles {
        p1: pct(0.01),
        p5: pct(0.05),
        p10: pct(0.10),
        p25: pct(0.25),
        p50: pct(0.50),
        p75: pct(0.75),
        p90: pct(0.90),
        p95: pct(0.95),
        p99: pct(0.99),
    };
    let losses = moic.iter().filter(|&&m| m < 1.0).count();
    let (value_at_risk, conditional_value_at_risk) = var_cvar(&ordered, params.confidence);

    let buckets = names
        .iter()
        .zip(map)
        .map(|(name, &c)| BucketStats {
            name: name.clone(),
            mean: columns.sums[c] / n,
            p10: columns.deciles[c][0],
            p50: columns.deciles[c][1],
            p90: columns.deciles[c][2],
            winner_probability: col_wins[c] as f64 / n,
        })
        .collect();

    Ok(PortfolioStats {
        num_scenarios: s,
        weights: names
            .iter()
            .cloned()
            .zip(params.weights.iter().copied())
            .collect(),
        mean,
        std_dev,
        percentiles,
        loss_probability: losses as f64 / n,
        value_at_risk,
        conditional_value_at_risk,
        buckets,
        histogram: histogram(&moic, ordered[0], ordered[s - 1], params.histogram_bins),
    })
}

const MOIC_QS: [f64; 9] = [0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99];

/// A copy of M with the ranks the percentiles read, the least and greatest
/// (the histogram's range) and the lowest ranks up to [`var_cvar_reads`]
/// where sorting would put them: a few selections, then a sort of the worst
/// tail alone, instead of sorting all of M.
fn order_moic(moic: &[f64], confidence: f64) -> Vec<f64> {
    let s = moic.len();
    let mut ordered = moic.to_vec();
    let tail = var_cvar_reads(s, confidence);
    let mut ranks = quantile_ranks(s, &MOIC_QS);
    ranks.extend([0, s - 1, tail]);
    select_ranks(&mut ordered, &ranks);
    ordered[..tail].sort_unstable_by(cmp_f64);
    ordered
}

/// The loss `L = max(0, 1 - M)` of the scenario at ascending rank `i` of L,
/// read from M sorted ascending (L is non-increasing in M, so L's order is
/// M's reversed; rounding in `1 - M` is monotone too).
fn loss_at(sorted_moic: &[f64], i: usize) -> f64 {
    (1.0 - sorted_moic[sorted_moic.len() - 1 - i]).max(0.0)
}

/// Value at risk (the `c` percentile of L) and CVaR, the minimum over t of
/// the Rockafellar-Uryasev function `F(t) = t + sum_s max(0, L_s - t) / ((1 - c) S)`.
///
/// F is convex and piecewise linear with its kinks at the losses, falling
/// (slope `1 - k / ((1 - c) S)`, k losses above t) until at most `(1 - c) S`
/// losses lie above t: its minimum is at the loss of ascending rank
/// `ceil(S - (1 - c) S) - 1`. F is evaluated there and at the two
/// neighbouring losses, so rounding in that rank cannot miss the minimum.
///
/// Only the lowest M matter, up to rank [`var_cvar_reads`]: `sorted_moic`
/// must be sorted that far; the values after it, none of them lower, may be
/// in any order.
pub fn var_cvar(sorted_moic: &[f64], c: f64) -> (f64, f64) {
    let s = sorted_moic.len();
    let (i, j, frac) = linear_ranks(s, c);
    let var = lerp(loss_at(sorted_moic, i), loss_at(sorted_moic, j), frac);
    let (tail, k) = cvar_rank(s, c);
    let f = |t: f64| {
        // Losses above t are the largest ones: the lowest M, from the start.
        let excess: f64 = (0..s)
            .map(|r| loss_at(sorted_moic, s - 1 - r))
            .take_while(|&l| l > t)
            .map(|l| l - t)
            .sum();
        t + excess / tail
    };
    let cvar = [k.saturating_sub(1), k, (k + 1).min(s - 1)]
        .into_iter()
        .map(|r| f(loss_at(sorted_moic, r)))
        .fold(f64::INFINITY, f64::min);
    (var, cvar)
}

/// `(1 - c) S` and the ascending loss rank where F is least (see [`var_cvar`]).
fn cvar_rank(s: usize, c: f64) -> (f64, usize) {
    let tail = (1.0 - c) * s as f64;
    (tail, ((s as f64 - tail).ceil() as usize).clamp(1, s) - 1)
}

/// The highest ascending rank of M that [`var_cvar`] reads for `s` scenarios
/// at confidence `c`: its least loss rank is the lower of VaR's and the
/// lowest CVaR candidate, and F stops at the first loss not above its t.
pub fn var_cvar_reads(s: usize, c: f64) -> usize {
    let (i, _, _) = linear_ranks(s, c);
    let (_, k) = cvar_rank(s, c);
    s - 1 - i.min(k.saturating_sub(1))
}

/// `bins` equal-width bins over [lo, hi], the least and greatest of `values`:
/// bin i counts `edges[i] <= x < edges[i + 1]`, the last bin also `x == hi`.
/// A value's bin is guessed by a division and settled against the edges
/// themselves, so rounding in the division cannot move it across an edge.
pub fn histogram(values: &[f64], lo: f64, hi: f64, bins: usize) -> Histogram {
    let width = (hi - lo) / bins as f64;
    let mut edges: Vec<f64> = (0..bins).map(|i| lo + width * i as f64).collect();
    edges.push(hi);
    let mut counts = vec![0u64; bins];
    for &x in values {
        // NaN when lo == hi: then every value is in the last bin.
        let guess = (x - lo) / width;
        let mut i = if guess.is_nan() {
            bins - 1
        } else {
            (guess as usize).min(bins - 1)
        };
        while i + 1 < bins && edges[i + 1] <= x {
            i += 1;
        }
        while i > 0 && edges[i] > x {
            i -= 1;
        }
        counts[i] += 1;
    }
    Histogram { edges, counts }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// M values with heavy ties, zeros of both signs and a spread tail.
    fn sample(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n)
            .map(|_| match next() % 4 {
                0 => (next() % 9) as f64 * 0.25,
                1 => -0.0,
                2 => 0.0,
                _ => (next() % 1_000_000) as f64 / 3e5,
            })
            .collect()
    }

    /// The histogram of sorted values by counting below each edge.
    fn histogram_by_sorting(sorted: &[f64], bins: usize) -> Vec<u64> {
        let h = histogram(&[], sorted[0], sorted[sorted.len() - 1], bins);
        let below = |i: usize| sorted.partition_point(|&x| x < h.edges[i]) as u64;
        (0..bins)
            .map(|i| {
                let hi = if i + 1 < bins {
                    below(i + 1)
                } else {
                    sorted.len() as u64
                };
                hi - if i > 0 { below(i) } else { 0 }
            })
            .collect()
    }

    #[test]
    fn selection_reads_what_a_full_sort_gives() {
        for (n, seed) in [(1, 1), (2, 2), (3, 3), (20, 4), (1001, 5), (20_000, 6)] {
            let m = sample(n, seed);
            let mut sorted = m.clone();
            sorted.sort_unstable_by(cmp_f64);
            for c in [1e-9, 0.05, 0.5, 0.7, 0.95, 0.99, 0.999_999] {
                let ordered = order_moic(&m, c);
                let qs = MOIC_QS.iter().chain(&[0.0, 1.0]);
                for &q in qs {
                    let (a, b) = (
                        percentile_sorted(&ordered, q),
                        percentile_sorted(&sorted, q),
                    );
                    assert_eq!(a.to_bits(), b.to_bits(), "n {n} q {q}");
                }
                let (v1, c1) = var_cvar(&ordered, c);
                let (v2, c2) = var_cvar(&sorted, c);
                assert_eq!(
                    (v1.to_bits(), c1.to_bits()),
                    (v2.to_bits(), c2.to_bits()),
                    "n {n} c {c}"
                );
                for bins in [1, 2, 7, 50] {
                    let h = histogram(&m, ordered[0], ordered[n - 1], bins);
                    assert_eq!(
                        h.counts,
                        histogram_by_sorting(&sorted, bins),
                        "n {n} bins {bins}"
                    );
                }
            }
        }
    }
}
