-- Without the column an FCM token would be read as an APNs one (and is not hex): the
-- Android devices are removed instead (the apps register again against a server that
-- knows FCM).
DELETE FROM devices WHERE provider <> 'apns';
ALTER TABLE devices DROP COLUMN provider;
