-- Indexes for the reports, the event stream and the stuck-build alerts (issue 11).
-- Same in both dialects.

-- Failures, recoveries and durations read a window of history by kind and time.
CREATE INDEX build_history_kind_time ON build_history (kind, recorded_at);
-- The event stream resumes from a point in time; durations read a window of it.
CREATE INDEX build_history_time ON build_history (recorded_at, build_id, seq);
-- Stuck and blocked builds: unfinished builds by how long they have been quiet.
CREATE INDEX builds_status_updated ON builds (status, updated_at);
-- (Success rates read builds by created_at: builds_newest_first serves them.)

-- A stuck build alerts once per quiet spell (identified by when it went quiet), whichever
-- server process notices first: the primary key decides.
CREATE TABLE stuck_alerts (
    build_id     TEXT NOT NULL REFERENCES builds (id),
    quiet_since  BIGINT NOT NULL,
    alerted_at   BIGINT NOT NULL,
    PRIMARY KEY (build_id, quiet_since)
);
