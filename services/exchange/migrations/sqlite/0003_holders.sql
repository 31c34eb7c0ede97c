-- Holders (art. 16, 17): the front ends that vouch for them, presentation
-- scenarios, the presentations made (each usable once), and expiry
-- reminders with their delivery outbox.
CREATE TABLE front_ends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    agency_code TEXT NOT NULL,
    jwk_json TEXT NOT NULL,
    scenario_ids_json TEXT NOT NULL,
    webhook_url TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'suspended')),
    registered_by TEXT NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE INDEX front_ends_agency ON front_ends (agency_code);

CREATE TABLE scenarios (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agency_code TEXT NOT NULL,
    name TEXT NOT NULL,
    type_codes_json TEXT NOT NULL,
    fields_json TEXT NOT NULL,
    purpose TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('proposed', 'approved', 'refused')),
    proposed_by TEXT NOT NULL,
    proposed_at TEXT NOT NULL,
    decided_by TEXT NOT NULL DEFAULT '',
    decided_at TEXT,
    decision_reason TEXT NOT NULL DEFAULT ''
);

-- Which front ends a holder has logged in through (where reminders go).
CREATE TABLE holder_front_ends (
    holder_digest TEXT NOT NULL,
    front_end_id BIGINT NOT NULL,
    last_login_at TEXT NOT NULL,
    PRIMARY KEY (holder_digest, front_end_id)
);

CREATE TABLE presentations (
    nonce TEXT PRIMARY KEY,
    identifier TEXT NOT NULL,
    scenario_id BIGINT NOT NULL,
    front_end_id BIGINT NOT NULL,
    holder_digest TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    used_by TEXT NOT NULL DEFAULT ''
);

-- Reminder windows per licence type (days before valid_until); a type
-- without a row uses the default (90, 30, 7).
CREATE TABLE reminder_windows (
    type_code TEXT PRIMARY KEY,
    days_json TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at TEXT NOT NULL
);

-- One reminder per licence and window; its id is stable (what receivers
-- de-duplicate by).
CREATE TABLE reminders (
    id TEXT PRIMARY KEY,
    identifier TEXT NOT NULL,
    type_code TEXT NOT NULL,
    holder_digest TEXT NOT NULL,
    days_before BIGINT NOT NULL,
    valid_until TEXT NOT NULL,
    due_at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('scheduled', 'due', 'cancelled')),
    body_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX reminders_due ON reminders (state, due_at);
CREATE INDEX reminders_holder ON reminders (holder_digest, due_at);

-- The outbox: one delivery of a due reminder to one front end.
CREATE TABLE reminder_deliveries (
    reminder_id TEXT NOT NULL,
    front_end_id BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),
    attempts BIGINT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    sent_at TEXT,
    PRIMARY KEY (reminder_id, front_end_id)
);
CREATE INDEX reminder_deliveries_next ON reminder_deliveries (state, next_attempt_at);

-- How far the reminder job has read the issuance change feed.
CREATE TABLE feed_cursors (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
