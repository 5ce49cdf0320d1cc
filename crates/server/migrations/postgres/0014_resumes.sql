-- What resuming saved (issue 19, part 2), postgres dialect. Keep in step with
-- ../sqlite/0014_resumes.sql. The rules: docs/rules.md, "What resuming saved";
-- crates/domain/src/resumes.rs.

-- The pending stop: the seq of the entry that stopped the build short of the end (a failure,
-- an operator retry or reset; a released lease's fence) and that no run has reported after.
-- The first run report while it is set is the resume, and clears it: one resume per stop.
ALTER TABLE builds ADD COLUMN stopped_seq BIGINT;
-- The latest resume, as JSON (the domain's `Resume`): what `GET /builds/{id}` shows.
ALTER TABLE builds ADD COLUMN last_resume TEXT;

-- One row per resume, written in the transaction of the report that resumed. Platform and
-- image type are copied from the build (they never change), so the savings report groups
-- one table's rows of the window without a join.
CREATE TABLE build_resumes (
    build_id TEXT NOT NULL REFERENCES builds (id),
    seq BIGINT NOT NULL,
    resumed_at BIGINT NOT NULL,
    stage INTEGER NOT NULL,
    platform TEXT NOT NULL,
    image_type TEXT NOT NULL,
    stages_not_rerun INTEGER NOT NULL,
    saved_ms BIGINT NOT NULL,
    unknown_durations INTEGER NOT NULL,
    PRIMARY KEY (build_id, seq)
);

-- The savings report reads the window's rows from one range; every column it reads rides
-- along so it never visits the table.
CREATE INDEX build_resumes_by_time ON build_resumes (resumed_at, build_id, platform, image_type,
    stages_not_rerun, saved_ms, unknown_durations);
