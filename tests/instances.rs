//! Several cache instances sharing one durable store: an invalidation on one
//! reaches the memory tiers of the others within 100 ms (PostgreSQL NOTIFY,
//! SQLite's polled log), is recorded in the audit trail, and an instance that
//! lost its notification connection drops its memory tier.

mod common;
#[path = "common/sample.rs"]
mod sample;

use std::time::Duration;

use common::{config, drop_redis_prefix, redis_conn, unique, TestDb, REDIS_URL};
use redis::AsyncCommands;
use scenario_matrix_cache::cache::{Cache, CacheOptions};
use scenario_matrix_cache::key;
use scenario_matrix_cache::tier::Source;

fn pg(db: &TestDb) -> CacheOptions {
    CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(String::new()),
        ..Default::default()
    }
}

/// Where `get(key)` is answered from, or None.
async fn source_of(cache: &Cache, key: &str) -> Option<Source> {
    cache.get(key).await.unwrap().map(|h| h.source)
}

async fn three(opts: impl Fn() -> CacheOptions) -> Vec<Cache> {
    let mut caches = Vec::new();
    for _ in 0..3 {
        caches.push(Cache::open(opts()).await.unwrap());
    }
    caches
}

/// All three hold `cfg` in memory; the first invalidates it (by key, or its
/// fund); 100 ms later neither other instance returns it.
async fn invalidation_reaches_the_others(caches: &[Cache], by_fund: bool, fund: &str) {
    let cfg = config(fund, 500);
    let k = key::canonical_key(&cfg);
    caches[0].get_or_generate(&cfg).await.unwrap();
    for c in caches {
        c.get_or_generate(&cfg).await.unwrap();
        assert_eq!(source_of(c, &k).await, Some(Source::Memory));
    }
    if by_fund {
        assert_eq!(caches[0].invalidate_fund(fund, None).await.unwrap(), 1);
    } else {
        assert!(caches[0].invalidate(&k).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for c in caches {
        assert_eq!(source_of(c, &k).await, None, "fund: {by_fund}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_invalidations_reach_every_instance_and_are_recorded() {
    let db = TestDb::create().await;
    let caches = three(|| pg(&db)).await;
    invalidation_reaches_the_others(&caches, false, "inst-key").await;
    invalidation_reaches_the_others(&caches, true, "inst-fund").await;

    // The audit trail: one record per call, with what it removed.
    let mut c = db.connect().await;
    let rows: Vec<(String, Option<String>, Option<String>, i32, String, String)> = sqlx::query_as(
        "SELECT scope, matrix_key, fund_id, removed, keys::text, origin \
           FROM scenario_matrix_invalidations ORDER BY id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let k = key::canonical_key(&config("inst-key", 500));
    let kf = key::canonical_key(&config("inst-fund", 500));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (&rows[0].0, rows[0].1.as_deref(), rows[0].3),
        (&"key".to_string(), Some(k.as_str()), 1)
    );
    assert_eq!(
        (&rows[1].0, rows[1].2.as_deref(), rows[1].3),
        (&"fund".to_string(), Some("inst-fund"), 1)
    );
    assert_eq!(rows[1].4, format!("[\"{kf}\"]"));
    assert!(
        rows[0].5.contains(&format!(":{}#", std::process::id())),
        "{}",
        rows[0].5
    );
    for cache in caches {
        cache.close().await;
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_invalidations_reach_every_instance() {
    let dir = std::env::temp_dir().join(unique("smc_instances"));
    let url = dir.join("cache.db").display().to_string();
    let caches = three(|| CacheOptions {
        database_url: Some(url.clone()),
        redis_url: Some(String::new()),
        ..Default::default()
    })
    .await;
    invalidation_reaches_the_others(&caches, false, "lite-key").await;
    invalidation_reaches_the_others(&caches, true, "lite-fund").await;
    for cache in caches {
        cache.close().await;
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_lost_its_notifications_drops_its_memory_tier() {
    let db = TestDb::create().await;
    let cache = Cache::open(pg(&db)).await.unwrap();
    let cfg = config("inst-lost", 500);
    let k = key::canonical_key(&cfg);
    cache.get_or_generate(&cfg).await.unwrap();
    assert_eq!(source_of(&cache, &k).await, Some(Source::Memory));

    // Cut the listening connection, as a network blip or a server restart would.
    let mut c = db.connect().await;
    let cut: Vec<i32> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid)::int FROM pg_stat_activity \
          WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(cut, [1], "one listening connection, now cut");
    // Notices sent meanwhile may be lost: once it is back, nothing in memory
    // is trusted, so the key comes from the durable store again.
    let mut waited = 0;
    while source_of(&cache, &k).await == Some(Source::Memory) {
        assert!(
            waited < 3000,
            "memory tier not dropped after the connection was cut"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 20;
    }
    assert_eq!(
        source_of(&cache, &k).await,
        Some(Source::Memory),
        "filled again"
    );
    // And it listens again: another instance's invalidation still arrives.
    let other = Cache::open(pg(&db)).await.unwrap();
    other.invalidate(&k).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(source_of(&cache, &k).await, None);
    other.close().await;
    cache.close().await;
    db.drop_db().await;
}

/// An instance without a memory tier still copies a durable hit to Redis in
/// the background. When another instance invalidates the key while that copy
/// is on its way, the copy must not outlive the invalidation: every instance
/// would serve it until its TTL.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_without_memory_leaves_no_redis_copy_behind_another_invalidation() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let shared = || CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(REDIS_URL.into()),
        redis_key_prefix: Some(prefix.clone()),
        // The follower's delete must not time out on a busy machine: the
        // copy would then stay until this instance's next delete.
        redis_timeout_ms: Some(2000),
        ..Default::default()
    };
    let no_memory = Cache::open(CacheOptions {
        memory_max_bytes: Some(0),
        ..shared()
    })
    .await
    .unwrap();
    let other = Cache::open(shared()).await.unwrap();
    // The largest size: its Redis copy (about 16 MB) takes long enough to
    // still be on its way when the other instance's invalidation lands.
    let cfg = sample::sample_config(100_000, 50, 11);
    let k = key::canonical_key(&cfg);
    let r = redis_conn().await;
    let mut c = db.connect().await;
    for attempt in 0..12 {
        let seed = Cache::open(CacheOptions {
            redis_url: Some(String::new()),
            ..shared()
        })
        .await
        .unwrap();
        seed.get_or_generate(&cfg).await.unwrap();
        seed.close().await;
        // The other instance invalidates while (or just after) this one reads
        // the row: a little later on each attempt.
        let (hit, removed) = tokio::join!(no_memory.get_or_generate(&cfg), async {
            tokio::time::sleep(Duration::from_millis(attempt * 8)).await;
            other.invalidate(&k).await
        });
        hit.unwrap();
        removed.unwrap();
        no_memory.flush().await;
        // A copy in Redis is only right with a row behind it (the read may
        // have come after the invalidation and generated the matrix again).
        // The notice reaches the instance within 100 ms (above); a second.
        let mut waited = 0;
        loop {
            let in_redis: bool = r.clone().exists(format!("{prefix}{k}")).await.unwrap();
            let rows: i64 =
                sqlx::query_scalar("SELECT count(*) FROM scenario_matrices WHERE matrix_key = $1")
                    .bind(&k)
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            if !in_redis || rows == 1 {
                break;
            }
            assert!(
                waited < 1000,
                "a Redis copy of {k} outlived its invalidation (attempt {attempt})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 20;
        }
        other.invalidate(&k).await.unwrap();
        no_memory.flush().await;
    }
    no_memory.close().await;
    other.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}
