-- name: append_events
-- Append a stream's new events in one statement, versions :first_version, :first_version + 1,
-- ... in the order of :events (a JSON array of [type, data, schema version]). The unique
-- (stream_id, version) is the optimistic lock: fewer rows back than events means another writer
-- took one of these versions first (or :first_version would leave a gap), and the caller
-- rolls back. {log_turn} waits for this database's turn to write the log and holds it until
-- the transaction ends, so that positions become visible in the order they are drawn: a reader
-- that has seen position P never later finds a smaller one (protools/log.py says why, and what
-- it costs).
INSERT INTO events (stream_id, version, type, data, recorded_at, schema_version)
SELECT :stream_id, :first_version + e.n, e.type, e.data, :recorded_at, e.schema_version
FROM (SELECT {log_turn}) AS log_turn, ({events_from_json}) AS e
WHERE :first_version = 1 OR EXISTS (
    SELECT 1 FROM events WHERE stream_id = :stream_id AND version = :first_version - 1
)
ORDER BY e.n
ON CONFLICT (stream_id, version) DO NOTHING
RETURNING global_position, version;

-- name: notify_log
-- Tell the log's followers on every replica that it grew (PostgreSQL: NOTIFY, delivered at this
-- transaction's commit; SQLite: nothing, its followers poll).
SELECT {log_notify} AS notified;

-- name: read_stream
-- One stream's events in version order.
SELECT global_position, stream_id, version, type, data, recorded_at, schema_version
FROM events WHERE stream_id = :stream_id ORDER BY version;

-- name: read_all
-- The global log after a position, in order (catch-up reads).
SELECT global_position, stream_id, version, type, data, recorded_at, schema_version
FROM events WHERE global_position > :after ORDER BY global_position LIMIT :limit;

-- name: log_head
-- The log's last position (0 while it is empty).
SELECT COALESCE(max(global_position), 0) AS head FROM events;

-- name: read_log
-- The log after :after up to :until, in order, each event with the client its workflow's start
-- records: what the log's followers read. Filters: the types in :strings (a JSON array; '[]' for
-- any), one workflow (:stream_id, '' for any), one client (:client, '' for any). Each event's
-- start is found by its primary key (stream_id, version 1).
SELECT e.global_position, e.stream_id, e.version, e.type, e.data, e.recorded_at, e.schema_version,
       {started_by} AS client
FROM events e LEFT JOIN events s ON s.stream_id = e.stream_id AND s.version = 1
WHERE e.global_position > :after AND e.global_position <= :until
  AND (:strings = '[]' OR e.type IN ({strings_from_json}))
  AND (:stream_id = '' OR e.stream_id = :stream_id)
  AND (:client = '' OR {started_by} = :client)
ORDER BY e.global_position
LIMIT :limit;

-- name: oldest_write
-- How long the oldest transaction that writes to this database has been open, in seconds (0
-- when none): one that holds the log's turn holds every writer of the log. SQLite: 0 (one
-- writer, whose waiters give up after the busy timeout).
SELECT {oldest_write_age} AS seconds;

-- name: list_streams
-- The newest streams first, by their first event.
SELECT stream_id, data, recorded_at FROM events
WHERE version = 1 ORDER BY global_position DESC LIMIT :limit;

-- name: list_workflows
-- One client's workflows, newest first, before a position (the page's cursor), with their status
-- ('' for any): the workflows read model (protools/projection.py), through its index by client.
SELECT position AS global_position, workflow_id AS stream_id, input, started_at AS recorded_at,
       status
FROM workflows
WHERE client = :client AND (:status = '' OR status = :status) AND position < :before
ORDER BY position DESC
LIMIT :limit;

-- name: console_workflows
-- Every client's workflows, newest first, started before :before (the page's cursor), with
-- their status ('' for any), matching :search ('' for any: a workflow's id, or the start of a
-- username, :pattern being '%"username":"<escaped search>%'): the console's list. It walks the
-- starts backwards along the log's primary key, so a page costs its rows, not the table.
SELECT s.global_position, s.stream_id, w.client, w.input, s.recorded_at, w.status
FROM events s JOIN workflows w ON w.workflow_id = s.stream_id
WHERE s.version = 1 AND s.global_position < :before
  AND (:status = '' OR w.status = :status)
  AND (:search = '' OR s.stream_id = :search OR w.input LIKE :pattern ESCAPE '!')
ORDER BY s.global_position DESC
LIMIT :limit;

-- name: project_start
-- The read model's row of a workflow that starts (in its start's transaction, after its first
-- event, whose place in the log it takes).
INSERT INTO workflows (workflow_id, client, status, input, started_at, position)
SELECT :workflow_id, :client, 'running', :input, :started_at, global_position
FROM events WHERE stream_id = :workflow_id AND version = 1;

-- name: project_end
-- A workflow ended: its row's status (in the transaction of its last event).
UPDATE workflows SET status = :status WHERE workflow_id = :workflow_id;

-- name: take_log_turn
-- Wait for the log's turn and hold it to the end of the transaction: no event is appended
-- meanwhile (the read model's rebuild).
SELECT {log_turn};

-- name: all_workflows
-- The whole read model, by id (the rebuild's comparison).
SELECT workflow_id, client, status, input, started_at, position FROM workflows
ORDER BY workflow_id;

-- name: clear_workflows
DELETE FROM workflows;

-- name: derive_workflows
-- The read model from the events alone: each start, with the status its end (if any) gives.
SELECT s.stream_id AS workflow_id,
       {started_by} AS client,
       COALESCE((SELECT CASE e.type WHEN 'WorkflowCompleted' THEN 'completed' ELSE 'failed' END
                 FROM events e
                 WHERE e.stream_id = s.stream_id
                   AND e.type IN ('WorkflowCompleted', 'WorkflowFailed')
                 LIMIT 1), 'running') AS status,
       {start_input} AS input,
       s.recorded_at AS started_at,
       s.global_position AS position
FROM events s WHERE s.type = 'WorkflowStarted'
ORDER BY s.stream_id;

-- name: enqueue_message
-- Put a message in the outbox, in the transaction that recorded the events implying it; with an
-- owner, already leased to that relay (its first attempt). Times are the database's clock, so
-- replicas never compare their own clocks.
INSERT INTO outbox (stream_id, step, destination, payload, attempts, available_at, lease_owner,
                    lease_expires_at, created_at)
SELECT :stream_id, :step, :destination, :payload,
       CASE WHEN p.owner IS NULL THEN 0 ELSE 1 END, clock.now + p.delay, p.owner,
       CASE WHEN p.owner IS NULL THEN NULL ELSE clock.now + p.lease_seconds END, clock.now
FROM (SELECT {now} AS now) AS clock,
     (SELECT CAST(:owner AS TEXT) AS owner,
             CAST(:lease_seconds AS DOUBLE PRECISION) AS lease_seconds,
             CAST(:delay AS DOUBLE PRECISION) AS delay) AS p
RETURNING id, stream_id, step, destination, payload, attempts, available_at, created_at;

-- name: claim_due_messages
-- Lease the due messages nobody holds (or whose holder's lease ran out), oldest first, except
-- those for the destinations in :strings (a JSON array: services whose circuit is open here).
-- PostgreSQL: SKIP LOCKED lets relays claim side by side without waiting on each other or
-- claiming one row twice; SQLite: the write lock of BEGIN IMMEDIATE makes them take turns.
UPDATE outbox
SET lease_owner = :owner,
    lease_expires_at = {now} + :lease_seconds,
    attempts = attempts + 1
WHERE id IN (
    SELECT id FROM outbox
    WHERE available_at <= {now}
      AND (lease_expires_at IS NULL OR lease_expires_at < {now})
      AND destination NOT IN ({strings_from_json})
    ORDER BY available_at LIMIT :limit
    {skip_locked}
)
RETURNING id, stream_id, step, destination, payload, attempts, available_at, created_at;

-- name: lock_message
-- The lease on a message, locked until the transaction ends: an outcome is recorded by the
-- lease holder of that attempt only (the fence); a replica that lost it learns so here.
SELECT lease_owner, attempts FROM outbox WHERE id = :id {for_update};

-- name: extend_leases
-- Keep the leases of the calls still in flight alive; a lease already taken over is left alone,
-- and so is a message whose row a commit under way holds ({skip_locked}): it is being recorded
-- (by this replica's group commit, whose batch locks several messages' rows: waiting for one
-- while holding others deadlocked with it), and if that commit fails, the next renewal, a
-- third of a lease later, extends it.
UPDATE outbox SET lease_expires_at = {now} + :lease_seconds
WHERE id IN (
    SELECT id FROM outbox
    WHERE lease_owner = :owner AND id IN ({ids_from_json})
    {skip_locked}
);

-- name: delete_message
-- The message's outcome is recorded: it leaves the outbox.
DELETE FROM outbox WHERE id = :id;

-- name: reschedule_message
-- Deliver again later: release the lease and set the next attempt's time.
UPDATE outbox SET available_at = {now} + :delay, lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id;

-- name: outbox_summary
-- How long until the next message falls due or a lease runs out (negative: overdue), by the
-- database's clock, leaving out the destinations in :strings (a JSON array; NULL when no
-- message is left); and, over every message, how many there are and the age of the oldest.
SELECT min(CASE WHEN destination IN ({strings_from_json}) THEN NULL
                WHEN lease_expires_at IS NOT NULL AND lease_expires_at > available_at
                THEN lease_expires_at ELSE available_at END) - {now} AS due,
       count(*) AS depth,
       {now} - min(created_at) AS oldest_age
FROM outbox;

-- name: release_unattempted
-- Give back a claimed attempt that was never made (the call was held back: circuit open, no
-- retry budget): the claim is undone, so no attempt number is left unrecorded, and the message
-- is due again after :delay.
UPDATE outbox SET attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
                  available_at = {now} + :delay,
                  lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id;

-- name: pending_messages
-- Every message still in the outbox (operators, tests).
SELECT id, stream_id, step, destination, attempts, available_at, lease_owner, lease_expires_at
FROM outbox ORDER BY id;

-- name: insert_command
-- Record a client command; the first writer of a key wins, a repeat gets no row back.
INSERT INTO commands (idempotency_key, fingerprint, workflow_id, created_at)
VALUES (:idempotency_key, :fingerprint, :workflow_id, :created_at)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING workflow_id;

-- name: get_command
-- A recorded client command.
SELECT idempotency_key, fingerprint, workflow_id, created_at
FROM commands WHERE idempotency_key = :idempotency_key;

-- name: expire_commands
-- The command store's retention: forget up to :batch commands, oldest first, whose workflow
-- ended (completed or failed) before :cutoff. A running workflow's command is kept however
-- old. Replicas sweeping at once skip each other's rows.
DELETE FROM commands WHERE idempotency_key IN (
    SELECT c.idempotency_key FROM commands c
    WHERE c.created_at < :cutoff
      AND EXISTS (
          SELECT 1 FROM events e
          WHERE e.stream_id = c.workflow_id
            AND e.type IN ('WorkflowCompleted', 'WorkflowFailed')
            AND e.recorded_at < :cutoff
      )
    ORDER BY c.created_at
    LIMIT :batch
    {skip_locked}
);

-- name: all_commands
-- Every client command (the invariant checker).
SELECT idempotency_key, fingerprint, workflow_id, created_at FROM commands ORDER BY created_at;

-- name: create_group
-- A new consumer group, reading the log after :filled_to; nothing when the name is taken.
INSERT INTO subscription_groups
    (name, filled_to, types, ack_wait, max_deliver, max_ack_pending, created_at)
VALUES (:name, :filled_to, :types, :ack_wait, :max_deliver, :max_ack_pending, {now})
ON CONFLICT (name) DO NOTHING;

-- name: lock_group
-- A group, locked for this transaction: its pulls, acks and rewinds take turns.
SELECT name, filled_to, types, ack_wait, max_deliver, max_ack_pending, redeliveries, created_at
FROM subscription_groups WHERE name = :name {for_update};

-- name: find_group
-- A group, read only.
SELECT name, filled_to, types, ack_wait, max_deliver, max_ack_pending, redeliveries, created_at
FROM subscription_groups WHERE name = :name;

-- name: list_groups
-- Every group, by name.
SELECT name, filled_to, types, ack_wait, max_deliver, max_ack_pending, redeliveries, created_at
FROM subscription_groups ORDER BY name;

-- name: delete_group
DELETE FROM subscription_groups WHERE name = :name;

-- name: delete_group_pending
-- A group's pending events after :after (all of them for -1), parked ones only if :parked = 1.
DELETE FROM group_pending
WHERE group_name = :name AND position > :after AND (parked_at IS NULL OR :parked = 1);

-- name: move_group
-- Where a group has read the log to, and how many redeliveries it counted more.
UPDATE subscription_groups
SET filled_to = :filled_to, redeliveries = redeliveries + :redeliveries
WHERE name = :name;

-- name: count_unparked
SELECT count(*) AS n FROM group_pending WHERE group_name = :name AND parked_at IS NULL;

-- name: log_positions
-- The positions of the log after :after up to :until of the types in :strings ('[]': any), in
-- order, at most :limit: what a group takes next.
SELECT global_position FROM events
WHERE global_position > :after AND global_position <= :until
  AND (:strings = '[]' OR type IN ({strings_from_json}))
ORDER BY global_position LIMIT :limit;

-- name: fill_group
-- Make the events after :after up to :until of the group's types pending for it, due now.
INSERT INTO group_pending (group_name, position, stream_id, due_at)
SELECT :name, global_position, stream_id, {now} FROM events
WHERE global_position > :after AND global_position <= :until
  AND (:strings = '[]' OR type IN ({strings_from_json}));

-- name: unparked_pending
-- A group's unfinished events in log order, with the database's clock: what a pull chooses from.
SELECT position, stream_id, deliveries, member, leased_until, due_at, {now} AS now
FROM group_pending WHERE group_name = :name AND parked_at IS NULL
ORDER BY position;

-- name: lease_pending
-- Lease these events (:ids) to :member until :ack_wait seconds from now.
UPDATE group_pending
SET member = :member, leased_until = {now} + :ack_wait, deliveries = deliveries + 1
WHERE group_name = :name AND position IN ({ids_from_json});

-- name: pending_at
-- A group's pending rows at these positions (:ids), with the database's clock.
SELECT position, stream_id, deliveries, member, leased_until, due_at, parked_at, {now} AS now
FROM group_pending WHERE group_name = :name AND position IN ({ids_from_json})
ORDER BY position;

-- name: ack_pending
DELETE FROM group_pending WHERE group_name = :name AND position IN ({ids_from_json});

-- name: release_pending
-- Give these events (:ids) back, due :delay seconds from now.
UPDATE group_pending SET leased_until = NULL, due_at = {now} + :delay
WHERE group_name = :name AND position IN ({ids_from_json});

-- name: park_pending
UPDATE group_pending SET leased_until = NULL, parked_at = {now}
WHERE group_name = :name AND position IN ({ids_from_json});

-- name: extend_pending
UPDATE group_pending SET leased_until = {now} + :ack_wait
WHERE group_name = :name AND position IN ({ids_from_json});

-- name: unpark_pending
-- Parked events back to pending, their deliveries counted afresh: all of them when :all = 1.
UPDATE group_pending
SET parked_at = NULL, deliveries = 0, member = NULL, leased_until = NULL, due_at = {now}
WHERE group_name = :name AND parked_at IS NOT NULL
  AND (:all = 1 OR position IN ({ids_from_json}));

-- name: list_parked
-- A group's parked events after :after, in log order, each with its event.
SELECT p.position, p.deliveries, p.member, p.parked_at,
       e.global_position, e.stream_id, e.version, e.type, e.data, e.recorded_at,
       e.schema_version
FROM group_pending p JOIN events e ON e.global_position = p.position
WHERE p.group_name = :name AND p.parked_at IS NOT NULL AND p.position > :after
ORDER BY p.position LIMIT :limit;

-- name: group_state
-- What a group has in hand: unfinished, in flight (leased now), parked, its oldest unfinished
-- position, and how old that event is (seconds, by the database's clock).
SELECT count(*) FILTER (WHERE p.parked_at IS NULL) AS unfinished,
       count(*) FILTER (WHERE p.parked_at IS NULL AND p.leased_until > {now}) AS in_flight,
       count(*) FILTER (WHERE p.parked_at IS NOT NULL) AS parked,
       min(p.position) FILTER (WHERE p.parked_at IS NULL) AS oldest
FROM group_pending p WHERE p.group_name = :name;

-- name: members_in_flight
-- A group's members with events leased to them now, and how many.
SELECT member, count(*) AS in_flight FROM group_pending
WHERE group_name = :name AND parked_at IS NULL AND leased_until > {now}
GROUP BY member ORDER BY member;

-- name: event_time
-- When the event at a position was recorded, with the database's clock; nothing when none.
SELECT recorded_at, {now} AS now FROM events WHERE global_position = :position;

-- name: first_event_after
-- The first event after :after of the types in :strings ('[]': any), with the database's clock.
SELECT global_position, recorded_at, {now} AS now FROM events
WHERE global_position > :after AND (:strings = '[]' OR type IN ({strings_from_json}))
ORDER BY global_position LIMIT 1;

-- name: read_positions
-- The events at these positions (:ids), in order.
SELECT global_position, stream_id, version, type, data, recorded_at, schema_version
FROM events WHERE global_position IN ({ids_from_json}) ORDER BY global_position;

-- name: report_replica_health
-- A replica's latest health report (JSON in :report), replacing its previous one.
INSERT INTO replica_health (replica_id, reported_at, report)
VALUES (:replica_id, {now}, :report)
ON CONFLICT (replica_id) DO UPDATE SET reported_at = excluded.reported_at, report = excluded.report;

-- name: forget_silent_replicas
-- The reports of replicas silent for :keep seconds (gone, or renamed).
DELETE FROM replica_health WHERE reported_at < {now} - :keep;

-- name: replica_health_reports
-- Every replica's latest report, with its age by the database's clock.
SELECT replica_id, report, {now} - reported_at AS age FROM replica_health ORDER BY replica_id;
