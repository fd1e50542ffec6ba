//! SQLite durable store. STUB: to be implemented.

use std::future::Future;

use super::durable::DurableOptions;
use super::Entry;
use crate::config::ScenarioConfig;
use crate::error::Result;

pub struct SqliteStore {}

impl SqliteStore {
    pub async fn open(_path: &std::path::Path, _opts: &DurableOptions) -> Result<Self> {
        todo!()
    }
    pub async fn get(&self, _key: &str) -> Result<Option<Entry>> {
        todo!()
    }
    pub async fn get_or_insert<F, Fut>(
        &self,
        _cfg: &ScenarioConfig,
        _key: &str,
        _make: F,
    ) -> Result<(Entry, bool)>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Entry>> + Send,
    {
        todo!()
    }
    pub async fn delete(&self, _key: &str) -> Result<bool> {
        todo!()
    }
    pub async fn delete_fund(
        &self,
        _fund_id: &str,
        _taxonomy_version: Option<&str>,
    ) -> Result<Vec<String>> {
        todo!()
    }
    pub async fn close(&self) {}
}
