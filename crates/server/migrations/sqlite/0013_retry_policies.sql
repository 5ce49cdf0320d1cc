-- Retry policies per stage (issue 19, part 1), sqlite dialect. Keep in step with
-- ../postgres/0013_retry_policies.sql.

-- The build's retry policy as validated JSON (the domain's BuildRetryPolicy), set when the
-- build starts and never changed; NULL: no policy, every stage has max_retries and the
-- server's backoff.
ALTER TABLE builds ADD COLUMN retry_policy TEXT;

-- During a reopened pass (a failure at a stage whose rule has restart_from): the failed stage
-- the pass retries, which must complete again before the build moves past it. NULL otherwise.
ALTER TABLE builds ADD COLUMN reopened_until BIGINT
    CHECK (reopened_until BETWEEN 0 AND 100 AND reopened_until % 5 = 0);
