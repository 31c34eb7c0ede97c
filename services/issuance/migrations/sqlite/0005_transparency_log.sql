-- The transparency log: each event's leaf index, the tree as complete
-- subtrees (node_key = level << 48 | index), its size, and signed checkpoints.
-- Events recorded before this migration are logged when the service starts.
ALTER TABLE licence_events ADD COLUMN log_index BIGINT;
CREATE UNIQUE INDEX licence_events_log_index ON licence_events (log_index);
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
