-- Images, their layers, tags and repo digests. Content itself lives in the blob store by digest.
CREATE TABLE layers (
    diff_id      TEXT PRIMARY KEY,          -- sha256 of the uncompressed tar
    blob_digest  TEXT,                      -- compressed blob as pulled/pushed (NULL if unknown)
    blob_size    INTEGER,
    media_type   TEXT,
    size         INTEGER NOT NULL           -- bytes of unpacked content
);

CREATE TABLE images (
    id          TEXT PRIMARY KEY,           -- sha256:<hex of config JSON>
    config      TEXT NOT NULL,              -- the image config JSON, verbatim
    created     INTEGER NOT NULL,           -- unix seconds from config.created
    size        INTEGER NOT NULL,
    parent      TEXT,                       -- local parent image (builds, commits)
    manifest    TEXT,                       -- manifest as pulled (for push/save), may be NULL
    added_at    INTEGER NOT NULL
);

CREATE TABLE image_layers (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL,
    diff_id  TEXT NOT NULL REFERENCES layers(diff_id),
    PRIMARY KEY (image_id, idx)
);
CREATE INDEX image_layers_diff ON image_layers(diff_id);

-- A tag: normalized "registry/repo:tag" -> image.
CREATE TABLE tags (
    name     TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE INDEX tags_image ON tags(image_id);

-- A repo digest: normalized "registry/repo@sha256:..." -> image.
CREATE TABLE repo_digests (
    name     TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE INDEX repo_digests_image ON repo_digests(image_id);
