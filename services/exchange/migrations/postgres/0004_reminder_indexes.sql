-- The reminder job cancels a superseded version's reminders by licence
-- identifier, and a holder's login reads the holder's due reminders: both
-- scanned the whole table before (it grows by three rows a licence).
CREATE INDEX reminders_identifier ON reminders (identifier, state);
CREATE INDEX reminders_holder_state ON reminders (holder_digest, state);
