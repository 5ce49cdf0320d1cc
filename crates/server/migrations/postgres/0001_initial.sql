-- buildstate schema, PostgreSQL dialect. Keep in step with ../sqlite/0001_initial.sql.
-- Timestamps are Unix milliseconds (BIGINT) so both dialects read them the same way.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    username    TEXT NOT NULL UNIQUE,
    email       TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('member', 'admin')),
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id),
    secret_hash   TEXT NOT NULL UNIQUE,
    description   TEXT NOT NULL,
    scope         TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);

CREATE TABLE builds (
    id               TEXT PRIMARY KEY,
    build_key        TEXT,
    platform         TEXT NOT NULL,
    image_type       TEXT NOT NULL,
    description      TEXT,
    labels           TEXT NOT NULL,
    state            BIGINT NOT NULL CHECK (state BETWEEN 0 AND 100 AND state % 5 = 0),
    status           TEXT NOT NULL,
    failures         BIGINT NOT NULL,
    max_retries      BIGINT NOT NULL,
    next_attempt_at  BIGINT,
    last_message     TEXT,
    last_seq         BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- At most one unfinished build per key: what makes "start" resume instead of duplicating.
CREATE UNIQUE INDEX builds_unfinished_key ON builds (build_key)
    WHERE build_key IS NOT NULL AND status NOT IN ('completed', 'cancelled');
CREATE INDEX builds_newest_first ON builds (created_at DESC, id DESC);

CREATE TABLE build_history (
    build_id     TEXT NOT NULL REFERENCES builds (id),
    seq          BIGINT NOT NULL,
    state        BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    message      TEXT,
    attempt      BIGINT,
    reported_by  TEXT,
    token_id     TEXT,
    source       TEXT,
    recorded_at  BIGINT NOT NULL,
    PRIMARY KEY (build_id, seq)
);

-- The first answer to each applied report that carried an Idempotency-Key.
CREATE TABLE idempotency_keys (
    build_id         TEXT NOT NULL REFERENCES builds (id),
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    response_body    TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (build_id, idempotency_key)
);
