-- District-to-city sync. On the city, licences and events replicated from a
-- district carry the district's name (`origin_library`) and each event its
-- sequence in the district's feed (unique: an event applies once) and its
-- leaf index in the district's log. They are
-- also entries of the city's own feed and log. `replicas` holds, per
-- district, the cursor, the district log the city has rebuilt (its size and
-- right edge: subtree roots, hex, comma-separated), the pinned log key, the
-- last verified checkpoint and the city's cosignature of it, and whether sync
-- is stopped and why.
ALTER TABLE licences ADD COLUMN origin_library TEXT;
-- Which issuers a district keeps, without scanning the city's own licences.
CREATE INDEX licences_replicated_issuer ON licences (issuer_code, origin_library) WHERE origin_library IS NOT NULL;
ALTER TABLE licence_events ADD COLUMN origin_library TEXT;
ALTER TABLE licence_events ADD COLUMN origin_sequence BIGINT;
ALTER TABLE licence_events ADD COLUMN origin_log_index BIGINT;
CREATE UNIQUE INDEX licence_events_origin ON licence_events (origin_library, origin_sequence);
CREATE TABLE replicas (
    library TEXT PRIMARY KEY,
    cursor BIGINT NOT NULL,
    tree_size BIGINT NOT NULL,
    frontier TEXT NOT NULL,
    library_jwk TEXT NOT NULL,
    checkpoint_origin TEXT,
    checkpoint_size BIGINT,
    checkpoint_root TEXT,
    checkpoint_jws TEXT,
    checkpoint_at TEXT,
    cosignature TEXT,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    head_sequence BIGINT NOT NULL,
    behind_since TEXT,
    events_applied BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
