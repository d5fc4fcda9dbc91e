-- name: append_event
-- Append one event; the unique (stream_id, version) is the optimistic lock: no row back means
-- another writer took this version first, or the version would leave a gap.
INSERT INTO events (stream_id, version, type, data, recorded_at)
SELECT %(stream_id)s, %(version)s, %(type)s, %(data)s, %(recorded_at)s
WHERE %(version)s = 1 OR EXISTS (
    SELECT 1 FROM events WHERE stream_id = %(stream_id)s AND version = %(version)s - 1
)
ON CONFLICT (stream_id, version) DO NOTHING
RETURNING global_position;

-- name: read_stream
-- One stream's events in version order.
SELECT global_position, stream_id, version, type, data, recorded_at
FROM events WHERE stream_id = %(stream_id)s ORDER BY version;

-- name: read_all
-- The global log after a position, in order (catch-up reads).
SELECT global_position, stream_id, version, type, data, recorded_at
FROM events WHERE global_position > %(after)s ORDER BY global_position LIMIT %(limit)s;

-- name: list_streams
-- The newest streams first, by their first event.
SELECT stream_id, data, recorded_at FROM events
WHERE version = 1 ORDER BY global_position DESC LIMIT %(limit)s;

-- name: enqueue_message
-- Put a message in the outbox, in the transaction that recorded the events implying it; with an
-- owner, already leased to that relay (its first attempt). Times are the database's clock
-- (every replica reads the same one), so replicas never compare their own clocks.
INSERT INTO outbox (stream_id, step, destination, payload, attempts, available_at, lease_owner,
                    lease_expires_at, created_at)
SELECT %(stream_id)s, %(step)s, %(destination)s, %(payload)s,
       CASE WHEN p.owner IS NULL THEN 0 ELSE 1 END, clock.now + %(delay)s, p.owner,
       CASE WHEN p.owner IS NULL THEN NULL ELSE clock.now + p.lease_seconds END, clock.now
FROM (SELECT extract(epoch FROM clock_timestamp())::double precision AS now) AS clock,
     (SELECT %(owner)s::text AS owner, %(lease_seconds)s::double precision AS lease_seconds) AS p
RETURNING id, stream_id, step, destination, payload, attempts, available_at, created_at;

-- name: claim_due_messages
-- Lease the due messages nobody holds (or whose holder's lease ran out), oldest first. SKIP
-- LOCKED lets relays claim side by side without waiting on each other or claiming one row twice.
UPDATE outbox
SET lease_owner = %(owner)s,
    lease_expires_at = extract(epoch FROM clock_timestamp())::double precision + %(lease_seconds)s,
    attempts = attempts + 1
WHERE id IN (
    SELECT id FROM outbox
    WHERE available_at <= extract(epoch FROM clock_timestamp())::double precision
      AND (lease_expires_at IS NULL
           OR lease_expires_at < extract(epoch FROM clock_timestamp())::double precision)
    ORDER BY available_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, stream_id, step, destination, payload, attempts, available_at, created_at;

-- name: lock_message
-- The lease on a message, locked until the transaction ends: an outcome is recorded by the
-- lease holder of that attempt only (the fence); a replica that lost it learns so here.
SELECT lease_owner, attempts FROM outbox WHERE id = %(id)s FOR UPDATE;

-- name: extend_leases
-- Keep the leases of the calls still in flight alive; a lease already taken over is left alone.
UPDATE outbox SET lease_expires_at = extract(epoch FROM clock_timestamp())::double precision + %(lease_seconds)s
WHERE lease_owner = %(owner)s
  AND id IN (SELECT json_array_elements_text(%(ids)s::json)::bigint);

-- name: delete_message
-- The message's outcome is recorded: it leaves the outbox.
DELETE FROM outbox WHERE id = %(id)s;

-- name: reschedule_message
-- Deliver again later: release the lease and set the next attempt's time.
UPDATE outbox
SET available_at = extract(epoch FROM clock_timestamp())::double precision + %(delay)s,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s;

-- name: seconds_until_due
-- How long until the next message falls due or a lease runs out (negative: overdue), by the
-- database's clock; NULL when the outbox is empty.
SELECT min(CASE WHEN lease_expires_at IS NOT NULL AND lease_expires_at > available_at
                THEN lease_expires_at ELSE available_at END)
       - extract(epoch FROM clock_timestamp())::double precision AS due
FROM outbox;

-- name: pending_messages
-- Every message still in the outbox (operators, tests).
SELECT id, stream_id, step, destination, attempts, available_at, lease_owner, lease_expires_at
FROM outbox ORDER BY id;

-- name: insert_command
-- Record a client command; the first writer of a key wins, a repeat gets no row back.
INSERT INTO commands (idempotency_key, fingerprint, workflow_id, created_at)
VALUES (%(idempotency_key)s, %(fingerprint)s, %(workflow_id)s, %(created_at)s)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING workflow_id;

-- name: get_command
-- A recorded client command.
SELECT idempotency_key, fingerprint, workflow_id, created_at
FROM commands WHERE idempotency_key = %(idempotency_key)s;

-- name: all_commands
-- Every client command (the invariant checker).
SELECT idempotency_key, fingerprint, workflow_id, created_at FROM commands ORDER BY created_at;
