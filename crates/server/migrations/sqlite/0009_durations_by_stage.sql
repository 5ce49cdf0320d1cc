-- The durations report on SQLite reads each stage's completions in the window from one index
-- range (issue 11's speed), SQLite dialect. PostgreSQL keeps 0008's index, which its
-- percentile_disc reads (see ../postgres/0009_durations_by_stage.sql).

-- SQLite has no ordered-set aggregate: ranking a window's completions meant sorting them all
-- (~77,000 for 7 days at 100,000 builds). Ordered by stage first, each stage's completions in
-- the window are one range of this index, read without a sort (`duration_report` in
-- crates/server/src/db/reports.rs).
CREATE INDEX build_history_durations_by_stage ON build_history (state, recorded_at, duration_ms)
    WHERE duration_ms IS NOT NULL;

-- 0008's (recorded_at, state, duration_ms) index served the ranked query only: no query
-- reads it now, and every completion would pay for keeping both.
DROP INDEX build_history_durations;

ANALYZE build_history;
