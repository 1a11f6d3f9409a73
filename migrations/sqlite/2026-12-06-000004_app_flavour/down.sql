-- Without the column a KitchenSink token would get the seed's pushes, and a VoIP push
-- KitchenSink cannot report to CallKit gets the app killed by iOS: its tokens are
-- removed instead (the app registers them again against a server that knows it).
-- Only KitchenSink rows lack an e-mail, so NOT NULL holds again afterwards.
CREATE TABLE devices_old (
    token           TEXT PRIMARY KEY NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('voip', 'alert')),
    person_uuid     TEXT NOT NULL,
    person_id       TEXT NOT NULL,
    email           TEXT NOT NULL,
    environment     TEXT CHECK (environment IN ('production', 'sandbox')),
    bundle_id       TEXT,
    registered_at   TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_outcome    TEXT,
    last_outcome_at TEXT
);
INSERT INTO devices_old (token, channel, person_uuid, person_id, email, environment,
        bundle_id, registered_at, updated_at, last_outcome, last_outcome_at)
    SELECT token, channel, person_uuid, person_id, email, environment, bundle_id,
        registered_at, updated_at, last_outcome, last_outcome_at
    FROM devices WHERE flavour = 'seed';
DROP TABLE devices;
ALTER TABLE devices_old RENAME TO devices;
CREATE INDEX devices_person_channel_idx ON devices (person_uuid, channel);
