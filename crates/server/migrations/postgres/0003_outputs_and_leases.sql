-- Stage outputs and stage leases, PostgreSQL dialect. Keep in step with ../sqlite/0003_outputs_and_leases.sql.

-- The outputs of each completed stage, as JSON `{"10": {"ami_id": "ami-0abc"}, ...}`: the build
-- shows them merged; a reset drops the reopened stages' entries.
ALTER TABLE builds ADD COLUMN stage_outputs TEXT NOT NULL DEFAULT '{}';
-- The lease on the stage being worked on: who holds it, its fencing value (the seq of the
-- history entry that claimed it) and when it ends (Unix milliseconds). NULL: nobody holds it.
ALTER TABLE builds ADD COLUMN lease_holder TEXT;
ALTER TABLE builds ADD COLUMN lease_fence BIGINT;
ALTER TABLE builds ADD COLUMN lease_expires_at BIGINT;

-- A completed entry's outputs, as a JSON object.
ALTER TABLE build_history ADD COLUMN outputs TEXT;
