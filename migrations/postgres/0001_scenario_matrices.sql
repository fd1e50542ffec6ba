-- scenario-matrix-cache, PostgreSQL migration 1.
--
-- The table is shared with the TypeScript app this library replaces. On an
-- empty database we create it exactly as the TypeScript app does (see
-- tests/fixtures/typescript-schema.sql); where the app already created it, the
-- CREATE is a no-op and its rows stay readable. We only ever ADD columns and
-- indexes (never remove or retype), so the app's own schema keeps working.
-- Everything is IF NOT EXISTS so the script is also safe on a table that was
-- partly extended by hand.

CREATE TABLE IF NOT EXISTS scenario_matrices (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    matrix_key        text        NOT NULL UNIQUE,
    fund_id           text,
    taxonomy_version  text,
    matrix_type       text,
    moic_matrix       bytea,
    scenario_states   jsonb,
    bucket_params     jsonb,
    compression_codec text        CHECK (compression_codec IN ('zstd', 'lz4', 'none')),
    matrix_layout     text,
    bucket_count      integer,
    s_opt             jsonb,
    status            text        CHECK (status IN ('pending', 'processing', 'complete', 'failed')),
    error_message     text,
    created_at        timestamptz DEFAULT now(),
    updated_at        timestamptz DEFAULT now(),
    CONSTRAINT scenario_matrices_complete_has_payload CHECK (
        status IS DISTINCT FROM 'complete' OR (
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

-- Our columns. All nullable: a NULL payload_format marks a legacy TypeScript
-- row (zlib payload labelled 'zstd', scenario count only in scenario_states),
-- and such rows have no generation metadata.
ALTER TABLE scenario_matrices
    -- Rows of the matrix; legacy rows keep it as the length of scenario_states.scenarios.
    ADD COLUMN IF NOT EXISTS num_scenarios       integer,
    -- 2 = the checksummed zstd envelope of this library.
    ADD COLUMN IF NOT EXISTS payload_format      smallint,
    ADD COLUMN IF NOT EXISTS generated_at        timestamptz,
    ADD COLUMN IF NOT EXISTS duration_ms         double precision,
    -- JSON array of numbers, one per bucket in config order.
    ADD COLUMN IF NOT EXISTS recycling_multiples jsonb;

-- deleteFund / invalidation by fund (and taxonomy version).
CREATE INDEX IF NOT EXISTS scenario_matrices_fund_taxonomy_idx
    ON scenario_matrices (fund_id, taxonomy_version);
