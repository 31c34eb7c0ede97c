-- The latest annual review or inspection of a licence version: its kind
-- (review or inspect), its result, and whether, failed, it puts the licence
-- out of force (as its type said when it was recorded), so that
-- verification can say so without reading the history.
ALTER TABLE licences ADD COLUMN last_check_kind TEXT;
ALTER TABLE licences ADD COLUMN last_check_result TEXT;
ALTER TABLE licences ADD COLUMN last_check_invalidates INTEGER NOT NULL DEFAULT 0;
