-- Networks (bridge, host, null drivers). Endpoints live in the container records.
CREATE TABLE networks (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    driver    TEXT NOT NULL,
    subnet    TEXT,
    gateway   TEXT,
    bridge    TEXT,
    internal  INTEGER NOT NULL DEFAULT 0,
    labels    TEXT NOT NULL DEFAULT '{}',
    options   TEXT NOT NULL DEFAULT '{}',
    created   TEXT NOT NULL
);
