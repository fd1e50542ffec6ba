//! Shared test plumbing: a private PostgreSQL database and Redis prefix per
//! test, on the services of the machine (`scripts/ensure-services.sh` starts
//! them when they are missing).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, PgConnection};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database of its own, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = unique("smc_test");
        let mut admin = PgConnection::connect(PG_ADMIN_URL).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {PG_ADMIN_URL} is not reachable ({e}); run scripts/ensure-services.sh")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        TestDb {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    pub async fn drop_db(self) {
        let mut admin = PgConnection::connect(PG_ADMIN_URL).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

pub async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {REDIS_URL} is not reachable ({e}); run scripts/ensure-services.sh")
        })
}

/// A small valid config as JSON text; `fund` and `scenarios` vary it.
pub fn config_json(fund: &str, scenarios: u32) -> String {
    format!(
        r#"{{"fundId": "{fund}", "taxonomyVersion": "v1.2", "numScenarios": {scenarios},
            "buckets": [
              {{"name": "Seed", "capitalAllocation": 40, "moicCalibration": {{"median": 1, "p90": 3}}}},
              {{"name": "Series A", "capitalAllocation": 35, "moicCalibration": {{"median": 1.5, "p90": 3.5}}}},
              {{"name": "Series B", "capitalAllocation": 25, "moicCalibration": {{"median": 2, "p90": 4}}}}
            ],
            "correlationWeights": {{"macro": 0.5, "systematic": 0.25, "idiosyncratic": 0.25}},
            "recycling": {{"enabled": true, "mode": "same-bucket", "reinvestmentRate": 0.8, "avgHoldingPeriod": 5, "fundLifetime": 10}}}}"#
    )
}

pub fn config(fund: &str, scenarios: u32) -> scenario_matrix_cache::ScenarioConfig {
    scenario_matrix_cache::ScenarioConfig::from_json_str(&config_json(fund, scenarios)).unwrap()
}

/// Deletes every Redis key under `prefix` (each test cleans up its own).
pub async fn drop_redis_prefix(prefix: &str) {
    let mut r = redis_conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut r)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut r)
            .await
            .unwrap();
    }
}
