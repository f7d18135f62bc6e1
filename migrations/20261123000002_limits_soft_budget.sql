-- Expand only: teams and users get a soft budget like keys and budgets have (an alert
-- threshold, not enforced). Older control planes ignore the new columns.
ALTER TABLE teams ADD COLUMN IF NOT EXISTS soft_budget double precision;
ALTER TABLE users ADD COLUMN IF NOT EXISTS soft_budget double precision;
