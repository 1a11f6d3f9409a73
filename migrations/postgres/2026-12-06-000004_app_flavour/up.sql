-- Which app registered each token, and so which payloads it reads: the 2017 sample's
-- ('seed', every row before this migration) or Cisco's current KitchenSink
-- ('kitchensink'). KitchenSink sends no e-mail, so the e-mail becomes optional.
ALTER TABLE devices
    ADD COLUMN flavour TEXT NOT NULL DEFAULT 'seed' CHECK (flavour IN ('seed', 'kitchensink')),
    ALTER COLUMN email DROP NOT NULL;
