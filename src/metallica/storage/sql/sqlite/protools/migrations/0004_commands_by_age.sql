-- The command store's retention (WorkflowService.expire_commands) looks for the oldest
-- commands first: index them by age.
CREATE INDEX commands_by_age ON commands (created_at);
