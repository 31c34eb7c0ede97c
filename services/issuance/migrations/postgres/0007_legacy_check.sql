-- Legacy identifiers (an aggregated licence whose identifier is well formed
-- but carries a non-standard check character) are kept verbatim; this is the
-- standard check character of the same identifier, recorded beside it. NULL
-- for standard identifiers (and for legacy ones imported before this column).
ALTER TABLE licences ADD COLUMN standard_check TEXT;
