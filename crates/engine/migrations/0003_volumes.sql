CREATE TABLE volumes (
    name       TEXT PRIMARY KEY,
    driver     TEXT NOT NULL DEFAULT 'local',
    labels     TEXT NOT NULL DEFAULT '{}',
    options    TEXT NOT NULL DEFAULT '{}',
    anonymous  INTEGER NOT NULL DEFAULT 0,
    created    TEXT NOT NULL
);
