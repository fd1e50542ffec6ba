//! The caller's bucket order. Configs that differ only in the order of their
//! buckets share a key, so they share one matrix: it is generated and stored
//! (memory, Redis, durable) with its columns in the key's bucket order, and
//! each caller gets columns, recycling multiples and bucket names back in the
//! order its own config lists them. This module owns that mapping, and the
//! check that a stored copy has the shape its key promises.

use crate::codec;
use crate::config::ScenarioConfig;
use crate::error::{Error, Result};
use crate::key;
use crate::scenario::Metadata;

/// Where each of a caller's buckets sits among the stored columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnOrder {
    /// `map[j]`: the stored column of the caller's bucket j.
    map: Vec<usize>,
}

impl ColumnOrder {
    /// For `cfg` against copies in its key's bucket order.
    pub fn for_config(cfg: &ScenarioConfig) -> Self {
        let canon = key::canonical_order(&cfg.buckets);
        let mut map = vec![0; canon.len()];
        for (stored, &caller) in canon.iter().enumerate() {
            map[caller] = stored;
        }
        ColumnOrder { map }
    }

    /// The stored order itself (a caller that gave no config, e.g. a lookup by key).
    pub fn stored(num_buckets: usize) -> Self {
        ColumnOrder {
            map: (0..num_buckets).collect(),
        }
    }

    /// `[j]`: the stored column of the caller's bucket j.
    pub fn stored_columns(&self) -> &[usize] {
        &self.map
    }

    pub fn is_identity(&self) -> bool {
        self.map.iter().enumerate().all(|(j, &c)| j == c)
    }

    /// `v` (one value per stored column) in the caller's order.
    pub fn reorder<T: Clone>(&self, v: &[T]) -> Vec<T> {
        self.map.iter().map(|&c| v[c].clone()).collect()
    }

    /// The metadata as the caller sees it: recycling multiples and bucket
    /// names in its order (each only when known for every column).
    pub fn metadata(&self, m: &Metadata) -> Metadata {
        let mut out = m.clone();
        if m.recycling_multiples.len() == self.map.len() {
            out.recycling_multiples = self.reorder(&m.recycling_multiples);
        }
        if m.bucket_names.len() == self.map.len() {
            out.bucket_names = self.reorder(&m.bucket_names);
        }
        out
    }

    /// A row-major matrix with stored columns, reordered in place to the caller's.
    pub fn matrix(&self, cells: &mut [f32]) {
        if self.is_identity() {
            return;
        }
        let mut row = vec![0f32; self.map.len()];
        for r in cells.chunks_exact_mut(self.map.len()) {
            row.copy_from_slice(r);
            for (dst, &src) in r.iter_mut().zip(&self.map) {
                *dst = row[src];
            }
        }
    }

    /// The caller's own copy of a stored envelope, decoding in its order (a
    /// column map in the header; the compressed chunks are shared bytes).
    pub fn envelope(&self, payload: &[u8]) -> Result<Vec<u8>> {
        if self.is_identity() {
            return Ok(codec::copy_large(payload));
        }
        // Columns are at most 50, so every index fits a byte.
        let map: Vec<u8> = self.map.iter().map(|&c| c as u8).collect();
        codec::with_column_map(payload, &map)
    }
}

/// Checks that a stored copy is the matrix `cfg`'s key describes: its
/// dimensions and (where recorded) its bucket names in the key's order. A copy
/// that disagrees is not this key's matrix, whatever its checksums say.
pub fn check_fits(m: &Metadata, cfg: &ScenarioConfig) -> Result<()> {
    let (rows, cols) = (cfg.num_scenarios, cfg.buckets.len() as u32);
    if (m.num_scenarios, m.num_buckets) != (rows, cols) {
        return Err(Error::corrupt(format!(
            "stored matrix {} is {} x {}, its key describes {rows} x {cols}",
            m.config_hash, m.num_scenarios, m.num_buckets
        )));
    }
    if !m.bucket_names.is_empty() {
        // Compared in the key's order, whatever order the copy records them in.
        let names_match = key::canonical_order(&cfg.buckets)
            .iter()
            .map(|&i| cfg.buckets[i].name.as_str())
            .eq(key_order_of(&m.bucket_names)
                .reorder(&m.bucket_names)
                .iter()
                .map(String::as_str));
        if !names_match {
            return Err(Error::corrupt(format!(
                "stored matrix {} has columns {:?}, its key describes other buckets",
                m.config_hash, m.bucket_names
            )));
        }
    }
    Ok(())
}

/// From columns recorded under `names` in some other order (rows written
/// before columns followed the key) to the key's order: output column i is
/// the recorded column of the i-th name in the key's order. Stable, so names
/// that collate equal keep their recorded order, as they kept it in the key of
/// the config that wrote them.
pub fn key_order_of(names: &[String]) -> ColumnOrder {
    let mut map: Vec<usize> = (0..names.len()).collect();
    map.sort_by(|&a, &b| key::compare_names(&names[a], &names[b]));
    ColumnOrder { map }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Bucket, CorrelationWeights, Recycling};

    fn cfg(names: &[&str]) -> ScenarioConfig {
        ScenarioConfig {
            fund_id: "f".into(),
            taxonomy_version: "t".into(),
            num_scenarios: 3,
            buckets: names
                .iter()
                .map(|n| Bucket {
                    name: n.to_string(),
                    capital_allocation: 100.0 / names.len() as f64,
                    median: 1.0,
                    p90: 2.0,
                })
                .collect(),
            correlation_weights: CorrelationWeights {
                macro_: 0.5,
                systematic: 0.25,
                idiosyncratic: 0.25,
            },
            recycling: Recycling::Disabled,
            seed: None,
        }
    }

    #[test]
    fn maps_stored_columns_to_the_callers_order() {
        // Key order: Alpha, Mid, Zeta.
        let o = ColumnOrder::for_config(&cfg(&["Zeta", "Alpha", "Mid"]));
        assert_eq!(o.map, [2, 0, 1]);
        assert!(!o.is_identity());
        assert_eq!(
            o.reorder(&["Alpha", "Mid", "Zeta"]),
            ["Zeta", "Alpha", "Mid"]
        );
        // Rows: stored (a, m, z) values 1, 2, 3 -> caller (z, a, m).
        let mut m = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0];
        o.matrix(&mut m);
        assert_eq!(m, [3.0, 1.0, 2.0, 30.0, 10.0, 20.0]);
        assert!(ColumnOrder::for_config(&cfg(&["a", "b"])).is_identity());
        assert_eq!(
            key_order_of(&["Zeta".into(), "Alpha".into(), "Mid".into()]).map,
            [1, 2, 0]
        );
    }

    #[test]
    fn copies_that_do_not_fit_the_key_are_refused() {
        let c = cfg(&["b", "a"]);
        let mut m = Metadata {
            config_hash: "k".into(),
            num_scenarios: 3,
            num_buckets: 2,
            generated_at: None,
            duration_ms: None,
            recycling_multiples: vec![],
            bucket_names: vec!["a".into(), "b".into()],
        };
        assert!(check_fits(&m, &c).is_ok());
        // Recorded in another order (a row of an earlier version): same buckets.
        m.bucket_names.reverse();
        assert!(check_fits(&m, &c).is_ok());
        m.bucket_names[0] = "c".into();
        assert_eq!(check_fits(&m, &c).unwrap_err().code(), "E_CORRUPT");
        m.bucket_names.clear();
        assert!(check_fits(&m, &c).is_ok());
        m.num_scenarios = 4;
        assert_eq!(check_fits(&m, &c).unwrap_err().code(), "E_CORRUPT");
        m.num_scenarios = 3;
        m.num_buckets = 1;
        assert!(check_fits(&m, &c).is_err());
    }
}
