-- Expand only: the end user a request was made for (general_settings.user_header_name, or
-- the request body's `user`), as LiteLLM records it. Older control planes leave it NULL.
ALTER TABLE spend_logs ADD COLUMN IF NOT EXISTS end_user text;
CREATE INDEX IF NOT EXISTS spend_logs_end_user_time ON spend_logs (end_user, started_at);
