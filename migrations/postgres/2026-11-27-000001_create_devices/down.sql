DROP INDEX devices_person_channel_idx;
DROP TABLE devices;
