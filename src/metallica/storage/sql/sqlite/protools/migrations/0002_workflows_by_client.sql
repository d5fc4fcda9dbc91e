-- A client lists its own workflows (GET /v1/workflows), newest first: index the start events by
-- the client recorded in them. Partial: only one event in a workflow's life is indexed, and no
-- other write pays for it.
CREATE INDEX events_workflows_by_client
    ON events (json_extract(data, '$.client'), global_position)
    WHERE type = 'WorkflowStarted';
