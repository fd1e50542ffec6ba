//! Portfolio statistics computed where the cached matrix lies: a memory hit
//! is read chunk by chunk as it is decoded (never copied out whole), and what
//! does not depend on the weights (per-column sums and percentiles) is
//! computed once per entry and kept beside it, so a call with new weights
//! costs one pass over the cells.

use super::{blocking, Cache, Hit};
use crate::config::ScenarioConfig;
use crate::error::Result;
use crate::key;
use crate::portfolio::stats::{assemble, column_stats, PortfolioStats, RowPass};
use crate::portfolio::StatsParams;
use crate::view::ColumnOrder;

impl Cache {
    /// [`crate::portfolio::portfolio_stats`] of `cfg`'s matrix (got or
    /// generated like [`Cache::get_matrix`]), weights and buckets in `cfg`'s
    /// bucket order.
    pub async fn portfolio_stats(
        &self,
        cfg: &ScenarioConfig,
        params: StatsParams,
    ) -> Result<(Hit, PortfolioStats)> {
        let mut hit = self
            .get_or_generate_keyed(cfg, key::canonical_key(cfg), true)
            .await?;
        let names: Vec<String> = cfg.buckets.iter().map(|b| b.name.clone()).collect();
        let map = ColumnOrder::for_config(cfg).stored_columns().to_vec();
        // The generator's own output on a miss (stored column order).
        let generated = hit.matrix.take();
        let entry = hit.entry.clone();
        let stats = blocking(move || {
            let nb = map.len();
            let pass = RowPass::new(&params, &map);
            let kept = &entry.derived.column_stats;
            let (columns, blocks) = match (generated, kept.get()) {
                (None, Some(columns)) => {
                    (columns, entry.decode_blocks(|r, rows| pass.block(r, rows))?)
                }
                // The first call on this entry: the columns need the whole
                // matrix, so the row pass reads that copy too.
                (generated, _) => {
                    let matrix = match generated {
                        Some(m) => m,
                        None => entry.decode()?.into(),
                    };
                    let columns = kept.get_or_init(|| column_stats(&matrix, nb));
                    (columns, pass.over(&matrix))
                }
            };
            assemble(&names, &params, &map, columns, blocks)
        })
        .await?;
        Ok((hit, stats))
    }
}
