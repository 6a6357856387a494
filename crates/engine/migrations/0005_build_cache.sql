-- The classic builder's cache: (parent image, step key) → the image that step produced.
CREATE TABLE build_cache (
    parent   TEXT NOT NULL,
    key      TEXT NOT NULL,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    PRIMARY KEY (parent, key)
);
