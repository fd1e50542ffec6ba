//! Faults of the Redis tier: a hung, killed or absent server, a slow link,
//! and what `flush` and `close` wait for. Each test runs its own
//! redis-server on a spare loopback port (so it can pause and kill it) and
//! its own PostgreSQL database. The tests take turns (`SERIAL`): they time
//! calls, and a neighbour generating a large matrix would skew the clock.

mod common;
#[path = "common/sample.rs"]
mod sample;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    config, drop_redis_prefix, unique, OwnPostgres, OwnRedis, SlowLink, TestDb, REDIS_URL,
};
use scenario_matrix_cache::cache::{Cache, CacheOptions};
use scenario_matrix_cache::tier::Source;
use scenario_matrix_cache::{codec, key};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// PostgreSQL plus `redis_url`, no memory tier (so lookups reach Redis), a
/// short breaker cool-down so recovery is quick to observe.
fn options(db: &TestDb, redis_url: &str) -> CacheOptions {
    CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(redis_url.into()),
        redis_key_prefix: Some(format!("{}:", unique("faults"))),
        memory_max_bytes: Some(0),
        redis_breaker_cooldown_ms: Some(200),
        ..Default::default()
    }
}

async fn timed(cache: &Cache, cfg: &scenario_matrix_cache::ScenarioConfig) -> (Source, Duration) {
    let t = Instant::now();
    let hit = cache.get_or_generate(cfg).await.unwrap();
    (hit.source, t.elapsed())
}

/// Waits (up to 5 s) for the breaker to close by itself.
async fn breaker_closes(cache: &Cache) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.stats().redis_breaker.unwrap().open {
        assert!(
            Instant::now() < deadline,
            "the breaker did not close within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn in_redis(redis: &OwnRedis, prefix: &str, key: &str) -> bool {
    let mut c = redis.conn().await;
    redis::cmd("EXISTS")
        .arg(format!("{prefix}{key}"))
        .query_async::<bool>(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_redis_costs_one_timeout_then_nothing() {
    let _turn = SERIAL.lock().await;
    let redis = OwnRedis::start();
    let db = TestDb::create().await;
    let cache = Cache::open(options(&db, &redis.url())).await.unwrap();
    let cfgs: Vec<_> = (0..12)
        .map(|i| config(&format!("hung-{i}"), 2_000))
        .collect();
    for c in &cfgs {
        assert_eq!(timed(&cache, c).await.0, Source::Generated);
    }
    cache.flush().await;
    assert_eq!(timed(&cache, &cfgs[0]).await.0, Source::Redis);

    // The normal latency of a durable hit, from an instance without Redis.
    let plain = Cache::open(CacheOptions {
        redis_url: Some(String::new()),
        ..options(&db, "")
    })
    .await
    .unwrap();
    let mut normal = Duration::ZERO;
    for c in &cfgs[..3] {
        let (source, took) = timed(&plain, c).await;
        assert_eq!(source, Source::Postgres);
        normal = normal.max(took);
    }

    redis.pause();
    // The first call finds Redis silent: one timeout (100 ms by default).
    let (source, took) = timed(&cache, &cfgs[1]).await;
    assert_eq!(source, Source::Postgres);
    assert!(
        took < normal + Duration::from_millis(100 + 100),
        "first call with Redis hung took {took:?} (normal {normal:?})"
    );
    let b = cache.stats().redis_breaker.unwrap();
    assert!(b.open && b.openings == 1, "{b:?}");
    let errors = cache.stats().redis.errors;

    // Then the breaker is open: calls take their normal latency.
    for c in &cfgs[2..] {
        let (source, took) = timed(&cache, c).await;
        assert_eq!(source, Source::Postgres);
        assert!(
            took < normal + Duration::from_millis(75),
            "call with the breaker open took {took:?} (normal {normal:?})"
        );
    }
    // A miss too, and its Redis write is skipped rather than left waiting.
    let fresh = config("hung-fresh", 2_000);
    assert_eq!(timed(&cache, &fresh).await.0, Source::Generated);
    let t = Instant::now();
    cache.flush().await;
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    let s = cache.stats();
    assert_eq!(s.redis.errors, errors, "skipped calls are not errors");
    assert!(
        s.redis_breaker.unwrap().skipped >= 11,
        "{:?}",
        s.redis_breaker
    );

    // Redis answers again: the probe closes the breaker, no restart needed.
    redis.resume();
    breaker_closes(&cache).await;
    assert_eq!(timed(&cache, &cfgs[5]).await.0, Source::Redis);
    assert_eq!(cache.stats().redis_breaker.unwrap().openings, 1);

    cache.close().await;
    plain.close().await;
    db.drop_db().await;
}

/// Lookups sent together to a hung Redis each wait one timeout (plus the
/// first read's allowance), not one more allowance per lookup ahead of them.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_lookups_on_a_hung_redis_wait_one_timeout_each() {
    let _turn = SERIAL.lock().await;
    let redis = OwnRedis::start();
    let db = TestDb::create().await;
    let opts = options(&db, &redis.url());
    let writer = Cache::open(opts.clone()).await.unwrap();
    let cfgs: Vec<_> = (0..40)
        .map(|i| config(&format!("hung-many-{i}"), 1_000))
        .collect();
    for c in &cfgs {
        writer.get_or_generate(c).await.unwrap();
    }
    writer.flush().await;
    let reader = Arc::new(Cache::open(opts).await.unwrap());
    assert_eq!(timed(&reader, &cfgs[0]).await.0, Source::Redis);

    redis.pause();
    let started = Instant::now();
    let calls: Vec<_> = cfgs
        .iter()
        .cloned()
        .map(|c| {
            let reader = reader.clone();
            tokio::spawn(async move { timed(&reader, &c).await })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (source, took) = call.await.unwrap();
        assert_eq!(source, Source::Postgres);
        slowest = slowest.max(took);
    }
    redis.resume();
    // 100 ms timeout + 26 ms for 256 KiB at 10 MB/s, and room for 40
    // durable hits on a busy machine; counted per lookup ahead, the last
    // would have been allowed 100 + 40 x 26 ms.
    assert!(
        slowest < Duration::from_millis(600),
        "slowest of 40 concurrent lookups took {slowest:?} (all: {:?})",
        started.elapsed()
    );
    reader.close().await;
    writer.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_or_absent_redis_fails_no_call_and_is_used_again_when_back() {
    let _turn = SERIAL.lock().await;
    let mut redis = OwnRedis::start();
    let db = TestDb::create().await;
    let opts = options(&db, &redis.url());
    let prefix = opts.redis_key_prefix.clone().unwrap();
    let cache = Cache::open(opts.clone()).await.unwrap();
    let a = config("killed-a", 1_000);
    let b = config("killed-b", 1_000);
    assert_eq!(timed(&cache, &a).await.0, Source::Generated);
    cache.flush().await;

    redis.kill();
    assert_eq!(timed(&cache, &a).await.0, Source::Postgres);
    assert_eq!(timed(&cache, &b).await.0, Source::Generated);
    assert_eq!(timed(&cache, &a).await.0, Source::Postgres);
    assert!(cache.stats().redis_breaker.unwrap().openings >= 1);

    // Back (empty): used again by the same instance.
    redis.restart();
    breaker_closes(&cache).await;
    assert_eq!(timed(&cache, &b).await.0, Source::Postgres);
    cache.flush().await;
    assert!(in_redis(&redis, &prefix, &key::canonical_key(&b)).await);
    assert_eq!(timed(&cache, &b).await.0, Source::Redis);
    cache.close().await;

    // Down when the cache opens: opening is quick and calls succeed.
    redis.kill();
    let t = Instant::now();
    let late = Cache::open(opts).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "open took {:?}",
        t.elapsed()
    );
    assert_eq!(timed(&late, &a).await.0, Source::Postgres);
    redis.restart();
    breaker_closes(&late).await;
    assert_eq!(timed(&late, &a).await.0, Source::Postgres);
    late.flush().await;
    assert_eq!(timed(&late, &a).await.0, Source::Redis);
    late.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_value_still_streaming_is_not_cut_off() {
    let _turn = SERIAL.lock().await;
    let redis = OwnRedis::start();
    let db = TestDb::create().await;
    let opts = options(&db, &redis.url());
    let writer = Cache::open(opts.clone()).await.unwrap();
    let cfg = sample::sample_config(100_000, 40, 71);
    assert_eq!(timed(&writer, &cfg).await.0, Source::Generated);
    writer.flush().await;
    let mut c = redis.conn().await;
    let size: usize = redis::cmd("STRLEN")
        .arg(format!(
            "{}{}",
            opts.redis_key_prefix.as_ref().unwrap(),
            key::canonical_key(&cfg)
        ))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(size > 10_000_000, "{size}");

    // A link of 40 MB/s: the value takes well over the 100 ms reply timeout.
    let link = SlowLink::start(redis.port, 40e6, Duration::ZERO).await;
    let reader = Cache::open(CacheOptions {
        redis_url: Some(link.url()),
        ..opts.clone()
    })
    .await
    .unwrap();
    // A small key too, to be looked up while the large value streams.
    let small = config("streaming-small", 200);
    assert_eq!(timed(&writer, &small).await.0, Source::Generated);
    writer.flush().await;
    let reader = Arc::new(reader);
    let large = {
        let (reader, cfg) = (reader.clone(), cfg.clone());
        tokio::spawn(async move { timed(&reader, &cfg).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Its reply queues behind the large one on the connection: it must be
    // allowed that transfer's time, not judged by the 100 ms bound.
    assert_eq!(timed(&reader, &small).await.0, Source::Redis);
    let (source, took) = large.await.unwrap();
    assert_eq!(source, Source::Redis);
    assert!(
        took > Duration::from_millis(150),
        "{took:?}: the link was not slow"
    );
    assert_eq!(reader.stats().redis_breaker.unwrap().openings, 0);

    // The same read, allowing only 1000 MB/s, is cut off: the rule above is
    // what let it through.
    let strict = Cache::open(CacheOptions {
        redis_url: Some(link.url()),
        redis_min_throughput_mbps: Some(1000.0),
        ..opts
    })
    .await
    .unwrap();
    assert_eq!(timed(&strict, &cfg).await.0, Source::Postgres);
    assert_eq!(strict.stats().redis_breaker.unwrap().openings, 1);

    for c in [&writer, &*reader, &strict] {
        c.close().await;
    }
    db.drop_db().await;
}

/// Replies queued on a slow link overrun their deadline while others keep
/// arriving: Redis is busy, not hung. Those lookups go on to the durable
/// store, but the breaker stays closed (under load it used to open, sending
/// every lookup to the durable store for a cool-down).
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_redis_is_not_taken_for_a_hung_one() {
    let _turn = SERIAL.lock().await;
    let redis = OwnRedis::start();
    let db = TestDb::create().await;
    let opts = options(&db, &redis.url());
    let writer = Cache::open(opts.clone()).await.unwrap();
    let cfgs: Vec<_> = (0..8)
        .map(|i| sample::sample_config(20_000, 20, 300 + i))
        .collect();
    for c in &cfgs {
        assert_eq!(timed(&writer, c).await.0, Source::Generated);
    }
    writer.flush().await;

    // At 40 MB/s each value (over 1 MB) takes about 30 ms, so eight asked at
    // once take about 250 ms, and the later ones overrun a deadline that
    // allows 1000 MB/s (100 ms plus a few), while earlier ones are answered.
    let link = SlowLink::start(redis.port, 40e6, Duration::ZERO).await;
    let reader = Arc::new(
        Cache::open(CacheOptions {
            redis_url: Some(link.url()),
            redis_min_throughput_mbps: Some(1000.0),
            ..opts
        })
        .await
        .unwrap(),
    );
    let calls: Vec<_> = cfgs
        .iter()
        .map(|c| {
            let (reader, c) = (reader.clone(), c.clone());
            tokio::spawn(async move { timed(&reader, &c).await.0 })
        })
        .collect();
    let mut sources = Vec::new();
    for c in calls {
        sources.push(c.await.unwrap());
    }
    let stats = reader.stats();
    assert!(
        stats.redis.errors > 0 && sources.contains(&Source::Postgres),
        "no lookup overran its deadline, so this test shows nothing: {sources:?}"
    );
    assert!(sources.contains(&Source::Redis), "{sources:?}");
    assert_eq!(
        stats.redis_breaker.unwrap().openings,
        0,
        "a busy Redis opened the breaker: {sources:?}"
    );

    writer.close().await;
    reader.close().await;
    db.drop_db().await;
}

/// Client connections the server has, besides the one asking.
async fn other_clients(redis: &OwnRedis) -> usize {
    let mut c = redis.conn().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .unwrap();
    list.lines().count() - 1
}

#[tokio::test(flavor = "multi_thread")]
async fn close_leaves_no_redis_connection() {
    let _turn = SERIAL.lock().await;
    let redis = OwnRedis::start();
    let db = TestDb::create().await;
    let cache = Cache::open(options(&db, &redis.url())).await.unwrap();
    let cfg = config("close", 500);
    cache.get_or_generate(&cfg).await.unwrap();
    cache.flush().await;
    assert_eq!(timed(&cache, &cfg).await.0, Source::Redis);
    assert!(other_clients(&redis).await >= 1);
    cache.close().await;
    let deadline = Instant::now() + Duration::from_secs(1);
    while other_clients(&redis).await > 0 {
        assert!(
            Instant::now() < deadline,
            "a Redis connection is still open 1 s after close()"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flush_waits_for_the_writes_pending_when_called_not_for_later_ones() {
    let _turn = SERIAL.lock().await;
    let redis = OwnRedis::start();
    let db = TestDb::create().await;
    // Redis 150 ms away: every background write takes at least that.
    let link = SlowLink::start(redis.port, 1e9, Duration::from_millis(150)).await;
    let opts = CacheOptions {
        redis_timeout_ms: Some(2_000),
        ..options(&db, &link.url())
    };
    let prefix = opts.redis_key_prefix.clone().unwrap();
    let cache = Arc::new(Cache::open(opts).await.unwrap());

    // Steady traffic of misses for 3 s from 6 callers, staggered so that
    // background writes always overlap (there is never none pending).
    let done: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let traffic: Vec<_> = (0..6)
        .map(|caller| {
            let (cache, done) = (cache.clone(), done.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(25 * caller)).await;
                let end = Instant::now() + Duration::from_secs(3);
                let mut i = 0;
                while Instant::now() < end {
                    let cfg = config(&format!("steady-{caller}-{i}"), 200);
                    cache.get_or_generate(&cfg).await.unwrap();
                    done.lock().unwrap().push(key::canonical_key(&cfg));
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before: Vec<String> = done.lock().unwrap().clone();
    assert!(!before.is_empty());
    let t = Instant::now();
    cache.flush().await;
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1_200),
        "flush took {took:?} under steady traffic"
    );
    assert!(
        traffic.iter().all(|t| !t.is_finished()),
        "the traffic ended before flush returned"
    );
    // Every write pending at the call is done.
    for k in &before {
        assert!(
            in_redis(&redis, &prefix, k).await,
            "{k} not written by flush"
        );
    }
    for t in traffic {
        t.await.unwrap();
    }
    cache.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_give_way_to_the_app_and_give_up_with_a_coded_error() {
    use sqlx::Connection;
    let _turn = SERIAL.lock().await;
    let db = TestDb::create().await;
    // The TypeScript app's table, and one of the app's transactions that has
    // read it and stays open (it holds a lock our ALTER TABLE must wait for).
    let mut app = db.connect().await;
    sqlx::raw_sql(include_str!("fixtures/typescript-schema.sql"))
        .execute(&mut app)
        .await
        .unwrap();
    let mut tx = app.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM scenario_matrices")
        .execute(&mut *tx)
        .await
        .unwrap();

    // Meanwhile the app's plain reads from another session never queue
    // behind our lock request for more than a moment.
    let reads = {
        let mut reader = db.connect().await;
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_millis(2_500);
            let mut slowest = Duration::ZERO;
            while Instant::now() < end {
                let t = Instant::now();
                sqlx::query("SELECT count(*) FROM scenario_matrices")
                    .execute(&mut reader)
                    .await
                    .unwrap();
                slowest = slowest.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            slowest
        })
    };
    let opts = CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(String::new()),
        database_timeout_ms: Some(2_000),
        ..Default::default()
    };
    let t = Instant::now();
    let err = match tokio::time::timeout(Duration::from_secs(6), Cache::open(opts.clone())).await {
        Err(_) => panic!("open still pending after 6 s with databaseTimeoutMs 2000"),
        Ok(Ok(_)) => panic!("open succeeded while the app held the table"),
        Ok(Err(e)) => e,
    };
    let took = t.elapsed();
    assert_eq!(err.code(), "E_MIGRATION_BLOCKED", "{err}");
    assert!(err.to_string().contains("runMigrations: false"), "{err}");
    assert!(
        took < Duration::from_millis(3_000),
        "open gave up after {took:?} with databaseTimeoutMs 2000"
    );
    let slowest = reads.await.unwrap();
    assert!(
        slowest < Duration::from_millis(300),
        "an app read waited {slowest:?} behind the migration"
    );

    // Once the app's transaction ends, opening migrates and works.
    tx.commit().await.unwrap();
    let cache = Cache::open(opts).await.unwrap();
    assert_eq!(
        timed(&cache, &config("after-migration", 200)).await.0,
        Source::Generated
    );
    cache.close().await;
    drop(app);
    db.drop_db().await;
}

/// Options for a cache on an own PostgreSQL cluster and the machine's Redis.
fn own_pg_options(pg: &OwnPostgres, prefix: &str) -> CacheOptions {
    CacheOptions {
        database_url: Some(pg.url()),
        redis_url: Some(REDIS_URL.into()),
        redis_key_prefix: Some(prefix.into()),
        database_timeout_ms: Some(1_000),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_postgres_stopped_hits_go_on_misses_fail_fast_and_the_instance_recovers() {
    let _turn = SERIAL.lock().await;
    let pg = OwnPostgres::start();
    let prefix = format!("{}:", unique("pgdown"));
    let with_memory = Cache::open(own_pg_options(&pg, &prefix)).await.unwrap();
    let redis_only = Cache::open(CacheOptions {
        memory_max_bytes: Some(0),
        ..own_pg_options(&pg, &prefix)
    })
    .await
    .unwrap();
    let (a, b, c) = (
        config("pg-a", 500),
        config("pg-b", 500),
        config("pg-c", 500),
    );
    assert_eq!(timed(&with_memory, &a).await.0, Source::Generated);
    assert_eq!(timed(&with_memory, &b).await.0, Source::Generated);
    with_memory.flush().await;

    pg.stop();
    let (source, took) = timed(&with_memory, &a).await;
    assert_eq!(source, Source::Memory);
    assert!(took < Duration::from_millis(150), "{took:?}");
    let (source, took) = timed(&redis_only, &b).await;
    assert_eq!(source, Source::Redis);
    assert!(took < Duration::from_millis(100), "{took:?}");
    let t = Instant::now();
    let err = with_memory.get_or_generate(&c).await.unwrap_err();
    assert_eq!(err.code(), "E_DURABLE_UNAVAILABLE", "{err}");
    assert!(
        t.elapsed() < Duration::from_millis(1_000 + 500),
        "a miss with PostgreSQL down took {:?} (databaseTimeoutMs 1000)",
        t.elapsed()
    );

    // Back: the same instance stores misses again, by itself.
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match with_memory.get_or_generate(&c).await {
            Ok(hit) => {
                assert_eq!(hit.source, Source::Generated);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code(), "E_DURABLE_UNAVAILABLE", "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery within 20 s: {e}"),
        }
    }
    with_memory.flush().await;
    assert_eq!(timed(&redis_only, &c).await.0, Source::Redis);
    with_memory.close().await;
    redis_only.close().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_killed_mid_insert_leaves_no_damaged_complete_row() {
    use sqlx::Connection;
    let _turn = SERIAL.lock().await;
    let pg = OwnPostgres::start();
    let prefix = format!("{}:", unique("pgkill"));
    let opts = CacheOptions {
        database_timeout_ms: Some(5_000),
        ..own_pg_options(&pg, &prefix)
    };
    let cache = Arc::new(Cache::open(opts.clone()).await.unwrap());
    let mut watch = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    // The kill races the commit: when the commit wins (the call succeeds),
    // that attempt showed nothing, and another key is tried.
    let mut cfg = None;
    for seed in 72..77 {
        let attempt = sample::sample_config(100_000, 50, seed);
        let call = {
            let (cache, cfg) = (cache.clone(), attempt.clone());
            tokio::spawn(async move { cache.get_or_generate(&cfg).await })
        };
        // Kill the server as soon as our INSERT of the 20 MB row is running.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let inserting: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                   WHERE state = 'active' AND pid <> pg_backend_pid()
                     AND query ILIKE '%INSERT INTO scenario_matrices%')",
            )
            .fetch_one(&mut watch)
            .await
            .unwrap();
            if inserting {
                break;
            }
            assert!(
                !call.is_finished(),
                "the insert finished before it was seen"
            );
            assert!(Instant::now() < deadline, "no insert within 30 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        pg.kill();
        let result = call.await.unwrap();
        pg.restart();
        watch = loop {
            match sqlx::PgConnection::connect(&pg.url()).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        match result {
            Ok(_) => continue,
            Err(err) => {
                assert!(
                    ["E_DURABLE_WRITE", "E_DURABLE_UNAVAILABLE"].contains(&err.code()),
                    "{err}"
                );
                cfg = Some(attempt);
                break;
            }
        }
    }
    let cfg = cfg.expect("in 5 attempts the kill never landed before the commit");
    let k = key::canonical_key(&cfg);

    // After recovery: no complete row that is partial or damaged.
    let mut c = watch;
    let rows: Vec<(String, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT matrix_key, moic_matrix FROM scenario_matrices WHERE status = 'complete'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for (key, payload) in &rows {
        let payload = payload.as_deref().expect("a complete row has a payload");
        codec::decode(payload).unwrap_or_else(|e| panic!("row {key} is damaged: {e}"));
    }

    // The next call stores a good one.
    let fresh = Cache::open(CacheOptions {
        memory_max_bytes: Some(0),
        redis_url: Some(String::new()),
        ..opts
    })
    .await
    .unwrap();
    let hit = fresh.get_or_generate(&cfg).await.unwrap();
    assert!(matches!(hit.source, Source::Generated | Source::Postgres));
    let stored: Vec<u8> = sqlx::query_scalar(
        "SELECT moic_matrix FROM scenario_matrices WHERE matrix_key = $1 AND status = 'complete'",
    )
    .bind(&k)
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(
        codec::decode(&stored).unwrap(),
        codec::decode(&hit.entry.payload).unwrap()
    );
    fresh.close().await;
    cache.close().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_database_pool_never_holds_up_memory_and_redis_hits() {
    let _turn = SERIAL.lock().await;
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("pool"));
    let base = CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(REDIS_URL.into()),
        redis_key_prefix: Some(prefix.clone()),
        database_max_connections: Some(1),
        ..Default::default()
    };
    let cache = Arc::new(Cache::open(base.clone()).await.unwrap());
    let redis_only = Arc::new(
        Cache::open(CacheOptions {
            memory_max_bytes: Some(0),
            ..base
        })
        .await
        .unwrap(),
    );
    let (a, b) = (config("pool-a", 500), config("pool-b", 500));
    cache.get_or_generate(&a).await.unwrap();
    cache.get_or_generate(&b).await.unwrap();
    cache.flush().await;

    // Slow misses hold each instance's only connection: another session
    // holds their keys' generation locks (the advisory lock of a key is its
    // first 16 hex digits), so each miss waits inside its transaction.
    use sqlx::Connection;
    let slow: Vec<_> = (0..2)
        .map(|i| config(&format!("pool-slow-{i}"), 500))
        .collect();
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for cfg in &slow {
        let k = key::canonical_key(cfg);
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(u64::from_str_radix(&k[..16], 16).unwrap() as i64)
            .execute(&mut holder)
            .await
            .unwrap();
    }
    let misses: Vec<_> = [cache.clone(), redis_only.clone()]
        .into_iter()
        .zip(slow.clone())
        .map(|(c, cfg)| tokio::spawn(async move { c.get_or_generate(&cfg).await.unwrap() }))
        .collect();
    let end = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < end {
        let (source, took) = timed(&cache, &a).await;
        assert_eq!(source, Source::Memory);
        assert!(
            took < Duration::from_millis(200),
            "memory hit took {took:?}"
        );
        let (source, took) = timed(&redis_only, &b).await;
        assert_eq!(source, Source::Redis);
        assert!(took < Duration::from_millis(200), "Redis hit took {took:?}");
        // A durable lookup does need the connection: it waits (bounded by
        // databaseTimeoutMs), which is right.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        misses.iter().all(|m| !m.is_finished()),
        "the misses did not wait for the lock"
    );
    drop(holder); // releases the locks
    for m in misses {
        assert_eq!(m.await.unwrap().source, Source::Generated);
    }
    cache.close().await;
    redis_only.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

/// Large values are written and read on a connection of their own (src/tier/redis_bulk.rs):
/// with a password and a database in the URL, read back byte for byte as
/// written, with their TTL; and when the server drops that connection, the
/// next large read reconnects rather than counting Redis as failed.
#[tokio::test(flavor = "multi_thread")]
async fn large_values_are_read_with_auth_and_after_a_dropped_connection() {
    let redis = OwnRedis::start_with(&["--requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", redis.port);
    let dir = std::env::temp_dir().join(unique("smc-bulk"));
    let opts = |memory: Option<u64>| CacheOptions {
        database_url: Some(format!("sqlite://{}/c.db", dir.display())),
        redis_url: Some(url.clone()),
        memory_max_bytes: memory,
        ..Default::default()
    };
    let writer = Cache::open(opts(None)).await.unwrap();
    let cfg = common::six(&[0, 1, 2, 3, 4, 5], 100_000, "bulk-fund");
    let miss = writer.get_or_generate(&cfg).await.unwrap();
    assert!(miss.entry.payload.len() >= 1 << 20);
    writer.flush().await; // the Redis write is in the background

    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // The client whose last command was a GET: only the bulk reader sends
    // one (the shared connection sends GETRANGE and STRLEN, the writer SET).
    async fn bulk_client(admin: &mut redis::aio::MultiplexedConnection) -> Option<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(admin)
            .await
            .unwrap();
        list.lines()
            .find(|l| l.contains(" cmd=get "))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_owned)
    }
    // Written by the bulk connection too: one key, with its TTL.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(ttl > 0, "TTL {ttl}");
    let reader = Cache::open(opts(Some(0))).await.unwrap();
    for round in 0..3 {
        let hit = reader.get_or_generate(&cfg).await.unwrap();
        assert_eq!(hit.source, Source::Redis, "round {round}");
        assert_eq!(hit.entry.payload, miss.entry.payload, "round {round}");
        let id = bulk_client(&mut admin)
            .await
            .expect("a large value is read by the bulk reader");
        if round == 0 {
            let killed: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(&id)
                .query_async(&mut admin)
                .await
                .unwrap();
            assert_eq!(killed, 1);
        }
    }
    let s = reader.stats();
    assert_eq!(s.redis.errors, 0, "{s:?}");
    assert_eq!(s.redis_breaker.unwrap().openings, 0, "{s:?}");
    writer.close().await;
    reader.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}
