-- Search by holder category and status; record when a type was retired.
ALTER TABLE licence_types ADD COLUMN holder_category TEXT NOT NULL DEFAULT '';
ALTER TABLE licence_types ADD COLUMN retired_at TEXT;
UPDATE licence_types SET holder_category = (definition_json::json ->> 'holder_category');
CREATE INDEX licence_types_status ON licence_types (status, code);
CREATE INDEX catalog_changes_type ON catalog_changes (type_code, id);
