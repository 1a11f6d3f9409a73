DROP TABLE replicas;
DROP INDEX seen_events_unfinished_idx;
ALTER TABLE seen_events
    DROP COLUMN job,
    DROP COLUMN event,
    DROP COLUMN deliver_by,
    DROP COLUMN holder;
