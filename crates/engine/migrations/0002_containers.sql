-- Containers: the whole record (config, host config, state) as JSON; name kept unique.
CREATE TABLE containers (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    record  TEXT NOT NULL
);
