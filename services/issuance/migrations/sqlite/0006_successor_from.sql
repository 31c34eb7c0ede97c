-- A changed or renewed version stays in force until its successor takes
-- effect: the day the successor's validity starts (YYYY-MM-DD). NULL for
-- versions superseded before this column existed (superseded at once).
ALTER TABLE licences ADD COLUMN successor_from TEXT;
