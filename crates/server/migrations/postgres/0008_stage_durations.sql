-- Speed of the reports on a large history (issue 11), PostgreSQL dialect. Keep in step with
-- ../sqlite/0008_stage_durations.sql (which also indexes the build list: see there).

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
