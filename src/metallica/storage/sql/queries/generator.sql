-- name: insert_command
-- Claim an Idempotency-Key. A concurrent holder of the same key makes this wait for its
-- commit (the retry "during persistence" waits for the first attempt); a repeat gets no row.
INSERT INTO commands (idempotency_key, fingerprint, username_key, status, response, created_at)
VALUES (:idempotency_key, :fingerprint, :username_key, :status, :response, :created_at)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key;

-- name: get_command
-- The stored outcome of a key, with the password it created, if any.
SELECT c.fingerprint, c.status, c.response, p.username, p.password
FROM commands c LEFT JOIN passwords p ON p.username_key = c.username_key AND c.status = 201
WHERE c.idempotency_key = :idempotency_key;

-- name: set_command_outcome
-- Store the outcome under the key, in the transaction that produced it.
UPDATE commands SET status = :status, response = :response
WHERE idempotency_key = :idempotency_key;

-- name: insert_password
-- The one password of a username; no row back means the username already has one.
INSERT INTO passwords (username_key, username, password, created_at)
VALUES (:username_key, :username, :password, :created_at)
ON CONFLICT (username_key) DO NOTHING
RETURNING username;

-- name: get_password
-- The password of a username (operators, the invariant checker).
SELECT username, password, created_at FROM passwords WHERE username_key = :username_key;

-- name: count_passwords
-- How many passwords exist.
SELECT count(*) AS n FROM passwords;

-- name: count_commands
-- How many keys were ever presented (a request that was refused before storage adds none).
SELECT count(*) AS n FROM commands;

-- name: all_passwords
-- Every password (the invariant checker).
SELECT username_key, username, password, created_at FROM passwords ORDER BY created_at;
