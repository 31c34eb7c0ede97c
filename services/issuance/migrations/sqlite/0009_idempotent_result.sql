-- The state a licence was left in by the request an idempotency key first
-- carried ("status,lost,mortgaged"), so that a retry answers with the
-- original result even after later events.
ALTER TABLE idempotency_keys ADD COLUMN result_state TEXT;
