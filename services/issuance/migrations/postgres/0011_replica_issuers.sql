-- Which district keeps each issuer's licences, on the city: recorded when a
-- district's first licence of the issuer is applied (refused if the city
-- holds licences of that issuer itself, or another district keeps it). The
-- city refuses to issue for an issuer listed here. It replaces the index
-- that answered the same question from the licences (one fewer index to
-- maintain per replicated licence).
CREATE TABLE replica_issuers (
    issuer_code TEXT PRIMARY KEY,
    library TEXT NOT NULL,
    since TEXT NOT NULL
);
INSERT INTO replica_issuers (issuer_code, library, since)
    SELECT issuer_code, MIN(origin_library), MIN(recorded_at) FROM licences
    WHERE origin_library IS NOT NULL GROUP BY issuer_code;
DROP INDEX licences_replicated_issuer;
