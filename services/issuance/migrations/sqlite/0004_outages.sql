-- Outages an issuer could not issue through, for the 3-working-day catch-up rule.
CREATE TABLE outages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    issuer_code TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    cause TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    backlog_done_at TEXT
);
CREATE INDEX outages_issuer ON outages (issuer_code, started_at);
