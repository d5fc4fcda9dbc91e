-- Each event keeps the schema version of its type it was written with; reads upcast older
-- shapes to the current one (protools/upcasting.py). Events stored before are version 1.
ALTER TABLE events ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;
