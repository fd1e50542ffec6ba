//! The optimiser's model improvements, each measured alone and all together
//! on one model: 50 buckets x 400 scenarios of generator output, a binding
//! loss-probability cap and CVaR cap, two group bounds (the `npm run bench`
//! model's shape). Each variant must reach the same optimum (within the MIP
//! gap): the improvements may only change how fast it is found.
//!
//! `cargo bench --bench optimizer` (`-- N` for N runs per variant, default 2).

use std::time::Instant;

use scenario_matrix_cache::config::Value;
use scenario_matrix_cache::portfolio::optimize::{optimize, OptimizeParams, Tweaks};
use scenario_matrix_cache::{generator, key, ScenarioConfig};

/// `configs.sized(5000, 50, 'bench-optimizer')` of bench/configs.js: the
/// matrix bench/optimizer.js solves over.
fn bench_config() -> ScenarioConfig {
    let buckets: Vec<String> = (0..50)
        .map(|b| {
            let median = 0.8 + f64::from(b % 10) * 0.15;
            let p90 = median * (2.0 + f64::from(b % 5) * 0.4);
            format!(
                r#"{{"name": "Bucket {b:02}", "capitalAllocation": 2, "moicCalibration": {{"median": {median}, "p90": {p90}}}}}"#
            )
        })
        .collect();
    let json = format!(
        r#"{{"fundId": "bench-optimizer", "taxonomyVersion": "bench-v1", "numScenarios": 5000, "buckets": [{}],
            "correlationWeights": {{"macro": 0.5, "systematic": 0.25, "idiosyncratic": 0.25}},
            "recycling": {{"enabled": true, "mode": "same-bucket", "reinvestmentRate": 0.8, "avgHoldingPeriod": 5, "fundLifetime": 10}}}}"#,
        buckets.join(",")
    );
    ScenarioConfig::from_json_str(&json).expect("bench config is valid")
}

const MODEL: &str = r#"{"scenarios": 400, "maxLossProbability": 0.02, "cvar": {"confidence": 0.95, "max": 0.1},
  "groups": [{"name": "early", "buckets": ["Bucket 00", "Bucket 01", "Bucket 02", "Bucket 03", "Bucket 04", "Bucket 05", "Bucket 06", "Bucket 07", "Bucket 08", "Bucket 09"], "min": 0.15},
             {"name": "late", "buckets": ["Bucket 40", "Bucket 41", "Bucket 42", "Bucket 43", "Bucket 44", "Bucket 45", "Bucket 46", "Bucket 47", "Bucket 48", "Bucket 49"], "max": 0.1}],
  "timeLimitMs": 120000}"#;

/// This process's CPU time (user + system, 10 ms ticks): the solver runs on
/// one thread, so CPU time is its work even on a machine busy with others.
fn cpu_ms() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        f.get(i)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) * 10.0
}

fn main() {
    let runs: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(2);
    let cfg = bench_config();
    let m = generator::generate(&cfg, &key::canonical_key(&cfg)).matrix;
    let names: Vec<String> = cfg.buckets.iter().map(|b| b.name.clone()).collect();
    let base = OptimizeParams::from_value(
        &cfg,
        &Value::from_json(&serde_json::from_str(MODEL).unwrap()),
    )
    .unwrap();
    let none = Tweaks {
        warm_start_tie_break: false,
        scenario_big_m: false,
        fix_decided: false,
    };
    let variants = [
        ("as stated", none),
        (
            "warm-started tie-break",
            Tweaks {
                warm_start_tie_break: true,
                ..none
            },
        ),
        (
            "big-M per scenario",
            Tweaks {
                scenario_big_m: true,
                ..none
            },
        ),
        (
            "decided scenarios fixed or dropped",
            Tweaks {
                fix_decided: true,
                ..none
            },
        ),
        (
            "big-M per scenario + decided scenarios",
            Tweaks {
                scenario_big_m: true,
                fix_decided: true,
                ..none
            },
        ),
        (
            "all three",
            Tweaks {
                warm_start_tie_break: true,
                scenario_big_m: true,
                fix_decided: true,
            },
        ),
    ];
    println!("| variant | run | wall ms | CPU ms | first solve wall ms | first solve E* | loss probability | CVaR | nodes | status |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in 0..runs {
        for (name, tw) in variants {
            let p = OptimizeParams {
                tweaks: tw,
                ..base.clone()
            };
            let (t, c) = (Instant::now(), cpu_ms());
            let o = optimize(&m, &names, &p).unwrap();
            println!(
                "| {name} | {r} | {:.0} | {:.0} | {:.0} | {:.6} | {:?} | {:.4} | {} | {} |",
                t.elapsed().as_secs_f64() * 1000.0,
                cpu_ms() - c,
                o.solver.first_solve_ms,
                o.solver.objective,
                o.loss_probability,
                o.conditional_value_at_risk.unwrap_or(f64::NAN),
                o.solver.nodes,
                o.status.as_str()
            );
        }
    }
}
