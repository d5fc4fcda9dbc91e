-- mail-sender: the command store. The mail itself lives in the Maildir, named after mail_id, so
-- writing it twice is a no-op and replicas sharing the Maildir never duplicate a mail.

CREATE TABLE mails (
    idempotency_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    mail_id TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);
