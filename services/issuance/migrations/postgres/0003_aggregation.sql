-- Aggregated historical licences: the source system's key (unique per
-- issuer, so a re-run import skips what it already loaded) and the mark of an
-- identifier with a legacy check character.
ALTER TABLE licences ADD COLUMN source_key TEXT;
ALTER TABLE licences ADD COLUMN legacy_identifier BIGINT NOT NULL DEFAULT 0;
-- Not partial: NULLs never collide in a unique index, and a partial one is
-- missed by generic plans of prepared statements.
CREATE UNIQUE INDEX licences_source_key ON licences (issuer_code, source_key);
