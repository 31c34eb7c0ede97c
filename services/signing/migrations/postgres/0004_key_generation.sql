-- Counts key changes (every key event, and every district key import that
-- changed something), bumped in the change's own transaction. Each signing
-- process follows it, so the public-key caches its watchers keep learn of
-- a change another replica of the service made.
CREATE TABLE key_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    counter BIGINT NOT NULL
);
INSERT INTO key_generation (id, counter) VALUES (1, 0);
