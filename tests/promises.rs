//! Tests for README promises that mutation testing (cargo-mutants on the
//! cache and tier code) showed were not pinned down by any other test: wrong
//! bytes or columns served, legacy rows served in the wrong form, damaged or
//! misshapen copies served. Against the real PostgreSQL and Redis of the
//! machine; each test has its own database and Redis prefix.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{drop_redis_prefix, redis_conn, six, unique, TestDb, REDIS_URL};
use redis::AsyncCommands;
use scenario_matrix_cache::cache::{Cache, CacheOptions, Hit};
use scenario_matrix_cache::codec::{self, Codec};
use scenario_matrix_cache::scenario;
use scenario_matrix_cache::tier::{Entry, Source};
use scenario_matrix_cache::{key, ScenarioConfig};

/// PostgreSQL only: no Redis, no memory tier (unless the test turns it on).
fn pg_only(db: &TestDb) -> CacheOptions {
    CacheOptions {
        database_url: Some(db.url.clone()),
        redis_url: Some(String::new()),
        memory_max_bytes: Some(0),
        ..Default::default()
    }
}

fn one_bucket(fund: &str, scenarios: u32) -> ScenarioConfig {
    ScenarioConfig::from_json_str(&format!(
        r#"{{"fundId": "{fund}", "taxonomyVersion": "v1.2", "numScenarios": {scenarios},
            "buckets": [{{"name": "Growth", "capitalAllocation": 100, "moicCalibration": {{"median": 2, "p90": 3}}}}],
            "correlationWeights": {{"macro": 0.5, "systematic": 0.25, "idiosyncratic": 0.25}},
            "recycling": {{"enabled": true, "mode": "same-bucket", "reinvestmentRate": 0.8, "avgHoldingPeriod": 5, "fundLifetime": 10}}}}"#
    ))
    .unwrap()
}

const ORDERS: [[usize; 6]; 3] = [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [1, 5, 4, 0, 2, 3]];

/// Columns by bucket name, the matrix being in `names`' column order.
fn columns(names: &[String], matrix: &[f32]) -> HashMap<String, Vec<f32>> {
    let nb = names.len();
    assert_eq!(matrix.len() % nb, 0);
    names
        .iter()
        .enumerate()
        .map(|(j, n)| {
            (
                n.clone(),
                matrix.iter().skip(j).step_by(nb).copied().collect(),
            )
        })
        .collect()
}

fn caller_names(cfg: &ScenarioConfig) -> Vec<String> {
    cfg.buckets.iter().map(|b| b.name.clone()).collect()
}

fn multiples(names: &[String], m: &[f64]) -> HashMap<String, f64> {
    assert_eq!(names.len(), m.len());
    names.iter().cloned().zip(m.iter().copied()).collect()
}

/// The reference answer for `cfg`: columns and recycling multiples by bucket
/// name, from the generator itself.
fn reference(cfg: &ScenarioConfig) -> (HashMap<String, Vec<f32>>, HashMap<String, f64>) {
    let s = scenario::run(cfg).unwrap();
    let hit = Hit {
        entry: Entry::new(s.envelope.into(), Codec::Zstd, s.metadata),
        source: Source::Generated,
        matrix: None,
    };
    let copy = hit.for_caller(Some(cfg)).unwrap();
    let names = caller_names(cfg);
    (
        columns(&names, &codec::decode(&copy.payload).unwrap()),
        multiples(&names, &copy.metadata.recycling_multiples),
    )
}

fn zlib(values: &[f32]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    for v in values {
        z.write_all(&v.to_le_bytes()).unwrap();
    }
    z.finish().unwrap()
}

/// A TypeScript-format row: zlib labelled 'zstd', count in scenario_states.
async fn insert_legacy_row(
    db: &TestDb,
    key: &str,
    fund: &str,
    values: &[f32],
    rows: u32,
    cols: u32,
) {
    let states = serde_json::json!({"scenarios": (0..rows).map(|i| serde_json::json!({"id": i})).collect::<Vec<_>>()});
    let mut c = db.connect().await;
    sqlx::query(
        "INSERT INTO scenario_matrices (matrix_key, fund_id, taxonomy_version, matrix_type, moic_matrix,
           scenario_states, bucket_params, compression_codec, matrix_layout, bucket_count, s_opt, status, created_at)
         VALUES ($1, $2, 'v1.2', 'moic', $3, $4, '[]', 'zstd', 'row-major', $5, '{}', 'complete',
           '2024-01-02T00:00:00Z')",
    )
    .bind(key)
    .bind(fund)
    .bind(zlib(values))
    .bind(states)
    .bind(cols as i32)
    .execute(&mut c)
    .await
    .unwrap();
}

/// A TypeScript-format Redis value: JSON with base64 zlib.
fn legacy_redis_value(values: &[f32], rows: u32, cols: u32) -> String {
    use base64::Engine;
    let z = zlib(values);
    serde_json::json!({
        "data": base64::engine::general_purpose::STANDARD.encode(&z),
        "numScenarios": rows, "numBuckets": cols, "version": 1,
        "uncompressedSize": values.len() * 4, "compressedSize": z.len(),
    })
    .to_string()
}

async fn exec(db: &TestDb, sql: &str, binds: &[&str]) -> u64 {
    let mut c = db.connect().await;
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(&mut c).await.unwrap().rows_affected()
}

/// The advisory lock id the PostgreSQL store takes for a key (its first 16
/// hex digits), pinned by the store's unit tests.
fn lock_id(key: &str) -> i64 {
    u64::from_str_radix(&key[..16], 16).unwrap() as i64
}

/// Sessions of this database waiting for an advisory lock.
async fn waiters_on_advisory_locks(db: &TestDb) -> i64 {
    let mut c = db.connect().await;
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut c)
    .await
    .unwrap()
}

/// Runs `call` on `cache` while this test holds `key`'s advisory lock; once
/// the call waits for the lock (its lookup found no row), runs `meanwhile`
/// (which puts a row in place), then releases the lock and returns the call's
/// result. This forces "a row appears between the lookup and the locked
/// re-read", as another process or the TypeScript app would make it appear.
async fn with_row_appearing<T, C, CF, M, MF>(db: &TestDb, key: &str, call: C, meanwhile: M) -> T
where
    C: FnOnce() -> CF,
    CF: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
    M: FnOnce() -> MF,
    MF: std::future::Future<Output = ()>,
{
    let mut locker = db.connect().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_id(key))
        .execute(&mut locker)
        .await
        .unwrap();
    let task = tokio::spawn(call());
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiters_on_advisory_locks(db).await < 1 {
        assert!(
            !task.is_finished(),
            "the call ended without waiting for the key's lock"
        );
        assert!(
            Instant::now() < deadline,
            "the call never waited for the key's lock"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    meanwhile().await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock_id(key))
        .execute(&mut locker)
        .await
        .unwrap();
    task.await.unwrap()
}

const HIDE: &str =
    "UPDATE scenario_matrices SET matrix_key = 'hidden-' || matrix_key WHERE matrix_key = $1";
const UNHIDE: &str =
    "UPDATE scenario_matrices SET matrix_key = $1 WHERE matrix_key = 'hidden-' || $1";
const DAMAGE: &str = "UPDATE scenario_matrices SET moic_matrix = set_byte(moic_matrix, 200, get_byte(moic_matrix, 200) # 1) WHERE matrix_key = $1";

/// A miss that finds, under the key's lock, a row stored meanwhile by someone
/// else serves that row when it is sound, and says E_CORRUPT when it is
/// damaged; it never serves damaged bytes.
/// (Kills: src/cache.rs:453 match guard `self.check(&e)` -> true / false in Inner::resolve.)
#[tokio::test(flavor = "multi_thread")]
async fn a_row_stored_while_a_miss_waits_is_checked_before_it_is_served() {
    let db = TestDb::create().await;
    for damaged in [false, true] {
        let cfg = six(&ORDERS[0], 2_000, &format!("race-row-{damaged}"));
        let k = key::canonical_key(&cfg);
        let seed = Cache::open(pg_only(&db)).await.unwrap();
        let stored = seed.get_or_generate(&cfg).await.unwrap();
        seed.close().await;
        assert_eq!(exec(&db, HIDE, &[&k]).await, 1);
        if damaged {
            assert_eq!(exec(&db, DAMAGE, &[&format!("hidden-{k}")]).await, 1);
        }

        let cache = Arc::new(Cache::open(pg_only(&db)).await.unwrap());
        let (c2, cfg2) = (cache.clone(), cfg.clone());
        let result = with_row_appearing(
            &db,
            &k,
            move || async move { c2.get_or_generate(&cfg2).await },
            || async {
                assert_eq!(exec(&db, UNHIDE, &[&k]).await, 1);
            },
        )
        .await;
        if damaged {
            let err = result.expect_err("a damaged row was served");
            assert_eq!(err.code(), "E_CORRUPT", "{err}");
        } else {
            let hit = result.expect("a sound row stored meanwhile must be served");
            assert_eq!(hit.source, Source::Postgres);
            assert_eq!(hit.entry, stored.entry);
            assert_eq!(cache.stats().generations, 0);
        }
        cache.close().await;
    }
    db.drop_db().await;
}

/// A legacy value that only Redis holds is stored durably before it is
/// served; when a row appears meanwhile, that row is the answer if it is
/// sound, and E_CORRUPT if it is damaged (never its bytes).
/// (Kills: src/cache.rs:599 match guard `self.check(&e)` -> true / false in Inner::adopt_legacy_value.)
#[tokio::test(flavor = "multi_thread")]
async fn a_row_stored_while_a_legacy_redis_value_is_adopted_is_checked_before_it_is_served() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc_promise_adopt"));
    let mut r = redis_conn().await;
    for damaged in [false, true] {
        let cfg = one_bucket(&format!("adopt-race-{damaged}"), 2_000);
        let k = key::canonical_key(&cfg);
        let seed = Cache::open(pg_only(&db)).await.unwrap();
        let stored = seed.get_or_generate(&cfg).await.unwrap();
        seed.close().await;
        assert_eq!(exec(&db, HIDE, &[&k]).await, 1);
        if damaged {
            assert_eq!(exec(&db, DAMAGE, &[&format!("hidden-{k}")]).await, 1);
        }
        // The TypeScript app's value for the key, other numbers than the row's.
        let legacy: Vec<f32> = (0..2_000).map(|i| 1.0 + i as f32 / 4096.0).collect();
        let _: () = r
            .set(
                format!("{prefix}{k}"),
                legacy_redis_value(&legacy, 2_000, 1),
            )
            .await
            .unwrap();

        let cache = Arc::new(
            Cache::open(CacheOptions {
                redis_url: Some(REDIS_URL.into()),
                redis_key_prefix: Some(prefix.clone()),
                ..pg_only(&db)
            })
            .await
            .unwrap(),
        );
        let (c2, cfg2) = (cache.clone(), cfg.clone());
        let result = with_row_appearing(
            &db,
            &k,
            move || async move { c2.get_or_generate(&cfg2).await },
            || async {
                assert_eq!(exec(&db, UNHIDE, &[&k]).await, 1);
            },
        )
        .await;
        if damaged {
            let err = result.expect_err("a damaged row was served");
            assert_eq!(err.code(), "E_CORRUPT", "{err}");
        } else {
            let hit = result.expect("a sound row stored meanwhile must be served");
            assert_eq!(hit.source, Source::Postgres);
            assert_eq!(hit.entry, stored.entry);
        }
        cache.close().await;
    }
    drop_redis_prefix(&prefix).await;
    db.drop_db().await;
}

/// A row whose envelope holds another shape than its columns record (here the
/// payload of the same buckets' 20-scenario matrix under a 10-scenario row)
/// is damaged: E_CORRUPT, never the other matrix's bytes.
/// (Kills: src/cache.rs:625 and 626 `&&` -> `||` in Inner::check.)
#[tokio::test(flavor = "multi_thread")]
async fn an_envelope_of_other_dimensions_than_its_row_is_never_served() {
    let db = TestDb::create().await;
    let cfg10 = six(&ORDERS[0], 10, "dims");
    let cfg20 = six(&ORDERS[0], 20, "dims");
    let (k10, k20) = (key::canonical_key(&cfg10), key::canonical_key(&cfg20));
    let seed = Cache::open(pg_only(&db)).await.unwrap();
    seed.get_or_generate(&cfg10).await.unwrap();
    seed.get_or_generate(&cfg20).await.unwrap();
    seed.close().await;
    assert_eq!(
        exec(
            &db,
            "UPDATE scenario_matrices SET moic_matrix = (SELECT moic_matrix FROM scenario_matrices WHERE matrix_key = $2) WHERE matrix_key = $1",
            &[&k10, &k20],
        )
        .await,
        1
    );
    let cache = Cache::open(pg_only(&db)).await.unwrap();
    let err = cache
        .get_or_generate(&cfg10)
        .await
        .expect_err("an envelope of 20 x 6 was served for a 10 x 6 key");
    assert_eq!(err.code(), "E_CORRUPT", "{err}");
    let err = cache.get(&k10).await.expect_err("served by key");
    assert_eq!(err.code(), "E_CORRUPT", "{err}");
    cache.close().await;
    db.drop_db().await;
}

/// A legacy (TypeScript zlib) row read by key is served as our envelope,
/// like every other answer: the bytes handed out decode with the codec.
/// (Also fails under src/cache.rs:654:12 delete `!` and 654:32 `&&` -> `||` in
/// Inner::normalise, which tests/cache.rs and tests/consistency.rs already catch.)
#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_row_read_by_key_is_served_as_an_envelope() {
    let db = TestDb::create().await;
    let cfg = one_bucket("legacy-by-key", 10);
    let k = key::canonical_key(&cfg);
    let values: Vec<f32> = (0..10).map(|i| 1.0 + i as f32 / 8.0).collect();
    let cache = Cache::open(pg_only(&db)).await.unwrap();
    insert_legacy_row(&db, &k, "legacy-by-key", &values, 10, 1).await;
    let hit = cache
        .get(&k)
        .await
        .unwrap()
        .expect("a one-bucket legacy row is served by key");
    assert_eq!(hit.entry.codec, Codec::Zstd);
    let copy = hit.for_caller(None).unwrap();
    assert_eq!(codec::decode(&copy.payload).unwrap(), values);
    cache.close().await;
    db.drop_db().await;
}

/// A row written before columns followed the key (columns in its writer's
/// order) and first read by key answers in the key's order, and the copy it
/// leaves in memory serves every caller its own buckets' columns.
/// (Pins the by-key path of src/cache.rs:654:32 `&&` -> `||` in Inner::normalise,
/// a mutant tests/consistency.rs already catches.)
#[tokio::test(flavor = "multi_thread")]
async fn an_old_row_read_by_key_first_still_gives_each_bucket_its_column() {
    let db = TestDb::create().await;
    let writer = six(&ORDERS[1], 300, "old-row-by-key");
    let k = key::canonical_key(&writer);
    let (want_cols, want_mult) = reference(&writer);
    let names = caller_names(&writer);
    let mut matrix = vec![0f32; 300 * 6];
    for (j, n) in names.iter().enumerate() {
        for (r, x) in want_cols[n].iter().enumerate() {
            matrix[r * 6 + j] = *x;
        }
    }
    let mult: Vec<f64> = names.iter().map(|n| want_mult[n]).collect();
    let envelope = codec::encode(&matrix, 300, 6).unwrap();
    let params: Vec<serde_json::Value> = names
        .iter()
        .map(|n| serde_json::json!({"name": n}))
        .collect();
    let cache = Cache::open(CacheOptions {
        memory_max_bytes: Some(64 << 20),
        ..pg_only(&db)
    })
    .await
    .unwrap();
    let mut c = db.connect().await;
    sqlx::query(
        "INSERT INTO scenario_matrices (matrix_key, fund_id, taxonomy_version, matrix_type, moic_matrix,
           scenario_states, bucket_params, compression_codec, matrix_layout, bucket_count, s_opt, status,
           num_scenarios, payload_format, generated_at, duration_ms, recycling_multiples)
         VALUES ($1, 'old-row-by-key', 'v1.2', 'moic', $2, '{\"numScenarios\": 300}', $3, 'zstd', 'row-major', 6, '{}',
           'complete', 300, 2, '2026-01-02T03:04:05.678Z', 12.5, $4)",
    )
    .bind(&k)
    .bind(&envelope)
    .bind(serde_json::Value::Array(params))
    .bind(serde_json::json!(mult))
    .execute(&mut c)
    .await
    .unwrap();

    // By key: the key's order, and says so.
    let by_key = cache.get(&k).await.unwrap().unwrap();
    let key_order = scenario::run(&writer).unwrap().metadata.bucket_names;
    assert_eq!(by_key.entry.metadata.bucket_names, key_order);
    let copy = by_key.for_caller(None).unwrap();
    assert_eq!(copy.metadata.bucket_names, key_order);
    assert_eq!(
        columns(&key_order, &codec::decode(&copy.payload).unwrap()),
        want_cols
    );

    // Then every caller, whatever its order, gets each bucket's own column.
    for order in &ORDERS {
        let cfg = six(order, 300, "old-row-by-key");
        let (hit, m) = cache.get_matrix(&cfg).await.unwrap();
        assert_eq!(hit.source, Source::Memory);
        assert_eq!(
            columns(&caller_names(&cfg), &m),
            want_cols,
            "order {order:?}"
        );
        let copy = hit.for_caller(Some(&cfg)).unwrap();
        assert_eq!(
            columns(&caller_names(&cfg), &codec::decode(&copy.payload).unwrap()),
            want_cols
        );
        assert_eq!(
            multiples(&caller_names(&cfg), &copy.metadata.recycling_multiples),
            want_mult
        );
    }
    cache.close().await;
    db.drop_db().await;
}

/// A copy of our format whose shape is not its key's (here a 10-scenario row
/// under the key of a 20-scenario config), once read by key and so held in
/// memory, is never served to a call that brings the config: not from
/// memory, not from the synchronous memory path.
/// (Kills: src/cache.rs:381 `&&` -> `||` in serves.)
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_another_shape_held_in_memory_is_never_served_to_a_call() {
    let db = TestDb::create().await;
    let cfg10 = six(&ORDERS[0], 10, "shape-memory");
    let cfg20 = six(&ORDERS[0], 20, "shape-memory");
    let (k10, k20) = (key::canonical_key(&cfg10), key::canonical_key(&cfg20));
    let seed = Cache::open(pg_only(&db)).await.unwrap();
    seed.get_or_generate(&cfg10).await.unwrap();
    seed.close().await;
    assert_eq!(
        exec(
            &db,
            "UPDATE scenario_matrices SET matrix_key = $2 WHERE matrix_key = $1",
            &[&k10, &k20],
        )
        .await,
        1
    );
    let cache = Cache::open(CacheOptions {
        memory_max_bytes: Some(64 << 20),
        ..pg_only(&db)
    })
    .await
    .unwrap();
    // By key there is no config to compare with: the row answers.
    let by_key = cache.get(&k20).await.unwrap().unwrap();
    assert_eq!(by_key.entry.metadata.num_scenarios, 10);
    assert!(cache.get_from_memory(&cfg20, &k20).unwrap().is_none());
    match cache.get_or_generate(&cfg20).await {
        Ok(hit) => assert_eq!(
            hit.entry.metadata.num_scenarios, 20,
            "a 10-scenario copy served for a 20-scenario key from {:?}",
            hit.source
        ),
        Err(e) => assert_eq!(e.code(), "E_CORRUPT", "{e}"),
    }
    cache.close().await;
    db.drop_db().await;
}

/// The synchronous memory path answers a memory hit (the binding relies on
/// it to answer small hits on the calling thread), with the same entry.
/// (Kills: src/cache.rs:227 replace Cache::get_from_memory with Ok(None).)
#[tokio::test(flavor = "multi_thread")]
async fn the_synchronous_memory_path_answers_memory_hits() {
    let db = TestDb::create().await;
    let cfg = six(&ORDERS[2], 50, "sync-memory");
    let k = key::canonical_key(&cfg);
    let cache = Cache::open(CacheOptions {
        memory_max_bytes: Some(64 << 20),
        ..pg_only(&db)
    })
    .await
    .unwrap();
    assert!(cache.get_from_memory(&cfg, &k).unwrap().is_none());
    let generated = cache.get_or_generate(&cfg).await.unwrap();
    let hit = cache
        .get_from_memory(&cfg, &k)
        .unwrap()
        .expect("a memory hit");
    assert_eq!(hit.source, Source::Memory);
    assert_eq!(hit.entry, generated.entry);
    cache.close().await;
    db.drop_db().await;
}

/// After an invalidation the tiers work as before: the regenerated matrix
/// fills memory and Redis, and later calls are served from them.
/// (Kills: src/cache.rs:400 replace <impl Drop for InvalidationWindow>::drop with ().)
#[tokio::test(flavor = "multi_thread")]
async fn after_an_invalidation_the_faster_tiers_fill_again() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc_promise_refill"));
    let opts = |memory: bool| CacheOptions {
        redis_url: Some(REDIS_URL.into()),
        redis_key_prefix: Some(prefix.clone()),
        memory_max_bytes: Some(if memory { 64 << 20 } else { 0 }),
        ..pg_only(&db)
    };
    let cfg = six(&ORDERS[1], 200, "refill");
    let k = key::canonical_key(&cfg);
    let cache = Cache::open(opts(true)).await.unwrap();
    let first = cache.get_or_generate(&cfg).await.unwrap();
    assert_eq!(first.source, Source::Generated);
    cache.flush().await;
    assert!(cache.invalidate(&k).await.unwrap());
    let again = cache.get_or_generate(&cfg).await.unwrap();
    assert_eq!(again.source, Source::Generated);
    assert_eq!(again.entry.payload, first.entry.payload);
    cache.flush().await;
    assert_eq!(
        cache.get_or_generate(&cfg).await.unwrap().source,
        Source::Memory
    );
    let other = Cache::open(opts(false)).await.unwrap();
    assert_eq!(
        other.get_or_generate(&cfg).await.unwrap().source,
        Source::Redis
    );
    // Another key's invalidation does not stop this instance reading Redis.
    let fresh = Cache::open(opts(false)).await.unwrap();
    assert!(!fresh.invalidate(&"0".repeat(64)).await.unwrap());
    assert_eq!(
        fresh.get_or_generate(&cfg).await.unwrap().source,
        Source::Redis
    );
    for c in [cache, other, fresh] {
        c.close().await;
    }
    drop_redis_prefix(&prefix).await;
    db.drop_db().await;
}

/// `invalidate` answers whether any tier had the key: a copy only Redis
/// holds, or only this process's memory, counts; nothing anywhere does not.
/// (Kills: src/cache.rs:758 `>` -> `<` / `==` / `>=` in Inner::delete_from_redis,
/// 775 `||` -> `&&` in Inner::remove_from_memory.)
#[tokio::test(flavor = "multi_thread")]
async fn invalidate_says_whether_any_tier_had_the_key() {
    let db = TestDb::create().await;
    let prefix = format!("{}:", unique("smc_promise_inval"));
    let opts = |memory: bool| CacheOptions {
        redis_url: Some(REDIS_URL.into()),
        redis_key_prefix: Some(prefix.clone()),
        memory_max_bytes: Some(if memory { 64 << 20 } else { 0 }),
        ..pg_only(&db)
    };
    let cfg = six(&ORDERS[2], 100, "inval-answer");
    let k = key::canonical_key(&cfg);
    let a = Cache::open(opts(true)).await.unwrap();
    a.get_or_generate(&cfg).await.unwrap();
    a.flush().await;
    // The row goes (as another process's invalidation would remove it).
    assert_eq!(
        exec(
            &db,
            "DELETE FROM scenario_matrices WHERE matrix_key = $1",
            &[&k]
        )
        .await,
        1
    );
    // Only Redis holds it for an instance without memory.
    let b = Cache::open(opts(false)).await.unwrap();
    assert!(b.invalidate(&k).await.unwrap(), "the Redis copy was there");
    let mut r = redis_conn().await;
    assert!(!r.exists::<_, bool>(format!("{prefix}{k}")).await.unwrap());
    // `a`'s memory copy went with b's invalidation too (it reaches every
    // instance sharing the store).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(a.get(&k).await.unwrap().is_none());
    // Only `a`'s memory holds it: filled again, then the row and the Redis
    // copy removed behind its back (no invalidation record).
    a.get_or_generate(&cfg).await.unwrap();
    a.flush().await;
    assert_eq!(
        exec(
            &db,
            "DELETE FROM scenario_matrices WHERE matrix_key = $1",
            &[&k]
        )
        .await,
        1
    );
    let _: () = r.del(format!("{prefix}{k}")).await.unwrap();
    assert!(a.invalidate(&k).await.unwrap(), "the memory copy was there");
    assert!(a.get(&k).await.unwrap().is_none());
    // Nothing holds it.
    assert!(!a.invalidate(&k).await.unwrap());
    assert!(!b.invalidate(&k).await.unwrap());
    for c in [a, b] {
        c.close().await;
    }
    drop_redis_prefix(&prefix).await;
    db.drop_db().await;
}

/// A row of ours whose recycling multiples are missing (the column is derived
/// data, read leniently) gets them recomputed from its matrix when a call
/// brings the config: the metadata never changes between miss and hit.
/// (Kills: src/cache.rs:654:35 delete `!` in Inner::normalise.)
#[tokio::test(flavor = "multi_thread")]
async fn a_row_without_its_recycling_multiples_gets_them_back() {
    let db = TestDb::create().await;
    let cfg = six(&ORDERS[1], 400, "no-multiples");
    let k = key::canonical_key(&cfg);
    let seed = Cache::open(pg_only(&db)).await.unwrap();
    let generated = seed.get_or_generate(&cfg).await.unwrap();
    seed.close().await;
    let want = &generated.entry.metadata.recycling_multiples;
    assert_eq!(want.len(), 6);
    assert_eq!(
        exec(
            &db,
            "UPDATE scenario_matrices SET recycling_multiples = NULL WHERE matrix_key = $1",
            &[&k]
        )
        .await,
        1
    );
    let cache = Cache::open(pg_only(&db)).await.unwrap();
    let hit = cache.get_or_generate(&cfg).await.unwrap();
    assert_eq!(hit.source, Source::Postgres);
    let got = &hit.entry.metadata.recycling_multiples;
    assert_eq!(got.len(), 6, "served without its recycling multiples");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{g} vs {w}");
    }
    cache.close().await;
    db.drop_db().await;
}
