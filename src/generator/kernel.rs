//! The cell kernel: turns counters into matrix cells for a run of rows.
//!
//! Owns the per-bucket constants, the row partition (chunks and blocks) and
//! the arithmetic of one cell. The partition depends only on the matrix shape,
//! never on threads, and every cell's draws depend only on its own row-major
//! index, so any block computed anywhere gives the same bytes.
//!
//! A cell of bucket b in scenario r is
//!   exp(ln xMin_b + ln(v) / (-alpha_b) + 0.5 sqrt(w_macro) M_r + 0.5 sqrt(w_sys + w_idio) N)
//! with v = 1 - u uniform in (0, 1] (so xMin v^(-1/alpha) is the Pareto base),
//! M_r the scenario's macro shock and N one standard normal per cell:
//! sqrt(ws) S + sqrt(wi) I with independent S, I ~ N(0, 1) has exactly the
//! distribution of sqrt(ws + wi) N, so one normal per cell replaces two.
//! Multiplying the base by exp(0.5 z) is adding logs, which needs one log and
//! one exp per cell and cannot produce NaN.
//!
//! For speed the work is staged over a chunk of about 1,024 cells: (1) the
//! 64-bit hashes, scalar (SSE2 has no 64-bit multiply); (2) Box-Muller on
//! word pairs; (3) the cell formula. Stages 2 and 3 are straight-line loops
//! over fixed-size arrays of f32/u32 that LLVM vectorises with plain SSE2.

use super::fastmath::{box_muller_f32, exp_f32, ln_f32, ln_f64, unit_open0_f32};
use super::rng::{draw, MACRO_BASE};
use crate::config::ScenarioConfig;

/// Most cells in one chunk (scratch arrays fit L1 comfortably).
const CHUNK_CELLS: usize = 1024;
const CHUNK_PAIRS: usize = CHUNK_CELLS / 2;
/// Most rows in one chunk (one bucket: 1,024 rows).
const CHUNK_ROWS: usize = CHUNK_CELLS;
/// Target cells per block, the unit of parallel work and of partial sums:
/// large enough that scheduling costs nothing, small enough (about 150 blocks
/// for 100,000 x 50) that two or more threads stay balanced.
const BLOCK_CELLS: usize = 32 * 1024;

/// ln xMin used for median 0: exp of it is 0, and it stays finite so no
/// inf - inf can arise.
const LN_ZERO: f32 = -1.0e30;
/// alpha for p90 == median (the degenerate calibration), as the spec fixes it.
const DEGENERATE_ALPHA: f64 = 100.0;
const LN_2: f64 = core::f64::consts::LN_2;
const LN_5: f64 = 1.609_437_912_434_100_3;

/// Everything a thread needs to fill any block of the matrix.
pub struct Plan {
    pub num_scenarios: usize,
    pub num_buckets: usize,
    seed: u64,
    /// Rows per chunk: even (so chunks start on an even cell index, where a
    /// Box-Muller pair starts) and `chunk_rows * num_buckets <= CHUNK_CELLS`.
    chunk_rows: usize,
    /// Rows per block: a multiple of `chunk_rows`.
    pub block_rows: usize,
    /// ln xMin and -1/alpha per cell of a full chunk (the bucket constants
    /// repeated `chunk_rows` times), so stage 3 is one flat loop even for few
    /// buckets.
    ln_xmin: Vec<f32>,
    neg_inv_alpha: Vec<f32>,
    /// 0.5 sqrt(w_macro) and 0.5 sqrt(w_systematic + w_idiosyncratic).
    half_macro: f32,
    half_cell: f32,
}

/// Per-bucket (ln xMin, 1/alpha), computed with the deterministic `ln_f64`.
/// alpha = ln 5 / ln(p90 / median), xMin = median 0.5^(1/alpha), so
/// 1/alpha = ln(p90 / median) / ln 5 and ln xMin = ln median - ln 2 / alpha.
pub fn bucket_constants(median: f64, p90: f64) -> (f64, f64) {
    if p90 == median {
        // Degenerate: alpha = 100 and xMin = median (not median 0.5^(1/100)).
        let ln_xmin = if median > 0.0 {
            ln_f64(median)
        } else {
            f64::NEG_INFINITY
        };
        return (ln_xmin, 1.0 / DEGENERATE_ALPHA);
    }
    let inv_alpha = ln_f64(p90 / median) / LN_5;
    (ln_f64(median) - LN_2 * inv_alpha, inv_alpha)
}

/// Scratch for one chunk; allocated once per block (zeroing it per chunk
/// would cost as much as a stage).
struct Scratch {
    w_radius: [u32; CHUNK_PAIRS],
    w_angle: [u32; CHUNK_PAIRS],
    w_pareto: [u32; CHUNK_CELLS],
    normal: [f32; CHUNK_CELLS],
    shift: [f32; CHUNK_CELLS],
    macro_shock: [f32; CHUNK_ROWS],
}

impl Plan {
    pub fn new(cfg: &ScenarioConfig, seed: u64) -> Plan {
        let nb = cfg.buckets.len();
        let ns = cfg.num_scenarios as usize;
        assert!((1..=CHUNK_CELLS / 2).contains(&nb), "bucket count {nb}");
        let chunk_rows = (CHUNK_CELLS / nb) & !1;
        let block_rows = chunk_rows * (BLOCK_CELLS / (chunk_rows * nb)).max(1);
        let mut ln_xmin = Vec::with_capacity(chunk_rows * nb);
        let mut neg_inv_alpha = Vec::with_capacity(chunk_rows * nb);
        let consts: Vec<(f32, f32)> = cfg
            .buckets
            .iter()
            .map(|b| {
                let (lx, ia) = bucket_constants(b.median, b.p90);
                let lx = if lx.is_finite() { lx as f32 } else { LN_ZERO };
                (lx, -(ia as f32))
            })
            .collect();
        for _ in 0..chunk_rows {
            for &(lx, nia) in &consts {
                ln_xmin.push(lx);
                neg_inv_alpha.push(nia);
            }
        }
        let w = cfg.correlation_weights;
        Plan {
            num_scenarios: ns,
            num_buckets: nb,
            seed,
            chunk_rows,
            block_rows,
            ln_xmin,
            neg_inv_alpha,
            half_macro: (0.5 * w.macro_.sqrt()) as f32,
            half_cell: (0.5 * (w.systematic + w.idiosyncratic).sqrt()) as f32,
        }
    }

    /// Fills the rows starting at `first_row` (a multiple of `block_rows`)
    /// into `out` (whole rows) and returns the block's column sums in f64,
    /// added row by row: a fixed order, so the means are reproducible.
    pub fn fill_block(&self, first_row: usize, out: &mut [f32]) -> Vec<f64> {
        debug_assert_eq!(first_row % self.block_rows, 0);
        let nb = self.num_buckets;
        let mut sums = vec![0.0f64; nb];
        let mut scratch = Scratch {
            w_radius: [0; CHUNK_PAIRS],
            w_angle: [0; CHUNK_PAIRS],
            w_pareto: [0; CHUNK_CELLS],
            normal: [0.0; CHUNK_CELLS],
            shift: [0.0; CHUNK_CELLS],
            macro_shock: [0.0; CHUNK_ROWS],
        };
        for (i, chunk) in out.chunks_mut(self.chunk_rows * nb).enumerate() {
            let r0 = first_row + i * self.chunk_rows;
            self.fill_chunk(r0, chunk, &mut scratch);
            for row in chunk.chunks_exact(nb) {
                for (acc, &v) in sums.iter_mut().zip(row) {
                    *acc += v as f64;
                }
            }
        }
        sums
    }

    /// Fills whole rows starting at the even row `r0` (at most `chunk_rows`).
    fn fill_chunk(&self, r0: usize, out: &mut [f32], s: &mut Scratch) {
        let nb = self.num_buckets;
        let len = out.len();
        let rows = len / nb;
        debug_assert!(r0 % 2 == 0 && rows <= self.chunk_rows && rows * nb == len);
        let seed = self.seed;

        // Stage 1: random words. Cell pair p (global cells 2p, 2p+1) takes
        // counter 2p for its two normals and 2p + 1 for its two Pareto
        // uniforms. With an odd cell count the last pair's second half is
        // computed and unused.
        let pairs = len.div_ceil(2);
        let p0 = (r0 * nb / 2) as u64;
        // `black_box` on the index keeps LLVM from vectorising this loop:
        // SSE2 has no 64-bit multiply, and the emulated one (three pmuludq
        // per product) measured ~8% slower overall than scalar `imul`.
        // It only affects speed, never values.
        for (p, ((wr, wa), wp)) in s.w_radius[..pairs]
            .iter_mut()
            .zip(&mut s.w_angle[..pairs])
            .zip(s.w_pareto[..2 * pairs].chunks_exact_mut(2))
            .enumerate()
        {
            let c = 2 * (p0 + core::hint::black_box(p) as u64);
            let h = draw(seed, c);
            *wr = (h >> 32) as u32;
            *wa = h as u32;
            let g = draw(seed, c + 1);
            wp[0] = (g >> 32) as u32;
            wp[1] = g as u32;
        }

        // Stage 2: one normal per cell, a Box-Muller pair per cell pair.
        for ((n, &wr), &wa) in s.normal[..2 * pairs]
            .chunks_exact_mut(2)
            .zip(&s.w_radius[..pairs])
            .zip(&s.w_angle[..pairs])
        {
            let (a, b) = box_muller_f32(wr, wa);
            n[0] = a;
            n[1] = b;
        }

        // Macro shocks: rows 2q and 2q+1 share the Box-Muller pair at
        // MACRO_BASE + q. Then the per-cell shift 0.5 sqrt(w_macro) M_row.
        let macro_pairs = rows.div_ceil(2);
        let q0 = (r0 / 2) as u64;
        for (q, m) in s.macro_shock[..2 * macro_pairs]
            .chunks_exact_mut(2)
            .enumerate()
        {
            let h = draw(seed, MACRO_BASE + q0 + q as u64);
            let (a, b) = box_muller_f32((h >> 32) as u32, h as u32);
            m[0] = a;
            m[1] = b;
        }
        for (row_shift, &m) in s.shift[..len]
            .chunks_exact_mut(nb)
            .zip(&s.macro_shock[..rows])
        {
            row_shift.fill(self.half_macro * m);
        }

        // Stage 3: the cells.
        let half_cell = self.half_cell;
        for (((o, &wp), (&n, &sh)), (&lx, &nia)) in out
            .iter_mut()
            .zip(&s.w_pareto[..len])
            .zip(s.normal[..len].iter().zip(&s.shift[..len]))
            .zip(self.ln_xmin[..len].iter().zip(&self.neg_inv_alpha[..len]))
        {
            let ln_v = ln_f32(unit_open0_f32(wp));
            let x = ((lx + nia * ln_v) + sh) + half_cell * n;
            *o = exp_f32(x);
        }
    }
}
