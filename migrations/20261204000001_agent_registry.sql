-- Expand only: what the A2A agent registry (/v1/agents, config.yaml `agents:`) keeps beside
-- the columns the initial schema made. `config`: what is not secret (make_public,
-- agent_access_groups, and who owns the row: "config" or "api"); `auth`: the headers sent to
-- the agent, sealed like provider keys; `card_json`: the card served for it, as JSON text
-- (NULL: the agent's own), since jsonb cannot hold a card's U+0000 and the initial
-- `card` column is jsonb (unused, dropped by a later release). Older control planes ignore
-- the columns.
ALTER TABLE agents ADD COLUMN IF NOT EXISTS config jsonb NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN IF NOT EXISTS auth bytea;
ALTER TABLE agents ADD COLUMN IF NOT EXISTS card_json text;
ALTER TABLE agents ADD COLUMN IF NOT EXISTS created_by text NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN IF NOT EXISTS updated_by text NOT NULL DEFAULT '';
