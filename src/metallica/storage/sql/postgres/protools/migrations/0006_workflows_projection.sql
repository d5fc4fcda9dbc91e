-- The workflows as listings show them (GET /v1/workflows): a read model kept by the projector
-- (protools/projection.py) in the transaction of the events that change it, rebuilt from the
-- events alone by `metallica projections rebuild`. It replaces the index of the start events by
-- client, and a listing by status no longer reads each start's end. One index besides the key:
-- a workflow's end updates its status, which no index holds, so that update writes no index
-- entry (a HOT update on PostgreSQL, in the room the fill factor leaves on each page).
CREATE TABLE workflows (
    workflow_id TEXT PRIMARY KEY,
    client TEXT,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    position BIGINT NOT NULL
) WITH (fillfactor = 85);
CREATE INDEX workflows_by_client ON workflows (client, position);

INSERT INTO workflows (workflow_id, client, status, input, started_at, position)
SELECT s.stream_id,
       (CAST(s.data AS jsonb)) ->> 'client',
       COALESCE((SELECT CASE e.type WHEN 'WorkflowCompleted' THEN 'completed' ELSE 'failed' END
                 FROM events e
                 WHERE e.stream_id = s.stream_id
                   AND e.type IN ('WorkflowCompleted', 'WorkflowFailed')
                 LIMIT 1), 'running'),
       COALESCE(CAST((CAST(s.data AS jsonb)) -> 'input' AS text), '{}'),
       s.recorded_at,
       s.global_position
FROM events s WHERE s.type = 'WorkflowStarted';

DROP INDEX events_workflows_by_client;
