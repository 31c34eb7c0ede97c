-- The full lifecycle: status names instead of codes (a superseded version
-- shares code 05 with an expired one), encumbrances, version links, event
-- details and the outage-backfill mark.
UPDATE licences SET status = CASE status
    WHEN '01' THEN 'valid' WHEN '02' THEN 'seized' WHEN '03' THEN 'withdrawn' WHEN '04' THEN 'cancelled'
    WHEN '05' THEN 'expired' WHEN '06' THEN 'transferred_out' WHEN '07' THEN 'revoked' ELSE 'other' END;
UPDATE licence_events SET status_after = CASE status_after
    WHEN '01' THEN 'valid' WHEN '02' THEN 'seized' WHEN '03' THEN 'withdrawn' WHEN '04' THEN 'cancelled'
    WHEN '05' THEN 'expired' WHEN '06' THEN 'transferred_out' WHEN '07' THEN 'revoked' ELSE 'other' END;
ALTER TABLE licences ADD COLUMN reported_lost BIGINT NOT NULL DEFAULT 0;
ALTER TABLE licences ADD COLUMN mortgaged BIGINT NOT NULL DEFAULT 0;
ALTER TABLE licences ADD COLUMN superseded_by TEXT;
ALTER TABLE licences ADD COLUMN replaces TEXT;
ALTER TABLE licence_events ADD COLUMN details_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE licence_events ADD COLUMN backfill BIGINT NOT NULL DEFAULT 0;
CREATE INDEX licences_expiry ON licences (status, valid_until);
