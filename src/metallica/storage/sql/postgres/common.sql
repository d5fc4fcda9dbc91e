-- name: applied_migrations
-- The migrations already applied to this database.
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
-- Record one migration as applied, in the transaction that applied it.
INSERT INTO schema_migrations (version, name) VALUES (:version, :name);

-- name: migrations_table_exists
-- Whether this database (its current schema) was ever migrated.
SELECT 1 AS present FROM information_schema.tables
WHERE table_schema = current_schema() AND table_name = 'schema_migrations';

-- name: session_timeouts
-- The session's limits (ms): waiting for a lock, one statement, an idle open transaction.
SELECT (extract(epoch FROM current_setting('lock_timeout')::interval) * 1000)::int AS lock_ms,
       (extract(epoch FROM current_setting('statement_timeout')::interval) * 1000)::int
           AS statement_ms,
       (extract(epoch FROM current_setting('idle_in_transaction_session_timeout')::interval)
           * 1000)::int AS idle_in_transaction_ms;
