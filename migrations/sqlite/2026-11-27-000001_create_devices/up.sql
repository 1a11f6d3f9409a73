-- One row per APNs device token. A person may own any number of tokens per channel.
-- Times are ISO-8601 text in UTC ("YYYY-MM-DD HH:MM:SS[.ffffff]+00:00"), which sorts
-- chronologically, so comparisons and the indexes work on the text.
CREATE TABLE devices (
    token           TEXT PRIMARY KEY NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('voip', 'alert')),
    -- The normalised Webex person: the hyphenated lowercase UUID.
    person_uuid     TEXT NOT NULL,
    -- The person id exactly as the app sent it, for display and echoing back.
    person_id       TEXT NOT NULL,
    email           TEXT NOT NULL,
    environment     TEXT CHECK (environment IN ('production', 'sandbox')),
    bundle_id       TEXT,
    registered_at   TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_outcome    TEXT,
    last_outcome_at TEXT
);

-- The hot query: the tokens of one person on one channel.
CREATE INDEX devices_person_channel_idx ON devices (person_uuid, channel);
