-- Expand only: which learned-router version decided a request (its manifest sha256, the
-- arm: 'serving' or 'ab', and the candidate it chose), and what the shadow version would
-- have chosen. Older control planes and requests no learned model decided leave NULL.
ALTER TABLE spend_logs ADD COLUMN IF NOT EXISTS router_sha256 text;
ALTER TABLE spend_logs ADD COLUMN IF NOT EXISTS router_arm text;
ALTER TABLE spend_logs ADD COLUMN IF NOT EXISTS router_candidate text;
ALTER TABLE spend_logs ADD COLUMN IF NOT EXISTS shadow_sha256 text;
ALTER TABLE spend_logs ADD COLUMN IF NOT EXISTS shadow_candidate text;
