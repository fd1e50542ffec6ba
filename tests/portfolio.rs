//! Portfolio statistics against their definitions: small cases worked out by
//! hand, and a direct (slow, obvious) computation of every definition on
//! generated matrices.

mod common;
#[path = "common/sample.rs"]
mod sample;

use sample::{matrix, sample_config};
use scenario_matrix_cache::cache::{Cache, CacheOptions};
use scenario_matrix_cache::config::Value;
use scenario_matrix_cache::portfolio::{portfolio_stats, StatsParams};
use scenario_matrix_cache::tier::Source;
use scenario_matrix_cache::{key, ScenarioConfig};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|b| format!("Bucket {b:02}")).collect()
}

fn params(weights: &[f64], confidence: f64, winner: f64, bins: usize) -> StatsParams {
    let total: f64 = weights.iter().sum();
    StatsParams {
        weights: weights.iter().map(|w| w / total).collect(),
        confidence,
        winner_multiple: winner,
        histogram_bins: bins,
    }
}

fn close(a: f64, b: f64, what: &str) {
    let tol = 1e-12 * (1.0 + a.abs().max(b.abs()));
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

#[test]
fn two_buckets_by_hand() {
    // Rows (bucket 0, bucket 1); weights 0.75 / 0.25 give M = 0.5, 1.0, 1.625, 3.75.
    let m = [0.0f32, 2.0, 1.0, 1.0, 2.0, 0.5, 4.0, 3.0];
    let st = portfolio_stats(&m, &names(2), &params(&[3.0, 1.0], 0.95, 2.0, 2)).unwrap();
    assert_eq!(st.num_scenarios, 4);
    assert_eq!(st.weights[0], ("Bucket 00".to_string(), 0.75));
    close(st.mean, 6.875 / 4.0, "mean");
    close(st.std_dev, (6.13671875f64 / 4.0).sqrt(), "stdDev");
    // p50: h = 1.5 between 1.0 and 1.625; p10: h = 0.3 between 0.5 and 1.0.
    close(st.percentiles.p50, 1.3125, "p50");
    close(st.percentiles.p10, 0.65, "p10");
    close(st.percentiles.p99, 1.625 + 0.97 * (3.75 - 1.625), "p99");
    // Only M = 0.5 is below 1 (1.0 is not a loss).
    assert_eq!(st.loss_probability, 0.25);
    // L sorted: 0, 0, 0, 0.5; h = 2.85.
    close(st.value_at_risk, 0.85 * 0.5, "VaR");
    // The worst 5 % of 4 scenarios is a fifth of the worst one: its loss.
    close(st.conditional_value_at_risk, 0.5, "CVaR");
    // Columns (0, 1, 2, 4) and (2, 1, 0.5, 3).
    let b0 = &st.buckets[0];
    close(b0.mean, 1.75, "bucket 0 mean");
    close(b0.p10, 0.3, "bucket 0 p10");
    close(b0.p50, 1.5, "bucket 0 p50");
    close(b0.p90, 3.4, "bucket 0 p90");
    assert_eq!(b0.winner_probability, 0.5);
    close(st.buckets[1].p50, 1.5, "bucket 1 p50");
    assert_eq!(st.buckets[1].winner_probability, 0.5);
    // Two bins over [0.5, 3.75].
    assert_eq!(st.histogram.edges, vec![0.5, 2.125, 3.75]);
    assert_eq!(st.histogram.counts, vec![3, 1]);

    // At 50 % confidence the worst half (0.5 and 0) averages 0.25.
    let half = portfolio_stats(&m, &names(2), &params(&[3.0, 1.0], 0.5, 2.0, 2)).unwrap();
    close(half.conditional_value_at_risk, 0.25, "CVaR at 0.5");
    close(half.value_at_risk, 0.0, "VaR at 0.5");
}

#[test]
fn a_boundary_scenario_counts_fractionally_in_cvar() {
    // Losses 0.9, 0.5, 0.1, 0, 0 (M = 0.1, 0.5, 0.9, 1, 2); at 70 %
    // confidence the worst 1.5 scenarios: (0.9 + 0.5 / 2) / 1.5.
    let m = [0.1f32, 0.5, 0.9, 1.0, 2.0];
    let st = portfolio_stats(&m, &names(1), &params(&[1.0], 0.7, 10.0, 3)).unwrap();
    // (The cells are f32: 0.1 is 0.1f32, and M is computed from it.)
    let worst = 1.0 - 0.1f32 as f64;
    close(
        st.conditional_value_at_risk,
        (worst + 0.5 / 2.0) / 1.5,
        "CVaR",
    );
    // Every value in one bucket equal: degenerate histogram, all in the last bin.
    let flat = portfolio_stats(&[2.0f32; 6], &names(1), &params(&[1.0], 0.9, 2.0, 4)).unwrap();
    assert_eq!(flat.histogram.counts, vec![0, 0, 0, 6]);
    assert_eq!(flat.std_dev, 0.0);
    assert_eq!(flat.buckets[0].winner_probability, 1.0);
    assert_eq!(flat.conditional_value_at_risk, 0.0);
}

/// Every definition computed the obvious way.
struct Direct {
    mean: f64,
    std_dev: f64,
    pcts: Vec<f64>,
    loss_probability: f64,
    var: f64,
    cvar: f64,
    col: Vec<(f64, [f64; 3], f64)>,
    counts: Vec<u64>,
    edges: Vec<f64>,
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

fn direct(m: &[f32], nb: usize, p: &StatsParams) -> Direct {
    let s = m.len() / nb;
    let moic: Vec<f64> = m
        .chunks(nb)
        .map(|r| r.iter().zip(&p.weights).map(|(&x, w)| w * x as f64).sum())
        .collect();
    let mean = moic.iter().sum::<f64>() / s as f64;
    let var = moic.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / s as f64;
    let mut sorted = moic.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let qs = [0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99];
    let losses: Vec<f64> = moic.iter().map(|x| (1.0 - x).max(0.0)).collect();
    let mut sl = losses.clone();
    sl.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let tail = (1.0 - p.confidence) * s as f64;
    // The minimum of F over every candidate t (each loss, and 0).
    let cvar = losses
        .iter()
        .chain([0.0].iter())
        .map(|&t| t + losses.iter().map(|l| (l - t).max(0.0)).sum::<f64>() / tail)
        .fold(f64::INFINITY, f64::min);
    let col = (0..nb)
        .map(|b| {
            let mut c: Vec<f64> = m.iter().skip(b).step_by(nb).map(|&x| x as f64).collect();
            let mean = c.iter().sum::<f64>() / s as f64;
            let wins = c.iter().filter(|&&x| x >= p.winner_multiple).count() as f64 / s as f64;
            c.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (mean, [pct(&c, 0.1), pct(&c, 0.5), pct(&c, 0.9)], wins)
        })
        .collect();
    let (lo, hi) = (sorted[0], sorted[s - 1]);
    let bins = p.histogram_bins;
    let mut edges: Vec<f64> = (0..bins)
        .map(|i| lo + (hi - lo) / bins as f64 * i as f64)
        .collect();
    edges.push(hi);
    let mut counts = vec![0u64; bins];
    for &x in &moic {
        let i = (0..bins).rev().find(|&i| x >= edges[i]).unwrap_or(0);
        counts[i] += 1;
    }
    Direct {
        mean,
        std_dev: var.sqrt(),
        pcts: qs.iter().map(|&q| pct(&sorted, q)).collect(),
        loss_probability: moic.iter().filter(|&&x| x < 1.0).count() as f64 / s as f64,
        var: pct(&sl, p.confidence),
        cvar,
        col,
        counts,
        edges,
    }
}

#[test]
fn agrees_with_a_direct_computation_of_every_definition() {
    for (rows, cols, seed, conf, winner, bins) in [
        (1000u32, 5u32, 1u64, 0.95, 3.0, 50usize),
        (777, 12, 2, 0.9, 2.0, 7),
        (4099, 3, 3, 0.99, 5.0, 1),
        (64, 50, 4, 0.5, 1.5, 13),
    ] {
        let m = matrix(rows, cols, seed);
        let nb = cols as usize;
        // Uneven weights, one bucket left out.
        let mut w: Vec<f64> = (0..nb).map(|b| 1.0 + (b % 3) as f64).collect();
        w[nb / 2] = 0.0;
        if nb == 1 {
            w[0] = 1.0;
        }
        let p = params(&w, conf, winner, bins);
        let st = portfolio_stats(&m, &names(nb), &p).unwrap();
        let d = direct(&m, nb, &p);
        let case = format!("{rows}x{cols}");
        close(st.mean, d.mean, &format!("{case} mean"));
        close(st.std_dev, d.std_dev, &format!("{case} stdDev"));
        let got = &st.percentiles;
        for (g, e) in [
            got.p1, got.p5, got.p10, got.p25, got.p50, got.p75, got.p90, got.p95, got.p99,
        ]
        .iter()
        .zip(&d.pcts)
        {
            close(*g, *e, &format!("{case} percentile"));
        }
        assert_eq!(st.loss_probability, d.loss_probability, "{case}");
        close(st.value_at_risk, d.var, &format!("{case} VaR"));
        close(
            st.conditional_value_at_risk,
            d.cvar,
            &format!("{case} CVaR"),
        );
        for (b, (mean, q, wins)) in st.buckets.iter().zip(&d.col) {
            close(b.mean, *mean, &format!("{case} {} mean", b.name));
            close(b.p10, q[0], &format!("{case} {} p10", b.name));
            close(b.p50, q[1], &format!("{case} {} p50", b.name));
            close(b.p90, q[2], &format!("{case} {} p90", b.name));
            assert_eq!(b.winner_probability, *wins, "{case} {}", b.name);
        }
        assert_eq!(st.histogram.counts, d.counts, "{case}");
        assert_eq!(st.histogram.edges, d.edges, "{case}");
        assert_eq!(st.histogram.counts.iter().sum::<u64>(), u64::from(rows));
    }
}

#[test]
fn the_same_bits_on_one_thread_and_on_all() {
    let m = matrix(20_000, 20, 9);
    let p = params(&[1.0; 20], 0.95, 4.0, 50);
    let all = portfolio_stats(&m, &names(20), &p).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let one = pool.install(|| portfolio_stats(&m, &names(20), &p).unwrap());
    assert_eq!(format!("{all:?}"), format!("{one:?}"));
}

fn options(json: &str) -> Value {
    Value::from_json(&serde_json::from_str(json).unwrap())
}

#[test]
fn options_are_checked_and_named() {
    let cfg = sample_config(100, 3, 1);
    let p = StatsParams::from_value(&cfg, &Value::Undefined).unwrap();
    assert_eq!(p.weights, vec![1.0 / 3.0; 3]);
    assert_eq!(
        (p.confidence, p.winner_multiple, p.histogram_bins),
        (0.95, 10.0, 50)
    );
    let p = StatsParams::from_value(
        &cfg,
        &options(r#"{"weights": {"Bucket 02": 3, "Bucket 00": 1}, "confidence": 0.9, "winnerMultiple": 3, "histogramBins": 1}"#),
    )
    .unwrap();
    assert_eq!(p.weights, vec![0.25, 0.0, 0.75]);
    assert_eq!(
        (p.confidence, p.winner_multiple, p.histogram_bins),
        (0.9, 3.0, 1)
    );
    for (json, field) in [
        (r#"{"weights": {"Nope": 1}}"#, "weights.Nope"),
        (r#"{"weights": {"Bucket 00": -1}}"#, "weights.Bucket 00"),
        (r#"{"weights": {"Bucket 00": 0}}"#, "weights"),
        (r#"{"weights": {}}"#, "weights"),
        (r#"{"weights": [1, 2, 3]}"#, "weights"),
        (r#"{"confidence": 0}"#, "confidence"),
        (r#"{"confidence": 1}"#, "confidence"),
        (r#"{"confidence": "0.9"}"#, "confidence"),
        (r#"{"histogramBins": 0}"#, "histogramBins"),
        (r#"{"histogramBins": 2.5}"#, "histogramBins"),
        (r#"{"winnerMultiple": null}"#, "winnerMultiple"),
        (r#"{"confidense": 0.9}"#, "confidense"),
        ("[]", "options"),
    ] {
        let e = StatsParams::from_value(&cfg, &options(json)).unwrap_err();
        assert_eq!(e.code(), "E_INVALID_ARGUMENT", "{json}");
        assert!(e.to_string().contains(field), "{json}: {e}");
    }
}

/// Weights go by bucket name whatever the config's order: through the cache
/// (an embedded SQLite store), a config listing its buckets in reverse gets
/// the statistics of the same portfolio.
#[tokio::test(flavor = "multi_thread")]
async fn through_the_cache_weights_follow_bucket_names() {
    let dir = std::env::temp_dir().join(common::unique("smc_portfolio"));
    let cache = Cache::open(CacheOptions {
        database_url: Some(format!("sqlite://{}/cache.db", dir.display())),
        redis_url: Some(String::new()),
        ..Default::default()
    })
    .await
    .unwrap();
    let cfg = sample_config(2000, 4, 5);
    let mut reversed: ScenarioConfig = cfg.clone();
    reversed.buckets.reverse();
    let opts = options(r#"{"weights": {"Bucket 00": 1, "Bucket 03": 2}, "winnerMultiple": 2}"#);
    let run = |c: ScenarioConfig| {
        let p = StatsParams::from_value(&c, &opts).unwrap();
        let names: Vec<String> = c.buckets.iter().map(|b| b.name.clone()).collect();
        let cache = &cache;
        async move {
            cache
                .with_matrix(&c, move |m| portfolio_stats(m, &names, &p))
                .await
                .unwrap()
                .1
        }
    };
    let a = run(cfg.clone()).await;
    let b = run(reversed).await;
    // M adds the buckets in each config's own order: equal up to rounding.
    close(a.mean, b.mean, "mean");
    close(a.percentiles.p5, b.percentiles.p5, "p5");
    close(a.percentiles.p50, b.percentiles.p50, "p50");
    close(
        a.conditional_value_at_risk,
        b.conditional_value_at_risk,
        "CVaR",
    );
    assert_eq!(a.loss_probability, b.loss_probability);
    let mut rb = b.buckets.clone();
    rb.reverse();
    assert_eq!(a.buckets, rb);
    // And equal to the statistics of the matrix getMatrix hands out.
    let (_, m) = cache.get_matrix(&cfg).await.unwrap();
    let names: Vec<String> = cfg.buckets.iter().map(|b| b.name.clone()).collect();
    let direct =
        portfolio_stats(&m, &names, &StatsParams::from_value(&cfg, &opts).unwrap()).unwrap();
    assert_eq!(a, direct);
    cache.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// One call of [`the_cache_reads_its_entry_where_it_lies_with_the_same_bits`]:
/// weights that change with `k`, answered from `want`.
async fn check_stats_call(cache: &Cache, c: ScenarioConfig, k: usize, want: Source) {
    let opts = options(&format!(
        r#"{{"weights": {{"Bucket 0{}": {}, "Bucket 11": 2, "Bucket 15": 0.5}}, "winnerMultiple": {}, "confidence": 0.9, "histogramBins": 7}}"#,
        k % 10,
        1 + k,
        2 + k
    ));
    let p = StatsParams::from_value(&c, &opts).unwrap();
    let names: Vec<String> = c.buckets.iter().map(|b| b.name.clone()).collect();
    // A memory hit finds the column statistics an earlier call kept, so it
    // takes the chunk-by-chunk path.
    let kept = cache
        .get_from_memory(&c, &key::canonical_key(&c))
        .unwrap()
        .is_some_and(|h| h.entry.derived.column_stats.get().is_some());
    assert_eq!(kept, want == Source::Memory, "call {k}");
    let (hit, got) = cache.portfolio_stats(&c, p.clone()).await.unwrap();
    assert_eq!(hit.source, want, "call {k}");
    let (_, m) = cache.get_matrix(&c).await.unwrap();
    assert_eq!(got, portfolio_stats(&m, &names, &p).unwrap(), "call {k}");
}

/// `Cache::portfolio_stats` gives, bit for bit, the statistics of the matrix
/// getMatrix hands out, on every path it takes: the generator's output (a
/// miss), a durable hit (decoded whole, column statistics computed and kept)
/// and memory hits (read chunk by chunk with the kept column statistics),
/// with new weights on each call and in either bucket order.
#[tokio::test(flavor = "multi_thread")]
async fn the_cache_reads_its_entry_where_it_lies_with_the_same_bits() {
    let dir = std::env::temp_dir().join(common::unique("smc_portfolio"));
    let url = format!("sqlite://{}/cache.db", dir.display());
    let open = || {
        Cache::open(CacheOptions {
            database_url: Some(url.clone()),
            redis_url: Some(String::new()),
            ..Default::default()
        })
    };
    // 30,000 x 20: 2.4 MB, three envelope chunks.
    let cfg = sample_config(30_000, 20, 9);
    let mut shuffled: ScenarioConfig = cfg.clone();
    shuffled.buckets.rotate_left(5);
    let first = open().await.unwrap();
    check_stats_call(&first, shuffled.clone(), 0, Source::Generated).await;
    check_stats_call(&first, cfg.clone(), 1, Source::Memory).await;
    check_stats_call(&first, shuffled.clone(), 2, Source::Memory).await;
    first.close().await;
    let second = open().await.unwrap();
    check_stats_call(&second, cfg.clone(), 3, Source::Sqlite).await;
    check_stats_call(&second, shuffled.clone(), 4, Source::Memory).await;
    check_stats_call(&second, cfg.clone(), 5, Source::Memory).await;
    second.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
