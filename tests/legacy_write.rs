//! The transition mode (`writeLegacyFormat`) against real PostgreSQL and
//! Redis: what it writes is what the TypeScript code reads (zlib payload,
//! `scenario_states`, JSON + base64 in Redis), read back the way that code
//! reads it; every instance of this package reads it back as the same matrix
//! without generating; with the mode off, calls and `verify --repair` convert
//! it to our format. Each test has its own database and Redis prefix.

mod common;

use std::io::Read;

use base64::Engine;
use common::{drop_redis_prefix, legacy_table, redis_conn, six, unique, TestDb, REDIS_URL};
use redis::AsyncCommands;
use scenario_matrix_cache::cache::{Cache, CacheOptions, Repaired, RowStatus};
use scenario_matrix_cache::tier::Source;
use scenario_matrix_cache::{codec, key, ScenarioConfig};
use serde_json::Value as Json;
use sqlx::Row;

/// Memory off, so every call reads the shared tiers; Redis only with `redis`.
fn options(db: &TestDb, prefix: &str, legacy: bool, redis: bool) -> CacheOptions {
    CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(if redis {
            REDIS_URL.into()
        } else {
            String::new()
        }),
        redis_key_prefix: Some(prefix.into()),
        memory_max_bytes: Some(0),
        write_legacy_format: Some(legacy),
        ..Default::default()
    }
}

fn inflate(z: &[u8]) -> Vec<f32> {
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(z)
        .read_to_end(&mut raw)
        .unwrap();
    raw.chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Column `j` of a row-major matrix of `cols` columns.
fn column(m: &[f32], cols: usize, j: usize) -> Vec<f32> {
    m.iter().skip(j).step_by(cols).copied().collect()
}

/// The row as the TypeScript code reads it: the inflated payload, the
/// scenario count as the length of `scenario_states.scenarios`, and the
/// bucket names of `bucket_params`; plus our `payload_format`.
async fn typescript_row(db: &TestDb, k: &str) -> (Vec<f32>, usize, Vec<String>, Option<i16>) {
    let mut c = db.connect().await;
    let r = sqlx::query(
        "SELECT moic_matrix, compression_codec, status, scenario_states::text AS states,
                bucket_params::text AS buckets, payload_format
           FROM scenario_matrices WHERE matrix_key = $1",
    )
    .bind(k)
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(r.get::<String, _>("compression_codec"), "zstd");
    assert_eq!(r.get::<String, _>("status"), "complete");
    let format: Option<i16> = r.get("payload_format");
    let payload: Vec<u8> = r.get("moic_matrix");
    let matrix = if format == Some(2) {
        codec::decode(&payload).unwrap()
    } else {
        inflate(&payload)
    };
    let states: Json = serde_json::from_str(&r.get::<String, _>("states")).unwrap();
    let count = states["scenarios"].as_array().map_or(0, Vec::len);
    let buckets: Json = serde_json::from_str(&r.get::<String, _>("buckets")).unwrap();
    let names = buckets
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    (matrix, count, names, format)
}

/// The Redis value as the TypeScript code reads it: JSON, base64, zlib.
async fn typescript_value(prefix: &str, k: &str) -> (Json, Vec<f32>) {
    let v: Vec<u8> = redis_conn()
        .await
        .get(format!("{prefix}{k}"))
        .await
        .unwrap();
    let j: Json = serde_json::from_slice(&v).expect("a JSON value");
    let z = base64::engine::general_purpose::STANDARD
        .decode(j["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(j["compressedSize"], z.len());
    (j.clone(), inflate(&z))
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_transition_mode_writes_reads_back_in_both_formats() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    // The caller's order is not the key's: Zeta, Alpha, Série B, angel, Growth, Buyout.
    let cfg = six(&[0, 1, 2, 3, 4, 5], 500, "transition");
    let k = key::canonical_key(&cfg);
    let key_names: Vec<String> = key::normalised(&cfg)
        .buckets
        .iter()
        .map(|b| b.name.clone())
        .collect();
    assert_ne!(key_names[0], "Zeta");

    let writer = Cache::open(options(&db, &prefix, true, true))
        .await
        .unwrap();
    let (made, mine) = writer.get_matrix(&cfg).await.unwrap();
    assert_eq!(made.source, Source::Generated);
    writer.flush().await;
    let stored = codec::decode(&made.entry.payload).unwrap(); // the key's order

    // PostgreSQL, read as the TypeScript code reads it: the key's column order, named.
    let (matrix, count, names, format) = typescript_row(&db, &k).await;
    assert_eq!(format, Some(1));
    assert_eq!((matrix.len(), count), (500 * 6, 500));
    assert_eq!(matrix, stored);
    assert_eq!(names, key_names);
    for (j, name) in names.iter().enumerate() {
        let caller_j = cfg.buckets.iter().position(|b| &b.name == name).unwrap();
        assert_eq!(column(&matrix, 6, j), column(&mine, 6, caller_j), "{name}");
    }
    // Redis, likewise, under the TypeScript key naming (prefix + key).
    let (j, values) = typescript_value(&prefix, &k).await;
    assert_eq!(values, stored);
    assert_eq!(
        (&j["numScenarios"], &j["numBuckets"], &j["version"]),
        (&500.into(), &6.into(), &1.into())
    );
    assert_eq!(j["uncompressedSize"], 500 * 6 * 4);
    writer.close().await;

    // Another instance in the mode: a Redis hit, then (without Redis) a
    // PostgreSQL hit; same matrix and metadata, nothing generated, nothing converted.
    for (redis, source) in [(true, Source::Redis), (false, Source::Postgres)] {
        let reader = Cache::open(options(&db, &prefix, true, redis))
            .await
            .unwrap();
        let (hit, m) = reader.get_matrix(&cfg).await.unwrap();
        assert_eq!((hit.source, &m), (source, &mine));
        assert_eq!(hit.entry.metadata, made.entry.metadata);
        assert_eq!(hit.entry.payload, made.entry.payload);
        reader.flush().await;
        assert_eq!(reader.stats().generations, 0);
        reader.close().await;
    }
    assert_eq!(typescript_row(&db, &k).await.3, Some(1));
    assert!(typescript_value(&prefix, &k).await.0.is_object());

    // A TypeScript value (no columns named) whose columns are in another
    // order is never served, in either mode: the row answers. With the mode
    // on the row stays as it is; with it off the hit converts it to our
    // envelope, byte for byte what the miss made.
    let mut swapped = stored.clone();
    for row in swapped.chunks_mut(6) {
        row.swap(0, 5);
    }
    let raw: Vec<u8> = swapped.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &raw).unwrap();
    let z = z.finish().unwrap();
    let ts_value = serde_json::json!({
        "data": base64::engine::general_purpose::STANDARD.encode(&z),
        "numScenarios": 500, "numBuckets": 6, "version": 1,
        "uncompressedSize": raw.len(), "compressedSize": z.len(),
    });
    for (legacy, format) in [(true, 1), (false, 2)] {
        let _: () = redis_conn()
            .await
            .set(format!("{prefix}{k}"), ts_value.to_string())
            .await
            .unwrap();
        let reader = Cache::open(options(&db, &prefix, legacy, true))
            .await
            .unwrap();
        let (hit, m) = reader.get_matrix(&cfg).await.unwrap();
        assert_eq!(
            (hit.source, &m),
            (Source::Postgres, &mine),
            "legacy {legacy}"
        );
        reader.flush().await;
        assert_eq!(reader.stats().generations, 0);
        assert_eq!(typescript_row(&db, &k).await.3, Some(format));
        reader.close().await;
    }
    let mut c = db.connect().await;
    let payload: Vec<u8> =
        sqlx::query_scalar("SELECT moic_matrix FROM scenario_matrices WHERE matrix_key = $1")
            .bind(&k)
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(payload, made.entry.payload.to_vec());
    let off = Cache::open(options(&db, &prefix, false, false))
        .await
        .unwrap();
    assert_eq!(
        off.verify_row(&k, false).await.unwrap().status,
        RowStatus::Ok
    );
    let (hit, m) = off.get_matrix(&cfg).await.unwrap();
    assert_eq!((hit.source, &m), (Source::Postgres, &mine));
    assert_eq!(hit.entry.metadata, made.entry.metadata);
    off.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_values_of_the_transition_mode_are_converted_with_the_mode_off() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cfg = six(&[3, 0, 5, 1, 4, 2], 300, "transition-redis");
    let k = key::canonical_key(&cfg);
    let writer = Cache::open(options(&db, &prefix, true, true))
        .await
        .unwrap();
    let (made, mine) = writer.get_matrix(&cfg).await.unwrap();
    writer.close().await;
    assert!(typescript_value(&prefix, &k).await.0.is_object());

    let off = Cache::open(options(&db, &prefix, false, true))
        .await
        .unwrap();
    let (hit, m) = off.get_matrix(&cfg).await.unwrap();
    assert_eq!((hit.source, &m), (Source::Redis, &mine));
    assert_eq!(hit.entry.metadata, made.entry.metadata);
    off.flush().await;
    let v: Vec<u8> = redis_conn()
        .await
        .get(format!("{prefix}{k}"))
        .await
        .unwrap();
    assert!(v.starts_with(b"SMCR"), "rewritten as our record");
    assert_eq!(off.stats().generations, 0);
    off.close().await;

    // And back: a mode-on instance turns our record into the TypeScript value.
    let on = Cache::open(options(&db, &prefix, true, true))
        .await
        .unwrap();
    assert_eq!(on.get_matrix(&cfg).await.unwrap().0.source, Source::Redis);
    on.flush().await;
    assert_eq!(
        typescript_value(&prefix, &k).await.1,
        codec::decode(&made.entry.payload).unwrap()
    );
    on.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_repair_converts_transition_rows_once_the_mode_is_off() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let cfg = six(&[5, 4, 3, 2, 1, 0], 400, "transition-verify");
    let k = key::canonical_key(&cfg);
    let on = Cache::open(options(&db, &prefix, true, false))
        .await
        .unwrap();
    let (made, mine) = on.get_matrix(&cfg).await.unwrap();
    assert_eq!(on.store_report().await.unwrap().summary.legacy_rows, 1);
    let check = on.verify_row(&k, false).await.unwrap();
    assert_eq!(check.status, RowStatus::Legacy, "{check:?}");
    // While the mode is on, --repair leaves it for the TypeScript instances.
    let check = on.verify_row(&k, true).await.unwrap();
    assert_eq!(check.repaired, None, "{check:?}");
    assert!(check.detail.unwrap().contains("left as it is"));
    assert_eq!(typescript_row(&db, &k).await.3, Some(1));
    on.close().await;

    let off = Cache::open(options(&db, &prefix, false, false))
        .await
        .unwrap();
    let check = off.verify_row(&k, true).await.unwrap();
    assert_eq!(check.repaired, Some(Repaired::Rewritten), "{check:?}");
    assert_eq!(
        off.verify_row(&k, false).await.unwrap().status,
        RowStatus::Ok
    );
    assert_eq!(off.store_report().await.unwrap().summary.legacy_rows, 0);
    let (hit, m) = off.get_matrix(&cfg).await.unwrap();
    assert_eq!((hit.source, &m), (Source::Postgres, &mine));
    assert_eq!(hit.entry.metadata, made.entry.metadata);
    assert_eq!(off.stats().generations, 0);

    // A damaged row of the mode (its zlib checksum no longer holds) is never served.
    let cfg2 = six(&[1, 2, 0, 3, 4, 5], 200, "transition-damaged");
    let k2 = key::canonical_key(&cfg2);
    let on = Cache::open(options(&db, &prefix, true, false))
        .await
        .unwrap();
    on.get_or_generate(&cfg2).await.unwrap();
    let mut c = db.connect().await;
    sqlx::query(
        "UPDATE scenario_matrices SET moic_matrix = set_byte(moic_matrix, octet_length(moic_matrix) - 2, \
           (get_byte(moic_matrix, octet_length(moic_matrix) - 2) + 1) % 256) WHERE matrix_key = $1",
    )
    .bind(&k2)
    .execute(&mut c)
    .await
    .unwrap();
    for cache in [&on, &off] {
        let e = cache.get_matrix(&cfg2).await.unwrap_err();
        assert_eq!(e.code(), "E_CORRUPT", "{e}");
        assert_eq!(
            cache.verify_row(&k2, false).await.unwrap().status,
            RowStatus::Damaged
        );
    }
    on.close().await;
    off.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_rows_in_the_transition_mode_are_replaced_in_their_own_format() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc"));
    let fixture = legacy_table(&db, |_, cfg| {
        serde_json::json!({"correlationWeights": cfg["correlationWeights"], "recycling": cfg["recycling"]})
    })
    .await;
    let rows = fixture.as_array().unwrap();
    let cache = Cache::open(options(&db, &prefix, true, true))
        .await
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    for row in rows {
        let cfg = ScenarioConfig::from_json_str(&row["config"].to_string()).unwrap();
        let k = row["matrixKey"].as_str().unwrap();
        let (hit, m) = cache.get_matrix(&cfg).await.unwrap();
        cache.flush().await;
        let (matrix, count, _, format) = typescript_row(&db, k).await;
        assert_eq!(count as u32, cfg.num_scenarios);
        if cfg.buckets.len() == 1 {
            // Served as the app stored it, and left as it is.
            let want: Vec<f32> = b64
                .decode(row["float32LeBase64"].as_str().unwrap())
                .unwrap()
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            assert_eq!((hit.source, &m, format), (Source::Postgres, &want, None));
            assert_eq!(matrix, want);
        } else {
            // Its columns cannot be attributed: generated, and the row
            // replaced by one the TypeScript instances still read.
            assert_eq!((hit.source, format), (Source::Generated, Some(1)));
            assert_eq!(matrix, codec::decode(&hit.entry.payload).unwrap());
        }
        assert_eq!(typescript_value(&prefix, k).await.1, matrix);
    }
    assert_eq!(cache.stats().legacy_unattributable, 2);
    cache.close().await;
    db.drop_db().await;
    drop_redis_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mode_is_refused_with_sqlite() {
    let dir = std::env::temp_dir().join(unique("smc_legacy"));
    let err = Cache::open(CacheOptions {
        database_url: Some(dir.join("cache.db").display().to_string()),
        redis_url: Some(String::new()),
        write_legacy_format: Some(true),
        ..Default::default()
    })
    .await
    .err()
    .expect("refused");
    assert_eq!(err.code(), "E_INVALID_ARGUMENT");
    assert!(err.to_string().contains("writeLegacyFormat"), "{err}");
    assert!(!dir.exists(), "nothing created");
}
