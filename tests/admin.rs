//! The operator functions (CLI `stats`, `verify`, `gc`) against real
//! PostgreSQL, Redis and SQLite. Each test has its own database or file and
//! Redis prefix.

mod common;

use base64::Engine;
use common::{config, drop_redis_prefix, legacy_table, redis_conn, unique, TestDb, REDIS_URL};
use redis::AsyncCommands;
use scenario_matrix_cache::cache::{Cache, CacheOptions, Repaired, RowStatus};
use scenario_matrix_cache::tier::Source;
use scenario_matrix_cache::{codec, key, ScenarioConfig};

fn options(db: &TestDb, prefix: &str) -> CacheOptions {
    CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(REDIS_URL.into()),
        redis_key_prefix: Some(prefix.into()),
        ..Default::default()
    }
}

/// Flips one byte in the middle of the stored payload.
async fn damage(db: &TestDb, key: &str) {
    let mut c = db.connect().await;
    sqlx::query(
        "UPDATE scenario_matrices \
            SET moic_matrix = overlay(moic_matrix PLACING '\\xff'::bytea FROM octet_length(moic_matrix) / 2 FOR 1) \
          WHERE matrix_key = $1",
    )
    .bind(key)
    .execute(&mut c)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_damage_and_repairs_only_what_it_can_prove() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cache = Cache::open(options(&db, &prefix)).await.unwrap();
    let plain = config("verify-fund", 2_000);
    let seeded = ScenarioConfig::from_json_str(
        &common::config_json("verify-fund", 2_000).replace("\"fundId\"", "\"seed\": 7, \"fundId\""),
    )
    .unwrap();
    let (kp, ks) = (key::canonical_key(&plain), key::canonical_key(&seeded));
    assert_ne!(kp, ks);
    let original = cache.get_matrix(&plain).await.unwrap().1;
    cache.get_or_generate(&seeded).await.unwrap();

    for k in [&kp, &ks] {
        assert_eq!(
            cache.verify_row(k, false).await.unwrap().status,
            RowStatus::Ok
        );
        damage(&db, k).await;
        let c = cache.verify_row(k, false).await.unwrap();
        assert_eq!(c.status, RowStatus::Damaged, "{c:?}");
        assert!(c.detail.is_some() && c.repaired.is_none() && c.repair_error.is_none());
    }

    // The plain config is rebuilt from the row, regenerated, proven equal to
    // the checksums the row kept, and rewritten.
    let c = cache.verify_row(&kp, true).await.unwrap();
    assert_eq!(c.repaired, Some(Repaired::Regenerated), "{c:?}");
    assert_eq!(
        cache.verify_row(&kp, false).await.unwrap().status,
        RowStatus::Ok
    );
    // The rewritten row alone (no memory tier, no Redis) holds the original.
    let durable_only = Cache::open(CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(String::new()),
        memory_max_bytes: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let (hit, again) = durable_only.get_matrix(&plain).await.unwrap();
    assert_eq!((hit.source, again), (Source::Postgres, original));
    durable_only.close().await;

    // The seed is not stored: the config cannot be rebuilt, nothing is touched.
    let c = cache.verify_row(&ks, true).await.unwrap();
    assert_eq!(c.status, RowStatus::Damaged);
    let e = c
        .repair_error
        .expect("a seeded row cannot be repaired here");
    assert_eq!(e.code(), "E_CORRUPT");
    assert!(e.to_string().contains("seeded"), "{e}");
    assert_eq!(
        cache.verify_row(&ks, false).await.unwrap().status,
        RowStatus::Damaged
    );

    // A key with no row, and a malformed key.
    let absent = "0".repeat(64);
    assert_eq!(
        cache.verify_row(&absent, true).await.unwrap().status,
        RowStatus::Missing
    );
    assert_eq!(
        cache.verify_row("nope", false).await.unwrap_err().code(),
        "E_INVALID_ARGUMENT"
    );

    // Unreadable: a row whose columns cannot be interpreted is left alone.
    let mut c = db.connect().await;
    sqlx::query("UPDATE scenario_matrices SET payload_format = 9 WHERE matrix_key = $1")
        .bind(&ks)
        .execute(&mut c)
        .await
        .unwrap();
    let r = cache.verify_row(&ks, true).await.unwrap();
    assert_eq!(r.status, RowStatus::Unreadable, "{r:?}");
    assert!(r.detail.unwrap().contains("payload_format 9"));
    cache.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_rows_are_rewritten_with_their_values_or_regenerated() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let b64 = base64::engine::general_purpose::STANDARD;
    // The first row's s_opt records no recycling settings: its config cannot
    // be rebuilt. The others record them.
    let fixture = legacy_table(&db, |i, cfg| {
        if i == 0 {
            serde_json::json!({"correlationWeights": cfg["correlationWeights"]})
        } else {
            serde_json::json!({"correlationWeights": cfg["correlationWeights"], "recycling": cfg["recycling"]})
        }
    })
    .await;
    let rows = fixture.as_array().unwrap();
    let cache = Cache::open(options(&db, &prefix)).await.unwrap();
    let report = cache.store_report().await.unwrap();
    assert_eq!((report.summary.rows, report.summary.legacy_rows), (3, 3));

    for (i, row) in rows.iter().enumerate() {
        let k = row["matrixKey"].as_str().unwrap();
        let check = cache.verify_row(k, false).await.unwrap();
        assert_eq!(check.status, RowStatus::Legacy, "{check:?}");
        let repaired = cache.verify_row(k, true).await.unwrap();
        let buckets = row["numBuckets"].as_u64().unwrap();
        match (i, buckets) {
            (0, _) => {
                assert_eq!(repaired.repaired, None);
                assert!(repaired.detail.unwrap().contains("left as it is"));
                assert_eq!(
                    cache.verify_row(k, false).await.unwrap().status,
                    RowStatus::Legacy
                );
            }
            (_, 1) => {
                assert_eq!(repaired.repaired, Some(Repaired::Rewritten), "{repaired:?}");
                assert_eq!(
                    cache.verify_row(k, false).await.unwrap().status,
                    RowStatus::Ok
                );
                // The same values the TypeScript app stored, now checksummed.
                let cfg = ScenarioConfig::from_json_str(&row["config"].to_string()).unwrap();
                let (hit, m) = cache.get_matrix(&cfg).await.unwrap();
                assert_eq!(hit.source, Source::Postgres);
                let want: Vec<f32> = b64
                    .decode(row["float32LeBase64"].as_str().unwrap())
                    .unwrap()
                    .chunks(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                assert_eq!(m, want);
            }
            _ => {
                // Several buckets: no column order recorded, so generated afresh.
                assert_eq!(
                    repaired.repaired,
                    Some(Repaired::Regenerated),
                    "{repaired:?}"
                );
                assert_eq!(
                    cache.verify_row(k, false).await.unwrap().status,
                    RowStatus::Ok
                );
            }
        }
    }
    assert_eq!(cache.store_report().await.unwrap().summary.legacy_rows, 1);
    cache.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn report_pages_and_gc_on_postgres_and_redis() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cache = Cache::open(options(&db, &prefix)).await.unwrap();
    let cfgs = [
        config("gc-a", 100),
        config("gc-a", 200),
        config("gc-b", 300),
    ];
    for c in &cfgs {
        cache.get_or_generate(c).await.unwrap();
    }
    cache.flush().await;
    let keys: Vec<String> = cfgs.iter().map(key::canonical_key).collect();

    let r = cache.store_report().await.unwrap();
    assert_eq!(r.store, Source::Postgres);
    assert_eq!((r.summary.rows, r.summary.legacy_rows), (3, 0));
    assert_eq!((r.redis_keys, r.redis_error), (Some(3), None));
    let mut c = db.connect().await;
    let bytes: i64 =
        sqlx::query_scalar("SELECT sum(octet_length(moic_matrix))::int8 FROM scenario_matrices")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(r.summary.bytes, bytes as u64);
    let funds: Vec<(Option<String>, u64)> = r
        .summary
        .by_fund
        .iter()
        .map(|f| (f.fund_id.clone(), f.rows))
        .collect();
    assert_eq!(funds, [(Some("gc-a".into()), 2), (Some("gc-b".into()), 1)]);
    assert!(r.summary.oldest.unwrap() <= r.summary.newest.unwrap());

    // Paging in key order.
    let mut sorted = keys.clone();
    sorted.sort();
    let first = cache.row_keys(None, 2).await.unwrap();
    assert_eq!(first, sorted[..2]);
    let rest = cache.row_keys(Some(&first[1]), 2).await.unwrap();
    assert_eq!(rest, sorted[2..]);
    assert_eq!(
        cache.row_keys(None, 0).await.unwrap_err().code(),
        "E_INVALID_ARGUMENT"
    );

    // Age one row of gc-a by 40 days.
    sqlx::query("UPDATE scenario_matrices SET created_at = now() - interval '40 days' WHERE matrix_key = $1")
        .bind(&keys[0])
        .execute(&mut c)
        .await
        .unwrap();
    let thirty_days = 30 * 24 * 3600 * 1000;
    let dry = cache.gc(thirty_days, None, true).await.unwrap();
    assert_eq!((dry.keys, dry.redis_keys), (vec![keys[0].clone()], Some(1)));
    assert_eq!(cache.store_report().await.unwrap().summary.rows, 3);
    assert!(cache
        .gc(thirty_days, Some("gc-b"), false)
        .await
        .unwrap()
        .keys
        .is_empty());

    let done = cache.gc(thirty_days, Some("gc-a"), false).await.unwrap();
    assert_eq!(
        (done.keys.clone(), done.redis_keys),
        (vec![keys[0].clone()], Some(1))
    );
    let mut r = redis_conn().await;
    let left: bool = r.exists(format!("{prefix}{}", keys[0])).await.unwrap();
    assert!(!left);
    assert!(
        cache.get(&keys[0]).await.unwrap().is_none(),
        "memory copy removed too"
    );
    assert!(cache.get(&keys[1]).await.unwrap().is_some());
    assert_eq!(cache.store_report().await.unwrap().summary.rows, 2);
    cache.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn report_verify_and_gc_on_sqlite() {
    let dir = std::env::temp_dir().join(unique("smc_admin"));
    let path = dir.join("cache.db");
    let cache = Cache::open(CacheOptions {
        database_url: Some(path.display().to_string()),
        redis_url: Some(String::new()),
        ..Default::default()
    })
    .await
    .unwrap();
    let (a, b) = (config("lite-a", 100), config("lite-b", 100));
    cache.get_or_generate(&a).await.unwrap();
    cache.get_or_generate(&b).await.unwrap();
    let r = cache.store_report().await.unwrap();
    assert_eq!(
        (r.store, r.summary.rows, r.redis_keys),
        (Source::Sqlite, 2, None)
    );
    assert!(r.summary.bytes > 0);
    let ka = key::canonical_key(&a);
    assert_eq!(
        cache.verify_row(&ka, false).await.unwrap().status,
        RowStatus::Ok
    );

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    // Damage the payload's last stored byte and age the row by 40 days.
    let payload: Vec<u8> =
        sqlx::query_scalar("SELECT moic_matrix FROM scenario_matrices WHERE matrix_key = ?1")
            .bind(&ka)
            .fetch_one(&pool)
            .await
            .unwrap();
    let mut bad = payload.clone();
    *bad.last_mut().unwrap() ^= 0x55;
    assert!(codec::verify(&bad).is_err());
    sqlx::query(
        "UPDATE scenario_matrices SET moic_matrix = ?1, \
         created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days') WHERE matrix_key = ?2",
    )
    .bind(&bad)
    .bind(&ka)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        cache.verify_row(&ka, false).await.unwrap().status,
        RowStatus::Damaged
    );
    let day = 24 * 3600 * 1000;
    assert_eq!(
        cache.gc(30 * day, None, true).await.unwrap().keys,
        [ka.clone()]
    );
    assert_eq!(
        cache.gc(30 * day, None, false).await.unwrap().keys,
        [ka.clone()]
    );
    assert_eq!(cache.store_report().await.unwrap().summary.rows, 1);
    assert_eq!(
        cache.verify_row(&ka, false).await.unwrap().status,
        RowStatus::Missing
    );
    pool.close().await;
    cache.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_deletes_a_backlog_in_batches_each_recorded() {
    use scenario_matrix_cache::tier::invalidation::GC_BATCH;
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cache = Cache::open(options(&db, &prefix)).await.unwrap();
    let n = GC_BATCH + 5;
    for i in 0..n {
        cache
            .get_or_generate(&config(&format!("batch-{i}"), 10))
            .await
            .unwrap();
    }
    cache.flush().await;
    let mut c = db.connect().await;
    sqlx::query("UPDATE scenario_matrices SET created_at = now() - interval '2 days'")
        .execute(&mut c)
        .await
        .unwrap();
    let day = 24 * 3600 * 1000;
    let done = cache.gc(day, None, false).await.unwrap();
    assert_eq!((done.keys.len(), done.redis_keys), (n, Some(n as u64)));
    assert_eq!(cache.store_report().await.unwrap().summary.rows, 0);
    let batches: Vec<i32> = sqlx::query_scalar(
        "SELECT removed FROM scenario_matrix_invalidations WHERE scope = 'gc' ORDER BY id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(batches, [GC_BATCH as i32, 5]);
    cache.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}
