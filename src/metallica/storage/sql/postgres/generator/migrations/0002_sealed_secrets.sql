-- password-generator: no password in clear (issue 9). A password's lasting record is a keyed
-- digest (HMAC-SHA-256) with the id of its key; the copy a repeated Idempotency-Key replays is
-- sealed (AES-GCM) in the command's row, with its key's id, until the record's retention ends.
--
-- Rows from 0001 keep their clear password as legacy_password, for the generator to seal at its
-- next start (digest, and a sealed copy for a replay still within retention), clearing it; SQL
-- alone cannot, the keys are not in the database.

ALTER TABLE passwords RENAME COLUMN password TO legacy_password;

ALTER TABLE passwords
    ALTER COLUMN legacy_password DROP NOT NULL,
    ADD COLUMN digest BYTEA,
    ADD COLUMN digest_key_id TEXT,
    ADD CONSTRAINT passwords_digest_has_key CHECK ((digest IS NULL) = (digest_key_id IS NULL)),
    ADD CONSTRAINT passwords_digest_or_legacy CHECK (
        digest IS NOT NULL OR legacy_password IS NOT NULL
    );

ALTER TABLE commands
    ADD COLUMN sealed BYTEA,
    ADD COLUMN seal_key_id TEXT,
    ADD CONSTRAINT commands_sealed_has_key CHECK ((sealed IS NULL) = (seal_key_id IS NULL));

-- The expiry sweep walks the live sealed copies, oldest first; expired ones leave the index.
CREATE INDEX commands_sealed_by_age ON commands (created_at) WHERE sealed IS NOT NULL;

-- The rows from 0001 still to seal (empty once the generator has started on this version).
CREATE INDEX passwords_legacy ON passwords (username_key) WHERE legacy_password IS NOT NULL;
