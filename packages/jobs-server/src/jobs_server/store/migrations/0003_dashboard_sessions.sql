-- Dashboard logins. The cookie carries a random session id; only its SHA-256 is kept here, with
-- the principal it stands for and a check of the token it was opened with (HMAC keyed by the
-- session id, so this table alone cannot be used to guess a token). Never the token itself.
-- Rows live in PostgreSQL, not in a process, because `serve --workers N` runs several.
CREATE TABLE dashboard_sessions (
    id_hash     bytea PRIMARY KEY,
    role        text NOT NULL,
    tenant      text,
    token_check bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- Pruning expired rows at each login reads this index, never the whole table.
CREATE INDEX dashboard_sessions_expiry_idx ON dashboard_sessions (expires_at);
