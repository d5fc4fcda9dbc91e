-- name: insert_command
-- Claim an Idempotency-Key. A concurrent holder of the same key makes this wait for its
-- commit (the retry "during persistence" waits for the first attempt); a repeat gets no row.
INSERT INTO commands (idempotency_key, fingerprint, username_key, status, response, created_at)
VALUES (:idempotency_key, :fingerprint, :username_key, :status, :response, :created_at)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key;

-- name: get_command
-- The stored outcome of a key, with the sealed copy of the password it created, if still kept.
SELECT fingerprint, username_key, status, response, sealed, seal_key_id, created_at
FROM commands
WHERE idempotency_key = :idempotency_key;

-- name: set_command_outcome
-- Store the outcome under the key, in the transaction that produced it: a 201 keeps the sealed
-- copy of the password for replays (NULL otherwise).
UPDATE commands
SET status = :status, response = :response, sealed = :sealed, seal_key_id = :seal_key_id
WHERE idempotency_key = :idempotency_key;

-- name: insert_password
-- The one password of a username, as its keyed digest; no row back means the username already
-- has one.
INSERT INTO passwords (username_key, username, digest, digest_key_id, created_at)
VALUES (:username_key, :username, :digest, :digest_key_id, :created_at)
ON CONFLICT (username_key) DO NOTHING
RETURNING username;

-- name: get_password
-- The stored digest of a username's password (operators, the invariant checker).
SELECT username_key, username, digest, digest_key_id, created_at
FROM passwords
WHERE username_key = :username_key;

-- name: count_passwords
-- How many passwords exist.
SELECT count(*) AS n FROM passwords;

-- name: count_commands
-- How many keys were ever presented (a request that was refused before storage adds none).
SELECT count(*) AS n FROM commands;

-- name: all_passwords
-- Every password's digest (the invariant checker).
SELECT username_key, username, digest, digest_key_id, created_at
FROM passwords
ORDER BY created_at;

-- name: expire_sealed_copies
-- The expiry sweep: drop the sealed copies of up to :batch records created before :cutoff,
-- oldest first (the record stays: a replay of its key is told it expired). Replicas sweeping
-- at once skip each other's rows.
UPDATE commands SET sealed = NULL, seal_key_id = NULL
WHERE idempotency_key IN (
    SELECT idempotency_key FROM commands
    WHERE sealed IS NOT NULL AND created_at < :cutoff
    ORDER BY created_at
    LIMIT :batch
    {skip_locked}
);

-- name: legacy_passwords
-- Up to :batch passwords still in clear (rows from before the digests), locked for sealing.
SELECT username_key, legacy_password FROM passwords
WHERE legacy_password IS NOT NULL
LIMIT :batch
{skip_locked};

-- name: legacy_replays
-- The records that created the passwords of these username keys, still within retention and
-- with no sealed copy yet.
SELECT idempotency_key, username_key FROM commands
WHERE username_key IN ({strings_from_json})
    AND status = 201 AND sealed IS NULL AND created_at >= :cutoff;

-- name: seal_legacy_password
-- Replace a clear password by its digest.
UPDATE passwords
SET digest = :digest, digest_key_id = :digest_key_id, legacy_password = NULL
WHERE username_key = :username_key AND legacy_password IS NOT NULL;

-- name: seal_legacy_replay
-- Give a record from before the sealed copies its sealed copy.
UPDATE commands SET sealed = :sealed, seal_key_id = :seal_key_id
WHERE idempotency_key = :idempotency_key AND sealed IS NULL;
