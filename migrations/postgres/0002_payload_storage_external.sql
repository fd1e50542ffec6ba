-- scenario-matrix-cache, PostgreSQL migration 2.
--
-- Our payloads are already zstd-compressed. With the default EXTENDED storage
-- PostgreSQL tries pglz on every new value before storing it out of line; on a
-- 15 MB envelope that attempt cost about 100 ms per insert here and never
-- saved a byte. EXTERNAL keeps out-of-line storage without the attempt. It
-- changes no type and only affects values written from now on, so the
-- TypeScript app and its existing rows are unaffected.
ALTER TABLE scenario_matrices ALTER COLUMN moic_matrix SET STORAGE EXTERNAL;
