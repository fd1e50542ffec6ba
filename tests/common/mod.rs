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

/// A free loopback port (bound and released; a race with another process
/// taking it in between is possible but rare).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of the test's own on a loopback port, so the test can
/// pause, kill and restart it; killed on drop.
pub struct OwnRedis {
    child: Option<std::process::Child>,
    pub port: u16,
    extra: Vec<String>,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        OwnRedis::start_with(&[])
    }

    /// With more `redis-server` arguments (`--requirepass`, say).
    pub fn start_with(extra: &[&str]) -> OwnRedis {
        let mut r = OwnRedis {
            child: None,
            port: free_port(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        r.restart();
        r
    }

    /// Starts the server (again) on its port and waits until it accepts.
    pub fn restart(&mut self) {
        self.kill();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = Some(spawn_redis(self.port, &extra));
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused server would not die of SIGKILL until continued on some systems.
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.child.as_ref().unwrap().id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A redis-server without persistence on `port` (plus `extra` arguments),
/// once it accepts connections.
fn spawn_redis(port: u16, extra: &[&str]) -> std::process::Child {
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is needed for this test");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("redis-server did not start on port {port}");
}

/// A free loopback port for a cluster node: Redis also listens on the port
/// plus 10000 (the cluster bus) and refuses ports above 55535, so both must
/// be free and in range. Tried from a place that depends on the process id.
fn free_cluster_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let step = std::process::id() * 7 + NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + step % 35_000) as u16; // 20000..55000
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// A Redis Cluster of the test's own: `masters` redis-servers on spare
/// loopback ports, no replicas, joined with `redis-cli --cluster create`.
/// Each node keeps its cluster config in a temporary folder, so a killed
/// node restarts as the same master of the same slots (with no data: there
/// is no persistence). Every node is killed, and the folder removed, on drop.
pub struct OwnCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<std::process::Child>>,
    dir: std::path::PathBuf,
}

impl OwnCluster {
    pub fn start(masters: usize) -> OwnCluster {
        let dir = std::env::temp_dir().join(unique("smc-cluster"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = OwnCluster {
            ports: (0..masters).map(|_| free_cluster_port()).collect(),
            children: (0..masters).map(|_| None).collect(),
            dir,
        };
        for i in 0..masters {
            c.restart(i);
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is needed for this test");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c.wait_ok();
        c
    }

    /// Starts node `i` (again) with its own cluster config file.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let port = self.ports[i];
        let conf = self.dir.join(format!("nodes-{port}.conf"));
        self.children[i] = Some(spawn_redis(
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().unwrap(),
                // A lost master is noticed (the cluster state turns to fail) within a second.
                "--cluster-node-timeout",
                "1000",
                "--dir",
                self.dir.to_str().unwrap(),
            ],
        ));
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`-STOP`) or SIGCONT (`-CONT`) to node `i`: a paused node keeps
    /// its sockets but answers nothing.
    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.children[i].as_ref().expect("running").id().to_string();
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits (up to 30 s) until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let ok = (0..self.ports.len())
                .filter(|&i| self.children[i].is_some())
                .all(|i| {
                    self.cli(i, &["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                });
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// `redis-cli` against node `i`: its output (empty if it failed).
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.ports[i].to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// How many keys under `prefix` node `i` holds.
    pub fn keys_on(&self, i: usize, prefix: &str) -> usize {
        self.cli(i, &["--scan", "--pattern", &format!("{prefix}*")])
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for i in 0..self.ports.len() {
            if self.children[i].is_some() {
                self.signal(i, "-CONT");
            }
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy on a free loopback port that shapes the server-to-client
/// direction like a slower, farther link: each chunk of at most 64 KiB is
/// held `delay`, and the stream is paced to `bytes_per_sec`. Runs on the
/// test's runtime; stops with it.
pub struct SlowLink {
    pub port: u16,
}

impl SlowLink {
    pub async fn start(
        target_port: u16,
        bytes_per_sec: f64,
        delay: std::time::Duration,
    ) -> SlowLink {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let pace = std::time::Duration::from_secs_f64(n as f64 / bytes_per_sec);
                        tokio::time::sleep(delay + pace).await;
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        SlowLink { port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// A PostgreSQL cluster of the test's own (Debian's `pg_createcluster`, trust
/// auth, on a spare loopback port), so the test can stop or kill it; dropped
/// with its data on drop.
pub struct OwnPostgres {
    version: String,
    name: String,
    pub port: u16,
}

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        let version = std::fs::read_dir("/etc/postgresql")
            .expect("PostgreSQL (Debian packaging) is needed for this test")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max()
            .expect("a PostgreSQL version under /etc/postgresql");
        let pg = OwnPostgres {
            version,
            name: unique("smc"),
            port: free_port(),
        };
        pg.run(
            "pg_createcluster",
            &["-p", &pg.port.to_string(), &pg.version, &pg.name, "--"],
            &["--auth-host=trust", "--auth-local=trust"],
        );
        pg.ctl("start", &[]);
        pg
    }

    fn run(&self, program: &str, args: &[&str], more: &[&str]) {
        let out = std::process::Command::new(program)
            .args(args)
            .args(more)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl(&self, action: &str, extra: &[&str]) {
        self.run(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &self.version,
                &self.name,
                action,
            ],
            extra,
        );
    }

    /// The database `postgres` of this cluster.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A clean, fast shutdown.
    pub fn stop(&self) {
        self.ctl("stop", &["-m", "fast"]);
    }

    /// Like a crash or power cut: no shutdown checkpoint; recovery replays WAL.
    pub fn kill(&self) {
        self.ctl("stop", &["-m", "immediate"]);
    }

    pub fn restart(&self) {
        self.ctl("start", &[]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .output();
    }
}

/// Six buckets with very different calibrations, so a column under the wrong
/// name would be obvious. `order` lists bucket indices in the caller's order.
pub fn six(order: &[usize], scenarios: u32, fund: &str) -> scenario_matrix_cache::ScenarioConfig {
    const B: [(&str, f64, f64, f64); 6] = [
        ("Zeta", 10.0, 10.0, 20.0),
        ("Alpha", 20.0, 1.0, 2.0),
        ("Série B", 15.0, 3.0, 9.0),
        ("angel", 25.0, 0.5, 2.0),
        ("Growth", 20.0, 2.0, 2.0),
        ("Buyout", 10.0, 1.5, 4.5),
    ];
    let buckets: Vec<String> = order
        .iter()
        .map(|&i| {
            let (n, a, m, p) = B[i];
            format!(
                r#"{{"name": "{n}", "capitalAllocation": {a}, "moicCalibration": {{"median": {m}, "p90": {p}}}}}"#
            )
        })
        .collect();
    scenario_matrix_cache::ScenarioConfig::from_json_str(&format!(
        r#"{{"fundId": "{fund}", "taxonomyVersion": "v1.2", "numScenarios": {scenarios},
            "buckets": [{}],
            "correlationWeights": {{"macro": 0.4, "systematic": 0.3, "idiosyncratic": 0.3}},
            "recycling": {{"enabled": true, "reinvestmentRate": 0.6, "avgHoldingPeriod": 3, "fundLifetime": 10}}}}"#,
        buckets.join(",")
    ))
    .unwrap()
}

/// The TypeScript app's table, created as the app creates it, holding the rows
/// of tests/fixtures/legacy-rows.json as the app wrote them (zlib payload
/// labelled 'zstd', one `scenario_states` element per scenario); `s_opt`
/// gives each row's `s_opt` column from its index and config. Returns the
/// fixture.
pub async fn legacy_table(
    db: &TestDb,
    s_opt: impl Fn(usize, &serde_json::Value) -> serde_json::Value,
) -> serde_json::Value {
    use base64::Engine;
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/legacy-rows.json")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut c = db.connect().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(include_str!(
        "../fixtures/typescript-schema.sql"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    for (i, row) in fixture.as_array().unwrap().iter().enumerate() {
        let cfg = &row["config"];
        let n = row["numScenarios"].as_u64().unwrap();
        let states = serde_json::json!({"scenarios": (0..n).map(|i| serde_json::json!({"id": i, "params": {}})).collect::<Vec<_>>()});
        sqlx::query(
            "INSERT INTO scenario_matrices (matrix_key, fund_id, taxonomy_version, matrix_type, moic_matrix, scenario_states, bucket_params, compression_codec, matrix_layout, bucket_count, s_opt, status)
             VALUES ($1, $2, $3, 'moic', $4, $5, $6, 'zstd', 'row-major', $7, $8, 'complete')",
        )
        .bind(row["matrixKey"].as_str().unwrap())
        .bind(cfg["fundId"].as_str().unwrap())
        .bind(cfg["taxonomyVersion"].as_str().unwrap())
        .bind(b64.decode(row["payloadBase64"].as_str().unwrap()).unwrap())
        .bind(states)
        .bind(cfg["buckets"].clone())
        .bind(row["numBuckets"].as_i64().unwrap() as i32)
        .bind(s_opt(i, cfg))
        .execute(&mut c)
        .await
        .unwrap();
    }
    fixture
}
