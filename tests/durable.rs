//! The durable tier against real stores: PostgreSQL on 127.0.0.1:5432 (or
//! `SMC_TEST_PG_URL`, an admin URL whose database is used only to create and
//! drop per-test databases) and SQLite files in temp directories.
//!
//! Every PostgreSQL test runs in a database of its own, created here and
//! dropped WITH (FORCE) at the end even when the test fails, so tests run in
//! parallel and leave nothing behind. Separate `Durable::open` calls stand in
//! for separate server processes (separate pools, separate sessions).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures::FutureExt as _;
use serde_json::{json, Value as Json};
use sqlx::{AssertSqlSafe, Connection, Executor, Row};

use scenario_matrix_cache::codec::Codec;
use scenario_matrix_cache::scenario::Metadata;
use scenario_matrix_cache::tier::durable::{Durable, DurableOptions, DurableUrl};
use scenario_matrix_cache::tier::invalidation::Scope;
use scenario_matrix_cache::tier::Entry;
use scenario_matrix_cache::{Error, ScenarioConfig};

// ---------------------------------------------------------------------------
// Fixtures and helpers
// ---------------------------------------------------------------------------

/// A fund id that breaks any SQL built by string concatenation.
const HOSTILE_FUND: &str = "o'reilly; DROP TABLE scenario_matrices;--";
const HOSTILE_TAXONOMY: &str = "taxonomy \"quoted\"";
const MIGRATIONS_TABLE: &str = "_scenario_matrix_cache_migrations";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn random_u64() -> u64 {
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A fresh 64-hex key (the stores never compute keys; any unique hex will do).
fn new_key() -> String {
    (0..4).map(|_| format!("{:016x}", random_u64())).collect()
}

fn config(fund: &str, taxonomy: &str, num_scenarios: u32) -> ScenarioConfig {
    let v = json!({
        "fundId": fund,
        "taxonomyVersion": taxonomy,
        "numScenarios": num_scenarios,
        "buckets": [
            {"name": "Seed", "capitalAllocation": 60, "moicCalibration": {"median": 1, "p90": 3}},
            {"name": "Series A", "capitalAllocation": 40, "moicCalibration": {"median": 1.5, "p90": 3.5}}
        ],
        "correlationWeights": {"macro": 0.5, "systematic": 0.25, "idiosyncratic": 0.25},
        "recycling": {"enabled": true, "mode": "same-bucket", "reinvestmentRate": 0.8,
                      "avgHoldingPeriod": 5, "fundLifetime": 10}
    });
    ScenarioConfig::from_json_str(&v.to_string()).expect("test config is valid")
}

fn expected_bucket_params() -> Json {
    json!([
        {"name": "Seed", "capitalAllocation": 60, "moicCalibration": {"median": 1, "p90": 3}},
        {"name": "Series A", "capitalAllocation": 40, "moicCalibration": {"median": 1.5, "p90": 3.5}}
    ])
}

fn expected_s_opt() -> Json {
    json!({
        "correlationWeights": {"macro": 0.5, "systematic": 0.25, "idiosyncratic": 0.25},
        "recycling": {"enabled": true, "mode": "same-bucket", "reinvestmentRate": 0.8,
                      "avgHoldingPeriod": 5, "fundLifetime": 10}
    })
}

/// An entry as the cache layer would hand it over: any payload bytes (the
/// stores never decode), the zstd label and full generation metadata.
fn entry_for(cfg: &ScenarioConfig, key: &str) -> Entry {
    let payload: Vec<u8> = (0..48u32).map(|i| (i * 31 + 7) as u8).collect();
    Entry::new(
        Bytes::from(payload),
        Codec::Zstd,
        Metadata {
            config_hash: key.to_string(),
            num_scenarios: cfg.num_scenarios,
            num_buckets: cfg.buckets.len() as u32,
            generated_at: Some("2026-11-24T06:00:00.123Z".into()),
            duration_ms: Some(12.345678901234567),
            recycling_multiples: vec![1.6440483296822455, 2.474736686520292],
            bucket_names: scenario_matrix_cache::key::normalised(cfg)
                .buckets
                .into_iter()
                .map(|b| b.name)
                .collect(),
        },
    )
}

fn opts(timeout: Duration) -> DurableOptions {
    DurableOptions {
        run_migrations: true,
        timeout,
        max_connections: 4,
        ..Default::default()
    }
}

/// `make` for calls that must find the row and never generate.
async fn must_not_generate() -> scenario_matrix_cache::Result<Entry> {
    panic!("make() called although the row exists")
}

/// A `make` that counts its calls and takes a while, so that concurrent
/// callers really overlap.
fn counting_make(
    calls: Arc<AtomicUsize>,
    entry: Entry,
    delay: Duration,
) -> impl FnOnce() -> std::pin::Pin<
    Box<dyn Future<Output = scenario_matrix_cache::Result<Entry>> + Send>,
> + Send {
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok(entry)
        })
    }
}

/// A `make` that reports on `started` that it runs (so its caller holds the
/// key's lock), then finishes once `release` fires, or never when `release`
/// is `None`.
fn signalling_make(
    entry: Entry,
    started: tokio::sync::oneshot::Sender<()>,
    release: Option<tokio::sync::oneshot::Receiver<()>>,
) -> impl FnOnce() -> std::pin::Pin<
    Box<dyn Future<Output = scenario_matrix_cache::Result<Entry>> + Send>,
> + Send {
    move || {
        Box::pin(async move {
            let _ = started.send(());
            match release {
                Some(r) => r.await.expect("released"),
                None => std::future::pending().await,
            }
            Ok(entry)
        })
    }
}

/// Drives `call`, whose `make` is a [`signalling_make`] reporting on
/// `started`, until that generation has started, then drops it: a caller
/// giving up mid-generation, with the lock held.
async fn abandon_mid_generation<T: std::fmt::Debug>(
    call: impl Future<Output = T>,
    started: tokio::sync::oneshot::Receiver<()>,
) {
    tokio::pin!(call);
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            r = &mut call => panic!("the call ended although its generation never does: {r:?}"),
            s = started => s.expect("the generation started"),
        }
    })
    .await;
    outcome.expect("the generation started within 30 s");
}

// ---------------------------------------------------------------------------
// PostgreSQL harness
// ---------------------------------------------------------------------------

fn admin_url() -> String {
    std::env::var("SMC_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `admin_url` with its database replaced by `db` (query parameters kept).
fn url_for(db: &str) -> String {
    let admin = admin_url();
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (admin.clone(), String::new()),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..host_end])
}

static PG_READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Fails with instructions when PostgreSQL is down, after trying once to
/// start the local cluster where pg_ctlcluster exists.
async fn ensure_postgres() {
    PG_READY
        .get_or_init(|| async {
            if sqlx::PgConnection::connect(&admin_url()).await.is_ok() {
                return;
            }
            let clusters: Vec<String> = std::fs::read_dir("/etc/postgresql")
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let has_ctl = ["/usr/bin/pg_ctlcluster", "/usr/sbin/pg_ctlcluster"]
                .iter()
                .any(|p| Path::new(p).exists());
            if has_ctl {
                for version in &clusters {
                    let status = std::process::Command::new("pg_ctlcluster")
                        .args(["--skip-systemctl-redirect", version, "main", "start"])
                        .status();
                    eprintln!("tried to start PostgreSQL {version}: {status:?}");
                }
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if sqlx::PgConnection::connect(&admin_url()).await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            panic!(
                "PostgreSQL is not reachable at {} (set SMC_TEST_PG_URL to another admin URL). \
                 Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
                admin_url()
            );
        })
        .await;
}

async fn admin_exec(sql: String) {
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    admin
        .execute(AssertSqlSafe(sql))
        .await
        .expect("admin statement");
    let _ = admin.close().await;
}

/// Runs `test` with the URL of a fresh database, dropping it afterwards
/// whatever happened.
async fn with_pg_db<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    ensure_postgres().await;
    let name = format!(
        "smc_test_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_u64() as u32
    );
    admin_exec(format!("CREATE DATABASE \"{name}\"")).await;
    let outcome = AssertUnwindSafe(test(url_for(&name))).catch_unwind().await;
    admin_exec(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn pg_open(url: &str) -> Durable {
    Durable::open(
        &DurableUrl::parse(url).unwrap(),
        &opts(Duration::from_secs(10)),
    )
    .await
    .expect("open PostgreSQL store")
}

async fn pg_raw(url: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(url)
        .await
        .expect("raw connection")
}

async fn pg_count(url: &str, key: &str) -> i64 {
    let mut c = pg_raw(url).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM scenario_matrices WHERE matrix_key = $1")
        .bind(key)
        .fetch_one(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    n
}

// ---------------------------------------------------------------------------
// PostgreSQL tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn pg_miss_insert_hit_and_row_shape() {
    with_pg_db(|url| async move {
        let store = pg_open(&url).await;
        let cfg = config(HOSTILE_FUND, HOSTILE_TAXONOMY, 1000);
        let key = new_key();
        let entry = entry_for(&cfg, &key);

        assert_eq!(store.get(&key).await.unwrap(), None);

        let calls = Arc::new(AtomicUsize::new(0));
        let (got, inserted) = store
            .get_or_insert(
                &cfg,
                &key,
                counting_make(calls.clone(), entry.clone(), Duration::ZERO),
            )
            .await
            .unwrap();
        assert!(inserted);
        assert_eq!(got, entry);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A hit returns exactly what the miss returned.
        assert_eq!(store.get(&key).await.unwrap(), Some(entry.clone()));
        let (again, inserted) = store
            .get_or_insert(&cfg, &key, must_not_generate)
            .await
            .unwrap();
        assert!(!inserted);
        assert_eq!(again, entry);

        // The row as the TypeScript schema sees it.
        let mut c = pg_raw(&url).await;
        let r = sqlx::query(
            "SELECT status, compression_codec, matrix_type, matrix_layout, bucket_count,
                    num_scenarios, payload_format, fund_id, taxonomy_version,
                    scenario_states::text AS states, bucket_params::text AS buckets,
                    s_opt::text AS s_opt, recycling_multiples::text AS rec,
                    moic_matrix, duration_ms,
                    to_char(generated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') AS gen
               FROM scenario_matrices WHERE matrix_key = $1",
        )
        .bind(&key)
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(r.get::<String, _>("status"), "complete");
        assert_eq!(r.get::<String, _>("compression_codec"), "zstd");
        assert_eq!(r.get::<String, _>("matrix_type"), "moic");
        assert_eq!(r.get::<String, _>("matrix_layout"), "row-major");
        assert_eq!(r.get::<i32, _>("bucket_count"), 2);
        assert_eq!(r.get::<i32, _>("num_scenarios"), 1000);
        assert_eq!(r.get::<i16, _>("payload_format"), 2);
        assert_eq!(r.get::<String, _>("fund_id"), HOSTILE_FUND);
        assert_eq!(r.get::<String, _>("taxonomy_version"), HOSTILE_TAXONOMY);
        let states: Json = serde_json::from_str(&r.get::<String, _>("states")).unwrap();
        assert_eq!(
            states,
            json!({"numScenarios": 1000}),
            "compact scenario_states"
        );
        let buckets: Json = serde_json::from_str(&r.get::<String, _>("buckets")).unwrap();
        assert_eq!(buckets, expected_bucket_params());
        let s_opt: Json = serde_json::from_str(&r.get::<String, _>("s_opt")).unwrap();
        assert_eq!(s_opt, expected_s_opt());
        // std's parser: serde_json's default one may be an ulp off.
        let rec: Vec<f64> = r
            .get::<String, _>("rec")
            .trim_matches(['[', ']'])
            .split(',')
            .map(|t| t.trim().parse().unwrap())
            .collect();
        assert_eq!(rec, entry.metadata.recycling_multiples);
        assert_eq!(r.get::<Vec<u8>, _>("moic_matrix"), entry.payload.to_vec());
        assert_eq!(
            r.get::<Option<f64>, _>("duration_ms"),
            entry.metadata.duration_ms
        );
        assert_eq!(r.get::<String, _>("gen"), "2026-11-24 06:00:00.123");
        let _ = c.close().await;
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_migrations_are_idempotent() {
    with_pg_db(|url| async move {
        for _ in 0..2 {
            let store = pg_open(&url).await;
            assert_eq!(store.get(&new_key()).await.unwrap(), None);
            store.close().await;
        }
        let mut c = pg_raw(&url).await;
        let applied: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {MIGRATIONS_TABLE} WHERE success"
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(applied, migration_count("postgres"));
        let _ = c.close().await;
    })
    .await;
}

/// How many migrations the crate embeds for a store (`postgres` or `sqlite`).
fn migration_count(store: &str) -> i64 {
    let dir = format!("{}/migrations/{store}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_dir(dir).unwrap().count() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_concurrent_opens_on_a_fresh_database() {
    with_pg_db(|url| async move {
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { pg_open(&url).await })
            })
            .collect();
        for o in opens {
            let store = o.await.expect("open task");
            assert_eq!(store.get(&new_key()).await.unwrap(), None);
            store.close().await;
        }
        let mut c = pg_raw(&url).await;
        let applied: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {MIGRATIONS_TABLE}"
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(
            applied,
            migration_count("postgres"),
            "each migration applied once"
        );
        let _ = c.close().await;
    })
    .await;
}

/// Column name -> (data type, nullable, default) of scenario_matrices.
async fn pg_columns(c: &mut sqlx::PgConnection) -> Vec<(String, String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_nullable::text, column_default::text
           FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name = 'scenario_matrices'
          ORDER BY ordinal_position",
    )
    .fetch_all(c)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_typescript_table_and_legacy_rows_stay_readable() {
    with_pg_db(|url| async move {
        let legacy: Vec<Json> =
            serde_json::from_str(include_str!("fixtures/legacy-rows.json")).unwrap();
        assert_eq!(legacy.len(), 3);

        // The deployment as the TypeScript app left it.
        let mut c = pg_raw(&url).await;
        sqlx::raw_sql(include_str!("fixtures/typescript-schema.sql")).execute(&mut c)
            .await
            .unwrap();
        let ts_created_at = "2025-06-01T12:34:56.789Z";
        for row in &legacy {
            let cfg = &row["config"];
            let n = row["numScenarios"].as_u64().unwrap();
            let scenarios: Vec<Json> = (0..n).map(|i| json!({"id": i, "params": {}})).collect();
            let payload = base64::engine::general_purpose::STANDARD
                .decode(row["payloadBase64"].as_str().unwrap())
                .unwrap();
            sqlx::query(
                "INSERT INTO scenario_matrices
                   (matrix_key, fund_id, taxonomy_version, matrix_type, moic_matrix,
                    scenario_states, bucket_params, compression_codec, matrix_layout,
                    bucket_count, s_opt, status, created_at, updated_at)
                 VALUES ($1, $2, $3, 'moic', $4, $5::jsonb, $6::jsonb, $7, 'row-major',
                         $8, $9::jsonb, 'complete', $10::timestamptz, $10::timestamptz)",
            )
            .bind(row["matrixKey"].as_str().unwrap())
            .bind(cfg["fundId"].as_str().unwrap())
            .bind(cfg["taxonomyVersion"].as_str().unwrap())
            .bind(payload)
            .bind(json!({"scenarios": scenarios}).to_string())
            .bind(cfg["buckets"].to_string())
            .bind(row["compressionCodecLabel"].as_str().unwrap())
            .bind(row["numBuckets"].as_i64().unwrap() as i32)
            .bind(
                json!({"correlationWeights": cfg["correlationWeights"], "recycling": cfg["recycling"]})
                    .to_string(),
            )
            .bind(ts_created_at)
            .execute(&mut c)
            .await
            .unwrap();
        }
        // A row the app abandoned, and one whose scenario list is unusable.
        let pending_key = new_key();
        sqlx::query("INSERT INTO scenario_matrices (matrix_key, fund_id, status) VALUES ($1, 'f', 'pending')")
            .bind(&pending_key)
            .execute(&mut c)
            .await
            .unwrap();
        let broken_key = new_key();
        sqlx::query(
            "INSERT INTO scenario_matrices
               (matrix_key, moic_matrix, scenario_states, bucket_params, compression_codec,
                matrix_layout, bucket_count, s_opt, status)
             VALUES ($1, '\\x00', '{\"foo\": 1}', '[]', 'zstd', 'row-major', 2, '{}', 'complete')",
        )
        .bind(&broken_key)
        .execute(&mut c)
        .await
        .unwrap();
        let columns_before = pg_columns(&mut c).await;

        // Our migrations run against it.
        let store = pg_open(&url).await;
        let columns_after = pg_columns(&mut c).await;
        assert_eq!(
            &columns_after[..columns_before.len()],
            &columns_before[..],
            "existing columns are neither removed nor retyped"
        );
        let added: Vec<&str> = columns_after[columns_before.len()..]
            .iter()
            .map(|c| c.0.as_str())
            .collect();
        assert_eq!(
            added,
            ["num_scenarios", "payload_format", "generated_at", "duration_ms", "recycling_multiples"]
        );
        // The app's CHECK on complete rows is still in force.
        let violation = sqlx::query("INSERT INTO scenario_matrices (matrix_key, status) VALUES ('x', 'complete')")
            .execute(&mut c)
            .await;
        assert!(violation.is_err(), "complete-row CHECK was lost");

        for row in &legacy {
            let key = row["matrixKey"].as_str().unwrap();
            let e = store.get(key).await.unwrap().expect("legacy row is found");
            let payload = base64::engine::general_purpose::STANDARD
                .decode(row["payloadBase64"].as_str().unwrap())
                .unwrap();
            assert_eq!(e.payload.to_vec(), payload, "{key}");
            assert_eq!(e.codec, Codec::Zlib, "zlib labelled zstd");
            assert_eq!(u64::from(e.metadata.num_scenarios), row["numScenarios"].as_u64().unwrap());
            assert_eq!(u64::from(e.metadata.num_buckets), row["numBuckets"].as_u64().unwrap());
            assert_eq!(e.metadata.config_hash, key);
            assert_eq!(e.metadata.generated_at.as_deref(), Some(ts_created_at));
            assert_eq!(e.metadata.duration_ms, None);
            assert!(e.metadata.recycling_multiples.is_empty());
            assert!(e.lacks_recycling());

            // A legacy row is a hit for single flight as well.
            let cfg = ScenarioConfig::from_json_str(&row["config"].to_string()).unwrap();
            let (same, inserted) = store
                .get_or_insert(&cfg, key, must_not_generate)
                .await
                .unwrap();
            assert!(!inserted);
            assert_eq!(same, e);
        }

        let err = store.get(&broken_key).await.unwrap_err();
        assert_eq!(err.code(), "E_CORRUPT");
        assert!(err.to_string().contains(&broken_key), "{err}");

        // The abandoned row is a miss, and our write takes it over.
        assert_eq!(store.get(&pending_key).await.unwrap(), None);
        let cfg = config("f", "v1", 10);
        let entry = entry_for(&cfg, &pending_key);
        let (_, inserted) = store
            .get_or_insert(&cfg, &pending_key, counting_make(Arc::default(), entry.clone(), Duration::ZERO))
            .await
            .unwrap();
        assert!(inserted);
        assert_eq!(store.get(&pending_key).await.unwrap(), Some(entry));
        assert_eq!(pg_count(&url, &pending_key).await, 1);

        let _ = c.close().await;
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_single_flight_across_processes() {
    with_pg_db(|url| async move {
        let cfg = config(HOSTILE_FUND, "v1", 500);
        let key = new_key();
        race_eight_stores(DurableUrl::parse(&url).unwrap(), &cfg, &key).await;
        assert_eq!(pg_count(&url, &key).await, 1);
    })
    .await;
}

/// Eight stores on one database (one pool each, like eight server processes;
/// their opens race on the migrations too) ask for one new key at once:
/// exactly one generates, all get its entry.
async fn race_eight_stores(url: DurableUrl, cfg: &ScenarioConfig, key: &str) {
    let cfg = Arc::new(cfg.clone());
    let entry = entry_for(&cfg, key);
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (url, cfg, key, entry, calls, barrier) = (
                url.clone(),
                cfg.clone(),
                key.to_string(),
                entry.clone(),
                calls.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                let store = Durable::open(&url, &opts(Duration::from_secs(10)))
                    .await
                    .unwrap();
                barrier.wait().await;
                let out = store
                    .get_or_insert(
                        &cfg,
                        &key,
                        counting_make(calls, entry, Duration::from_millis(300)),
                    )
                    .await
                    .unwrap();
                store.close().await;
                out
            })
        })
        .collect();
    let mut inserted = 0;
    for t in tasks {
        let (got, fresh) = t.await.unwrap();
        assert_eq!(got, entry);
        inserted += usize::from(fresh);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "generated exactly once");
    assert_eq!(inserted, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_delete_and_delete_fund() {
    with_pg_db(|url| async move {
        let store = pg_open(&url).await;
        delete_semantics(&store).await;
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_failing_insert_is_a_durable_write_error() {
    with_pg_db(|url| async move {
        let store = pg_open(&url).await;
        let mut c = pg_raw(&url).await;
        sqlx::raw_sql(
            "CREATE FUNCTION smc_test_reject() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'test trigger rejects inserts'; END $$;
             CREATE TRIGGER smc_test_reject BEFORE INSERT ON scenario_matrices
               FOR EACH ROW EXECUTE FUNCTION smc_test_reject();",
        )
        .execute(&mut c)
        .await
        .unwrap();

        let cfg = config("fund", "v1", 100);
        let key = new_key();
        let entry = entry_for(&cfg, &key);
        let calls = Arc::new(AtomicUsize::new(0));
        let err = store
            .get_or_insert(
                &cfg,
                &key,
                counting_make(calls.clone(), entry.clone(), Duration::ZERO),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "E_DURABLE_WRITE", "{err}");
        assert!(
            err.to_string().contains("test trigger rejects inserts"),
            "{err}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(pg_count(&url, &key).await, 0, "no row after a failed write");

        // The lock and the connection are fine afterwards.
        c.execute("DROP TRIGGER smc_test_reject ON scenario_matrices")
            .await
            .unwrap();
        let (_, inserted) = store
            .get_or_insert(&cfg, &key, counting_make(calls, entry, Duration::ZERO))
            .await
            .unwrap();
        assert!(inserted);
        let _ = c.close().await;
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_make_errors_pass_through_and_cancellation_releases_the_lock() {
    with_pg_db(|url| async move {
        let a = pg_open(&url).await;
        let b = pg_open(&url).await;
        let cfg = config("fund", "v1", 100);
        let key = new_key();
        let entry = entry_for(&cfg, &key);

        let err = a
            .get_or_insert(&cfg, &key, || async {
                Err(Error::Internal("generator failed".into()))
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "E_INTERNAL");
        assert_eq!(pg_count(&url, &key).await, 0);

        // A caller that gives up while generating (holding the lock) must not
        // keep the key locked.
        let (started, started_rx) = tokio::sync::oneshot::channel();
        abandon_mid_generation(
            a.get_or_insert(&cfg, &key, signalling_make(entry.clone(), started, None)),
            started_rx,
        )
        .await;
        // Far below the 60 s lock wait: a lock left behind would time this out.
        let (got, inserted) = tokio::time::timeout(
            Duration::from_secs(20),
            b.get_or_insert(
                &cfg,
                &key,
                counting_make(Arc::default(), entry.clone(), Duration::ZERO),
            ),
        )
        .await
        .expect("the lock of the abandoned call was released")
        .unwrap();
        assert!(inserted);
        assert_eq!(got, entry);
        assert_eq!(a.get(&key).await.unwrap(), Some(entry));
        a.close().await;
        b.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_without_migrations_a_missing_table_is_unavailable() {
    with_pg_db(|url| async move {
        let mut o = opts(Duration::from_secs(5));
        o.run_migrations = false;
        let store = Durable::open(&DurableUrl::parse(&url).unwrap(), &o)
            .await
            .unwrap();
        let err = store.get(&new_key()).await.unwrap_err();
        assert_eq!(err.code(), "E_DURABLE_UNAVAILABLE", "{err}");
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_unreachable_server_is_unavailable_without_leaking_the_password() {
    // A server that accepts connections and never answers: only the timeout
    // can end the attempt.
    // (A std thread, left blocked in accept until the test binary exits.)
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept() {
            held.push(sock);
        }
    });
    let silent_url =
        format!("postgresql://bob:s3cret-pw@127.0.0.1:{silent_port}/x?password=s3cret-pw");
    for (url, timeout) in [
        // Refused at once.
        (
            "postgres://postgres:s3cret-pw@127.0.0.1:1/nowhere",
            Duration::from_secs(2),
        ),
        (silent_url.as_str(), Duration::from_secs(1)),
    ] {
        let started = Instant::now();
        let result = Durable::open(&DurableUrl::parse(url).unwrap(), &opts(timeout)).await;
        let elapsed = started.elapsed();
        let err = match result {
            Ok(_) => panic!("{url} opened"),
            Err(e) => e,
        };
        assert_eq!(err.code(), "E_DURABLE_UNAVAILABLE", "{err}");
        let msg = err.to_string();
        eprintln!("{elapsed:?}: {msg}");
        assert!(!msg.contains("s3cret-pw"), "password leaked: {msg}");
        assert!(msg.contains("***"), "{msg}");
        // Bounded by the timeout (a pool alone would retry for 30 s, and the
        // silent server never answers); generous, as the machine may be busy.
        assert!(
            elapsed < timeout + Duration::from_secs(10),
            "{url}: took {elapsed:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Shared by both stores
// ---------------------------------------------------------------------------

async fn insert(store: &Durable, cfg: &ScenarioConfig) -> String {
    let key = new_key();
    let entry = entry_for(cfg, &key);
    let (_, inserted) = store
        .get_or_insert(
            cfg,
            &key,
            counting_make(Arc::default(), entry, Duration::ZERO),
        )
        .await
        .unwrap();
    assert!(inserted);
    key
}

async fn delete_semantics(store: &Durable) {
    let a1 = config(HOSTILE_FUND, "t1", 10);
    let a2 = config(HOSTILE_FUND, "t2", 10);
    let b1 = config("fund-b", "t1", 10);
    let k_a1 = insert(store, &a1).await;
    let k_a2 = insert(store, &a2).await;
    let k_a2b = insert(store, &a2).await;
    let k_b1 = insert(store, &b1).await;

    assert!(store.delete(&k_a1).await.unwrap());
    assert!(!store.delete(&k_a1).await.unwrap(), "already gone");
    assert_eq!(store.get(&k_a1).await.unwrap(), None);
    // The next miss inserts again.
    let entry = entry_for(&a1, &k_a1);
    let (_, inserted) = store
        .get_or_insert(
            &a1,
            &k_a1,
            counting_make(Arc::default(), entry.clone(), Duration::ZERO),
        )
        .await
        .unwrap();
    assert!(inserted);
    assert_eq!(store.get(&k_a1).await.unwrap(), Some(entry));

    let mut gone = delete_fund(store, HOSTILE_FUND, Some("t2")).await.unwrap();
    gone.sort();
    let mut expected = vec![k_a2.clone(), k_a2b.clone()];
    expected.sort();
    assert_eq!(gone, expected);
    assert_eq!(store.get(&k_a2).await.unwrap(), None);
    assert!(
        store.get(&k_a1).await.unwrap().is_some(),
        "other taxonomy kept"
    );

    assert_eq!(
        delete_fund(store, HOSTILE_FUND, None).await.unwrap(),
        vec![k_a1.clone()]
    );
    assert_eq!(store.get(&k_a1).await.unwrap(), None);
    assert!(delete_fund(store, "no such fund", None)
        .await
        .unwrap()
        .is_empty());
    assert!(store.get(&k_b1).await.unwrap().is_some(), "other fund kept");
}

/// What `invalidateFund` asks of the store: the fund's rows deleted (and the
/// invalidation recorded).
async fn delete_fund(
    store: &Durable,
    fund_id: &str,
    taxonomy_version: Option<&str>,
) -> scenario_matrix_cache::Result<Vec<String>> {
    store
        .invalidate(Scope::Fund {
            fund_id,
            taxonomy_version,
        })
        .await
}

/// The TypeScript app's unfinished rows ('pending', 'processing', 'failed')
/// of a fund, under keys of their own, as `insert_unfinished` stores them.
const UNFINISHED: [&str; 3] = ["pending", "processing", "failed"];

/// `delete_fund` removes the fund's cached matrices (complete rows) only, and
/// returns only their keys; the app's unfinished rows are left alone.
/// `unfinished` are the keys of the rows `UNFINISHED` the caller stored for
/// `HOSTILE_FUND`/"t1"; `remaining` counts the rows of a key.
async fn fund_delete_keeps_unfinished_rows<F, Fut>(
    store: &Durable,
    unfinished: &[String],
    remaining: F,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = i64>,
{
    let cfg = config(HOSTILE_FUND, "t1", 10);
    let complete = insert(store, &cfg).await;
    assert_eq!(
        delete_fund(store, HOSTILE_FUND, Some("t1")).await.unwrap(),
        vec![complete.clone()],
        "only the complete row is a cached matrix"
    );
    assert_eq!(store.get(&complete).await.unwrap(), None);
    for k in unfinished {
        assert_eq!(
            remaining(k.clone()).await,
            1,
            "unfinished row {k} was deleted"
        );
    }
    let again = insert(store, &cfg).await;
    assert_eq!(
        delete_fund(store, HOSTILE_FUND, None).await.unwrap(),
        vec![again]
    );
    assert!(delete_fund(store, HOSTILE_FUND, None)
        .await
        .unwrap()
        .is_empty());
    for k in unfinished {
        assert_eq!(
            remaining(k.clone()).await,
            1,
            "unfinished row {k} was deleted"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_delete_fund_keeps_unfinished_rows() {
    with_pg_db(|url| async move {
        let store = pg_open(&url).await;
        let mut c = pg_raw(&url).await;
        let mut unfinished = Vec::new();
        for status in UNFINISHED {
            let k = new_key();
            sqlx::query(
                "INSERT INTO scenario_matrices (matrix_key, fund_id, taxonomy_version, status)
                 VALUES ($1, $2, 't1', $3)",
            )
            .bind(&k)
            .bind(HOSTILE_FUND)
            .bind(status)
            .execute(&mut c)
            .await
            .unwrap();
            unfinished.push(k);
        }
        let _ = c.close().await;
        let u = url.clone();
        fund_delete_keeps_unfinished_rows(&store, &unfinished, move |k| {
            let u = u.clone();
            async move { pg_count(&u, &k).await }
        })
        .await;
        store.close().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "smc-durable-{}-{}-{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            random_u64() as u32
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn sqlite_open(path: &Path) -> Durable {
    Durable::open(
        &DurableUrl::Sqlite(path.to_path_buf()),
        &opts(Duration::from_secs(10)),
    )
    .await
    .expect("open SQLite store")
}

async fn sqlite_raw(path: &Path) -> sqlx::SqliteConnection {
    let o = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(10));
    sqlx::SqliteConnection::connect_with(&o).await.unwrap()
}

async fn sqlite_count(path: &Path, key: &str) -> i64 {
    let mut c = sqlite_raw(path).await;
    let n = sqlx::query_scalar("SELECT count(*) FROM scenario_matrices WHERE matrix_key = ?1")
        .bind(key)
        .fetch_one(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_miss_insert_hit_and_row_shape() {
    let dir = TempDir::new();
    // Parent directories that do not exist yet.
    let path = dir.0.join("nested/deeper/cache.db");
    let store = sqlite_open(&path).await;
    assert!(path.exists());
    let cfg = config(HOSTILE_FUND, HOSTILE_TAXONOMY, 1000);
    let key = new_key();
    let entry = entry_for(&cfg, &key);

    assert_eq!(store.get(&key).await.unwrap(), None);
    let calls = Arc::new(AtomicUsize::new(0));
    let (got, inserted) = store
        .get_or_insert(
            &cfg,
            &key,
            counting_make(calls.clone(), entry.clone(), Duration::ZERO),
        )
        .await
        .unwrap();
    assert!(inserted);
    assert_eq!(got, entry);
    assert_eq!(store.get(&key).await.unwrap(), Some(entry.clone()));
    let (again, inserted) = store
        .get_or_insert(&cfg, &key, must_not_generate)
        .await
        .unwrap();
    assert!(!inserted);
    assert_eq!(again, entry);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let mut c = sqlite_raw(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let r = sqlx::query(
        "SELECT status, compression_codec, matrix_type, matrix_layout, bucket_count, num_scenarios,
                payload_format, fund_id, taxonomy_version, scenario_states, bucket_params, s_opt,
                generated_at, moic_matrix
           FROM scenario_matrices WHERE matrix_key = ?1",
    )
    .bind(&key)
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(r.get::<String, _>("status"), "complete");
    assert_eq!(r.get::<String, _>("compression_codec"), "zstd");
    assert_eq!(r.get::<String, _>("matrix_type"), "moic");
    assert_eq!(r.get::<String, _>("matrix_layout"), "row-major");
    assert_eq!(r.get::<i64, _>("bucket_count"), 2);
    assert_eq!(r.get::<i64, _>("num_scenarios"), 1000);
    assert_eq!(r.get::<i64, _>("payload_format"), 2);
    assert_eq!(r.get::<String, _>("fund_id"), HOSTILE_FUND);
    assert_eq!(r.get::<String, _>("taxonomy_version"), HOSTILE_TAXONOMY);
    let states: Json = serde_json::from_str(&r.get::<String, _>("scenario_states")).unwrap();
    assert_eq!(states, json!({"numScenarios": 1000}));
    let buckets: Json = serde_json::from_str(&r.get::<String, _>("bucket_params")).unwrap();
    assert_eq!(buckets, expected_bucket_params());
    let s_opt: Json = serde_json::from_str(&r.get::<String, _>("s_opt")).unwrap();
    assert_eq!(s_opt, expected_s_opt());
    assert_eq!(
        r.get::<String, _>("generated_at"),
        "2026-11-24T06:00:00.123Z"
    );
    assert_eq!(r.get::<Vec<u8>, _>("moic_matrix"), entry.payload.to_vec());

    // A legacy-shaped row (no payload_format, count only as a scenario list)
    // reads by the same rules as in PostgreSQL.
    let legacy_key = new_key();
    sqlx::query(
        "INSERT INTO scenario_matrices
           (matrix_key, moic_matrix, scenario_states, bucket_params, compression_codec,
            matrix_layout, bucket_count, s_opt, status, created_at)
         VALUES (?1, x'0102', '{\"scenarios\": [{\"id\":0},{\"id\":1},{\"id\":2}]}', '[]', 'zstd',
                 'row-major', 1, '{}', 'complete', '2025-06-01T12:34:56.789Z')",
    )
    .bind(&legacy_key)
    .execute(&mut c)
    .await
    .unwrap();
    let legacy = store.get(&legacy_key).await.unwrap().unwrap();
    assert_eq!(legacy.codec, Codec::Zlib);
    assert_eq!(
        (legacy.metadata.num_scenarios, legacy.metadata.num_buckets),
        (3, 1)
    );
    assert_eq!(
        legacy.metadata.generated_at.as_deref(),
        Some("2025-06-01T12:34:56.789Z")
    );
    let broken_key = new_key();
    sqlx::query(
        "INSERT INTO scenario_matrices
           (matrix_key, moic_matrix, scenario_states, bucket_params, compression_codec,
            matrix_layout, bucket_count, s_opt, status)
         VALUES (?1, x'00', 'not json', '[]', 'zstd', 'row-major', 1, '{}', 'complete')",
    )
    .bind(&broken_key)
    .execute(&mut c)
    .await
    .unwrap();
    let err = store.get(&broken_key).await.unwrap_err();
    assert_eq!(err.code(), "E_CORRUPT");
    assert!(err.to_string().contains(&broken_key), "{err}");

    let _ = c.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_migrations_are_idempotent_and_concurrent_opens_work() {
    let dir = TempDir::new();
    let path = dir.0.join("twice.db");
    for _ in 0..2 {
        let store = sqlite_open(&path).await;
        assert_eq!(store.get(&new_key()).await.unwrap(), None);
        store.close().await;
    }

    let fresh = dir.0.join("fresh.db");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let p = fresh.clone();
            tokio::spawn(async move { sqlite_open(&p).await })
        })
        .collect();
    for o in opens {
        let store = o.await.expect("open task");
        assert_eq!(store.get(&new_key()).await.unwrap(), None);
        store.close().await;
    }
    for p in [&path, &fresh] {
        let mut c = sqlite_raw(p).await;
        let applied: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {MIGRATIONS_TABLE}"
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(applied, migration_count("sqlite"));
        let _ = c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_single_flight_across_processes() {
    let dir = TempDir::new();
    let path = dir.0.join("shared.db");
    let key = new_key();
    race_eight_stores(
        DurableUrl::Sqlite(path.clone()),
        &config("fund", "v1", 500),
        &key,
    )
    .await;
    assert_eq!(sqlite_count(&path, &key).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_delete_and_delete_fund() {
    let dir = TempDir::new();
    let store = sqlite_open(&dir.0.join("delete.db")).await;
    delete_semantics(&store).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_delete_fund_keeps_unfinished_rows() {
    let dir = TempDir::new();
    let path = dir.0.join("unfinished.db");
    let store = sqlite_open(&path).await;
    let mut c = sqlite_raw(&path).await;
    let mut unfinished = Vec::new();
    for status in UNFINISHED {
        let k = new_key();
        sqlx::query(
            "INSERT INTO scenario_matrices (matrix_key, fund_id, taxonomy_version, status)
             VALUES (?1, ?2, 't1', ?3)",
        )
        .bind(&k)
        .bind(HOSTILE_FUND)
        .bind(status)
        .execute(&mut c)
        .await
        .unwrap();
        unfinished.push(k);
    }
    let _ = c.close().await;
    let p = path.clone();
    fund_delete_keeps_unfinished_rows(&store, &unfinished, move |k| {
        let p = p.clone();
        async move { sqlite_count(&p, &k).await }
    })
    .await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_failing_insert_is_a_durable_write_error() {
    let dir = TempDir::new();
    let path = dir.0.join("reject.db");
    let store = sqlite_open(&path).await;
    let mut c = sqlite_raw(&path).await;
    c.execute(
        "CREATE TRIGGER smc_test_reject BEFORE INSERT ON scenario_matrices
         BEGIN SELECT RAISE(ABORT, 'test trigger rejects inserts'); END",
    )
    .await
    .unwrap();
    let _ = c.close().await;

    let cfg = config("fund", "v1", 100);
    let key = new_key();
    let entry = entry_for(&cfg, &key);
    let err = store
        .get_or_insert(
            &cfg,
            &key,
            counting_make(Arc::default(), entry, Duration::ZERO),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "E_DURABLE_WRITE", "{err}");
    assert!(
        err.to_string().contains("test trigger rejects inserts"),
        "{err}"
    );
    assert_eq!(sqlite_count(&path, &key).await, 0);
    // The write lock was released: another writer gets through at once.
    let mut c = sqlite_raw(&path).await;
    c.execute("DROP TRIGGER smc_test_reject").await.unwrap();
    let _ = c.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_unopenable_path_is_unavailable() {
    let dir = TempDir::new();
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = match Durable::open(
        &DurableUrl::Sqlite(file.join("sub/cache.db")),
        &opts(Duration::from_secs(2)),
    )
    .await
    {
        Ok(_) => panic!("opened a database under a regular file"),
        Err(e) => e,
    };
    assert_eq!(err.code(), "E_DURABLE_UNAVAILABLE", "{err}");

    // A file that is not a database.
    let err = match Durable::open(&DurableUrl::Sqlite(file), &opts(Duration::from_secs(2))).await {
        Ok(_) => panic!("opened a text file as a database"),
        Err(e) => e,
    };
    assert_eq!(err.code(), "E_DURABLE_UNAVAILABLE", "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_waits_out_long_generations_and_cancellation_frees_the_lock() {
    let dir = TempDir::new();
    let path = dir.0.join("long.db");
    // A busy_timeout far shorter than the other process's generation.
    let short = opts(Duration::from_millis(300));
    let url = DurableUrl::Sqlite(path.clone());
    let a = Durable::open(&url, &short).await.unwrap();
    let b = Durable::open(&url, &short).await.unwrap();
    let cfg = config("fund", "v1", 100);
    let (k1, k2, k3) = (new_key(), new_key(), new_key());

    // `a` generates k1 inside its write lock until `release` fires.
    let (started, started_rx) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel();
    let slow = async {
        a.get_or_insert(
            &cfg,
            &k1,
            signalling_make(entry_for(&cfg, &k1), started, Some(release_rx)),
        )
        .await
        .map(|(_, fresh)| fresh)
    };
    let waiting = async {
        started_rx.await.expect("a's generation started");
        // Reads are not blocked by the writer (WAL): this one completes while
        // `a` holds the write lock (it keeps it until `release` fires below).
        let read = tokio::time::timeout(Duration::from_secs(20), b.get(&k2))
            .await
            .expect("read waited for the writer");
        assert_eq!(read.unwrap(), None);
        // A process starting meanwhile opens (and checks migrations) fine,
        // and `b`'s own miss waits for the write lock longer than its
        // busy_timeout: the generation goes on for four busy_timeouts after
        // both started waiting.
        let opening = async {
            let c = Durable::open(&url, &short)
                .await
                .expect("open during a generation");
            c.close().await;
        };
        let inserting = async {
            let entry = entry_for(&cfg, &k2);
            let insert = b.get_or_insert(
                &cfg,
                &k2,
                counting_make(Arc::default(), entry, Duration::ZERO),
            );
            tokio::pin!(insert);
            tokio::select! {
                r = &mut insert => panic!("b's call ended while a held the write lock: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(1200)) => {}
            }
            release.send(()).unwrap();
            insert.await.map(|(_, fresh)| fresh)
        };
        tokio::join!(opening, inserting).1
    };
    let (slow, waiting) = tokio::join!(slow, waiting);
    assert!(slow.unwrap());
    assert!(waiting.expect("waited past busy_timeout for the other generation"));

    // A caller that gives up while generating frees the write lock.
    let (started, started_rx) = tokio::sync::oneshot::channel();
    abandon_mid_generation(
        b.get_or_insert(
            &cfg,
            &k3,
            signalling_make(entry_for(&cfg, &k3), started, None),
        ),
        started_rx,
    )
    .await;
    // Far below the 60 s lock wait: a write lock left behind would time this out.
    let (_, fresh) = tokio::time::timeout(
        Duration::from_secs(20),
        b.get_or_insert(
            &cfg,
            &k3,
            counting_make(Arc::default(), entry_for(&cfg, &k3), Duration::ZERO),
        ),
    )
    .await
    .expect("the abandoned call freed the write lock")
    .unwrap();
    assert!(fresh);
    a.close().await;
    b.close().await;
}
