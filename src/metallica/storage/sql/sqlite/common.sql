-- name: applied_migrations
-- The migrations already applied to this database.
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
-- Record one migration as applied, in the transaction that applied it.
INSERT INTO schema_migrations (version, name) VALUES (:version, :name);

-- name: migrations_table_exists
-- Whether this database was ever migrated.
SELECT 1 AS present FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations';

-- name: session_timeouts
-- How long this connection waits for a lock (ms); the other limits are PostgreSQL's.
SELECT timeout AS lock_ms, NULL AS statement_ms, NULL AS idle_in_transaction_ms
FROM pragma_busy_timeout;
