-- buildstate schema, SQLite dialect. Keep in step with ../postgres/0001_initial.sql.
-- Timestamps are Unix milliseconds (INTEGER) so both dialects read them the same way.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    username    TEXT NOT NULL UNIQUE,
    email       TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('member', 'admin')),
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id),
    secret_hash   TEXT NOT NULL UNIQUE,
    description   TEXT NOT NULL,
    scope         TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

CREATE TABLE builds (
    id               TEXT PRIMARY KEY,
    build_key        TEXT,
    platform         TEXT NOT NULL,
    image_type       TEXT NOT NULL,
    description      TEXT,
    labels           TEXT NOT NULL,
    state            INTEGER NOT NULL CHECK (state BETWEEN 0 AND 100 AND state % 5 = 0),
    status           TEXT NOT NULL,
    failures         INTEGER NOT NULL,
    max_retries      INTEGER NOT NULL,
    next_attempt_at  INTEGER,
    last_message     TEXT,
    last_seq         INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

-- At most one unfinished build per key: what makes "start" resume instead of duplicating.
CREATE UNIQUE INDEX builds_unfinished_key ON builds (build_key)
    WHERE build_key IS NOT NULL AND status NOT IN ('completed', 'cancelled');
CREATE INDEX builds_newest_first ON builds (created_at DESC, id DESC);

CREATE TABLE build_history (
    build_id     TEXT NOT NULL REFERENCES builds (id),
    seq          INTEGER NOT NULL,
    state        INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    message      TEXT,
    attempt      INTEGER,
    reported_by  TEXT,
    token_id     TEXT,
    source       TEXT,
    recorded_at  INTEGER NOT NULL,
    PRIMARY KEY (build_id, seq)
);

-- The first answer to each applied report that carried an Idempotency-Key.
CREATE TABLE idempotency_keys (
    build_id         TEXT NOT NULL REFERENCES builds (id),
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    response_body    TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (build_id, idempotency_key)
);
