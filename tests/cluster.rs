//! The Redis tier on a Redis Cluster of three masters that the test starts
//! on spare loopback ports (`redis-server --cluster-enabled yes`, joined by
//! `redis-cli --cluster create`) and stops by pid: values spread over the
//! masters and shared between instances, a master killed mid-run, and the
//! cluster used again once it has recovered.

mod common;

use std::time::{Duration, Instant};

use common::{config, unique, OwnCluster, TestDb};
use scenario_matrix_cache::cache::{Cache, CacheOptions};
use scenario_matrix_cache::tier::Source;
use scenario_matrix_cache::ScenarioConfig;

/// The Redis timeout of these caches; a call in trouble may cost one.
const REDIS_TIMEOUT_MS: u64 = 100;

fn options(db: &TestDb, cluster: &OwnCluster, prefix: &str) -> CacheOptions {
    CacheOptions {
        database_url: Some(db.url.clone()),
        // The seed list need not name every node: the client learns the rest.
        redis_cluster_nodes: Some(cluster.urls()[..2].to_vec()),
        // Set too, to show the cluster nodes are used instead.
        redis_url: Some("redis://127.0.0.1:1".into()),
        redis_key_prefix: Some(prefix.into()),
        redis_timeout_ms: Some(REDIS_TIMEOUT_MS),
        // No memory tier, so every lookup asks Redis.
        memory_max_bytes: Some(0),
        redis_breaker_cooldown_ms: Some(100),
        ..Default::default()
    }
}

async fn timed(cache: &Cache, cfg: &ScenarioConfig) -> (Source, Duration) {
    let t = Instant::now();
    let hit = cache.get_or_generate(cfg).await.unwrap();
    (hit.source, t.elapsed())
}

async fn sources(cache: &Cache, cfgs: &[ScenarioConfig]) -> Vec<Source> {
    let mut out = Vec::new();
    for c in cfgs {
        out.push(timed(cache, c).await.0);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_shares_values_between_instances_and_survives_a_lost_master() {
    let mut cluster = OwnCluster::start(3);
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("cluster"));
    let opts = options(&db, &cluster, &prefix);
    let cfgs: Vec<_> = (0..30)
        .map(|i| config(&format!("cluster-{i}"), 1_000))
        .collect();

    // Misses fill the cluster; the keys land on every master.
    let first = Cache::open(opts.clone()).await.unwrap();
    assert!(sources(&first, &cfgs)
        .await
        .iter()
        .all(|s| *s == Source::Generated));
    first.flush().await;
    let per_node: Vec<usize> = (0..3).map(|i| cluster.keys_on(i, &prefix)).collect();
    assert_eq!(per_node.iter().sum::<usize>(), cfgs.len(), "{per_node:?}");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "keys per master: {per_node:?}"
    );
    // The operator's count scans every master.
    let report = first.store_report().await.unwrap();
    assert_eq!(
        report.redis_keys,
        Some(cfgs.len() as u64),
        "{:?}",
        report.redis_error
    );

    // A second instance reads them back as Redis hits.
    let second = Cache::open(opts.clone()).await.unwrap();
    assert!(sources(&second, &cfgs)
        .await
        .iter()
        .all(|s| *s == Source::Redis));

    // The normal latency of a durable hit, from an instance without Redis.
    let plain = Cache::open(CacheOptions {
        redis_cluster_nodes: None,
        redis_url: Some(String::new()),
        ..opts.clone()
    })
    .await
    .unwrap();
    let mut normal = Duration::ZERO;
    for c in &cfgs[..5] {
        let (source, took) = timed(&plain, c).await;
        assert_eq!(source, Source::Postgres);
        normal = normal.max(took);
    }

    // A master dies mid-run: every call succeeds, from Redis or the durable
    // store, and costs at most one Redis timeout more than a durable hit.
    cluster.kill(0);
    let mut worst = Duration::ZERO;
    let mut from_pg = 0;
    for round in 0..3 {
        for c in &cfgs {
            let (source, took) = timed(&second, c).await;
            assert!(
                matches!(source, Source::Redis | Source::Postgres),
                "round {round}: {source:?}"
            );
            from_pg += usize::from(source == Source::Postgres);
            worst = worst.max(took);
        }
        // Past the node timeout the surviving masters refuse every slot too.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(
        worst < normal + Duration::from_millis(REDIS_TIMEOUT_MS + 200),
        "slowest call with a master down took {worst:?} (a durable hit {normal:?})"
    );
    eprintln!(
        "master down: slowest call {worst:?}, durable hit {normal:?}, {from_pg} of {} calls from PostgreSQL",
        3 * cfgs.len()
    );
    assert!(from_pg >= per_node[0], "{from_pg} durable hits");
    // The probe does not close the breaker while the master is down.
    let breaker = second.stats().redis_breaker.unwrap();
    assert!(breaker.open && breaker.openings == 1, "{breaker:?}");

    // The master comes back (empty, with its slots): Redis is used again.
    cluster.restart(0);
    cluster.wait_ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = sources(&second, &cfgs).await;
        second.flush().await;
        if got.iter().all(|s| *s == Source::Redis) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis not used again 20 s after recovery: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!second.stats().redis_breaker.unwrap().open);

    // A master that hangs (answers nothing) while the others answer: the
    // first call into its slots costs one timeout and opens the breaker.
    cluster.signal(1, "-STOP");
    let mut worst = Duration::ZERO;
    for c in &cfgs {
        let (source, took) = timed(&second, c).await;
        assert!(
            matches!(source, Source::Redis | Source::Postgres),
            "{source:?}"
        );
        worst = worst.max(took);
    }
    let breaker = second.stats().redis_breaker.unwrap();
    eprintln!("master hung: slowest call {worst:?}, {breaker:?}");
    assert!(breaker.open && breaker.openings == 2, "{breaker:?}");
    assert!(
        worst < normal + Duration::from_millis(REDIS_TIMEOUT_MS + 200),
        "slowest call with a master hung took {worst:?} (a durable hit {normal:?})"
    );
    cluster.signal(1, "-CONT");
    cluster.wait_ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    while second.stats().redis_breaker.unwrap().open {
        assert!(
            Instant::now() < deadline,
            "the breaker stayed open after the master answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(timed(&second, &cfgs[0]).await.0, Source::Redis);

    for c in [first, second, plain] {
        c.close().await;
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_nodes_are_checked_when_the_cache_opens() {
    let db = TestDb::create().await;
    let open = |nodes: Vec<&str>| {
        Cache::open(CacheOptions {
            database_url: Some(db.url.clone()),
            redis_cluster_nodes: Some(nodes.into_iter().map(String::from).collect()),
            ..Default::default()
        })
    };
    for (nodes, want) in [
        (
            vec!["127.0.0.1:7000"],
            "each seed node is a redis:// or rediss:// URL",
        ),
        (
            vec!["redis://127.0.0.1:7000", "http://u:s3cret@h:1"],
            "each seed node is a redis:// or rediss:// URL",
        ),
    ] {
        let e = open(nodes.clone()).await.err().expect("refused");
        assert_eq!(e.code(), "E_INVALID_ARGUMENT", "{nodes:?}: {e}");
        assert!(e.to_string().contains(want), "{nodes:?}: {e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
    // Unreachable nodes are not an error: the breaker keeps trying.
    let t = Instant::now();
    let c = open(vec!["redis://127.0.0.1:1"]).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(
        c.get_or_generate(&config("cluster-absent", 500))
            .await
            .unwrap()
            .source,
        Source::Generated
    );
    assert!(c.stats().redis_breaker.unwrap().open);
    c.close().await;
    db.drop_db().await;
}
