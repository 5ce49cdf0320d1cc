-- The build's merged outputs, kept beside the per-stage ones, SQLite dialect. Keep in step with
-- ../postgres/0007_merged_outputs.sql.

-- What the API shows as the build's `outputs`, as JSON `{"ami_id": {"value": "ami-0abc", "stage": 10}}`,
-- written in the same statement as `stage_outputs` whenever those change. Every report answers
-- with the build, and most reports (in_progress, failed, a completion without outputs) leave
-- the outputs alone: they read this small map and never decode the per-stage one.
ALTER TABLE builds ADD COLUMN outputs TEXT DEFAULT '{}';
-- Builds that already have outputs get theirs from `stage_outputs` until their next change
-- (NULL: derive the merged view from `stage_outputs`); computing it here would need JSON
-- functions the two databases spell differently.
UPDATE builds SET outputs = NULL WHERE stage_outputs <> '{}';
