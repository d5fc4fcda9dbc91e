-- password-generator: one password per username, ever, and the command store that answers a
-- repeated Idempotency-Key with the first answer.

CREATE TABLE passwords (
    username_key TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    password TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE commands (
    idempotency_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    username_key TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL
);
