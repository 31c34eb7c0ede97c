-- Usage lists (用证清单): each consuming agency's entries, the applications
-- that lead to them, and every change to either (who, when, what).
CREATE TABLE usage_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agency_code TEXT NOT NULL,
    level TEXT NOT NULL CHECK (level IN ('city', 'province', 'ministry')),
    type_code TEXT NOT NULL,
    service_item_code TEXT NOT NULL,
    purpose TEXT NOT NULL,
    fields_json TEXT NOT NULL,
    all_fields BIGINT NOT NULL,
    effective_from TEXT NOT NULL,
    effective_until TEXT,
    state TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'ended')),
    application_id BIGINT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX usage_entries_use ON usage_entries (agency_code, service_item_code, type_code);

CREATE TABLE usage_applications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agency_code TEXT NOT NULL,
    level TEXT NOT NULL CHECK (level IN ('city', 'province', 'ministry')),
    type_codes_json TEXT NOT NULL,
    service_items_json TEXT NOT NULL,
    purpose TEXT NOT NULL,
    fields_json TEXT NOT NULL,
    all_fields BIGINT NOT NULL,
    effective_from TEXT NOT NULL,
    effective_until TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'refused')),
    applied_by TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    decided_by TEXT NOT NULL DEFAULT '',
    decided_at TEXT,
    decision_reason TEXT NOT NULL DEFAULT '',
    entry_ids_json TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX usage_applications_agency ON usage_applications (agency_code, id);

CREATE TABLE usage_list_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    entry_id BIGINT,
    application_id BIGINT,
    agency_code TEXT NOT NULL,
    actor TEXT NOT NULL,
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    details_json TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX usage_list_changes_agency ON usage_list_changes (agency_code, id);

-- The usage log records who called, how, about which holder, and which rule
-- decided; each record is a leaf of the usage log's own Merkle tree (RFC
-- 6962, the same storage as issuance's transparency log). Records written
-- before this migration are logged when the service starts.
ALTER TABLE usage_log ADD COLUMN operator TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_log ADD COLUMN method TEXT NOT NULL DEFAULT 'FetchLicence';
ALTER TABLE usage_log ADD COLUMN client_address TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_log ADD COLUMN type_code TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_log ADD COLUMN holder_id_type TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_log ADD COLUMN holder_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_log ADD COLUMN holder_masked TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_log ADD COLUMN refusal_rule TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_log ADD COLUMN entry_id BIGINT;
ALTER TABLE usage_log ADD COLUMN copy_id TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_log ADD COLUMN log_index BIGINT;
CREATE UNIQUE INDEX usage_log_log_index ON usage_log (log_index);
CREATE INDEX usage_log_consumer ON usage_log (consumer_code, id);
CREATE INDEX usage_log_holder ON usage_log (holder_digest, id);
CREATE INDEX usage_log_accessed ON usage_log (accessed_at);

CREATE TABLE log_nodes (
    node_key BIGINT PRIMARY KEY,
    hash BLOB NOT NULL
);
CREATE TABLE log_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tree_size BIGINT NOT NULL
);
INSERT INTO log_state (id, tree_size) VALUES (1, 0);
CREATE TABLE log_checkpoints (
    tree_size BIGINT PRIMARY KEY,
    root_hash BLOB NOT NULL,
    jws TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Annotated copies (加注件) and their single-use download links (the
-- link's token is kept only as its SHA-256).
CREATE TABLE copies (
    copy_id TEXT PRIMARY KEY,
    usage_id BIGINT NOT NULL,
    identifier TEXT NOT NULL,
    agency_code TEXT NOT NULL,
    jws TEXT NOT NULL,
    good_until TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE copy_links (
    token_digest TEXT PRIMARY KEY,
    copy_id TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
);
