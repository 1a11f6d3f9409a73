-- Which app registered each token, and so which payloads it reads: the 2017 sample's
-- ('seed', every row before this migration) or Cisco's current KitchenSink
-- ('kitchensink'). KitchenSink sends no e-mail, so the e-mail becomes optional;
-- SQLite cannot drop a NOT NULL in place, so the table is rebuilt.
CREATE TABLE devices_new (
    token           TEXT PRIMARY KEY NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('voip', 'alert')),
    person_uuid     TEXT NOT NULL,
    person_id       TEXT NOT NULL,
    email           TEXT,
    environment     TEXT CHECK (environment IN ('production', 'sandbox')),
    bundle_id       TEXT,
    registered_at   TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_outcome    TEXT,
    last_outcome_at TEXT,
    flavour         TEXT NOT NULL DEFAULT 'seed' CHECK (flavour IN ('seed', 'kitchensink'))
);
INSERT INTO devices_new (token, channel, person_uuid, person_id, email, environment,
        bundle_id, registered_at, updated_at, last_outcome, last_outcome_at, flavour)
    SELECT token, channel, person_uuid, person_id, email, environment, bundle_id,
        registered_at, updated_at, last_outcome, last_outcome_at, 'seed'
    FROM devices;
DROP TABLE devices;
ALTER TABLE devices_new RENAME TO devices;
CREATE INDEX devices_person_channel_idx ON devices (person_uuid, channel);
