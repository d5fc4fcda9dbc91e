-- The health board (protools/board.py): each protools replica writes what it alone knows of
-- its health (admission, its guards of the services it calls, its log tail) every few
-- seconds, so the console served by any replica shows every replica. One row per replica,
-- replaced at each report; a replica silent for a day is forgotten.
CREATE TABLE replica_health (
    replica_id TEXT PRIMARY KEY,
    reported_at DOUBLE PRECISION NOT NULL,
    report TEXT NOT NULL
);
