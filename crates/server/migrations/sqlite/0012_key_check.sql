-- The key API tokens are hashed with, checked: HMAC-SHA256 of a fixed text under SECRET_KEY
-- (never the key itself), recorded by the server at start. A command run with another key
-- (`bldst server token create`, `bootstrap`) compares and refuses, instead of making a
-- token the server would refuse. Each token records the check of the key it was made with, so
-- only tokens that can work count as live admin tokens. Tokens made before this migration get
-- the check the next time the server starts. Keep in step with ../postgres/0012_key_check.sql.
CREATE TABLE key_check (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key_check TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);
ALTER TABLE api_tokens ADD COLUMN key_check TEXT;
