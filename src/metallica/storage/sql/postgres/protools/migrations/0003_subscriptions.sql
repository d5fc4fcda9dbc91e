-- Durable subscriptions (protools/subscriptions.py): consumer groups that share the log's events
-- among their members, at least once, in order per workflow.
--
-- A group has read the log up to filled_to: every event at or below it that the group takes
-- (its types, '[]' for all) is either pending in group_pending or done (acked, or skipped by a
-- rewind). Positions are visible in commit order (the log's turn), so moving filled_to past
-- what a read saw misses nothing.
CREATE TABLE subscription_groups (
    name TEXT PRIMARY KEY,
    filled_to BIGINT NOT NULL,
    types TEXT NOT NULL,
    ack_wait DOUBLE PRECISION NOT NULL,
    max_deliver INTEGER NOT NULL,
    max_ack_pending INTEGER NOT NULL,
    redeliveries BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL
);

-- One row per event a group has yet to finish: leased to a member until leased_until (NULL:
-- not leased), to be delivered no sooner than due_at, or parked (parked_at) once delivered
-- max_deliver times without an ack. An ack deletes the row.
CREATE TABLE group_pending (
    group_name TEXT NOT NULL,
    position BIGINT NOT NULL,
    stream_id TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    member TEXT,
    leased_until DOUBLE PRECISION,
    due_at DOUBLE PRECISION NOT NULL,
    parked_at DOUBLE PRECISION,
    PRIMARY KEY (group_name, position)
);
