-- Licence types, their template versions and the catalogue change log.
CREATE TABLE licence_types (
    code TEXT PRIMARY KEY,
    authority_code TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'published', 'retired')),
    definition_json TEXT NOT NULL,
    template_version BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    published_at TEXT
);
CREATE INDEX licence_types_authority ON licence_types (authority_code, code);

CREATE TABLE template_versions (
    type_code TEXT NOT NULL REFERENCES licence_types (code),
    version BIGINT NOT NULL,
    template_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (type_code, version)
);

CREATE TABLE catalog_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type_code TEXT NOT NULL,
    actor TEXT NOT NULL,
    change TEXT NOT NULL,
    detail_json TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
