-- Key lifecycle: SM2-with-SM3 beside ES256, when a key stopped signing, the
-- time from which a compromised key's signatures are distrusted, and a record
-- of every key-management act. SQLite cannot alter a CHECK: the table is rebuilt.
CREATE TABLE issuer_keys_v2 (
    key_id TEXT PRIMARY KEY,
    issuer_code TEXT NOT NULL,
    algorithm TEXT NOT NULL CHECK (algorithm IN ('ES256', 'SM2SM3')),
    status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'compromised')),
    public_jwk TEXT NOT NULL,
    private_envelope BLOB NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT,
    compromised_since TEXT
);
INSERT INTO issuer_keys_v2 (key_id, issuer_code, algorithm, status, public_jwk, private_envelope, created_at)
    SELECT key_id, issuer_code, algorithm, status, public_jwk, private_envelope, created_at FROM issuer_keys;
DROP TABLE issuer_keys;
ALTER TABLE issuer_keys_v2 RENAME TO issuer_keys;
CREATE UNIQUE INDEX issuer_keys_one_active ON issuer_keys (issuer_code) WHERE status = 'active';
CREATE INDEX issuer_keys_issuer ON issuer_keys (issuer_code, created_at);
CREATE TABLE key_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id TEXT NOT NULL REFERENCES issuer_keys (key_id),
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX key_events_key ON key_events (key_id, id);
