-- scenario-matrix-cache, PostgreSQL migration 3: the invalidation record.
--
-- One row per invalidation (invalidate, invalidateFund, gc), written in the
-- same transaction as the deletion it records. It is the audit trail (who
-- removed what, when, how many rows) and the log that other server instances
-- follow to drop their in-process copies: the deleting transaction also sends
-- NOTIFY scenario_matrix_cache_invalidations with the row's id. A new table of
-- ours; the TypeScript app's table is untouched.
CREATE TABLE IF NOT EXISTS scenario_matrix_invalidations (
    id               bigserial   PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    -- 'key' (invalidate), 'fund' (invalidateFund) or 'gc'.
    scope            text        NOT NULL CHECK (scope IN ('key', 'fund', 'gc')),
    matrix_key       text,
    fund_id          text,
    taxonomy_version text,
    -- Durable rows deleted.
    removed          integer     NOT NULL,
    -- JSON array of the keys whose copies other instances drop.
    keys             jsonb       NOT NULL,
    -- host:pid#n: the process that invalidated, and which of its caches.
    origin           text        NOT NULL
);
