-- Which push service issued each token: APNs ('apns', every row before this migration)
-- or FCM ('fcm', Android apps). An FCM token is opaque text and serves every push on
-- its one channel, 'alert'.
ALTER TABLE devices
    ADD COLUMN provider TEXT NOT NULL DEFAULT 'apns' CHECK (provider IN ('apns', 'fcm'));
