//! The operator methods of `ScenarioMatrixCache` (what the CLI and a
//! `/metrics` endpoint use): `ensure`, `metrics`, `storeReport`, `rowKeys`,
//! `verifyRow`, `gc` and `inspect`. Arguments are converted here; the work
//! is in `cache::admin`, `metrics` and `inspect`.

use napi::bindgen_prelude::{PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;

use super::cache::{promise, ScenarioMatrixCache};
use super::{parse_config, read_value, MatrixSource};
use crate::cache::{self, Cache};
use crate::config::{ScenarioConfig, Value};
use crate::error::{Error, Result};
use crate::tier::Source;
use crate::view::ColumnOrder;

#[napi(object)]
pub struct EnsureResult {
    pub key: String,
    pub source: MatrixSource,
    /// The call waited for a lookup or generation another call had started
    /// (with `source: 'generated'`: this call did not generate).
    pub joined: bool,
}

#[napi(object, use_nullable = true)]
pub struct FundRows {
    pub fund_id: Option<String>,
    pub taxonomy_version: Option<String>,
    pub rows: f64,
    pub bytes: f64,
}

#[napi(object, use_nullable = true)]
pub struct StoreReport {
    #[napi(ts_type = "'postgres' | 'sqlite'")]
    pub store: String,
    /// Complete rows (cached matrices).
    pub rows: f64,
    /// Stored payload bytes.
    pub bytes: f64,
    /// Rows in the TypeScript app's format.
    pub legacy_rows: f64,
    /// `created_at` of the oldest and newest row (ISO 8601 UTC).
    pub oldest: Option<String>,
    pub newest: Option<String>,
    pub by_fund: Vec<FundRows>,
    /// Keys under the Redis prefix; null without Redis or when it did not answer.
    pub redis_keys: Option<f64>,
    /// Why Redis did not answer; null otherwise.
    pub redis_error: Option<String>,
}

#[napi(object)]
pub struct RepairError {
    #[napi(ts_type = "ErrorCode")]
    pub code: String,
    pub message: String,
}

#[napi(object)]
pub struct RowCheck {
    pub key: String,
    #[napi(ts_type = "'ok' | 'legacy' | 'damaged' | 'unreadable' | 'missing'")]
    pub status: String,
    /// What failed, or what was left alone and why.
    pub detail: Option<String>,
    /// With `repair`, what was done.
    #[napi(ts_type = "'rewritten' | 'regenerated'")]
    pub repaired: Option<String>,
    /// With `repair`, why the row could not be repaired.
    pub repair_error: Option<RepairError>,
}

#[napi(object, use_nullable = true)]
pub struct GcResult {
    /// Keys of the rows deleted (with `dryRun`: that would be).
    pub keys: Vec<String>,
    pub rows: f64,
    /// Redis copies deleted (with `dryRun`: that exist now; null when Redis did not answer).
    pub redis_keys: Option<f64>,
    pub dry_run: bool,
}

#[napi(object, use_nullable = true)]
pub struct BucketInspection {
    pub name: String,
    pub mean: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub recycling_multiple: Option<f64>,
}

#[napi(object, use_nullable = true)]
pub struct LogCorrelation {
    pub names: Vec<String>,
    /// Pearson correlation of ln(MOIC), row i column j for buckets i and j;
    /// null where a bucket has no spread (median 0).
    pub log_moic: Vec<Vec<Option<f64>>>,
}

#[napi(object)]
pub struct InspectReport {
    pub key: String,
    pub source: MatrixSource,
    pub num_scenarios: u32,
    /// In the config's bucket order (the key's order for a key).
    pub buckets: Vec<BucketInspection>,
    pub correlation: LogCorrelation,
    /// With `plot: true`: an SVG of each bucket's MOIC distribution.
    pub svg: Option<String>,
}

#[napi]
impl ScenarioMatrixCache {
    /// Makes sure the matrix for `config` is cached (like `getOrGenerate`) without
    /// handing its bytes to JS; resolves to its key and where it came from.
    #[napi(
        ts_args_type = "config: ScenarioConfig",
        ts_return_type = "Promise<EnsureResult>"
    )]
    pub fn ensure<'e>(
        &self,
        env: &'e Env,
        config: Unknown,
    ) -> napi::Result<PromiseRaw<'e, EnsureResult>> {
        let cfg = parse_config(&config);
        if cfg.is_err() {
            self.inner.record_refused();
        }
        let cache = self.inner.clone();
        let work = async move {
            let cfg = cfg?;
            let key = crate::key::canonical_key(&cfg);
            let (hit, joined) = cache.get_or_join(&cfg, key.clone(), false).await?;
            Ok((key, hit.source, joined))
        };
        promise(env, work, |_, (key, source, joined)| {
            Ok(EnsureResult {
                key,
                source: source.into(),
                joined,
            })
        })
    }

    /// The statistics in Prometheus' text exposition format, for a `/metrics` endpoint
    /// (names prefixed `scenario_matrix_cache_`; README "Metrics").
    #[napi]
    pub fn metrics(&self) -> String {
        crate::metrics::render(&self.inner.stats())
    }

    /// Rows, bytes, legacy rows, oldest and newest, by fund and taxonomy version, and
    /// Redis keys under the prefix.
    #[napi(ts_return_type = "Promise<StoreReport>")]
    pub fn store_report<'e>(&self, env: &'e Env) -> napi::Result<PromiseRaw<'e, StoreReport>> {
        let cache = self.inner.clone();
        promise(env, async move { cache.store_report().await }, |_, r| {
            Ok(report_js(r))
        })
    }

    /// Keys of the durable store's rows in ascending order, after `after`, at most
    /// `limit` (default 1000): page with the last key of the previous page.
    #[napi(
        ts_args_type = "options?: { after?: string; limit?: number }",
        ts_return_type = "Promise<string[]>"
    )]
    pub fn row_keys<'e>(
        &self,
        env: &'e Env,
        options: Option<Unknown>,
    ) -> napi::Result<PromiseRaw<'e, Vec<String>>> {
        let opts = read_options(options.as_ref(), "rowKeys options", &["after", "limit"]);
        let cache = self.inner.clone();
        let work = async move {
            let opts = opts?;
            let after = opt_string(&opts, "after")?;
            let limit = match opt_number(&opts, "limit")? {
                None => 1000,
                Some(n) if n.fract() == 0.0 && (1.0..=100_000.0).contains(&n) => n as u32,
                Some(n) => {
                    return Err(Error::InvalidArgument(format!(
                        "limit must be an integer from 1 to 100000, got {n}"
                    )))
                }
            };
            cache.row_keys(after.as_deref(), limit).await
        };
        promise(env, work, |_, keys| Ok(keys))
    }

    /// Decodes the durable row under `key` and checks every checksum; with
    /// `repair: true` rewrites a legacy row in the current format and regenerates a
    /// damaged one where its config is known (README "Operators").
    #[napi(
        ts_args_type = "key: string, options?: { repair?: boolean }",
        ts_return_type = "Promise<RowCheck>"
    )]
    pub fn verify_row<'e>(
        &self,
        env: &'e Env,
        key: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<PromiseRaw<'e, RowCheck>> {
        let key = super::read_string(&key, "key");
        let opts = read_options(options.as_ref(), "verifyRow options", &["repair"]);
        let cache = self.inner.clone();
        let work = async move {
            let repair = opt_bool(&opts?, "repair")?.unwrap_or(false);
            cache.verify_row(&key?, repair).await
        };
        promise(env, work, |_, c| Ok(check_js(c)))
    }

    /// Deletes the rows created more than `olderThanMs` ago (of one fund when given)
    /// and their memory and Redis copies; with `dryRun: true` only lists them.
    #[napi(
        ts_args_type = "options: { olderThanMs: number; fundId?: string; dryRun?: boolean }",
        ts_return_type = "Promise<GcResult>"
    )]
    pub fn gc<'e>(&self, env: &'e Env, options: Unknown) -> napi::Result<PromiseRaw<'e, GcResult>> {
        let opts = read_options(
            Some(&options),
            "gc options",
            &["olderThanMs", "fundId", "dryRun"],
        );
        let cache = self.inner.clone();
        let work = async move {
            let opts = opts?;
            let age = match opt_number(&opts, "olderThanMs")? {
                // Up to 100 years: the stores' date arithmetic has limits of
                // its own (PostgreSQL errs, SQLite silently matches nothing).
                Some(n) if n.fract() == 0.0 && (0.0..=MAX_AGE_MS).contains(&n) => n as u64,
                Some(n) => {
                    return Err(Error::InvalidArgument(format!(
                        "olderThanMs must be a whole number of milliseconds from 0 to {MAX_AGE_MS} (100 years), got {n}"
                    )))
                }
                None => return Err(Error::InvalidArgument("olderThanMs is required".into())),
            };
            let fund = opt_string(&opts, "fundId")?;
            let dry_run = opt_bool(&opts, "dryRun")?.unwrap_or(false);
            cache.gc(age, fund.as_deref(), dry_run).await
        };
        promise(env, work, |_, r| Ok(gc_js(r)))
    }

    /// Each bucket's mean and quantiles, recycling multiple and the log-MOIC
    /// correlation matrix of the matrix for a config (got or generated) or a key
    /// (looked up only: null when no tier holds it); with `plot: true` also an SVG.
    #[napi(
        ts_args_type = "target: ScenarioConfig | string, options?: { plot?: boolean }",
        ts_return_type = "Promise<InspectReport | null>"
    )]
    pub fn inspect<'e>(
        &self,
        env: &'e Env,
        target: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<PromiseRaw<'e, Option<InspectReport>>> {
        let target = read_value(&target, "the config or key").and_then(|v| match v {
            Value::String(key) => Ok(Target::Key(key)),
            other => ScenarioConfig::from_value(&other).map(Target::Config),
        });
        let opts = read_options(options.as_ref(), "inspect options", &["plot"]);
        let cache = self.inner.clone();
        let work = async move {
            let plot = opt_bool(&opts?, "plot")?.unwrap_or(false);
            inspect(&cache, target?, plot).await
        };
        promise(env, work, |_, r| Ok(r))
    }
}

const MAX_AGE_MS: f64 = 100.0 * 365.25 * 24.0 * 3600.0 * 1000.0;

enum Target {
    Config(ScenarioConfig),
    Key(String),
}

async fn inspect(cache: &Cache, target: Target, plot: bool) -> Result<Option<InspectReport>> {
    let (key, source, metadata, matrix) = match target {
        Target::Config(cfg) => {
            let key = crate::key::canonical_key(&cfg);
            let hit = cache.get_or_generate_keyed(&cfg, key.clone(), true).await?;
            let (hit, matrix) = Cache::matrix_for_caller(hit, &cfg).await?;
            let metadata = ColumnOrder::for_config(&cfg).metadata(&hit.entry.metadata);
            (key, hit.source, metadata, matrix)
        }
        Target::Key(key) => {
            let Some(hit) = cache.get(&key).await? else {
                return Ok(None);
            };
            let entry = hit.entry.clone();
            let matrix = tokio::task::spawn_blocking(move || entry.decode())
                .await
                .map_err(|e| Error::Internal(format!("worker failed: {e}")))??;
            (key, hit.source, hit.entry.metadata, matrix)
        }
    };
    let names: Vec<String> = if metadata.bucket_names.len() == metadata.num_buckets as usize {
        metadata.bucket_names.clone()
    } else {
        // A legacy matrix read by key records no names.
        (1..=metadata.num_buckets)
            .map(|i| format!("column {i}"))
            .collect()
    };
    let rows = metadata.num_scenarios;
    tokio::task::spawn_blocking(move || {
        let r = crate::inspect::inspect(&matrix, &names, &metadata.recycling_multiples);
        let svg = plot
            .then(|| crate::inspect::svg(&matrix, &names, &key))
            .transpose()?;
        Ok(Some(InspectReport {
            key,
            source: source.into(),
            num_scenarios: rows,
            buckets: r
                .buckets
                .into_iter()
                .map(|b| BucketInspection {
                    name: b.name,
                    mean: b.mean,
                    p10: b.p10,
                    p50: b.p50,
                    p90: b.p90,
                    p99: b.p99,
                    recycling_multiple: b.recycling_multiple,
                })
                .collect(),
            correlation: LogCorrelation {
                names,
                log_moic: r.log_correlation,
            },
            svg,
        }))
    })
    .await
    .map_err(|e| Error::Internal(format!("worker failed: {e}")))?
}

fn report_js(r: cache::StoreReport) -> StoreReport {
    let s = r.summary;
    StoreReport {
        store: match r.store {
            Source::Postgres => "postgres",
            _ => "sqlite",
        }
        .to_string(),
        rows: s.rows as f64,
        bytes: s.bytes as f64,
        legacy_rows: s.legacy_rows as f64,
        oldest: s.oldest,
        newest: s.newest,
        by_fund: s
            .by_fund
            .into_iter()
            .map(|f| FundRows {
                fund_id: f.fund_id,
                taxonomy_version: f.taxonomy_version,
                rows: f.rows as f64,
                bytes: f.bytes as f64,
            })
            .collect(),
        redis_keys: r.redis_keys.map(|n| n as f64),
        redis_error: r.redis_error,
    }
}

fn check_js(c: cache::RowCheck) -> RowCheck {
    RowCheck {
        key: c.key,
        status: c.status.as_str().to_string(),
        detail: c.detail,
        repaired: c.repaired.map(|r| r.as_str().to_string()),
        repair_error: c.repair_error.map(|e| RepairError {
            code: e.code().to_string(),
            message: e.to_string(),
        }),
    }
}

fn gc_js(r: cache::GcReport) -> GcResult {
    GcResult {
        rows: r.keys.len() as f64,
        keys: r.keys,
        redis_keys: r.redis_keys.map(|n| n as f64),
        dry_run: r.dry_run,
    }
}

/// An optional options object of known member names (a misspelt one is an
/// error, not silently ignored); `undefined` members count as absent.
fn read_options(v: Option<&Unknown>, what: &str, names: &[&str]) -> Result<Vec<(String, Value)>> {
    let members = match v.map(|v| read_value(v, what)).transpose()? {
        None | Some(Value::Undefined) | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(Error::InvalidArgument(format!(
                "{what} must be an object, got {}",
                other.describe()
            )))
        }
    };
    if let Some((bad, _)) = members.iter().find(|(k, _)| !names.contains(&k.as_str())) {
        return Err(Error::InvalidArgument(format!(
            "{what}: unknown option {bad:?} (known: {})",
            names.join(", ")
        )));
    }
    Ok(members
        .into_iter()
        .filter(|(_, v)| *v != Value::Undefined)
        .collect())
}

fn member<'a>(opts: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    opts.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn wrong(name: &str, expected: &str, v: &Value) -> Error {
    Error::InvalidArgument(format!("{name} must be {expected}, got {}", v.describe()))
}

fn opt_bool(opts: &[(String, Value)], name: &str) -> Result<Option<bool>> {
    match member(opts, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong(name, "a boolean", v)),
    }
}

fn opt_number(opts: &[(String, Value)], name: &str) -> Result<Option<f64>> {
    match member(opts, name) {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_finite() => Ok(Some(*n)),
        Some(v) => Err(wrong(name, "a finite number", v)),
    }
}

fn opt_string(opts: &[(String, Value)], name: &str) -> Result<Option<String>> {
    match member(opts, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(wrong(name, "a string", v)),
    }
}
