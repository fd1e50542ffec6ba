//! The tiered cache against the real PostgreSQL and Redis of the machine.
//! Each test has its own database and Redis prefix.

mod common;
#[path = "common/sample.rs"]
mod sample;

use std::sync::Arc;

use base64::Engine;
use common::{config, drop_redis_prefix, legacy_table, redis_conn, unique, TestDb, REDIS_URL};
use redis::AsyncCommands;
use scenario_matrix_cache::cache::{Cache, CacheOptions};
use scenario_matrix_cache::events::{Event, EventKind, Events};
use scenario_matrix_cache::tier::Source;
use scenario_matrix_cache::{codec, key};

fn options(db: &TestDb, prefix: &str) -> CacheOptions {
    CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(REDIS_URL.into()),
        redis_key_prefix: Some(prefix.into()),
        ..Default::default()
    }
}

async fn count_rows(db: &TestDb, key: &str) -> i64 {
    let mut c = db.connect().await;
    sqlx::query_scalar("SELECT count(*) FROM scenario_matrices WHERE matrix_key = $1")
        .bind(key)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn miss_then_memory_then_redis_then_postgres() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cfg = config("tiers-fund", 2_000);
    let k = key::canonical_key(&cfg);

    let cache = Cache::open(options(&db, &prefix)).await.unwrap();
    let miss = cache.get_or_generate(&cfg).await.unwrap();
    assert_eq!(miss.source, Source::Generated);
    assert_eq!(miss.entry.metadata.config_hash, k);
    assert_eq!(miss.entry.metadata.recycling_multiples.len(), 3);

    // Stored in PostgreSQL as a complete, truthfully labelled row ...
    let mut c = db.connect().await;
    let (status, codec_label, states): (String, String, serde_json::Value) = sqlx::query_as(
        "SELECT status, compression_codec, scenario_states FROM scenario_matrices WHERE matrix_key = $1",
    )
    .bind(&k)
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), codec_label.as_str()),
        ("complete", "zstd")
    );
    assert!(
        states.to_string().len() < 100,
        "scenario_states should be compact: {states}"
    );
    // ... and in Redis as a binary record under <prefix><key> with a ~24 h TTL
    // (written in the background once PostgreSQL has it).
    cache.flush().await;
    let mut r = redis_conn().await;
    let raw: Vec<u8> = r.get(format!("{prefix}{k}")).await.unwrap();
    assert_eq!(&raw[..4], b"SMCR");
    let ttl: i64 = r.ttl(format!("{prefix}{k}")).await.unwrap();
    assert!((86_000..=86_400).contains(&ttl), "ttl {ttl}");

    // Same process again: memory, with the miss's metadata and bytes.
    let mem = cache.get_or_generate(&cfg).await.unwrap();
    assert_eq!(mem.source, Source::Memory);
    assert_eq!(mem.entry, miss.entry);

    // A fresh process-like instance (empty memory): Redis, PostgreSQL untouched.
    let second = Cache::open(options(&db, &prefix)).await.unwrap();
    let from_redis = second.get_or_generate(&cfg).await.unwrap();
    assert_eq!(from_redis.source, Source::Redis);
    assert_eq!(from_redis.entry, miss.entry);
    let s = second.stats();
    assert_eq!(
        (s.durable.hits, s.durable.misses, s.durable.errors),
        (0, 0, 0)
    );

    // Redis flushed: PostgreSQL serves it and Redis is warmed again in the background.
    let _: () = r.del(format!("{prefix}{k}")).await.unwrap();
    let third = Cache::open(options(&db, &prefix)).await.unwrap();
    let from_pg = third.get_or_generate(&cfg).await.unwrap();
    assert_eq!(from_pg.source, Source::Postgres);
    assert_eq!(from_pg.entry, miss.entry);
    third.flush().await;
    let exists: bool = r.exists(format!("{prefix}{k}")).await.unwrap();
    assert!(exists, "a PostgreSQL hit should rewrite Redis");

    // Lookup by key never generates.
    assert_eq!(third.get(&k).await.unwrap().unwrap().entry, miss.entry);
    let other = key::canonical_key(&config("nobody", 10));
    assert!(third.get(&other).await.unwrap().is_none());
    assert_eq!(
        third.get("not-a-key").await.unwrap_err().code(),
        "E_INVALID_ARGUMENT"
    );

    // The decoded matrix is what the generator produced.
    let direct = scenario_matrix_cache::generator::generate(&cfg, &k);
    assert_eq!(from_pg.entry.decode().unwrap(), direct.matrix);

    for c in [cache, second, third] {
        c.close().await;
    }
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_misses_share_one_generation() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cache = Arc::new(Cache::open(options(&db, &prefix)).await.unwrap());
    let cfg = config("single-flight", 50_000);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (c, cfg) = (cache.clone(), cfg.clone());
            tokio::spawn(async move { c.get_or_generate(&cfg).await.unwrap() })
        })
        .collect();
    let mut payloads = Vec::new();
    for c in calls {
        payloads.push(c.await.unwrap().entry.payload);
    }
    assert!(payloads.windows(2).all(|w| w[0] == w[1]));
    let s = cache.stats();
    assert_eq!(s.generations, 1, "{s:?}");
    assert_eq!(s.single_flight_joins + 1, 16, "{s:?}");

    cache.close().await;

    // Several instances (separate pools, as separate processes have) racing on a
    // new key: PostgreSQL's per-key lock lets exactly one generate, and the
    // others read its row. A trigger counts every attempt to store the matrix
    // (each generation ends in one): without the lock each instance would
    // generate and try to store, and only the UNIQUE key would keep the row
    // count at 1. (The first instance's open ran the migrations.)
    let mut c = db.connect().await;
    sqlx::raw_sql(
        "CREATE TABLE smc_test_store_attempts (matrix_key text);
         CREATE FUNCTION smc_test_count_store() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO smc_test_store_attempts VALUES (NEW.matrix_key); RETURN NEW; END $$;
         CREATE TRIGGER smc_test_count_store BEFORE INSERT ON scenario_matrices
           FOR EACH ROW EXECUTE FUNCTION smc_test_count_store();",
    )
    .execute(&mut c)
    .await
    .unwrap();
    const INSTANCES: usize = 6;
    let cfg = config("cross-instance", 50_000);
    let mut caches = Vec::new();
    for _ in 0..INSTANCES {
        caches.push(Arc::new(Cache::open(options(&db, &prefix)).await.unwrap()));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(INSTANCES));
    let tasks: Vec<_> = caches
        .iter()
        .map(|c| {
            let (c, cfg, barrier) = (c.clone(), cfg.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                c.get_or_generate(&cfg).await.unwrap()
            })
        })
        .collect();
    let mut sources = Vec::new();
    let mut payloads = Vec::new();
    for t in tasks {
        let hit = t.await.unwrap();
        sources.push(hit.source);
        payloads.push(hit.entry.payload);
    }
    assert!(payloads.windows(2).all(|w| w[0] == w[1]));
    let generated = sources.iter().filter(|s| **s == Source::Generated).count();
    assert_eq!(generated, 1, "exactly one instance generates: {sources:?}");
    assert!(
        sources
            .iter()
            .all(|s| matches!(s, Source::Generated | Source::Postgres)),
        "{sources:?}"
    );
    let generations: u64 = caches.iter().map(|c| c.stats().generations).sum();
    assert_eq!(generations, 1);
    let k = key::canonical_key(&cfg);
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM smc_test_store_attempts WHERE matrix_key = $1")
            .bind(&k)
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(attempts, 1, "every instance but one waited for the row");
    assert_eq!(count_rows(&db, &k).await, 1);
    for c in caches {
        c.close().await;
    }
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_rows_and_legacy_redis_values_are_read_and_rewritten() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let b64 = base64::engine::general_purpose::STANDARD;
    // The TypeScript app created the table and wrote its rows before we arrived.
    let fixture = legacy_table(
        &db,
        |_, cfg| serde_json::json!({"correlationWeights": cfg["correlationWeights"]}),
    )
    .await;
    let mut c = db.connect().await;

    let cache = Cache::open(options(&db, &prefix)).await.unwrap();
    for row in fixture.as_array().unwrap() {
        let cfg = scenario_matrix_cache::ScenarioConfig::from_json_str(&row["config"].to_string())
            .unwrap();
        let k = row["matrixKey"].as_str().unwrap();
        assert_eq!(key::canonical_key(&cfg), k);
        if cfg.buckets.len() > 1 {
            // The TypeScript code recorded no column order: a legacy matrix of
            // several buckets cannot be attributed to them, so it is never
            // served; the key is generated afresh and the row replaced.
            assert!(cache.get(k).await.unwrap().is_none());
            let hit = cache.get_or_generate(&cfg).await.unwrap();
            assert_eq!(hit.source, Source::Generated);
            let format: Option<i16> = sqlx::query_scalar(
                "SELECT payload_format FROM scenario_matrices WHERE matrix_key = $1",
            )
            .bind(k)
            .fetch_one(&mut c)
            .await
            .unwrap();
            assert_eq!(format, Some(2), "legacy row {k} replaced");
            continue;
        }
        // Read by key first: no config, so no recycling multiples yet, and
        // nothing is cached from it ...
        let by_key = cache.get(k).await.unwrap().unwrap();
        assert!(by_key.entry.metadata.recycling_multiples.is_empty());
        cache.flush().await;
        // ... and a call with the config gets them, from the row itself.
        let hit = cache.get_or_generate(&cfg).await.unwrap();
        assert_eq!(
            hit.entry.metadata.recycling_multiples.len(),
            cfg.buckets.len()
        );
        assert_eq!(
            hit.source,
            Source::Postgres,
            "legacy row {k} should be served, not regenerated"
        );
        let want: Vec<f32> = b64
            .decode(row["float32LeBase64"].as_str().unwrap())
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(hit.entry.decode().unwrap(), want);
        // Recycling multiples recomputed from the matrix agree with what TypeScript computed.
        let ts: Vec<f64> = row["recyclingMultiples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (got, want) in hit.entry.metadata.recycling_multiples.iter().zip(&ts) {
            assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
        }
        assert_eq!(
            cache.get_or_generate(&cfg).await.unwrap().source,
            Source::Memory
        );
    }
    assert_eq!(cache.stats().generations, 2);
    assert_eq!(cache.stats().legacy_unattributable, 4);

    // A legacy Redis value (JSON + base64 zlib) of a key no row holds is
    // read, stored durably and rewritten as a record.
    let row = &fixture[2];
    let text = row["config"]
        .to_string()
        .replace("legacy-fund-3", "legacy-fund-3-redis");
    let cfg = scenario_matrix_cache::ScenarioConfig::from_json_str(&text).unwrap();
    let k = key::canonical_key(&cfg);
    let payload = b64.decode(row["payloadBase64"].as_str().unwrap()).unwrap();
    let legacy = serde_json::json!({"data": row["payloadBase64"], "numScenarios": row["numScenarios"], "numBuckets": row["numBuckets"], "version": 1, "uncompressedSize": row["numScenarios"].as_u64().unwrap() * row["numBuckets"].as_u64().unwrap() * 4, "compressedSize": payload.len()});
    let mut r = redis_conn().await;
    let _: () = r
        .set(format!("{prefix}{k}"), legacy.to_string())
        .await
        .unwrap();
    let fresh = Cache::open(options(&db, &prefix)).await.unwrap();
    let hit = fresh.get_or_generate(&cfg).await.unwrap();
    assert_eq!(hit.source, Source::Redis);
    assert_eq!(
        hit.entry.decode().unwrap(),
        codec::decode_legacy_zlib(&payload, 1000, 1).unwrap()
    );
    fresh.flush().await;
    let raw: Vec<u8> = r.get(format!("{prefix}{k}")).await.unwrap();
    assert_eq!(
        &raw[..4],
        b"SMCR",
        "legacy value should be rewritten in the new format"
    );
    assert_eq!(fresh.stats().legacy_rewrites, 1);
    assert_eq!(count_rows(&db, &k).await, 1, "stored durably");

    // Garbage in Redis is a counted miss, served from PostgreSQL and overwritten.
    let _: () = r
        .set(format!("{prefix}{k}"), b"\x00garbage".as_slice())
        .await
        .unwrap();
    let third = Cache::open(options(&db, &prefix)).await.unwrap();
    assert_eq!(
        third.get_or_generate(&cfg).await.unwrap().source,
        Source::Postgres
    );
    third.flush().await;
    assert_eq!(third.stats().corrupt_entries, 1);
    let raw: Vec<u8> = r.get(format!("{prefix}{k}")).await.unwrap();
    assert_eq!(&raw[..4], b"SMCR");
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn durable_write_failure_caches_nothing() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cache = Cache::open(options(&db, &prefix)).await.unwrap();
    let mut c = db.connect().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full (test)'; END $$;
         CREATE TRIGGER refuse_insert BEFORE INSERT ON scenario_matrices FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let cfg = config("write-fails", 1_000);
    let k = key::canonical_key(&cfg);
    let err = cache.get_or_generate(&cfg).await.unwrap_err();
    assert_eq!(err.code(), "E_DURABLE_WRITE", "{err}");
    // Nothing anywhere: the next call fails the same way instead of hitting memory or Redis.
    let mut r = redis_conn().await;
    let exists: bool = r.exists(format!("{prefix}{k}")).await.unwrap();
    assert!(!exists);
    assert_eq!(
        cache.get_or_generate(&cfg).await.unwrap_err().code(),
        "E_DURABLE_WRITE"
    );
    assert_eq!(cache.stats().memory_tier.unwrap().entries, 0);
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_never_fails_a_call() {
    let db = TestDb::create().await;
    // Nothing listens on port 1.
    let opts = CacheOptions {
        redis_url: Some("redis://127.0.0.1:1/".into()),
        ..options(&db, "unused:")
    };
    let cache = Cache::open(opts).await.unwrap();
    let cfg = config("redis-down", 1_000);
    assert_eq!(
        cache.get_or_generate(&cfg).await.unwrap().source,
        Source::Generated
    );
    assert_eq!(
        cache.get_or_generate(&cfg).await.unwrap().source,
        Source::Memory
    );
    assert!(cache.stats().redis_breaker.unwrap().openings >= 1);
    cache.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalidate_removes_from_every_tier_and_allows_regeneration() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cache = Cache::open(options(&db, &prefix)).await.unwrap();
    let a = config("fund-a", 500);
    let a2 = scenario_matrix_cache::ScenarioConfig {
        num_scenarios: 600,
        ..a.clone()
    };
    let b = config("fund-b", 500);
    for c in [&a, &a2, &b] {
        cache.get_or_generate(c).await.unwrap();
    }
    let ka = key::canonical_key(&a);
    assert!(cache.invalidate(&ka).await.unwrap());
    assert!(!cache.invalidate(&ka).await.unwrap());
    assert_eq!(count_rows(&db, &ka).await, 0);
    let mut r = redis_conn().await;
    let exists: bool = r.exists(format!("{prefix}{ka}")).await.unwrap();
    assert!(!exists);
    assert_eq!(
        cache.get_or_generate(&a).await.unwrap().source,
        Source::Generated
    );
    assert_eq!(count_rows(&db, &ka).await, 1);

    assert_eq!(
        cache
            .invalidate_fund("fund-a", Some("other-version"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(cache.invalidate_fund("fund-a", None).await.unwrap(), 2);
    assert_eq!(
        cache.get_or_generate(&a2).await.unwrap().source,
        Source::Generated
    );
    assert_eq!(
        cache.get_or_generate(&b).await.unwrap().source,
        Source::Memory
    );

    cache.close().await;
    assert_eq!(
        cache.get_or_generate(&b).await.unwrap_err().code(),
        "E_CLOSED"
    );
    assert_eq!(cache.invalidate(&ka).await.unwrap_err().code(), "E_CLOSED");
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalidate_waits_for_pending_redis_writes() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cache = Cache::open(options(&db, &prefix)).await.unwrap();
    // A durable hit of the largest size schedules a background Redis write of
    // about 16 MB; invalidate right after must leave no copy behind. (Two
    // guards: the invalidation epoch stops writes that have not started, and
    // invalidate waits for those already under way.)
    let (rows, cols) = (100_000, 50);
    let cfg = sample::sample_config(rows, cols, 7);
    let k = key::canonical_key(&cfg);
    let r = redis_conn().await;
    for attempt in 0..5 {
        let seed = Cache::open(CacheOptions {
            redis_url: Some(String::new()),
            ..options(&db, &prefix)
        })
        .await
        .unwrap();
        seed.get_or_generate(&cfg).await.unwrap();
        seed.close().await;
        let hit = cache.get_or_generate(&cfg).await.unwrap();
        assert_eq!(hit.source, Source::Postgres);
        assert!(cache.invalidate(&k).await.unwrap());
        cache.flush().await;
        let exists: bool = r.clone().exists(format!("{prefix}{k}")).await.unwrap();
        assert!(
            !exists,
            "a pending Redis write brought {k} back (attempt {attempt})"
        );
        assert!(cache.get(&k).await.unwrap().is_none());
    }
    cache.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_hit_fills_memory() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cfg = config("redis-fills-memory", 2_000);
    let k = key::canonical_key(&cfg);
    let first = Cache::open(options(&db, &prefix)).await.unwrap();
    let miss = first.get_or_generate(&cfg).await.unwrap();
    first.close().await;

    let second = Cache::open(options(&db, &prefix)).await.unwrap();
    let hit = second.get_or_generate(&cfg).await.unwrap();
    assert_eq!(hit.source, Source::Redis);
    let again = second.get_or_generate(&cfg).await.unwrap();
    assert_eq!(again.source, Source::Memory, "a Redis hit fills memory");
    assert_eq!(again.entry, miss.entry);
    // The same through lookup by key, on a third instance.
    let third = Cache::open(options(&db, &prefix)).await.unwrap();
    assert_eq!(third.get(&k).await.unwrap().unwrap().source, Source::Redis);
    assert_eq!(third.get(&k).await.unwrap().unwrap().source, Source::Memory);
    assert_eq!(second.stats().redis.hits, 1);
    second.close().await;
    third.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

/// Redis hits of matrices on both sides of the one-request read (256 KiB):
/// a smaller one is asked for whole in one request, a larger one (below the
/// bulk reader's 1 MiB) is sized first. Both come back byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn redis_hits_on_both_sides_of_the_first_read() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let writer = Cache::open(options(&db, &prefix)).await.unwrap();
    let no_memory = || CacheOptions {
        memory_max_bytes: Some(0),
        ..options(&db, &prefix)
    };
    let reader = Cache::open(no_memory()).await.unwrap();
    let mut sizes = Vec::new();
    for rows in [15_000, 60_000] {
        let cfg = config("first-read-fund", rows);
        let miss = writer.get_or_generate(&cfg).await.unwrap();
        writer.flush().await; // the Redis write is in the background
        sizes.push(miss.entry.payload.len());
        for _ in 0..2 {
            let hit = reader.get_or_generate(&cfg).await.unwrap();
            assert_eq!(hit.source, Source::Redis, "{rows} rows");
            assert_eq!(hit.entry, miss.entry, "{rows} rows");
        }
    }
    assert!(
        sizes[0] < 256 << 10 && (256 << 10..1 << 20).contains(&sizes[1]),
        "payload sizes {sizes:?} should fall on both sides of 256 KiB"
    );
    let s = reader.stats();
    assert_eq!((s.redis.hits, s.redis.errors, s.corrupt_entries), (4, 0, 0));
    writer.close().await;
    reader.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_default_serves_a_second_instance() {
    let dir = std::env::temp_dir().join(unique("smc-sqlite"));
    let db = dir.join("nested/cache.db");
    let opts = || CacheOptions {
        database_url: Some(format!("sqlite://{}", db.display())),
        redis_url: Some(String::new()),
        ..Default::default()
    };
    let cfg = config("sqlite-fund", 3_000);
    let first = Cache::open(opts()).await.unwrap();
    let miss = first.get_or_generate(&cfg).await.unwrap();
    assert_eq!(miss.source, Source::Generated);
    let second = Cache::open(opts()).await.unwrap();
    let hit = second.get_or_generate(&cfg).await.unwrap();
    assert_eq!(hit.source, Source::Sqlite);
    assert_eq!(hit.entry, miss.entry);
    first.close().await;
    second.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// A large memory hit is handed out as a copy-on-write mapping of the sealed
/// payload (src/sealed.rs): whatever the caller writes into it stays its
/// own, and the next caller gets the matrix as it was generated.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_writing_into_a_large_memory_hit_changes_nothing_cached() {
    use scenario_matrix_cache::cache::CallerBytes;
    let dir = std::env::temp_dir().join(unique("smc-sealed"));
    let cache = Cache::open(CacheOptions {
        database_url: Some(format!("sqlite://{}/c.db", dir.display())),
        redis_url: Some(String::new()),
        ..Default::default()
    })
    .await
    .unwrap();
    let cfg = common::six(&[0, 1, 2, 3, 4, 5], 100_000, "sealed-fund");
    let miss = cache.get_or_generate(&cfg).await.unwrap();
    assert!(miss.entry.payload.len() >= scenario_matrix_cache::sealed::MIN_LEN);
    let generated = codec::decode(&miss.entry.payload).unwrap();
    for round in 0..3 {
        let hit = cache.get_or_generate(&cfg).await.unwrap();
        assert_eq!(hit.source, Source::Memory);
        // By key (the stored order): the case that maps (the payload is
        // sealed on the first such hit).
        let mut mine = cache.for_caller(hit, None).await.unwrap();
        assert_eq!(
            codec::decode(&mine.payload).unwrap(),
            generated,
            "round {round}"
        );
        let CallerBytes::Mapped(m) = &mut mine.payload else {
            panic!(
                "a large memory hit in the stored order is mapped: {:?}",
                mine.payload
            );
        };
        // Every byte changed, header and checksums included.
        for b in m.iter_mut() {
            *b = b.wrapping_add(1 + round);
        }
        assert!(codec::decode(&mine.payload).is_err());
    }
    // A caller in another bucket order gets a copy with its column map.
    let other = common::six(&[5, 4, 3, 2, 1, 0], 100_000, "sealed-fund");
    let hit = cache.get_or_generate(&other).await.unwrap();
    assert_eq!(hit.source, Source::Memory);
    let theirs = hit.for_caller(Some(&other)).unwrap();
    assert!(matches!(theirs.payload, CallerBytes::Copied(_)));
    let expected = miss.for_caller(Some(&other)).unwrap();
    assert_eq!(
        codec::decode(&theirs.payload).unwrap(),
        codec::decode(&expected.payload).unwrap()
    );
    // Held by the memory tier, a payload is never handed over.
    let hit = cache.get_or_generate(&cfg).await.unwrap();
    let mapped = cache.for_caller(hit, None).await.unwrap();
    assert!(matches!(mapped.payload, CallerBytes::Mapped(_)));
    assert_eq!(codec::decode(&mapped.payload).unwrap(), generated);

    // Without a memory tier, a stored copy read for one call is that
    // caller's: handed over, not copied, and the next call reads its own.
    let direct = Cache::open(CacheOptions {
        database_url: Some(format!("sqlite://{}/c.db", dir.display())),
        redis_url: Some(String::new()),
        memory_max_bytes: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    for _ in 0..2 {
        let hit = direct.get_or_generate(&cfg).await.unwrap();
        assert_eq!(hit.source, Source::Sqlite);
        let mut mine = direct.for_caller(hit, None).await.unwrap();
        let CallerBytes::Handed(b) = &mut mine.payload else {
            panic!(
                "a payload nothing else holds is handed over: {:?}",
                mine.payload
            );
        };
        assert_eq!(codec::decode(b).unwrap(), generated);
        b.fill(0);
    }
    direct.close().await;
    cache.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_tier_refuses_entries_larger_than_its_bound() {
    let db = TestDb::create().await;
    let opts = CacheOptions {
        memory_max_bytes: Some(1_000),
        redis_url: Some(String::new()),
        ..options(&db, "unused:")
    };
    let cache = Cache::open(opts).await.unwrap();
    let cfg = config("tiny-memory", 2_000);
    cache.get_or_generate(&cfg).await.unwrap();
    assert_eq!(
        cache.get_or_generate(&cfg).await.unwrap().source,
        Source::Postgres
    );
    let m = cache.stats().memory_tier.unwrap();
    assert_eq!((m.entries, m.rejected_too_large), (0, 2));
    cache.close().await;
    db.drop_db().await;
}

/// A throwaway TLS Redis on a free loopback port with a self-signed
/// certificate; killed on drop.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = std::env::temp_dir().join(unique("smc-tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is needed to make a test certificate");
        assert!(status.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(dir.join("cert.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("key.pem"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is needed for the TLS test");
        // A generous deadline: the machine may be busy with other tests.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return TlsRedis { child, port, dir };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("TLS redis-server did not start on port {port} within 30 s");
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_urls_work() {
    let redis = TlsRedis::start();
    let db = TestDb::create().await;
    // `#insecure`: the certificate is self-signed (redis-rs URL syntax).
    let url = format!("rediss://127.0.0.1:{}/#insecure", redis.port);
    let opts = || CacheOptions {
        redis_url: Some(url.clone()),
        ..options(&db, "tls:")
    };
    let cfg = config("tls-fund", 1_000);
    let first = Cache::open(opts()).await.unwrap();
    assert_eq!(
        first.get_or_generate(&cfg).await.unwrap().source,
        Source::Generated
    );
    first.close().await;
    let second = Cache::open(CacheOptions {
        memory_max_bytes: Some(0),
        ..opts()
    })
    .await
    .unwrap();
    assert_eq!(
        second.get_or_generate(&cfg).await.unwrap().source,
        Source::Redis
    );
    assert_eq!(second.stats().redis.errors, 0);
    second.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn default_redis_key_is_scenario_matrix_prefix() {
    let db = TestDb::create().await;
    // The default prefix; the key is unique to this run and removed below.
    let opts = CacheOptions {
        redis_key_prefix: None,
        ..options(&db, "")
    };
    let cache = Cache::open(opts).await.unwrap();
    let cfg = config(&unique("default-prefix"), 100);
    let k = key::canonical_key(&cfg);
    cache.get_or_generate(&cfg).await.unwrap();
    cache.flush().await;
    let mut r = redis_conn().await;
    let ttl: i64 = r.ttl(format!("scenario-matrix:{k}")).await.unwrap();
    assert!((86_000..=86_400).contains(&ttl), "ttl {ttl}");
    assert!(cache.invalidate(&k).await.unwrap());
    let exists: bool = r.exists(format!("scenario-matrix:{k}")).await.unwrap();
    assert!(!exists);
    cache.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_payloads_are_never_served_and_durable_rows_are_repaired_when_provable() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cfg = config("damaged", 20_000);
    let k = key::canonical_key(&cfg);
    let first = Cache::open(options(&db, &prefix)).await.unwrap();
    let good = first.get_or_generate(&cfg).await.unwrap();
    first.close().await;

    // One flipped bit in the Redis copy: counted, and PostgreSQL serves the truth.
    let mut r = redis_conn().await;
    let mut raw: Vec<u8> = r.get(format!("{prefix}{k}")).await.unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x10;
    let _: () = r.set(format!("{prefix}{k}"), raw).await.unwrap();
    let (events, seen) = collect_events();
    let second = Cache::open(CacheOptions {
        on_event: events,
        ..options(&db, &prefix)
    })
    .await
    .unwrap();
    let hit = second.get_or_generate(&cfg).await.unwrap();
    assert_eq!(hit.source, Source::Postgres);
    assert_eq!(hit.entry, good.entry);
    assert_eq!(second.stats().corrupt_entries, 1);
    // Also reported as it happened, with the tier and the key.
    let corrupt: Vec<Event> = seen.lock().unwrap().clone();
    assert_eq!(corrupt.len(), 1, "{corrupt:?}");
    assert_eq!(corrupt[0].kind, EventKind::CorruptEntry);
    assert_eq!(
        (corrupt[0].tier, corrupt[0].key.as_deref()),
        (Some("redis"), Some(k.as_str()))
    );
    second.close().await;

    // Damage in the durable store (the source of truth): a lookup by key
    // alone cannot repair it, and says so.
    let mut c = db.connect().await;
    let flip = |at: i32| {
        sqlx::query("UPDATE scenario_matrices SET moic_matrix = set_byte(moic_matrix, $2, get_byte(moic_matrix, $2) # 1) WHERE matrix_key = $1")
            .bind(k.clone())
            .bind(at)
    };
    flip(200).execute(&mut c).await.unwrap();
    let _: () = r.del(format!("{prefix}{k}")).await.unwrap();
    let (events, seen) = collect_events();
    let third = Cache::open(CacheOptions {
        on_event: events,
        ..options(&db, &prefix)
    })
    .await
    .unwrap();
    let err = third.get(&k).await.unwrap_err();
    assert_eq!(err.code(), "E_CORRUPT", "{err}");
    assert!(err.to_string().contains(&k));
    // A call with the config repairs it: regenerated, proven equal through
    // the raw-data checksums the row still holds, rewritten, served.
    let hit = third.get_or_generate(&cfg).await.unwrap();
    assert_eq!(hit.source, Source::Generated);
    assert_eq!(hit.entry.payload, good.entry.payload);
    assert_eq!(third.stats().repairs, 1);
    let kinds: Vec<EventKind> = seen.lock().unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::CorruptEntry,
            EventKind::CorruptEntry,
            EventKind::Repair
        ],
        "the lookup by key, then the call that repaired"
    );
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT moic_matrix FROM scenario_matrices WHERE matrix_key = $1")
            .bind(&k)
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(stored, good.entry.payload.to_vec());
    third.close().await;

    // Damage where the checksums cannot be read (the header): not repaired.
    flip(20).execute(&mut c).await.unwrap();
    let _: () = r.del(format!("{prefix}{k}")).await.unwrap();
    let fourth = Cache::open(options(&db, &prefix)).await.unwrap();
    let err = fourth.get_or_generate(&cfg).await.unwrap_err();
    assert_eq!(err.code(), "E_CORRUPT", "{err}");
    assert!(err.to_string().contains("no readable checksums"), "{err}");
    assert_eq!(fourth.stats().repairs, 0);
    fourth.close().await;

    // A damaged row whose intact checksums belong to another matrix (of the
    // same shape): the regenerated one contradicts them, so the row is left
    // as it is and the call fails.
    let other = config("damaged-other", 20_000);
    let other_payload = {
        let c = Cache::open(CacheOptions {
            redis_url: Some(String::new()),
            ..options(&db, &prefix)
        })
        .await
        .unwrap();
        let p = c.get_or_generate(&other).await.unwrap().entry.payload;
        c.close().await;
        p
    };
    let mut bad = other_payload.to_vec();
    bad[200] ^= 1;
    sqlx::query("UPDATE scenario_matrices SET moic_matrix = $2 WHERE matrix_key = $1")
        .bind(&k)
        .bind(&bad)
        .execute(&mut c)
        .await
        .unwrap();
    let _: () = r.del(format!("{prefix}{k}")).await.unwrap();
    let fifth = Cache::open(options(&db, &prefix)).await.unwrap();
    let err = fifth.get_or_generate(&cfg).await.unwrap_err();
    assert_eq!(err.code(), "E_CORRUPT", "{err}");
    assert!(err.to_string().contains("contradicts"), "{err}");
    let kept: Vec<u8> =
        sqlx::query_scalar("SELECT moic_matrix FROM scenario_matrices WHERE matrix_key = $1")
            .bind(&k)
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(
        kept, bad,
        "a row that could not be repaired was overwritten"
    );
    fifth.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

/// Strings that look like SQL or Redis protocol in `fundId` and bucket names
/// are data: stored and returned verbatim, in every tier, and invalidation by
/// such a fund touches that fund only.
#[tokio::test(flavor = "multi_thread")]
async fn sql_and_redis_lookalikes_are_stored_and_returned_verbatim() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let fund = "x'); DROP TABLE scenario_matrices; -- \" $1 ?1 %s \\";
    let names = [
        "*1\r\n$8\r\nFLUSHALL\r\n",
        "'; SELECT pg_sleep(10); --",
        "KEYS *",
        "\\x00ff; COPY scenario_matrices TO PROGRAM 'true'",
    ];
    let buckets: Vec<serde_json::Value> = names
        .iter()
        .map(|n| serde_json::json!({"name": n, "capitalAllocation": 25, "moicCalibration": {"median": 1.5, "p90": 4}}))
        .collect();
    let json = serde_json::json!({
        "fundId": fund, "taxonomyVersion": "v1; DEL *", "numScenarios": 300, "buckets": buckets,
        "correlationWeights": {"macro": 0.5, "systematic": 0.25, "idiosyncratic": 0.25},
        "recycling": {"enabled": false}
    });
    let cfg = scenario_matrix_cache::ScenarioConfig::from_json_str(&json.to_string()).unwrap();
    let k = key::canonical_key(&cfg);
    let other = config("bystander", 300);

    let cache = Cache::open(options(&db, &prefix)).await.unwrap();
    let first = cache.get_or_generate(&cfg).await.unwrap();
    cache.get_or_generate(&other).await.unwrap();
    cache.flush().await;
    let mut sorted = names.map(String::from).to_vec();
    sorted.sort_by(|a, b| key::compare_names(a, b));
    assert_eq!(first.entry.metadata.bucket_names, sorted);
    let mine = first.for_caller(Some(&cfg)).unwrap();
    assert_eq!(mine.metadata.bucket_names, names.map(String::from).to_vec());

    let mut c = db.connect().await;
    let (fund_id, taxonomy): (String, String) = sqlx::query_as(
        "SELECT fund_id, taxonomy_version FROM scenario_matrices WHERE matrix_key = $1",
    )
    .bind(&k)
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!((fund_id.as_str(), taxonomy.as_str()), (fund, "v1; DEL *"));

    // From Redis, and from PostgreSQL, by key: the same names.
    for (memory_and_redis, source) in [(Some(0), Source::Redis), (None, Source::Postgres)] {
        let fresh = Cache::open(CacheOptions {
            memory_max_bytes: memory_and_redis,
            redis_url: memory_and_redis.map_or(Some(String::new()), |_| Some(REDIS_URL.into())),
            ..options(&db, &prefix)
        })
        .await
        .unwrap();
        let hit = fresh.get(&k).await.unwrap().unwrap();
        assert_eq!(hit.source, source);
        assert_eq!(hit.entry.metadata.bucket_names, sorted);
        assert_eq!(hit.entry.payload, first.entry.payload);
        fresh.close().await;
    }

    assert_eq!(cache.invalidate_fund(fund, None).await.unwrap(), 1);
    assert_eq!(count_rows(&db, &k).await, 0);
    assert_eq!(count_rows(&db, &key::canonical_key(&other)).await, 1);
    cache.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

/// A database that does not exist is named, with how to create it, and the
/// message carries none of the server's source-location noise.
#[tokio::test]
async fn a_missing_database_is_named_with_how_to_create_it() {
    let name = unique("smc_missing");
    let err = Cache::open(CacheOptions {
        database_url: Some(format!("postgres://postgres:s3cret@127.0.0.1:5432/{name}")),
        redis_url: Some(String::new()),
        ..Default::default()
    })
    .await
    .err()
    .expect("opened a database that does not exist");
    let msg = err.to_string();
    assert_eq!(err.code(), "E_DURABLE_UNAVAILABLE", "{msg}");
    assert!(
        msg.contains(&format!(
            "database \"{name}\" does not exist on 127.0.0.1:5432"
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "createdb -h 127.0.0.1 -p 5432 -U postgres '{name}'"
        )),
        "{msg}"
    );
    assert!(!msg.contains("s3cret") && !msg.contains(" line "), "{msg}");
}

/// An event sink that keeps what it is told.
fn collect_events() -> (Events, Arc<std::sync::Mutex<Vec<Event>>>) {
    let seen: Arc<std::sync::Mutex<Vec<Event>>> = Arc::default();
    let sink = seen.clone();
    (Events::to(move |e| sink.lock().unwrap().push(e)), seen)
}

/// Slow calls are reported with their key, duration and outcome.
#[tokio::test]
async fn slow_calls_are_reported() {
    let dir = std::env::temp_dir().join(unique("smc_slow"));
    let (events, seen) = collect_events();
    let cache = Cache::open(CacheOptions {
        database_url: Some(format!("sqlite://{}/c.db", dir.display())),
        redis_url: Some(String::new()),
        slow_call_ms: Some(1),
        on_event: events,
        ..Default::default()
    })
    .await
    .unwrap();
    let cfg = config("slow", 20_000);
    cache.get_or_generate(&cfg).await.unwrap();
    let slow: Vec<Event> = seen.lock().unwrap().clone();
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert_eq!(slow[0].kind, EventKind::SlowCall);
    assert_eq!(
        slow[0].key.as_deref(),
        Some(key::canonical_key(&cfg).as_str())
    );
    assert_eq!(slow[0].message.as_deref(), Some("generated"));
    assert!(slow[0].ms.unwrap() >= 1.0);
    cache.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `regenerateMinBytes`: a durable hit of a large matrix is generated again
/// and served only when its encoding matches the stored row (its length and
/// its first 64 KiB: the header, every chunk's checksums, the start of the
/// data). A row that says otherwise (here: a valid envelope of another
/// matrix, as a different generator would have written) is read whole and
/// served as stored, the durable store being the source of truth.
#[tokio::test(flavor = "multi_thread")]
async fn large_durable_hits_are_regenerated_only_when_proven_equal_to_the_row() {
    let db = TestDb::create().await;
    let cfg = config("regenerated", 100_000); // 1.2 MB raw: two chunks
    let k = key::canonical_key(&cfg);
    let opts = |min: u64| CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(String::new()),
        memory_max_bytes: Some(0),
        regenerate_min_bytes: Some(min),
        ..Default::default()
    };
    let writer = Cache::open(opts(0)).await.unwrap();
    let miss = writer.get_or_generate(&cfg).await.unwrap();
    assert_eq!(miss.source, Source::Generated);

    let regen = Cache::open(opts(1)).await.unwrap();
    let hit = regen.get_or_generate(&cfg).await.unwrap();
    assert_eq!(hit.source, Source::Postgres);
    assert_eq!(hit.entry, miss.entry, "payload and metadata are the row's");
    let (_, regenerated) = regen.get_matrix(&cfg).await.unwrap();
    let (_, read) = writer.get_matrix(&cfg).await.unwrap();
    assert_eq!(regenerated, read);
    let s = regen.stats();
    assert_eq!(
        (s.regenerated_hits, s.regenerations_unproven, s.generations),
        (2, 0, 0)
    );
    assert_eq!(s.durable.hits, 2);

    // Below the threshold, or with it at 0, the row is read as before.
    let off = Cache::open(opts(0)).await.unwrap();
    assert_eq!(off.get_or_generate(&cfg).await.unwrap().entry, miss.entry);
    assert_eq!(off.stats().regenerated_hits, 0);
    let high = Cache::open(opts(1_200_001)).await.unwrap();
    assert_eq!(high.get_or_generate(&cfg).await.unwrap().entry, miss.entry);
    assert_eq!(high.stats().regenerated_hits, 0);

    // The row now holds another matrix of the same shape (its last value changed).
    let mut other = codec::decode(&miss.entry.payload).unwrap();
    let last = other.len() - 1;
    other[last] += 1.0;
    let other_payload = codec::encode(&other, 100_000, 3).unwrap();
    assert_eq!(other_payload.len(), miss.entry.payload.len());
    let mut c = db.connect().await;
    sqlx::query("UPDATE scenario_matrices SET moic_matrix = $2 WHERE matrix_key = $1")
        .bind(&k)
        .bind(&other_payload)
        .execute(&mut c)
        .await
        .unwrap();
    let after = Cache::open(opts(1)).await.unwrap();
    let hit = after.get_or_generate(&cfg).await.unwrap();
    assert_eq!(hit.source, Source::Postgres);
    assert_eq!(
        &hit.entry.payload[..],
        &other_payload[..],
        "served as stored"
    );
    let s = after.stats();
    assert_eq!((s.regenerated_hits, s.regenerations_unproven), (0, 1));
    // Not tried again for that key (each try would cost a generation too).
    let again = after.get_or_generate(&cfg).await.unwrap();
    assert_eq!(&again.entry.payload[..], &other_payload[..]);
    assert_eq!(after.stats().regenerations_unproven, 1);
    for c in [writer, regen, off, high, after] {
        c.close().await;
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_sqlite_hits_are_regenerated_too() {
    let dir = std::env::temp_dir().join(unique("smc-sqlite-regen"));
    let opts = |min: u64| CacheOptions {
        database_url: Some(format!("sqlite://{}", dir.join("cache.db").display())),
        redis_url: Some(String::new()),
        memory_max_bytes: Some(0),
        regenerate_min_bytes: Some(min),
        ..Default::default()
    };
    let cfg = config("regenerated-sqlite", 100_000);
    let writer = Cache::open(opts(0)).await.unwrap();
    let miss = writer.get_or_generate(&cfg).await.unwrap();
    let reader = Cache::open(opts(1)).await.unwrap();
    let hit = reader.get_or_generate(&cfg).await.unwrap();
    assert_eq!(hit.source, Source::Sqlite);
    assert_eq!(hit.entry, miss.entry);
    assert_eq!(reader.stats().regenerated_hits, 1);
    writer.close().await;
    reader.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}
