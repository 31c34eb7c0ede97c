-- Bearer tokens an administrator revoked, by token ID (jti), kept until the
-- token would have expired.
CREATE TABLE revoked_tokens (
    token_id TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL,
    revoked_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);
