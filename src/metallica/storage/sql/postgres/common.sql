-- name: applied_migrations
-- The migrations already applied to this database.
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
-- Record one migration as applied, in the transaction that applied it.
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: migrations_table_exists
-- Whether this database (its current schema) was ever migrated.
SELECT 1 AS present FROM information_schema.tables
WHERE table_schema = current_schema() AND table_name = 'schema_migrations';
