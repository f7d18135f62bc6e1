-- Expand only: a deployment's secret provider settings (`vertex_credentials`, ...), as one
-- JSON object sealed like `api_key`. NULL: none. Older control planes ignore the column.
ALTER TABLE model_deployments ADD COLUMN IF NOT EXISTS secret_params bytea;
