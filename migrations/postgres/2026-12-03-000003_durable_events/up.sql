-- Who recorded each event, and, until it is relayed, what another replica needs to
-- relay it should the one that accepted it stop: the event (JSON), its deadline, and
-- the replica holding it. `event` is cleared once the event is relayed.
ALTER TABLE seen_events
    ADD COLUMN job UUID,
    ADD COLUMN event TEXT,
    ADD COLUMN deliver_by TIMESTAMPTZ,
    ADD COLUMN holder UUID;

-- Taking over looks for unfinished events only: a small part of the table.
CREATE INDEX seen_events_unfinished_idx ON seen_events (deliver_by) WHERE event IS NOT NULL;

-- Each running replica says it is alive every few seconds; the unfinished events of a
-- replica that stopped saying so are taken over by another.
CREATE TABLE replicas (
    id       UUID PRIMARY KEY,
    alive_at TIMESTAMPTZ NOT NULL
);
