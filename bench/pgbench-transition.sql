-- The database's own ceiling for one transition report: the least work a report needs — lock
-- and read the build row, append a history row, update the build row, in one transaction —
-- written as buildstate's server writes it (crates/server/src/db.rs `record_transition`, same
-- columns and values), minus HTTP, JSON, the rules and the bearer-token lookup
-- (pgbench-transition-with-auth.sql adds the lookup). Anything else the server sends per report
-- counts against it. bldst-bench seeds one build per pgbench client, id
-- 'b_' || lpad(client_id, 20, '0') (as long as a real build id).
--
-- The status cycles like the benchmark's reports do (in_progress, failed, completed/running):
-- `status` is in the predicate of the partial unique index on builds, so a changing status
-- rules out a HOT update, as it does in the server; a constant one would flatter the ceiling.
\set now_ms 1700000000000 + :client_id
BEGIN;
SELECT id, build_key, platform, image_type, description, labels, state, status, failures,
       max_retries, next_attempt_at, last_message, last_seq, created_at, updated_at
  FROM builds WHERE id = 'b_' || lpad(:client_id::text, 20, '0') FOR UPDATE \gset row_
\set seq :row_last_seq + 1
\set pick :row_last_seq % 3 + 1
INSERT INTO build_history (build_id, seq, state, kind, message, attempt, reported_by, token_id,
                           source, recorded_at)
  VALUES ('b_' || lpad(:client_id::text, 20, '0'), :seq, :row_state,
          (ARRAY['in_progress', 'failed', 'completed'])[:pick], 'bldst-bench report', 1,
          'bench', 't_benchbenchbenchb', NULL, :now_ms);
UPDATE builds SET state = :row_state, status = (ARRAY['in_progress', 'failed', 'running'])[:pick],
                  failures = :pick - 1, next_attempt_at = :now_ms,
                  last_message = 'bldst-bench report', last_seq = :seq, updated_at = :now_ms
  WHERE id = 'b_' || lpad(:client_id::text, 20, '0');
COMMIT;
