-- Speed of the reports on a large history (issue 11), SQLite dialect. Keep in step with
-- ../postgres/0008_stage_durations.sql.

-- How long the stage took, in milliseconds, on a `completed` entry: the time since the build's
-- previous record, skipped entries aside (`buildstate_domain::reports::completion_durations`);
-- NULL on every other entry and on a completion with no time of its own. Written with the
-- entry, so the durations report reads one column instead of pairing every completion in its
-- window with the record before it.
ALTER TABLE build_history ADD COLUMN duration_ms BIGINT;

-- The history written before this migration gets the same values, by the same rule.
UPDATE build_history SET duration_ms = earlier.millis
FROM (
    SELECT build_id, seq, kind,
        recorded_at - LAG(recorded_at) OVER (PARTITION BY build_id ORDER BY seq) AS millis
    FROM build_history WHERE kind <> 'skipped'
) earlier
WHERE earlier.kind = 'completed' AND earlier.millis > 0
    AND build_history.build_id = earlier.build_id AND build_history.seq = earlier.seq;

-- The durations report: completions in a window, by stage, with their durations, from the
-- index alone.
CREATE INDEX build_history_durations ON build_history (recorded_at, state, duration_ms)
    WHERE duration_ms IS NOT NULL;

-- Fresh planner statistics for the new column and index.
ANALYZE build_history;

-- The dashboard's filtered build list, newest first (`GET /builds?status=…&platform=…`):
-- without these SQLite walks the whole newest-first index testing each build (240 ms at
-- 100,000 builds for a rare combination). PostgreSQL plans with the values it is given and
-- answers from `builds_status_updated` in a few milliseconds, so it does without: every index
-- on `builds` costs each report there an index insertion.
CREATE INDEX builds_status_newest ON builds (status, created_at DESC, id DESC);
CREATE INDEX builds_platform_newest ON builds (platform, created_at DESC, id DESC);
ANALYZE builds;
