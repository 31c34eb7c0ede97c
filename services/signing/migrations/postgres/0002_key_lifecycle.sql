-- Key lifecycle: SM2-with-SM3 beside ES256, when a key stopped signing, the
-- time from which a compromised key's signatures are distrusted, and a record
-- of every key-management act.
ALTER TABLE issuer_keys DROP CONSTRAINT issuer_keys_algorithm_check;
ALTER TABLE issuer_keys ADD CONSTRAINT issuer_keys_algorithm_check CHECK (algorithm IN ('ES256', 'SM2SM3'));
ALTER TABLE issuer_keys ADD COLUMN retired_at TEXT;
ALTER TABLE issuer_keys ADD COLUMN compromised_since TEXT;
CREATE TABLE key_events (
    id BIGSERIAL PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES issuer_keys (key_id),
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX key_events_key ON key_events (key_id, id);
