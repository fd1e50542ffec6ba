//! Operator work on the store as a whole (the CLI's `stats`, `verify` and
//! `gc`): a summary, a full check of every row with optional repair, and
//! deletion by age. Calls of the application are unaffected: rows are read
//! one at a time, and deletions go through the same invalidation window as
//! `invalidateFund`.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use super::{attributable, blocking, check_key, generate, Cache, Normalised};
use crate::codec::Codec;
use crate::config::ScenarioConfig;
use crate::error::{Error, Result};
use crate::tier::catalog::StoreSummary;
use crate::tier::invalidation::{Scope, GC_BATCH};
use crate::tier::{Entry, Source};

/// `storeReport()`.
pub struct StoreReport {
    pub store: Source,
    pub summary: StoreSummary,
    /// Keys under the Redis prefix; None without Redis or when it did not answer.
    pub redis_keys: Option<u64>,
    /// Why Redis did not answer.
    pub redis_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    /// Our envelope; every checksum holds.
    Ok,
    /// The TypeScript app's format (no checksums); it decodes to its dimensions.
    Legacy,
    /// A checksum, length or dimension check failed, or a legacy payload
    /// does not decode.
    Damaged,
    /// The row cannot be interpreted (missing or invalid columns, a payload
    /// format of a newer version).
    Unreadable,
    /// No complete row under the key (deleted meanwhile).
    Missing,
}

impl RowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Ok => "ok",
            RowStatus::Legacy => "legacy",
            RowStatus::Damaged => "damaged",
            RowStatus::Unreadable => "unreadable",
            RowStatus::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repaired {
    /// The same matrix, rewritten in the current format.
    Rewritten,
    /// Generated again from the row's config (for damaged rows of ours:
    /// proven equal to the surviving checksums first).
    Regenerated,
}

impl Repaired {
    pub fn as_str(self) -> &'static str {
        match self {
            Repaired::Rewritten => "rewritten",
            Repaired::Regenerated => "regenerated",
        }
    }
}

/// `verifyRow()`: what one row holds and, when asked, what was done about it.
#[derive(Debug)]
pub struct RowCheck {
    pub key: String,
    pub status: RowStatus,
    pub detail: Option<String>,
    pub repaired: Option<Repaired>,
    pub repair_error: Option<Error>,
}

impl RowCheck {
    fn new(key: &str, status: RowStatus, detail: Option<String>) -> Self {
        RowCheck {
            key: key.to_string(),
            status,
            detail,
            repaired: None,
            repair_error: None,
        }
    }
}

/// `gc()`.
pub struct GcReport {
    /// The rows deleted (with `dry_run`: that would be).
    pub keys: Vec<String>,
    /// Redis copies deleted (with `dry_run`: that exist now); None when
    /// a dry run could not ask Redis.
    pub redis_keys: Option<u64>,
    pub dry_run: bool,
}

const NO_CONFIG: &str = "the row does not record a config whose key is its own (a seeded \
                         config, or a row without recycling settings)";

impl Cache {
    pub async fn store_report(&self) -> Result<StoreReport> {
        self.check_open()?;
        let summary = self.inner.durable.summary().await?;
        let (redis_keys, redis_error) = match &self.inner.redis {
            Some(r) => match r.count_keys().await {
                Ok(n) => (Some(n), None),
                Err(e) => (None, Some(e.to_string())),
            },
            None => (None, None),
        };
        Ok(StoreReport {
            store: self.inner.durable.source(),
            summary,
            redis_keys,
            redis_error,
        })
    }

    /// Keys of the durable store's complete rows after `after`, ascending.
    pub async fn row_keys(&self, after: Option<&str>, limit: u32) -> Result<Vec<String>> {
        self.check_open()?;
        if limit == 0 {
            return Err(Error::InvalidArgument("limit must be at least 1".into()));
        }
        self.inner
            .durable
            .keys_after(after.unwrap_or(""), limit)
            .await
    }

    /// Decodes the row under `key` and checks every checksum. With `repair`:
    /// a legacy row is rewritten in the current format (one bucket, or
    /// written by the transition mode: its columns are named) or
    /// generated again (the TypeScript app's of several buckets: its columns
    /// cannot be attributed); a
    /// damaged row is generated again where its config is known, ours only
    /// once proven equal to the checksums it still holds. Unreadable rows are
    /// left as they are (a newer version may have written them), and so are
    /// the rows the transition mode wrote while it is on.
    pub async fn verify_row(&self, key: &str, repair: bool) -> Result<RowCheck> {
        self.check_open()?;
        check_key(key)?;
        let stored = match self.inner.durable.get(key).await {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(RowCheck::new(key, RowStatus::Missing, None)),
            Err(e @ Error::Corrupt(_)) => {
                let detail = format!("{e}; not repaired: invalidate the key to remove the row");
                return Ok(RowCheck::new(key, RowStatus::Unreadable, Some(detail)));
            }
            Err(e) => return Err(e),
        };
        let problem = self.problem_of(&stored).await?;
        let legacy = stored.codec != Codec::Zstd;
        let mut check = match (&problem, legacy) {
            (None, false) => return Ok(RowCheck::new(key, RowStatus::Ok, None)),
            (None, true) => RowCheck::new(key, RowStatus::Legacy, None),
            (Some(why), _) => RowCheck::new(key, RowStatus::Damaged, Some(why.clone())),
        };
        if !repair {
            return Ok(check);
        }
        if check.status == RowStatus::Legacy && stored.names_columns() && self.inner.write_legacy {
            check.detail = Some(
                "left as it is: written in the TypeScript format, which writeLegacyFormat keeps"
                    .into(),
            );
            return Ok(check);
        }
        let config = match self.inner.durable.describe(key).await? {
            Some(row) => row.config(),
            None => return Ok(RowCheck::new(key, RowStatus::Missing, None)),
        };
        let Some(cfg) = config else {
            match check.status {
                RowStatus::Legacy => check.detail = Some(format!("left as it is: {NO_CONFIG}")),
                _ => {
                    check.repair_error = Some(Error::Corrupt(format!(
                        "durable row {key}: {}; not repaired: {NO_CONFIG}; a call with its config repairs it, or invalidate it",
                        problem.as_deref().unwrap_or("damaged")
                    )))
                }
            }
            return Ok(check);
        };
        let outcome = match (check.status, legacy) {
            (RowStatus::Damaged, false) => {
                let why = problem.unwrap_or_default();
                let epoch = self.inner.epoch.load(SeqCst);
                self.inner
                    .repair(stored, Some(&cfg), key, &why, epoch)
                    .await
                    .map(|_| Some(Repaired::Regenerated))
            }
            // One bucket, or a row the transition mode wrote: its columns are known.
            (RowStatus::Legacy, _)
                if stored.metadata.num_buckets == 1 || stored.names_columns() =>
            {
                self.rewrite_legacy(stored, &cfg, key).await
            }
            // A legacy row of several buckets (its columns cannot be
            // attributed, so calls never serve it and regenerate it anyway),
            // or a legacy payload that does not decode (lost, and with no
            // checksums nothing proves a regeneration equal to it): replaced
            // by a new matrix, because the operator asked for it. Calls never
            // do this for an undecodable one; they fail with E_CORRUPT.
            _ => self.regenerate_legacy(&cfg, key).await,
        };
        match outcome {
            Ok(Some(done)) => check.repaired = Some(done),
            Ok(None) => {
                check.detail =
                    Some("left as it is: another process rewrote the row meanwhile".into())
            }
            Err(e) => check.repair_error = Some(e),
        }
        Ok(check)
    }

    /// Why a stored copy cannot be served, checked in full: the header, every
    /// stored and raw-data checksum, and the dimensions; a legacy payload
    /// must inflate to exactly its dimensions.
    async fn problem_of(&self, stored: &Entry) -> Result<Option<String>> {
        if stored.codec == Codec::Zstd && !self.inner.check(stored) {
            return Ok(Some(
                "the header, a stored-bytes checksum or the dimensions do not hold".into(),
            ));
        }
        let e = stored.clone();
        blocking(move || Ok(e.decode().err().map(|err| err.to_string()))).await
    }

    /// `None` when another process replaced the row first.
    async fn rewrite_legacy(
        &self,
        stored: Entry,
        cfg: &ScenarioConfig,
        key: &str,
    ) -> Result<Option<Repaired>> {
        let Normalised::Ready(current) = self.inner.normalise(stored, Some(cfg)).await? else {
            return Err(Error::Corrupt(format!(
                "durable row {key}: the legacy matrix does not fit the config its row records"
            )));
        };
        let (_, inserted) = self
            .inner
            .durable
            .get_or_replace(
                cfg,
                key,
                |e| e.codec == Codec::Zstd,
                move || async move { Ok(current) },
            )
            .await?;
        if inserted {
            self.inner.stats.legacy_rewrites.fetch_add(1, Relaxed);
        }
        Ok(inserted.then_some(Repaired::Rewritten))
    }

    /// `None` when another process replaced the row first.
    async fn regenerate_legacy(&self, cfg: &ScenarioConfig, key: &str) -> Result<Option<Repaired>> {
        let owned = cfg.clone();
        let (_, inserted) = self
            .inner
            .durable
            .get_or_replace(
                cfg,
                key,
                |e| e.codec == Codec::Zstd && attributable(e, cfg),
                move || async move { generate(owned).await.map(|(entry, _)| entry) },
            )
            .await?;
        if inserted {
            self.inner.stats.generations.fetch_add(1, Relaxed);
        }
        Ok(inserted.then_some(Repaired::Regenerated))
    }

    /// Deletes (unless `dry_run`) the complete rows created more than
    /// `age_ms` ago, of `fund_id` when given, and their memory and Redis
    /// copies, like `invalidateFund`.
    pub async fn gc(&self, age_ms: u64, fund_id: Option<&str>, dry_run: bool) -> Result<GcReport> {
        self.check_open()?;
        let inner = &self.inner;
        if dry_run {
            let keys = inner.durable.older_than(age_ms, fund_id).await?;
            let redis_keys = match &inner.redis {
                Some(r) => r.count_existing(&keys).await.ok(),
                None => Some(0),
            };
            return Ok(GcReport {
                keys,
                redis_keys,
                dry_run,
            });
        }
        let (mut keys, mut redis_keys) = (Vec::new(), 0);
        loop {
            let _window = inner.quiesce(None).await;
            let batch = inner
                .durable
                .invalidate(Scope::OlderThan { age_ms, fund_id })
                .await?;
            inner.remove_from_memory(&batch);
            redis_keys += inner.delete_from_redis(&batch).await?;
            let last = batch.len() < GC_BATCH;
            keys.extend(batch);
            if last {
                break;
            }
        }
        keys.sort();
        Ok(GcReport {
            keys,
            redis_keys: Some(redis_keys),
            dry_run,
        })
    }
}
