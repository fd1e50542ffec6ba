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
/// (README "Portfolio analytics" has the numbers). Only the per-scenario
/// big-M paid on the bench model, so it alone is on by default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tweaks {
    /// Hand the first solve's solution to the tie-break as a starting solution.
    pub warm_start_tie_break: bool,
    /// A big-M per scenario, the largest loss the weight bounds allow, in
    /// place of 1.
    pub scenario_big_m: bool,
    /// Scenarios whose side of 1 the weight bounds decide: those that never
    /// lose leave the model (no y, z, u, rows; t >= 0), those that always
    /// lose get z = 1.
    pub fix_decided: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Optimal,
    Relaxed,
    Infeasible,
    TimeLimit,
}

impl Default for Tweaks {
    fn default() -> Self {
        Tweaks {
            warm_start_tie_break: false,
            scenario_big_m: true,
            fix_decided: false,
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
    /// Every column's value (the tie-break's warm start).
    columns: Option<Vec<f64>>,
    objective: f64,
    mip_gap: f64,
    nodes: i64,
}

/// Column positions of the model's variables.
struct Layout {
    w: Vec<highs::Col>,
}

fn build(d: &Data, p: &OptimizeParams, caps: &Caps, tie: Option<f64>) -> (RowProblem, Layout) {
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
    // What the weight bounds alone allow of each M_s (looser than the model,
    // so every conclusion drawn from it holds in the model too).
    let ranges = if tw.scenario_big_m || tw.fix_decided {
        scenario_ranges(d, p)
    } else {
        vec![(0.0, f64::INFINITY); s]
    };
    // Never a loss whatever the weights: y_s = 0, z_s = 0, u_s = 0 (t >= 0).
    let safe: Vec<bool> = ranges
        .iter()
        .map(|r| tw.fix_decided && r.0 >= 1.0)
        .collect();
    // A loss whatever the weights (beyond the solver's tolerance): z_s = 1.
    let doomed: Vec<bool> = ranges
        .iter()
        .map(|r| tw.fix_decided && r.1 < 1.0 - FEASIBILITY_TOLERANCE)
        .collect();
    let mut y: Vec<Option<highs::Col>> = vec![None; s];
    if need_y {
        for (sc, row) in d.rows.chunks_exact(nb).enumerate() {
            if safe[sc] {
                continue;
            }
            let ys = pb.add_column(0.0, 0.0..);
            y[sc] = Some(ys);
            // y_s + M_s >= 1
            let mut f: Vec<(highs::Col, f64)> = Vec::with_capacity(nb + 1);
            f.push((ys, 1.0));
            f.extend(
                row.iter()
                    .zip(&w)
                    .filter(|(&m, _)| m != 0.0)
                    .map(|(&m, &c)| (c, m as f64)),
            );
            pb.add_row(1.0.., f);
        }
    }
    if let Some(cap) = caps.loss {
        let mut z = Vec::with_capacity(s);
        for sc in 0..s {
            let Some(ys) = y[sc] else { continue };
            let zs = if doomed[sc] {
                pb.add_integer_column(0.0, 1.0..=1.0)
            } else {
                pb.add_integer_column(0.0, 0.0..=1.0)
            };
            z.push(zs);
            // y_s <= big_M z_s: 1 in the stated model; the largest loss the
            // bounds allow with the tweak (the same integer solutions, a
            // tighter relaxation).
            let big_m = if tw.scenario_big_m {
                (1.0 - ranges[sc].0).clamp(0.0, 1.0)
            } else {
                1.0
            };
            pb.add_row(..=0.0, [(ys, 1.0), (zs, -big_m)]);
        }
        pb.add_row(..=count_bound(cap * s as f64), z.iter().map(|&c| (c, 1.0)));
    }
    if let (Some(max), Some(cv)) = (caps.cvar_max, p.cvar) {
        // t >= 0 loses nothing (losses are >= 0, so the minimum over t is at
        // t >= 0) and lets the scenarios that never lose drop out.
        let t = if tw.fix_decided {
            pb.add_column(0.0, 0.0..=f64::INFINITY)
        } else {
            pb.add_column(0.0, f64::NEG_INFINITY..=f64::INFINITY)
        };
        let k = 1.0 / ((1.0 - cv.confidence) * s as f64);
        let mut f: Vec<(highs::Col, f64)> = vec![(t, 1.0)];
        for ys in y.iter().flatten() {
            let u = pb.add_column(0.0, 0.0..);
            // u_s - y_s + t >= 0
            pb.add_row(0.0.., [(u, 1.0), (*ys, -1.0), (t, 1.0)]);
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
    (pb, Layout { w })
}

/// Per scenario, the least and the most M_s the weight bounds allow with
/// `sum w = 1` (lower bounds first, the rest to the lowest or highest cells).
fn scenario_ranges(d: &Data, p: &OptimizeParams) -> Vec<(f64, f64)> {
    let base: f64 = p.lower.iter().sum();
    let spare = (1.0 - base).max(0.0);
    d.rows
        .chunks_exact(d.nb)
        .map(|row| {
            let floor: f64 = row
                .iter()
                .zip(&p.lower)
                .map(|(&m, &lo)| m as f64 * lo)
                .sum();
            let mut order: Vec<usize> = (0..d.nb).collect();
            order.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
            let fill = |it: &mut dyn Iterator<Item = &usize>| {
                let (mut left, mut add) = (spare, 0.0);
                for &b in it {
                    let take = (p.upper[b] - p.lower[b]).min(left);
                    add += take * row[b] as f64;
                    left -= take;
                    if left <= 0.0 {
                        break;
                    }
                }
                add
            };
            (
                floor + fill(&mut order.iter()),
                floor + fill(&mut order.iter().rev()),
            )
        })
        .collect()
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

fn run(
    d: &Data,
    p: &OptimizeParams,
    caps: &Caps,
    tie: Option<(f64, &[f64])>,
    deadline: Instant,
) -> Result<Run> {
    let (pb, layout) = build(d, p, caps, tie.map(|t| t.0));
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
    model
        .try_set_option("random_seed", 0)
        .map_err(|_| Error::Internal("HiGHS refused the option random_seed".into()))?;
    if let (Some((_, start)), true) = (tie, p.tweaks.warm_start_tie_break) {
        warm_start(&mut model, &layout, start, d.nb);
    }
    let solved = model
        .try_solve()
        .map_err(|e| Error::Internal(format!("HiGHS failed: {e:?}")))?;
    let status = solved.status();
    let has_solution = solved.primal_solution_status() == HighsSolutionStatus::Feasible;
    let columns = has_solution.then(|| solved.get_solution().columns().to_vec());
    let weights = columns
        .as_ref()
        .map(|cols| layout.w.iter().map(|c| cols[c.index()]).collect());
    let mut nodes: i64 = 0;
    // SAFETY: a live HiGHS instance and a NUL-terminated known info name.
    unsafe {
        highs_sys::Highs_getInt64InfoValue(solved.as_ptr(), c"mip_node_count".as_ptr(), &mut nodes);
    }
    Ok(Run {
        status,
        weights,
        columns,
        objective: solved.objective_value(),
        mip_gap: solved.double_info_value(c"mip_gap").unwrap_or(f64::NAN),
        nodes: nodes.max(0),
    })
}

/// Starts the tie-break from the first solve's whole solution: the
/// tie-break's columns are the first solve's, then one `d_b` per bucket
/// (`|w_b - 1/B|`), so the start is complete and feasible (E = E* >= E* - 0.001).
fn warm_start(model: &mut Model, layout: &Layout, first: &[f64], nb: usize) {
    let even = 1.0 / nb as f64;
    let mut start = first.to_vec();
    start.extend(layout.w.iter().map(|c| (first[c.index()] - even).abs()));
    // A start HiGHS refuses only costs the hint.
    let _ = model.try_set_solution(Some(&start), None, None, None);
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
    let mut first = run(&d, p, &caps, None, deadline)?;
    nodes += first.nodes;
    if infeasible(first.status) && p.relax {
        let order = caps.order();
        let mut rounds = 0;
        let mut at = 0;
        while infeasible(first.status) && rounds < 8 && at < order.len() {
            let c = order[at];
            let orig = original.get(c).unwrap_or(0.0);
            // Would dropping this bound (with the ones before it as they are) help at all?
            let mut without = caps.clone();
            without.set(c, None);
            let probe = run(&d, p, &without, None, deadline)?;
            nodes += probe.nodes;
            if infeasible(probe.status) || orig == 0.0 {
                at += 1;
                continue;
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
            first = run(&d, p, &caps, None, deadline)?;
            nodes += first.nodes;
            if Instant::now() >= deadline {
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
        let start = first.columns.as_deref().unwrap_or(&[]);
        let tie = run(&d, p, &caps, Some((floor, start)), deadline)?;
        nodes += tie.nodes;
        if let Some(t) = tie.weights {
            weights = Some(t);
            mip_gap = tie.mip_gap;
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
