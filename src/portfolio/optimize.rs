//! The portfolio optimiser: a mixed-integer model over the first S scenarios
//! of a matrix, solved by HiGHS (natively, through the `highs` crate).
//!
//! The model (the fund server's design, made exact):
//! - weights `w_b` within their bounds, `sum w_b = 1`;
//! - maximise the expected portfolio MOIC `(1/S) sum_s M_s`, `M_s = sum_b m[s][b] w_b`;
//! - loss-probability cap: `y_s >= 1 - M_s`, `y_s >= 0`, `y_s <= z_s`, `z_s`
//!   binary, `(1/S) sum z_s <= maxLossProbability` (a big-M of 1 is valid as
//!   `M_s >= 0`);
//! - CVaR cap (Rockafellar-Uryasev): `u_s >= y_s - t`, `u_s >= 0`,
//!   `t + sum u_s / ((1 - c) S) <= max`;
//! - group sums within their bounds;
//! - expected winners: `sum_b (w_b capital / allInCost_b) p_b >= count`, `p_b`
//!   the share of the S scenarios where bucket b reaches the winner multiple.
//!
//! A second solve breaks ties among optimal portfolios: minimise
//! `sum_b |w_b - 1/B|` under the same constraints and `E >= E* - 0.001`.
//! An infeasible model with `relax` on is loosened one constraint at a time,
//! least important first (group bounds, expected winners, the CVaR cap, the
//! loss-probability cap), 10 % of the constraint's bound per round, at most 8
//! rounds; a constraint whose removal alone would not make the model feasible
//! is passed over without spending a round.
//!
//! Deterministic: one thread, a fixed random seed, no time-dependent choices
//! (unless the time limit is reached).

use std::ffi::CStr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use highs::{HighsModelStatus, HighsSolutionStatus, Model, RowProblem, Sense};

use super::stats::{portfolio_moic, portfolio_stats, var_cvar, PortfolioStats};
use super::StatsParams;
use crate::error::{Error, Result};

/// A group of buckets whose summed weight is bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub members: Vec<usize>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CvarCap {
    pub confidence: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Winners {
    pub count: f64,
    pub capital: f64,
    /// Per bucket (config order); `None`: the bucket adds no winners.
    pub all_in_cost: Vec<Option<f64>>,
    pub winner_multiple: f64,
}

/// Validated optimiser parameters (see [`super::options`] for the JS names).
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizeParams {
    pub scenarios: usize,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub groups: Vec<Group>,
    pub max_loss_probability: Option<f64>,
    pub cvar: Option<CvarCap>,
    pub min_expected_winners: Option<Winners>,
    pub relax: bool,
    pub mip_rel_gap: f64,
    pub time_limit: Duration,
    pub tweaks: Tweaks,
}

/// Reformulations that leave the optimum of the stated model unchanged but
/// may make it faster to find, each measured alone in `benches/optimizer.rs`
/// (README "Portfolio analytics" has the numbers). On by default: those
/// that paid on the bench model at S = 400 and 1,000 (the per-scenario big-M,
/// the incumbent and its floor, root cuts only, no RINS/RENS, the LP bound
/// tightening); the lazy scenarios paid at 400 but cost at 1,000 on top of
/// those, so they are off. (A quantile big-M from the count of losses
/// allowed and LP-probed cuts linking E to each z were measured too and gave
/// nothing on top of the LP bounds: README "Portfolio analytics".)
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tweaks {
    /// Hand the first solve's answer (its weights and losses, HiGHS completes
    /// the rest) to the tie-break as a starting solution.
    pub warm_start_tie_break: bool,
    /// A big-M per scenario, the largest loss the weight bounds allow, in
    /// place of 1.
    pub scenario_big_m: bool,
    /// Scenarios whose side of 1 the weight bounds decide: those that never
    /// lose leave the model (no y, z, u, rows; t >= 0), those that always
    /// lose get z = 1.
    pub fix_decided: bool,
    /// Row generation over the scenarios: solve with only the scenarios
    /// that were a loss in an earlier answer (at first: none, or the
    /// incumbent's losses), add those the answer makes a loss,
    /// repeat until none is left out. Leaving scenarios out only loosens the
    /// model (with `t >= 0`), so an answer with M_s >= 1 in all of them is
    /// an optimum of the whole model. Each round is a MIP solved from scratch.
    pub lazy_scenarios: bool,
    /// Before the first solve, a feasible portfolio by a heuristic (the LP
    /// relaxation; then the scenarios the portfolio does worst in, as many as
    /// the cap allows, are the losses and every other scenario is held at
    /// M_s >= 1, an LP; repeated from its answer, at most 5 rounds), handed
    /// to HiGHS as a start. Its E is a floor that keeps the optimum: the row
    /// `E >= floor` (the tie-break has `E >= E* - 0.001` already, used the
    /// same way), and under the floor each scenario's range of M_s decides
    /// it (never a loss: left out; always one: z_s = 1) and bounds its big-M.
    /// On the bench model most scenarios cannot lose under the floor (1,665
    /// of 2,000 at S = 2,000), so the MIP keeps a few hundred binaries.
    pub incumbent: bool,
    /// HiGHS separates cuts at the root only (`mip_allow_cut_separation_at_nodes`
    /// off): at the nodes of these models its cut rounds cost more than they prune.
    pub root_cuts_only: bool,
    /// HiGHS runs neither RINS nor RENS (`mip_heuristic_run_rins`/`_rens`).
    pub no_rins_rens: bool,
    /// Optimisation-based bound tightening: before each solve, each
    /// scenario's least and greatest M_s over the LP relaxation of the model
    /// (z in [0, 1], with the CVaR, group and floor rows; any LP bound holds
    /// for the MIP too), one warm-started LP per bound; then, as with the
    /// weight bounds' ranges, the scenarios that cannot lose leave the model,
    /// those that always lose get z = 1, and the big-M is 1 - least M_s.
    /// One round: a second one (on the relaxation the first tightened)
    /// decided next to nothing on the bench model and cost a third more.
    /// At S = 2,000 it leaves 184 of the 331 scenarios undecided under the
    /// heuristic's floor (139 of 297 in the tie-break), and the big-Ms
    /// 0.17 on average instead of 0.23.
    pub obbt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Optimal,
    Relaxed,
    Infeasible,
    TimeLimit,
}

impl Tweaks {
    /// The model exactly as stated: no reformulation at all.
    pub const NONE: Tweaks = Tweaks {
        warm_start_tie_break: false,
        scenario_big_m: false,
        fix_decided: false,
        lazy_scenarios: false,
        incumbent: false,
        root_cuts_only: false,
        no_rins_rens: false,
        obbt: false,
    };
}

impl Default for Tweaks {
    fn default() -> Self {
        Tweaks {
            warm_start_tie_break: false,
            scenario_big_m: true,
            fix_decided: false,
            lazy_scenarios: false,
            incumbent: true,
            root_cuts_only: true,
            no_rins_rens: true,
            obbt: true,
        }
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Optimal => "optimal",
            Status::Relaxed => "relaxed",
            Status::Infeasible => "infeasible",
            Status::TimeLimit => "time-limit",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relaxation {
    pub constraint: String,
    pub from: f64,
    pub to: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SolverInfo {
    pub name: &'static str,
    pub version: String,
    /// The MIP gap of the last solve that counted (the first solve's, or the tie-break's).
    pub mip_gap: f64,
    /// Branch-and-bound nodes over every solve of the call.
    pub nodes: i64,
    pub duration_ms: f64,
    /// The first solve's optimum E* (before the tie-break, which may give up
    /// 0.001 of it); NaN without one.
    pub objective: f64,
    /// Wall time of the solves up to the first optimum (relaxation rounds
    /// included), before the tie-break.
    pub first_solve_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Optimized {
    pub status: Status,
    /// Bucket names and weights in the config's order; empty when infeasible.
    pub weights: Vec<(String, f64)>,
    /// Over the S scenarios; `None` when there are no weights.
    pub expected_moic: Option<f64>,
    pub loss_probability: Option<f64>,
    pub conditional_value_at_risk: Option<f64>,
    pub relaxations: Vec<Relaxation>,
    /// The weights on every scenario of the matrix; `None` when there are no weights.
    pub validation: Option<PortfolioStats>,
    pub solver: SolverInfo,
}

/// How far the solver's answer may miss a row (HiGHS's own MIP feasibility
/// tolerance): a scenario the model holds at exactly `M_s = 1` can come back
/// as 0.9999999, and is not counted as a loss in the reported loss probability.
pub const FEASIBILITY_TOLERANCE: f64 = 1e-6;

/// The version of the HiGHS library linked in.
pub fn highs_version() -> String {
    // SAFETY: returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(highs_sys::Highs_version()) }
        .to_string_lossy()
        .into_owned()
}

/// The current bounds of the constraints the relaxation may loosen.
#[derive(Debug, Clone, PartialEq)]
struct Caps {
    group_min: Vec<Option<f64>>,
    group_max: Vec<Option<f64>>,
    winners: Option<f64>,
    cvar_max: Option<f64>,
    loss: Option<f64>,
}

/// One loosenable bound, in the order the relaxation takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cap {
    GroupMin(usize),
    GroupMax(usize),
    Winners,
    Cvar,
    Loss,
}

impl Caps {
    fn of(p: &OptimizeParams) -> Caps {
        Caps {
            group_min: p.groups.iter().map(|g| g.min).collect(),
            group_max: p.groups.iter().map(|g| g.max).collect(),
            winners: p.min_expected_winners.as_ref().map(|w| w.count),
            cvar_max: p.cvar.map(|c| c.max),
            loss: p.max_loss_probability,
        }
    }

    /// Least important first.
    fn order(&self) -> Vec<Cap> {
        let mut v = Vec::new();
        for i in 0..self.group_min.len() {
            if self.group_min[i].is_some() {
                v.push(Cap::GroupMin(i));
            }
            if self.group_max[i].is_some() {
                v.push(Cap::GroupMax(i));
            }
        }
        if self.winners.is_some() {
            v.push(Cap::Winners);
        }
        if self.cvar_max.is_some() {
            v.push(Cap::Cvar);
        }
        if self.loss.is_some() {
            v.push(Cap::Loss);
        }
        v
    }

    fn get(&self, c: Cap) -> Option<f64> {
        match c {
            Cap::GroupMin(i) => self.group_min[i],
            Cap::GroupMax(i) => self.group_max[i],
            Cap::Winners => self.winners,
            Cap::Cvar => self.cvar_max,
            Cap::Loss => self.loss,
        }
    }

    fn set(&mut self, c: Cap, v: Option<f64>) {
        match c {
            Cap::GroupMin(i) => self.group_min[i] = v,
            Cap::GroupMax(i) => self.group_max[i] = v,
            Cap::Winners => self.winners = v,
            Cap::Cvar => self.cvar_max = v,
            Cap::Loss => self.loss = v,
        }
    }

    /// Lower bounds loosen downwards, caps upwards.
    fn loosened(c: Cap, current: f64, original: f64) -> f64 {
        match c {
            Cap::GroupMin(_) | Cap::Winners => (current - 0.1 * original.abs()).max(0.0),
            _ => current + 0.1 * original.abs(),
        }
    }

    fn name(c: Cap, p: &OptimizeParams) -> String {
        match c {
            Cap::GroupMin(i) => format!("groups.{}.min", p.groups[i].name),
            Cap::GroupMax(i) => format!("groups.{}.max", p.groups[i].name),
            Cap::Winners => "minExpectedWinners.count".into(),
            Cap::Cvar => "cvar.max".into(),
            Cap::Loss => "maxLossProbability".into(),
        }
    }
}

/// The scenario data the model reads.
struct Data<'a> {
    /// The first S rows, row-major.
    rows: &'a [f32],
    nb: usize,
    s: usize,
    /// Column means over the S rows: the objective's coefficients.
    means: Vec<f64>,
    /// Winner shares over the S rows (with the winners' multiple).
    winner_share: Vec<f64>,
}

/// What one HiGHS run gave.
struct Run {
    status: HighsModelStatus,
    weights: Option<Vec<f64>>,
    objective: f64,
    mip_gap: f64,
    nodes: i64,
    /// The scenarios the model had (all without `lazy_scenarios`).
    scenarios: Vec<bool>,
}

/// Column positions of the model's variables.
struct Layout {
    w: Vec<highs::Col>,
    /// Per scenario, its z (when it has one).
    z: Vec<Option<highs::Col>>,
}

/// How `z` enters a model.
#[derive(Clone, Copy)]
enum ZMode<'a> {
    Binary,
    /// The LP relaxation.
    Relaxed,
    /// Fixed: 1 for the given scenarios, 0 for the rest (an LP).
    Fixed(&'a [bool]),
}

/// What one model has beyond the stated one.
struct Shape<'a> {
    /// The scenarios in the model (all without `lazy_scenarios`).
    scenarios: &'a [bool],
    /// A floor on E known to keep the optimum (a feasible portfolio's E):
    /// the row `E >= floor` (the tie-break has its own).
    floor: Option<f64>,
    /// Per scenario, the least and the most M_s the model allows (see
    /// `scenario_ranges`), `None` when no tweak reads them.
    ranges: Option<&'a [Range]>,
    z: ZMode<'a>,
}

fn build(
    d: &Data,
    p: &OptimizeParams,
    caps: &Caps,
    tie: Option<f64>,
    shape: &Shape,
) -> (RowProblem, Layout) {
    let scenarios = shape.scenarios;
    let mut pb = RowProblem::default();
    let (nb, s) = (d.nb, d.s);
    let w: Vec<highs::Col> = (0..nb)
        .map(|b| {
            let cost = if tie.is_some() { 0.0 } else { d.means[b] };
            pb.add_column(cost, p.lower[b]..=p.upper[b])
        })
        .collect();
    pb.add_row(1.0..=1.0, w.iter().map(|&c| (c, 1.0)));
    let need_y = caps.loss.is_some() || caps.cvar_max.is_some();
    let tw = p.tweaks;
    // What the weight bounds (and a floor on E) allow of each M_s (looser
    // than the model, so every conclusion drawn from it holds in the model too).
    let unknown = vec![
        Range {
            lo: 0.0,
            hi: f64::INFINITY,
        };
        s
    ];
    let ranges = shape.ranges.unwrap_or(&unknown);
    let decide = decides(tw, shape.ranges.is_some());
    // Never a loss whatever the weights: y_s = 0, z_s = 0, u_s = 0 (t >= 0).
    // A scenario left out (lazy_scenarios) is treated as one: valid for an
    // answer with M_s >= 1 there, which `run` checks.
    let safe: Vec<bool> = ranges
        .iter()
        .zip(scenarios)
        .map(|(r, &on)| !on || (decide && r.lo >= 1.0))
        .collect();
    // A loss whatever the weights (beyond the solver's tolerance): z_s = 1.
    let doomed: Vec<bool> = ranges
        .iter()
        .map(|r| decide && r.hi < 1.0 - FEASIBILITY_TOLERANCE)
        .collect();
    let kept: Vec<usize> = (0..s).filter(|&sc| !safe[sc]).collect();
    let mut z_cols: Vec<Option<highs::Col>> = vec![None; s];
    // M_s's terms.
    let moic = |sc: usize| {
        d.rows[sc * nb..(sc + 1) * nb]
            .iter()
            .zip(&w)
            .filter(|(&m, _)| m != 0.0)
            .map(|(&m, &c)| (c, m as f64))
    };
    // The loss: y_s >= 1 - M_s, y_s >= 0.
    let mut y: Vec<highs::Col> = Vec::with_capacity(kept.len());
    if need_y {
        for &sc in &kept {
            let ys = pb.add_column(0.0, 0.0..);
            y.push(ys);
            // y_s + M_s >= 1
            pb.add_row(1.0.., std::iter::once((ys, 1.0)).chain(moic(sc)));
        }
    }
    if let Some(cap) = caps.loss {
        let mut z = Vec::with_capacity(kept.len());
        for (i, &sc) in kept.iter().enumerate() {
            let range = match shape.z {
                _ if doomed[sc] => 1.0..=1.0,
                ZMode::Fixed(loss) if loss[sc] => 1.0..=1.0,
                ZMode::Fixed(_) => 0.0..=0.0,
                _ => 0.0..=1.0,
            };
            let zs = match shape.z {
                ZMode::Relaxed => pb.add_column(0.0, range),
                _ => pb.add_integer_column(0.0, range),
            };
            z.push(zs);
            z_cols[sc] = Some(zs);
            // y_s <= big_M z_s: 1 in the stated model; the largest loss the
            // bounds allow with the tweak (the same integer solutions, a
            // tighter relaxation).
            let big_m = if tw.scenario_big_m || tw.obbt {
                (1.0 - ranges[sc].lo).clamp(0.0, 1.0)
            } else {
                1.0
            };
            pb.add_row(..=0.0, [(y[i], 1.0), (zs, -big_m)]);
        }
        pb.add_row(..=count_bound(cap * s as f64), z.iter().map(|&c| (c, 1.0)));
    }
    if let (Some(max), Some(cv)) = (caps.cvar_max, p.cvar) {
        // t >= 0 loses nothing (losses are >= 0, so the minimum over t is at
        // t >= 0) and lets the scenarios that never lose drop out.
        let t = if tw.fix_decided || tw.lazy_scenarios || tw.incumbent || tw.obbt {
            pb.add_column(0.0, 0.0..=f64::INFINITY)
        } else {
            pb.add_column(0.0, f64::NEG_INFINITY..=f64::INFINITY)
        };
        let k = 1.0 / ((1.0 - cv.confidence) * s as f64);
        let mut f: Vec<(highs::Col, f64)> = vec![(t, 1.0)];
        for &ys in &y {
            let u = pb.add_column(0.0, 0.0..);
            // u_s - y_s + t >= 0
            pb.add_row(0.0.., [(u, 1.0), (ys, -1.0), (t, 1.0)]);
            f.push((u, k));
        }
        pb.add_row(..=max, f);
    }
    for (i, g) in p.groups.iter().enumerate() {
        let (lo, hi) = (caps.group_min[i], caps.group_max[i]);
        if lo.is_none() && hi.is_none() {
            continue;
        }
        let f: Vec<(highs::Col, f64)> = g.members.iter().map(|&b| (w[b], 1.0)).collect();
        pb.add_row(
            lo.unwrap_or(f64::NEG_INFINITY)..=hi.unwrap_or(f64::INFINITY),
            f,
        );
    }
    if let (Some(count), Some(win)) = (caps.winners, &p.min_expected_winners) {
        let f: Vec<(highs::Col, f64)> = (0..nb)
            .filter_map(|b| {
                let cost = win.all_in_cost[b]?;
                let coef = win.capital / cost * d.winner_share[b];
                (coef != 0.0).then_some((w[b], coef))
            })
            .collect();
        pb.add_row(count.., f);
    }
    if let (Some(floor), None) = (shape.floor, tie) {
        pb.add_row(floor.., w.iter().zip(&d.means).map(|(&c, &m)| (c, m)));
    }
    if let Some(floor) = tie {
        // sum_b mean_b w_b >= E* - 0.001; d_b >= |w_b - 1/B|, minimised.
        pb.add_row(floor.., w.iter().zip(&d.means).map(|(&c, &m)| (c, m)));
        let even = 1.0 / nb as f64;
        for &wb in &w {
            let dv = pb.add_column(1.0, 0.0..);
            pb.add_row(-even.., [(dv, 1.0), (wb, -1.0)]);
            pb.add_row(even.., [(dv, 1.0), (wb, 1.0)]);
        }
    }
    (pb, Layout { w, z: z_cols })
}

/// min of v.w over the weight bounds with sum w = 1: the lower bounds,
/// then the spare weight to the smallest v first.
fn least(v: &[f64], p: &OptimizeParams, order: &mut [usize]) -> f64 {
    let base: f64 = p.lower.iter().sum();
    let mut left = (1.0 - base).max(0.0);
    let mut sum: f64 = v.iter().zip(&p.lower).map(|(&x, &lo)| x * lo).sum();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    for &b in order.iter() {
        let take = (p.upper[b] - p.lower[b]).min(left);
        sum += take * v[b];
        left -= take;
        if left <= 0.0 {
            break;
        }
    }
    sum
}

/// Per scenario, the least and the most M_s the weight bounds allow with
/// `sum w = 1`, and with `E >= floor` when given (then bounds from the
/// Lagrangian dual of that row: every multiplier gives a valid bound, the
/// best of those tried is kept).
fn scenario_ranges(
    d: &Data,
    p: &OptimizeParams,
    floor: Option<f64>,
    deadline: Instant,
) -> Vec<Range> {
    let mut order: Vec<usize> = (0..d.nb).collect();
    let mut v = vec![0.0; d.nb];
    d.rows
        .chunks_exact(d.nb)
        .map(|row| {
            if Instant::now() >= deadline {
                // Out of time (about 170 sorts a row with a floor: seconds
                // at 100,000 scenarios): what any weights allow (cells are
                // at least 0), which decides nothing.
                return Range {
                    lo: 0.0,
                    hi: f64::INFINITY,
                };
            }
            // lo(l) = l floor + min (m - l mean).w; hi(l) = max (m + l mean).w - l floor.
            let f = floor.unwrap_or(0.0);
            let mut eval = |l: f64| -> (f64, f64) {
                for b in 0..d.nb {
                    v[b] = row[b] as f64 - l * d.means[b];
                }
                let lo = l * f + least(&v, p, &mut order);
                for b in 0..d.nb {
                    v[b] = -(row[b] as f64) - l * d.means[b];
                }
                let hi = -least(&v, p, &mut order) - l * f;
                (lo, hi)
            };
            let (lo, hi) = eval(0.0);
            let mut r = Range { lo, hi };
            let keep = |r: &mut Range, (lo, hi): (f64, f64)| {
                r.lo = r.lo.max(lo);
                r.hi = r.hi.min(hi);
            };
            if floor.is_some() {
                // Both are unimodal in ln l (concave / convex in l): golden
                // section over l in [e^-12, e^12], each separately.
                let g = (5f64.sqrt() - 1.0) / 2.0;
                for want_lo in [true, false] {
                    let score = |x: (f64, f64)| if want_lo { x.0 } else { -x.1 };
                    let (mut a, mut b) = (-12.0f64, 12.0f64);
                    let mut c = b - g * (b - a);
                    let mut e = a + g * (b - a);
                    let mut fc = eval(c.exp());
                    let mut fe = eval(e.exp());
                    for _ in 0..40 {
                        keep(&mut r, fc);
                        keep(&mut r, fe);
                        if score(fc) > score(fe) {
                            b = e;
                            e = c;
                            fe = fc;
                            c = b - g * (b - a);
                            fc = eval(c.exp());
                        } else {
                            a = c;
                            c = e;
                            fc = fe;
                            e = a + g * (b - a);
                            fe = eval(e.exp());
                        }
                    }
                    keep(&mut r, fc);
                    keep(&mut r, fe);
                }
            }
            r
        })
        .collect()
}

/// The LP over the weights alone: their bounds, `sum w = 1`, the groups and
/// `E >= floor` when given. Primal simplex from the last basis, no
/// presolve: it is solved for one objective after another.
fn weight_lp(d: &Data, p: &OptimizeParams, caps: &Caps, floor: Option<f64>) -> Result<Model> {
    let mut pb = RowProblem::default();
    let w: Vec<highs::Col> = (0..d.nb)
        .map(|b| pb.add_column(0.0, p.lower[b]..=p.upper[b]))
        .collect();
    pb.add_row(1.0..=1.0, w.iter().map(|&c| (c, 1.0)));
    if let Some(f) = floor {
        pb.add_row(f.., w.iter().zip(&d.means).map(|(&c, &m)| (c, m)));
    }
    for (i, g) in p.groups.iter().enumerate() {
        let (lo, hi) = (caps.group_min[i], caps.group_max[i]);
        if lo.is_none() && hi.is_none() {
            continue;
        }
        pb.add_row(
            lo.unwrap_or(f64::NEG_INFINITY)..=hi.unwrap_or(f64::INFINITY),
            g.members.iter().map(|&b| (w[b], 1.0)),
        );
    }
    let mut model = Model::try_new(pb)
        .map_err(|e| Error::Internal(format!("HiGHS refused the model: {e:?}")))?;
    model.set_threads(NonZeroU32::MIN);
    lp_options(&mut model)?;
    Ok(model)
}

/// Options for a model solved for one objective after another: each LP
/// starts from the last one's basis, which a new objective leaves primal
/// feasible, so primal simplex, and no presolve.
fn lp_options(model: &mut Model) -> Result<()> {
    model
        .try_set_option("presolve", "off")
        .map_err(|_| Error::Internal("HiGHS refused the option presolve".into()))?;
    model
        .try_set_option("simplex_strategy", 4)
        .map_err(|_| Error::Internal("HiGHS refused the option simplex_strategy".into()))
}

/// The least (`sense` 1) or greatest (-1) of M_s over the LP in `h` (whose
/// first nb columns are the weights, and only they have costs), `None`
/// unless solved to optimality.
fn lp_bound(
    h: *mut std::ffi::c_void,
    d: &Data,
    sc: usize,
    sense: highs_sys::HighsInt,
) -> Option<f64> {
    let cost: Vec<f64> = d.rows[sc * d.nb..(sc + 1) * d.nb]
        .iter()
        .map(|&m| m as f64)
        .collect();
    // SAFETY: a live HiGHS instance with at least nb columns; cost has nb entries.
    unsafe {
        highs_sys::Highs_changeColsCostByRange(
            h,
            0,
            d.nb as highs_sys::HighsInt - 1,
            cost.as_ptr(),
        );
        highs_sys::Highs_changeObjectiveSense(h, sense);
        highs_sys::Highs_run(h);
        // An optimum whose duals are off by more than a trace could be
        // above the true least (below the true greatest): not used.
        let mut dual_off = f64::INFINITY;
        highs_sys::Highs_getDoubleInfoValue(h, c"max_dual_infeasibility".as_ptr(), &mut dual_off);
        (highs_sys::Highs_getModelStatus(h) == 7 && dual_off <= 1e-9)
            .then(|| highs_sys::Highs_getObjectiveValue(h))
    }
}

/// Tweaks::obbt: narrows `ranges` to what LPs allow of each M_s still
/// undecided: first the LP over the weights and the groups (which the
/// Lagrangian ranges leave out; tiny LPs), then the LP relaxation of the
/// model (with its floor) for the scenarios still undecided.
fn tighten_ranges(
    d: &Data,
    p: &OptimizeParams,
    caps: &Caps,
    floor: Option<f64>,
    ranges: &mut [Range],
    deadline: Instant,
) -> Result<()> {
    if caps.loss.is_none() {
        return Ok(());
    }
    let undecided = |r: &Range| r.lo < 1.0 && r.hi >= 1.0 - FEASIBILITY_TOLERANCE;
    // An LP solved to optimality gives its objective within HiGHS's
    // tolerances: the bound kept is widened by this margin.
    let margin = 1e-6;
    let mut small = weight_lp(d, p, caps, floor)?;
    let h = small.as_mut_ptr();
    for sc in 0..d.s {
        if Instant::now() >= deadline {
            return Ok(());
        }
        if !undecided(&ranges[sc]) {
            continue;
        }
        if let Some(lo) = lp_bound(h, d, sc, 1) {
            ranges[sc].lo = ranges[sc].lo.max(lo - margin);
        }
        if !undecided(&ranges[sc]) {
            continue;
        }
        if let Some(hi) = lp_bound(h, d, sc, -1) {
            ranges[sc].hi = ranges[sc].hi.min(hi + margin);
        }
    }
    // One round: a second one, on the relaxation the first tightened,
    // decided next to nothing on the bench model and cost a third more.
    if Instant::now() >= deadline {
        return Ok(());
    }
    let before: Vec<Range> = ranges.to_vec();
    let all = vec![true; d.s];
    let shape = Shape {
        scenarios: &all,
        floor,
        ranges: Some(&before),
        z: ZMode::Relaxed,
    };
    let (pb, _) = build(d, p, caps, None, &shape);
    let mut model = Model::try_new(pb)
        .map_err(|e| Error::Internal(format!("HiGHS refused the model: {e:?}")))?;
    model.set_threads(NonZeroU32::MIN);
    lp_options(&mut model)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_secs_f64();
    model
        .try_set_option("time_limit", left.max(1e-3))
        .map_err(|_| Error::Internal("HiGHS refused the option time_limit".into()))?;
    let h = model.as_mut_ptr();
    let order: Vec<usize> = (0..d.s).filter(|&sc| undecided(&before[sc])).collect();
    // The scenarios some LP answer so far holds at M_s >= 1 (every answer
    // is a point of the relaxation): their greatest M_s is at least 1, it
    // cannot decide them, so its LP is skipped (a third of the LPs).
    let mut reached = vec![false; d.s];
    // SAFETY: a live HiGHS instance.
    let (ncol, nrow) = unsafe {
        (
            highs_sys::Highs_getNumCol(h) as usize,
            highs_sys::Highs_getNumRow(h) as usize,
        )
    };
    let (mut col, mut col_dual) = (vec![0.0; ncol], vec![0.0; ncol]);
    let (mut row, mut row_dual) = (vec![0.0; nrow], vec![0.0; nrow]);
    let mut mark = |reached: &mut [bool]| {
        // SAFETY: a live HiGHS instance; the buffers have its sizes.
        unsafe {
            highs_sys::Highs_getSolution(
                h,
                col.as_mut_ptr(),
                col_dual.as_mut_ptr(),
                row.as_mut_ptr(),
                row_dual.as_mut_ptr(),
            );
        }
        for &sc in &order {
            let m: f64 = d.rows[sc * d.nb..(sc + 1) * d.nb]
                .iter()
                .zip(&col[..d.nb])
                .map(|(&a, &x)| a as f64 * x)
                .sum();
            reached[sc] |= m >= 1.0;
        }
    };
    for &sc in &order {
        if Instant::now() >= deadline {
            break;
        }
        if let Some(lo) = lp_bound(h, d, sc, 1) {
            ranges[sc].lo = ranges[sc].lo.max(lo - margin);
            mark(&mut reached);
        }
        if !undecided(&ranges[sc]) || reached[sc] {
            continue;
        }
        if let Some(hi) = lp_bound(h, d, sc, -1) {
            ranges[sc].hi = ranges[sc].hi.min(hi + margin);
            mark(&mut reached);
        }
    }
    Ok(())
}

/// What the weight bounds (and a floor on E) allow of one M_s.
#[derive(Debug, Clone, Copy)]
struct Range {
    lo: f64,
    hi: f64,
}

/// Infeasible, as HiGHS may say it: its presolve reports "unbounded or
/// infeasible" without telling which, and this model cannot be unbounded
/// (the weights, hence the objectives, are bounded).
fn infeasible(s: HighsModelStatus) -> bool {
    matches!(
        s,
        HighsModelStatus::Infeasible | HighsModelStatus::UnboundedOrInfeasible
    )
}

/// `x` as a bound on a count of scenarios: a value within rounding of a
/// whole number is that number (0.1 * 400 must allow 40 scenarios).
fn count_bound(x: f64) -> f64 {
    let r = x.round();
    if (x - r).abs() <= 1e-9 * x.abs().max(1.0) {
        r
    } else {
        x
    }
}

/// A feasible portfolio found before the first solve (Tweaks::incumbent).
struct Start {
    weights: Vec<f64>,
    /// The scenarios it counts as losses (z_s = 1).
    losses: Vec<bool>,
    objective: f64,
}

/// Whether the model leaves out the scenarios its ranges say never lose
/// and fixes z = 1 where they say always (see `build`).
fn decides(tw: Tweaks, has_ranges: bool) -> bool {
    tw.fix_decided || ((tw.incumbent || tw.obbt) && has_ranges)
}

/// Puts back into the model (with the stated big-M of 1) each scenario it
/// left out as never a loss that the answer loses in (`moic`: its M_s per
/// scenario); returns how many.
/// Ranges from the weight bounds, the groups and the floor hold for every
/// portfolio of the smaller model, whose rows include them, so they never
/// miss; those from the LP relaxation of the whole model (Tweaks::obbt)
/// hold for its portfolios only, and the smaller model, a relaxation, may
/// answer outside them. An answer that loses in none of the scenarios left
/// out is a portfolio of the whole model, so its optimum.
fn readmit(moic: &[f64], ranges: Option<&mut [Range]>) -> usize {
    let Some(ranges) = ranges else { return 0 };
    let mut back = 0;
    for (r, &m) in ranges.iter_mut().zip(moic) {
        if r.lo >= 1.0 && m < 1.0 - FEASIBILITY_TOLERANCE {
            r.lo = 0.0;
            back += 1;
        }
    }
    back
}

/// Solves the model; with `lazy_scenarios` by row generation over the
/// scenarios, starting from `start` (the scenarios a previous solve ended
/// with) or from the scenarios `known` loses in. `known` is also handed to
/// HiGHS as a start and, with `incumbent`, gives the floor.
fn run(
    d: &Data,
    p: &OptimizeParams,
    caps: &Caps,
    tie: Option<f64>,
    start: Option<&[bool]>,
    known: Option<&Start>,
    deadline: Instant,
) -> Result<Run> {
    let tw = p.tweaks;
    // Valid for the optimum: the tie-break's own row, or a feasible
    // portfolio's E (less a rounding margin: it is feasible within HiGHS's tolerances).
    let floor = match tie {
        Some(floor) => Some(floor),
        None => known.map(|k| k.objective - 1e-6 * k.objective.abs().max(1.0)),
    }
    .filter(|_| tw.incumbent);
    let mut ranges = (tw.scenario_big_m || tw.fix_decided || tw.obbt || floor.is_some())
        .then(|| scenario_ranges(d, p, floor, deadline));
    if let (true, Some(r)) = (tw.obbt, ranges.as_mut()) {
        tighten_ranges(d, p, caps, floor, r, deadline)?;
    }
    let decide = decides(tw, ranges.is_some());
    let risk = caps.loss.is_some() || caps.cvar_max.is_some();
    // Without lazy scenarios every scenario is in from the start, and the
    // loop below only puts back those `readmit` finds.
    let mut on = match (start, known) {
        _ if !(tw.lazy_scenarios && risk) => vec![true; d.s],
        (Some(s), _) => s.to_vec(),
        (None, Some(k)) => portfolio_moic(d.rows, &k.weights)
            .iter()
            .zip(&k.losses)
            .map(|(&m, &l)| l || m < 1.0)
            .collect(),
        (None, None) => vec![false; d.s],
    };
    let mut nodes = 0;
    loop {
        let shape = Shape {
            scenarios: &on,
            floor,
            ranges: ranges.as_deref(),
            z: ZMode::Binary,
        };
        let mut r = run_once(d, p, caps, tie, &shape, known, deadline)?;
        nodes += r.nodes;
        r.nodes = nodes;
        let Some(w) = &r.weights else { return Ok(r) };
        let moic = portfolio_moic(d.rows, w);
        let mut added = readmit(&moic, ranges.as_deref_mut().filter(|_| decide));
        for (sc, &m) in moic.iter().enumerate() {
            if !on[sc] && m < 1.0 {
                on[sc] = true;
                added += 1;
            }
        }
        if added == 0 {
            return Ok(r);
        }
        if r.status != HighsModelStatus::Optimal {
            // Out of time with an answer that loses in a scenario left out:
            // not an answer to the whole model. The start, when there is
            // one, is (it was found on every scenario).
            r.weights = known.map(|k| k.weights.clone());
            r.objective = known.map_or(f64::NAN, |k| k.objective);
            r.mip_gap = f64::INFINITY;
            return Ok(r);
        }
    }
}

/// A feasible portfolio (see Tweaks::incumbent), or `None`.
fn heuristic(
    d: &Data,
    p: &OptimizeParams,
    caps: &Caps,
    deadline: Instant,
) -> Result<Option<Start>> {
    let Some(cap) = caps.loss else {
        return Ok(None);
    };
    let allowed = count_bound(cap * d.s as f64).floor() as usize;
    let all = vec![true; d.s];
    let ranges = p
        .tweaks
        .scenario_big_m
        .then(|| scenario_ranges(d, p, None, deadline));
    let relaxed = Shape {
        scenarios: &all,
        floor: None,
        ranges: ranges.as_deref(),
        z: ZMode::Relaxed,
    };
    let lp = run_once(d, p, caps, None, &relaxed, None, deadline)?;
    let Some(mut w) = lp.weights else {
        return Ok(None);
    };
    let mut best: Option<Start> = None;
    let mut tried: Vec<Vec<bool>> = Vec::new();
    for _ in 0..5 {
        if Instant::now() >= deadline {
            break;
        }
        // The scenarios the portfolio does worst in are the losses.
        let moic = portfolio_moic(d.rows, &w);
        let mut by_moic: Vec<usize> = (0..d.s).collect();
        by_moic.sort_by(|&a, &b| moic[a].total_cmp(&moic[b]).then(a.cmp(&b)));
        let mut losses = vec![false; d.s];
        for &sc in by_moic.iter().take(allowed) {
            losses[sc] = true;
        }
        if tried.contains(&losses) {
            break;
        }
        let r = run_once(
            d,
            p,
            caps,
            None,
            &Shape {
                z: ZMode::Fixed(&losses),
                ..relaxed
            },
            None,
            deadline,
        )?;
        tried.push(losses.clone());
        let (HighsModelStatus::Optimal, Some(next)) = (r.status, r.weights) else {
            break;
        };
        if best.as_ref().map_or(true, |b| r.objective > b.objective) {
            best = Some(Start {
                weights: next.clone(),
                losses,
                objective: r.objective,
            });
        }
        w = next;
    }
    Ok(best)
}

fn run_once(
    d: &Data,
    p: &OptimizeParams,
    caps: &Caps,
    tie: Option<f64>,
    shape: &Shape,
    known: Option<&Start>,
    deadline: Instant,
) -> Result<Run> {
    if Instant::now() >= deadline {
        // Out of time before this solve: at tens of thousands of scenarios
        // building the model alone takes longer than a short limit. The
        // best portfolio known (a start that fits the model) or none.
        return Ok(Run {
            status: HighsModelStatus::ReachedTimeLimit,
            weights: known.map(|k| k.weights.clone()),
            objective: known.map_or(f64::NAN, |k| k.objective),
            mip_gap: f64::INFINITY,
            nodes: 0,
            scenarios: shape.scenarios.to_vec(),
        });
    }
    let (pb, layout) = build(d, p, caps, tie, shape);
    let sense = if tie.is_some() {
        Sense::Minimise
    } else {
        Sense::Maximise
    };
    let mut model = Model::try_new(pb)
        .map_err(|e| Error::Internal(format!("HiGHS refused the model: {e:?}")))?;
    model.set_sense(sense);
    model.set_threads(NonZeroU32::MIN);
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_secs_f64();
    for (name, value) in [
        ("mip_rel_gap", p.mip_rel_gap),
        ("time_limit", left.max(1e-3)),
    ] {
        model
            .try_set_option(name, value)
            .map_err(|_| Error::Internal(format!("HiGHS refused the option {name}")))?;
    }
    let tw = p.tweaks;
    for (name, value) in [
        ("random_seed", None),
        (
            "mip_allow_cut_separation_at_nodes",
            Some(!tw.root_cuts_only),
        ),
        ("mip_heuristic_run_rins", Some(!tw.no_rins_rens)),
        ("mip_heuristic_run_rens", Some(!tw.no_rins_rens)),
    ] {
        let set = match value {
            None => model.try_set_option(name, 0),
            Some(on) => model.try_set_option(name, on),
        };
        set.map_err(|_| Error::Internal(format!("HiGHS refused the option {name}")))?;
    }
    if let Some(k) = known {
        // The weights and every z: HiGHS completes the rest with an LP (so
        // the start fits whichever scenarios this model keeps).
        let mut index: Vec<highs_sys::HighsInt> = Vec::new();
        let mut value: Vec<f64> = Vec::new();
        for (c, &x) in layout.w.iter().zip(&k.weights) {
            index.push(c.index() as highs_sys::HighsInt);
            value.push(x);
        }
        for (c, &l) in layout.z.iter().zip(&k.losses) {
            if let Some(c) = c {
                index.push(c.index() as highs_sys::HighsInt);
                value.push(if l { 1.0 } else { 0.0 });
            }
        }
        // SAFETY: a live HiGHS instance; index and value have the same length.
        // A start HiGHS refuses only costs the hint.
        unsafe {
            highs_sys::Highs_setSparseSolution(
                model.as_mut_ptr(),
                index.len() as highs_sys::HighsInt,
                index.as_ptr(),
                value.as_ptr(),
            );
        }
    }
    let solved = model
        .try_solve()
        .map_err(|e| Error::Internal(format!("HiGHS failed: {e:?}")))?;
    let status = solved.status();
    let has_solution = solved.primal_solution_status() == HighsSolutionStatus::Feasible;
    let weights = has_solution.then(|| {
        let solution = solved.get_solution();
        layout
            .w
            .iter()
            .map(|c| solution.columns()[c.index()])
            .collect()
    });
    let mut nodes: i64 = 0;
    // SAFETY: a live HiGHS instance and a NUL-terminated known info name.
    unsafe {
        highs_sys::Highs_getInt64InfoValue(solved.as_ptr(), c"mip_node_count".as_ptr(), &mut nodes);
    }
    Ok(Run {
        status,
        weights,
        objective: solved.objective_value(),
        mip_gap: solved.double_info_value(c"mip_gap").unwrap_or(f64::NAN),
        nodes: nodes.max(0),
        scenarios: shape.scenarios.to_vec(),
    })
}

/// Solves the model for `matrix` (row-major, `names.len()` columns in the
/// config's order) and evaluates the answer on every scenario.
pub fn optimize(matrix: &[f32], names: &[String], p: &OptimizeParams) -> Result<Optimized> {
    let started = Instant::now();
    let deadline = started + p.time_limit;
    let nb = names.len();
    let total_rows = matrix.len() / nb.max(1);
    if p.scenarios == 0 || p.scenarios > total_rows {
        return Err(Error::InvalidArgument(format!(
            "scenarios: expected 1 to {total_rows} (the matrix's rows), got {}",
            p.scenarios
        )));
    }
    let rows = &matrix[..p.scenarios * nb];
    let s = p.scenarios;
    let wm = p.min_expected_winners.as_ref().map(|w| w.winner_multiple);
    let mut means = vec![0.0; nb];
    let mut wins = vec![0usize; nb];
    for row in rows.chunks_exact(nb) {
        for b in 0..nb {
            means[b] += row[b] as f64;
            if let Some(wm) = wm {
                wins[b] += usize::from(row[b] as f64 >= wm);
            }
        }
    }
    let d = Data {
        rows,
        nb,
        s,
        means: means.iter().map(|m| m / s as f64).collect(),
        winner_share: wins.iter().map(|&c| c as f64 / s as f64).collect(),
    };
    let original = Caps::of(p);
    let mut caps = original.clone();
    let mut relaxations = Vec::new();
    let mut nodes = 0i64;
    let known = if p.tweaks.incumbent {
        heuristic(&d, p, &caps, deadline)?
    } else {
        None
    };
    let mut first = run(&d, p, &caps, None, None, known.as_ref(), deadline)?;
    nodes += first.nodes;
    if infeasible(first.status) && p.relax {
        let order = caps.order();
        let mut rounds = 0;
        let mut at = 0;
        while infeasible(first.status) && rounds < 8 && at < order.len() {
            if Instant::now() >= deadline {
                // Not known to be infeasible once loosened: out of time.
                first.status = HighsModelStatus::ReachedTimeLimit;
                break;
            }
            let c = order[at];
            let orig = original.get(c).unwrap_or(0.0);
            // Would dropping this bound (with the ones before it as they are) help at all?
            let mut without = caps.clone();
            without.set(c, None);
            let probe = run(&d, p, &without, None, None, None, deadline)?;
            nodes += probe.nodes;
            if probe.status == HighsModelStatus::ReachedTimeLimit {
                first.status = probe.status;
                break;
            }
            if infeasible(probe.status) || orig == 0.0 {
                at += 1;
                continue;
            }
            if Instant::now() >= deadline {
                // The loosening would not be solved.
                first.status = HighsModelStatus::ReachedTimeLimit;
                break;
            }
            let from = caps.get(c).unwrap_or(orig);
            let to = Caps::loosened(c, from, orig);
            caps.set(c, Some(to));
            relaxations.push(Relaxation {
                constraint: Caps::name(c, p),
                from,
                to,
            });
            rounds += 1;
            first = run(&d, p, &caps, None, None, None, deadline)?;
            nodes += first.nodes;
            if Instant::now() >= deadline {
                if infeasible(first.status) {
                    // Still infeasible and out of time to loosen further.
                    first.status = HighsModelStatus::ReachedTimeLimit;
                }
                break;
            }
        }
    }
    let status = match first.status {
        HighsModelStatus::Optimal if relaxations.is_empty() => Status::Optimal,
        HighsModelStatus::Optimal => Status::Relaxed,
        s if infeasible(s) => Status::Infeasible,
        HighsModelStatus::ReachedTimeLimit => Status::TimeLimit,
        other => {
            return Err(Error::Internal(format!(
                "HiGHS ended with status {other:?}"
            )));
        }
    };
    let first_solve_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut weights = first
        .weights
        .clone()
        .filter(|_| status != Status::Infeasible);
    let mut mip_gap = first.mip_gap;
    if let (Some(_), Status::Optimal | Status::Relaxed) = (&weights, status) {
        let floor = first.objective - 0.001;
        // The first answer as the tie-break's start: its losses are the
        // scenarios below 1 beyond the tolerance (those within it may have z = 0).
        let tie_start = first
            .weights
            .as_ref()
            .filter(|_| p.tweaks.warm_start_tie_break)
            .map(|w| Start {
                weights: w.clone(),
                losses: portfolio_moic(rows, w)
                    .iter()
                    .map(|&m| m < 1.0 - FEASIBILITY_TOLERANCE)
                    .collect(),
                objective: first.objective,
            });
        let tie = run(
            &d,
            p,
            &caps,
            Some(floor),
            Some(&first.scenarios),
            tie_start.as_ref(),
            deadline,
        )?;
        nodes += tie.nodes;
        if let Some(t) = tie.weights {
            weights = Some(t);
            // Unknown when the tie-break ran out of time before it started
            // (its answer is then its start): the first solve's stands.
            if tie.mip_gap.is_finite() {
                mip_gap = tie.mip_gap;
            }
        }
    }
    let solver_info = |nodes| SolverInfo {
        name: "HiGHS",
        version: highs_version(),
        mip_gap,
        nodes,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        objective: if first.weights.is_some() {
            first.objective
        } else {
            f64::NAN
        },
        first_solve_ms,
    };
    // Infeasible, or out of time before any feasible portfolio: no weights.
    let Some(w) = weights else {
        return Ok(Optimized {
            status,
            weights: Vec::new(),
            expected_moic: None,
            loss_probability: None,
            conditional_value_at_risk: None,
            relaxations,
            validation: None,
            solver: solver_info(nodes),
        });
    };
    // Solver values within tolerance of a bound are put on it (-1e-12 is 0).
    let w: Vec<f64> = w
        .iter()
        .zip(p.lower.iter().zip(&p.upper))
        .map(|(&x, (&lo, &hi))| x.clamp(lo, hi))
        .collect();
    let confidence = p.cvar.map_or(0.95, |c| c.confidence);
    let moic = portfolio_moic(rows, &w);
    let mut sorted = moic.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    let (_, cvar) = var_cvar(&sorted, confidence);
    let stats_params = StatsParams {
        weights: w.clone(),
        confidence,
        winner_multiple: wm.unwrap_or(super::options::DEFAULT_WINNER_MULTIPLE),
        histogram_bins: super::options::DEFAULT_HISTOGRAM_BINS,
    };
    let validation = portfolio_stats(matrix, names, &stats_params)?;
    Ok(Optimized {
        status,
        weights: names.iter().cloned().zip(w.iter().copied()).collect(),
        expected_moic: Some(moic.iter().sum::<f64>() / s as f64),
        loss_probability: Some(
            moic.iter()
                .filter(|&&m| m < 1.0 - FEASIBILITY_TOLERANCE)
                .count() as f64
                / s as f64,
        ),
        conditional_value_at_risk: Some(cvar),
        relaxations,
        validation: Some(validation),
        solver: solver_info(nodes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_left_out_that_the_answer_loses_in_is_put_back() {
        // Two scenarios of two buckets; both ranges say "never a loss".
        let rows = [0.5f32, 2.0, 1.5, 1.5];
        let mut ranges = vec![Range { lo: 1.0, hi: 2.0 }, Range { lo: 1.2, hi: 2.0 }];
        // All in the first bucket: M_0 = 0.5, a loss; M_1 = 1.5.
        assert_eq!(
            readmit(&portfolio_moic(&rows, &[1.0, 0.0]), Some(&mut ranges)),
            1
        );
        assert_eq!((ranges[0].lo, ranges[1].lo), (0.0, 1.2));
        // Back in the model, it is not counted again; an even split loses nowhere.
        assert_eq!(
            readmit(&portfolio_moic(&rows, &[1.0, 0.0]), Some(&mut ranges)),
            0
        );
        let mut fresh = vec![Range { lo: 1.0, hi: 2.0 }; 2];
        assert_eq!(
            readmit(&portfolio_moic(&rows, &[0.5, 0.5]), Some(&mut fresh)),
            0
        );
        // Without ranges (nothing was left out) there is nothing to put back.
        assert_eq!(readmit(&portfolio_moic(&rows, &[1.0, 0.0]), None), 0);
    }
}
