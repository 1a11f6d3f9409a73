-- Webhook events already handled, so a re-delivery (or another replica) does not push twice.
CREATE TABLE seen_events (
    key     TEXT PRIMARY KEY NOT NULL,
    seen_at TEXT NOT NULL
);

-- Pruning deletes by age.
CREATE INDEX seen_events_seen_at_idx ON seen_events (seen_at);
