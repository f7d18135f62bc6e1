-- Expand only: whether the response cache answered a request (its cost is then 0), and
-- what the cached answer cost when it was made: what the hit saved. Older control planes
-- leave the defaults.
ALTER TABLE spend_logs ADD COLUMN IF NOT EXISTS cache_hit boolean NOT NULL DEFAULT false;
ALTER TABLE spend_logs ADD COLUMN IF NOT EXISTS saved_cost double precision NOT NULL DEFAULT 0;
