-- pgbench-transition.sql preceded by the bearer-token lookup that every request to the server
-- makes first (crates/server/src/api/extract.rs, db.rs `actor_by_token_hash`), outside the
-- transaction as the server runs it. bldst-bench seeds one user and one token whose hash is
-- the literal below. (The server also refreshes the token's `last_used_at` at most once a
-- minute: negligible here, and left out.)
SELECT t.id, t.user_id, u.username, u.role, t.scope, t.expires_at, t.last_used_at
  FROM api_tokens t JOIN users u ON u.id = t.user_id
 WHERE t.secret_hash = '0000000000000000000000000000000000000000000000000000000000000000'
   AND t.revoked_at IS NULL;
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
