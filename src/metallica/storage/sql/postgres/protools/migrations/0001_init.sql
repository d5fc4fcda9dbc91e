-- protools: event store, outbox and command store, all in one database so that one
-- transaction can commit a workflow's events, the messages they imply and the command record.

CREATE TABLE events (
    global_position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);

CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id TEXT NOT NULL,
    step TEXT NOT NULL,
    destination TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at DOUBLE PRECISION NOT NULL,
    lease_owner TEXT,
    lease_expires_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    CONSTRAINT outbox_stream_step UNIQUE (stream_id, step)
);
CREATE INDEX outbox_due ON outbox (available_at);

CREATE TABLE commands (
    idempotency_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

