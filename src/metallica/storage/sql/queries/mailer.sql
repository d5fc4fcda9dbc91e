-- name: insert_mail
-- Claim an Idempotency-Key for a new mail; a repeat gets no row back.
INSERT INTO mails (idempotency_key, fingerprint, mail_id, created_at)
VALUES (:idempotency_key, :fingerprint, :mail_id, :created_at)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING mail_id;

-- name: get_mail
-- The mail recorded under a key.
SELECT idempotency_key, fingerprint, mail_id, created_at, delivered_at
FROM mails WHERE idempotency_key = :idempotency_key;

-- name: mark_delivered
-- The mail is in the Maildir's new/ folder.
UPDATE mails SET delivered_at = :delivered_at WHERE mail_id = :mail_id AND delivered_at IS NULL;
