-- Expand only: the MCP part of LiteLLM's `object_permission` on keys, teams and
-- organizations ({"mcp_servers": [...], "mcp_access_groups": [...],
-- "mcp_tool_permissions": {"<server>": [...]}}). NULL: none. Older control planes ignore
-- the columns.
ALTER TABLE virtual_keys ADD COLUMN IF NOT EXISTS object_permission jsonb;
ALTER TABLE teams ADD COLUMN IF NOT EXISTS object_permission jsonb;
ALTER TABLE organizations ADD COLUMN IF NOT EXISTS object_permission jsonb;
