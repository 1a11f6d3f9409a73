-- One row per APNs device token. A person may own any number of tokens per channel.
CREATE TABLE devices (
    token           TEXT PRIMARY KEY,
    channel         TEXT NOT NULL CHECK (channel IN ('voip', 'alert')),
    -- The normalised Webex person (the UUID inside every spelling of the id).
    person_uuid     UUID NOT NULL,
    -- The person id exactly as the app sent it, for display and echoing back.
    person_id       TEXT NOT NULL,
    email           TEXT NOT NULL,
    environment     TEXT CHECK (environment IN ('production', 'sandbox')),
    bundle_id       TEXT,
    registered_at   TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    last_outcome    TEXT,
    last_outcome_at TIMESTAMPTZ
);

-- The hot query: the tokens of one person on one channel.
CREATE INDEX devices_person_channel_idx ON devices (person_uuid, channel);
