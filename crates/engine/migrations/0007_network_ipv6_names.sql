-- IPv6 on bridge networks (EnableIPv6), and network names no longer unique in the schema: an
-- API < 1.44 request with CheckDuplicate false may make a second network of a name, as dockerd
-- 24 did (the engine checks names itself otherwise). SQLite cannot drop a UNIQUE constraint,
-- so the table is rebuilt.
CREATE TABLE networks_new (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    driver      TEXT NOT NULL,
    subnet      TEXT,
    gateway     TEXT,
    bridge      TEXT,
    internal    INTEGER NOT NULL DEFAULT 0,
    labels      TEXT NOT NULL DEFAULT '{}',
    options     TEXT NOT NULL DEFAULT '{}',
    created     TEXT NOT NULL,
    ipam        TEXT NOT NULL DEFAULT '{}',
    enable_ipv6 INTEGER NOT NULL DEFAULT 0
);
INSERT INTO networks_new (id, name, driver, subnet, gateway, bridge, internal, labels, options, created, ipam)
    SELECT id, name, driver, subnet, gateway, bridge, internal, labels, options, created, ipam FROM networks;
DROP TABLE networks;
ALTER TABLE networks_new RENAME TO networks;
CREATE INDEX networks_name ON networks (name);
