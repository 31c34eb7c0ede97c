CREATE TABLE log_nodes (
    node_key BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL
);
CREATE TABLE log_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tree_size BIGINT NOT NULL
);
INSERT INTO log_state (id, tree_size) VALUES (1, 0);
CREATE TABLE log_checkpoints (
    tree_size BIGINT PRIMARY KEY,
    root_hash BYTEA NOT NULL,
    jws TEXT NOT NULL,
    created_at TEXT NOT NULL
);
