-- The latest annual review or inspection of a licence version: its kind
-- (review or inspect) and its result, so that verification can say a
-- failed one (不合格) without reading the history.
ALTER TABLE licences ADD COLUMN last_check_kind TEXT;
ALTER TABLE licences ADD COLUMN last_check_result TEXT;
