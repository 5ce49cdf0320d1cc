-- Retries that happen by themselves (issue 18), SQLite dialect. Keep in step with
-- ../postgres/0010_retries_due.sql.

-- With status 'failed': the seq of the retry_due history entry that announced the failed
-- stage's next attempt, once the server recorded it. Every other change clears it, so each
-- failure gets one entry; NULL on a failed build means its retry is still to be announced.
ALTER TABLE builds ADD COLUMN retry_due_seq BIGINT;

-- The scheduler's scan, every tick: failed builds still to be announced, by when their backoff
-- ends. Only those rows are in the index, so an idle scan reads nothing however many builds
-- there are, and a due one is the first entry of a range.
CREATE INDEX builds_retries_to_announce ON builds (next_attempt_at, id)
    WHERE status = 'failed' AND retry_due_seq IS NULL;
