-- scenario-matrix-cache, SQLite migration 2: the invalidation record (see
-- migrations/postgres/0003). Processes sharing the file follow it by polling
-- for ids above the last one they saw.
CREATE TABLE IF NOT EXISTS scenario_matrix_invalidations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    at               TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    scope            TEXT    NOT NULL CHECK (scope IN ('key', 'fund', 'gc')),
    matrix_key       TEXT,
    fund_id          TEXT,
    taxonomy_version TEXT,
    removed          INTEGER NOT NULL,
    keys             TEXT    NOT NULL,
    origin           TEXT    NOT NULL
);
