//! The optimiser's model improvements, each measured alone and in
//! combinations on one model: 50 buckets x S scenarios of generator output
//! (S = 400 by default), a binding loss-probability cap and CVaR cap, two
//! group bounds (the `npm run bench` model's shape). Each variant must reach
//! the same optimum (within the MIP gap; checked at the end for the variants
//! that reached one): the improvements may only change how fast it is found.
//!
//! `cargo bench --bench optimizer -- [N] [s=400,1000] [v=0,12] [limit=60]`:
//! N runs per variant (default 2), the scenario counts, the variants by
//! their position (printed first; default all), the time limit in seconds
//! (default the model's 120). CPU time is the one to compare on a shared machine.

use std::time::Instant;

use scenario_matrix_cache::config::Value;
use scenario_matrix_cache::portfolio::optimize::{optimize, OptimizeParams, Status, Tweaks};
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = args
        .iter()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(2);
    let list = |key: &str| -> Vec<String> {
        args.iter()
            .filter_map(|a| a.strip_prefix(key))
            .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let sizes: Vec<usize> = list("s=").iter().map(|x| x.parse().unwrap()).collect();
    let sizes = if sizes.is_empty() { vec![400] } else { sizes };
    let only: Vec<usize> = list("v=").iter().map(|x| x.parse().unwrap()).collect();
    let limit = list("limit=").first().map(|x| x.parse::<f64>().unwrap());
    let cfg = bench_config();
    let m = generator::generate(&cfg, &key::canonical_key(&cfg)).matrix;
    let names: Vec<String> = cfg.buckets.iter().map(|b| b.name.clone()).collect();
    let base = OptimizeParams::from_value(
        &cfg,
        &Value::from_json(&serde_json::from_str(MODEL).unwrap()),
    )
    .unwrap();
    let none = Tweaks::NONE;
    let big_m = Tweaks {
        scenario_big_m: true,
        ..none
    };
    let lean = Tweaks {
        incumbent: true,
        root_cuts_only: true,
        no_rins_rens: true,
        ..big_m
    };
    // Each tweak alone on the stated model, each new one also on top of the
    // big-M per scenario (on by default since before), then combinations.
    let variants = [
        ("as stated", none),
        (
            "warm-started tie-break",
            Tweaks {
                warm_start_tie_break: true,
                ..none
            },
        ),
        ("big-M per scenario", big_m),
        (
            "decided scenarios fixed or dropped",
            Tweaks {
                fix_decided: true,
                ..none
            },
        ),
        (
            "lazy scenarios",
            Tweaks {
                lazy_scenarios: true,
                ..none
            },
        ),
        (
            "incumbent",
            Tweaks {
                incumbent: true,
                ..none
            },
        ),
        (
            "root cuts only",
            Tweaks {
                root_cuts_only: true,
                ..none
            },
        ),
        (
            "no RINS/RENS",
            Tweaks {
                no_rins_rens: true,
                ..none
            },
        ),
        (
            "big-M + lazy scenarios",
            Tweaks {
                lazy_scenarios: true,
                ..big_m
            },
        ),
        (
            "big-M + incumbent",
            Tweaks {
                incumbent: true,
                ..big_m
            },
        ),
        (
            "big-M + root cuts only",
            Tweaks {
                root_cuts_only: true,
                ..big_m
            },
        ),
        (
            "big-M + no RINS/RENS",
            Tweaks {
                no_rins_rens: true,
                ..big_m
            },
        ),
        ("big-M + incumbent + root cuts only + no RINS/RENS", lean),
        (
            "the same + lazy scenarios",
            Tweaks {
                lazy_scenarios: true,
                ..lean
            },
        ),
        ("defaults", Tweaks::default()),
        (
            "defaults + warm-started tie-break",
            Tweaks {
                warm_start_tie_break: true,
                ..Tweaks::default()
            },
        ),
        ("LP bound tightening", Tweaks { obbt: true, ..none }),
        (
            "defaults without LP bound tightening",
            Tweaks {
                obbt: false,
                ..Tweaks::default()
            },
        ),
    ];
    println!(
        "variants: {:?}",
        variants.iter().map(|v| v.0).enumerate().collect::<Vec<_>>()
    );
    println!("| variant | S | run | wall ms | CPU ms | first solve wall ms | first solve E* | loss probability | CVaR | nodes | gap | status |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut optima: Vec<(usize, &str, f64)> = Vec::new();
    for r in 0..runs {
        for (i, (name, tw)) in variants.into_iter().enumerate() {
            if !only.is_empty() && !only.contains(&i) {
                continue;
            }
            for &scenarios in &sizes {
                let p = OptimizeParams {
                    tweaks: tw,
                    scenarios,
                    time_limit: limit.map_or(base.time_limit, std::time::Duration::from_secs_f64),
                    ..base.clone()
                };
                let (t, c) = (Instant::now(), cpu_ms());
                let o = optimize(&m, &names, &p).unwrap();
                if o.status == Status::Optimal {
                    optima.push((scenarios, name, o.solver.objective));
                }
                println!(
                "| {name} | {scenarios} | {r} | {:.0} | {:.0} | {:.0} | {:.6} | {:?} | {:.4} | {} | {:.2e} | {} |",
                t.elapsed().as_secs_f64() * 1000.0,
                cpu_ms() - c,
                o.solver.first_solve_ms,
                o.solver.objective,
                o.loss_probability,
                o.conditional_value_at_risk.unwrap_or(f64::NAN),
                o.solver.nodes,
                o.solver.mip_gap,
                o.status.as_str()
            );
            }
        }
    }
    // Every variant must find the same optimum: each E* is within the MIP
    // gap below the true one, so two differ by at most the gap times E*.
    for &scenarios in &sizes {
        let e: Vec<&(usize, &str, f64)> = optima.iter().filter(|o| o.0 == scenarios).collect();
        let hi = e.iter().map(|o| o.2).fold(f64::NEG_INFINITY, f64::max);
        for o in &e {
            assert!(
                hi - o.2 <= base.mip_rel_gap * hi.abs() + 1e-9,
                "S = {scenarios}: {} found E* = {}, another variant {hi}",
                o.1,
                o.2
            );
        }
        println!(
            "S = {scenarios}: {} optimal runs, E* within the gap of {hi:.6}",
            e.len()
        );
    }
}
