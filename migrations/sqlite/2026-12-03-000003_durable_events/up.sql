-- Who recorded each event, and, until it is relayed, what is needed to relay it after
-- a restart: the event (JSON), its deadline, and the process holding it. `event` is
-- cleared once the event is relayed. UUIDs are hyphenated lowercase text, times as in
-- `devices`.
ALTER TABLE seen_events ADD COLUMN job TEXT;
ALTER TABLE seen_events ADD COLUMN event TEXT;
ALTER TABLE seen_events ADD COLUMN deliver_by TEXT;
ALTER TABLE seen_events ADD COLUMN holder TEXT;

CREATE INDEX seen_events_unfinished_idx ON seen_events (deliver_by) WHERE event IS NOT NULL;

CREATE TABLE replicas (
    id       TEXT PRIMARY KEY NOT NULL,
    alive_at TEXT NOT NULL
);
