-- On the city: the published issuer keys of the districts it replicates
-- (public halves only), so it verifies their licences. Listed with the
-- library's own keys; never used to sign.
CREATE TABLE foreign_keys (
    key_id TEXT PRIMARY KEY,
    library TEXT NOT NULL,
    issuer_code TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    status TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT,
    compromised_since TEXT,
    imported_at TEXT NOT NULL
);
CREATE INDEX foreign_keys_issuer ON foreign_keys (issuer_code, created_at);
