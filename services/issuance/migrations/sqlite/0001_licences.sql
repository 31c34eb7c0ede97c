-- Licences, their append-only lifecycle events (which are also the library's
-- ordered change feed: `sequence` is the feed position) and idempotency keys.
CREATE TABLE licences (
    identifier TEXT PRIMARY KEY,
    type_code TEXT NOT NULL,
    issuer_code TEXT NOT NULL,
    serial TEXT NOT NULL,
    version BIGINT NOT NULL,
    template_version BIGINT NOT NULL,
    holder_id_type TEXT NOT NULL,
    holder_id_number TEXT NOT NULL,
    status TEXT NOT NULL,
    valid_until TEXT,
    document_json TEXT NOT NULL,
    jws TEXT NOT NULL,
    key_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (issuer_code, type_code, serial, version)
);
CREATE INDEX licences_holder ON licences (holder_id_type, holder_id_number);

CREATE TABLE licence_events (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    identifier TEXT NOT NULL REFERENCES licences (identifier),
    kind TEXT NOT NULL,
    status_after TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX licence_events_identifier ON licence_events (identifier, sequence);

CREATE TABLE idempotency_keys (
    agency TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    operation TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    identifier TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (agency, idempotency_key)
);
