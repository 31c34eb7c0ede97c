-- Every use of a licence through the exchange, granted or refused.
CREATE TABLE usage_log (
    id BIGSERIAL PRIMARY KEY,
    consumer_code TEXT NOT NULL,
    consumer_role TEXT NOT NULL,
    token_id TEXT NOT NULL,
    identifier TEXT NOT NULL,
    use_cause TEXT NOT NULL,
    service_item_code TEXT NOT NULL,
    case_number TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('granted', 'refused')),
    refusal_reason TEXT NOT NULL,
    accessed_at TEXT NOT NULL
);
CREATE INDEX usage_log_identifier ON usage_log (identifier, id);
