//! Canonical cache key v1.2 (compatible with the TypeScript implementation).
//! STUB: to be implemented.

use crate::config::ScenarioConfig;

/// The canonical JSON text whose SHA-256 is the key.
pub fn canonical_json(_cfg: &ScenarioConfig) -> String {
    todo!()
}

/// Lowercase hex SHA-256 of [`canonical_json`].
pub fn canonical_key(cfg: &ScenarioConfig) -> String {
    let _ = canonical_json(cfg);
    todo!()
}

/// Formats a number as JavaScript's `Number.prototype.toString` / `JSON.stringify` does.
pub fn format_js_number(n: f64) -> String {
    format!("{n}")
}
