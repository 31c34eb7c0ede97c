-- Issuer keys: public halves in the clear, private halves only as AES-256-GCM
-- envelopes under a master key that is never stored here.
CREATE TABLE issuer_keys (
    key_id TEXT PRIMARY KEY,
    issuer_code TEXT NOT NULL,
    algorithm TEXT NOT NULL CHECK (algorithm IN ('ES256')),
    status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'compromised')),
    public_jwk TEXT NOT NULL,
    private_envelope BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX issuer_keys_one_active ON issuer_keys (issuer_code) WHERE status = 'active';
CREATE INDEX issuer_keys_issuer ON issuer_keys (issuer_code, created_at);
