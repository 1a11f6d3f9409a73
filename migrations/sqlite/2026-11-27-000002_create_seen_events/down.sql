DROP INDEX seen_events_seen_at_idx;
DROP TABLE seen_events;
