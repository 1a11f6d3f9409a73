DROP TABLE replicas;
DROP INDEX seen_events_unfinished_idx;
ALTER TABLE seen_events DROP COLUMN holder;
ALTER TABLE seen_events DROP COLUMN deliver_by;
ALTER TABLE seen_events DROP COLUMN event;
ALTER TABLE seen_events DROP COLUMN job;
