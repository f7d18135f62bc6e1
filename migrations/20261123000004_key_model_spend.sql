-- Expand only: the spend of keys with `model_max_budget` (LiteLLM's per-model key budgets)
-- on each of those models, in windows of the entry's `time_period` (`reset_at`; NULL: a
-- lifetime budget, or a window not started yet). Older control planes ignore the table.
CREATE TABLE IF NOT EXISTS key_model_spend (
    key_hash  bytea NOT NULL REFERENCES virtual_keys (key_hash) ON DELETE CASCADE ON UPDATE CASCADE,
    model     text NOT NULL,
    spend     double precision NOT NULL DEFAULT 0,
    reset_at  timestamptz,
    PRIMARY KEY (key_hash, model)
);
CREATE INDEX IF NOT EXISTS key_model_spend_reset ON key_model_spend (reset_at);
