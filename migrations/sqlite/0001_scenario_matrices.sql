-- scenario-matrix-cache, SQLite migration 1: the embedded store.
--
-- The same logical row as the PostgreSQL table (see migrations/postgres), with
-- SQLite types: BLOB payload, JSON as TEXT, timestamps as ISO 8601 UTC text
-- (YYYY-MM-DDTHH:MM:SS.mmmZ, what JavaScript's toISOString prints). No TypeScript
-- deployment ever used SQLite, so there is no legacy table to accept; the
-- legacy-row rules still apply on read for symmetry.

CREATE TABLE IF NOT EXISTS scenario_matrices (
    -- A rowid table on purpose: rows carry multi-megabyte blobs, which
    -- WITHOUT ROWID tables handle badly.
    id                  INTEGER PRIMARY KEY,
    matrix_key          TEXT    NOT NULL UNIQUE,
    fund_id             TEXT,
    taxonomy_version    TEXT,
    matrix_type         TEXT,
    moic_matrix         BLOB,
    scenario_states     TEXT,
    bucket_params       TEXT,
    compression_codec   TEXT    CHECK (compression_codec IN ('zstd', 'lz4', 'none')),
    matrix_layout       TEXT,
    bucket_count        INTEGER,
    s_opt               TEXT,
    status              TEXT    CHECK (status IN ('pending', 'processing', 'complete', 'failed')),
    error_message       TEXT,
    created_at          TEXT    DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at          TEXT    DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    num_scenarios       INTEGER,
    payload_format      INTEGER,
    generated_at        TEXT,
    duration_ms         REAL,
    recycling_multiples TEXT,
    CHECK (
        status IS NOT 'complete' OR (
            moic_matrix IS NOT NULL
            AND scenario_states IS NOT NULL
            AND bucket_params IS NOT NULL
            AND compression_codec IS NOT NULL
            AND matrix_layout IS NOT NULL
            AND bucket_count IS NOT NULL
            AND s_opt IS NOT NULL
        )
    )
);

CREATE INDEX IF NOT EXISTS scenario_matrices_fund_taxonomy_idx
    ON scenario_matrices (fund_id, taxonomy_version);
