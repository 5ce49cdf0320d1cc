-- Keeps the migration numbers of both dialects in step: ../sqlite/0009_durations_by_stage.sql
-- reindexes SQLite's stage durations; PostgreSQL's durations report (percentile_disc over 0008's
-- (recorded_at, state, duration_ms) index) needs no change.
SELECT 1;
