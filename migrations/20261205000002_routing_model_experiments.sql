-- Expand only: shadow and A/B evaluation of routing-model versions, and feedback on answers.
-- A version not serving may be in one experiment `mode`: `shadow` (it decides every
-- learned-routed request too, never acted on) or `ab` (it decides `share` of the clients,
-- sticky per end user or per key); at most one version is in each mode. `routing_feedback`
-- holds one score in [0, 1] per request (a later one replaces it), joined to `spend_logs`
-- by `request_id` for the per-version report. Older control planes ignore both.
ALTER TABLE routing_model_versions ADD COLUMN IF NOT EXISTS mode text
    CHECK (mode IN ('shadow', 'ab'));
ALTER TABLE routing_model_versions ADD COLUMN IF NOT EXISTS share double precision
    CHECK (share > 0 AND share < 1);
ALTER TABLE routing_model_versions ADD COLUMN IF NOT EXISTS sticky text
    CHECK (sticky IN ('user', 'key'));

DO $$
BEGIN
    -- `share` and `sticky` belong to an A/B version, which has both.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'routing_model_versions'::regclass
                      AND conname = 'routing_model_versions_ab_settings') THEN
        ALTER TABLE routing_model_versions ADD CONSTRAINT routing_model_versions_ab_settings
            CHECK ((mode IS NOT DISTINCT FROM 'ab') = (share IS NOT NULL)
               AND (mode IS NOT DISTINCT FROM 'ab') = (sticky IS NOT NULL));
    END IF;
    -- The serving version is not also under evaluation.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = 'routing_model_versions'::regclass
                      AND conname = 'routing_model_versions_active_or_mode') THEN
        ALTER TABLE routing_model_versions ADD CONSTRAINT routing_model_versions_active_or_mode
            CHECK (NOT (active AND mode IS NOT NULL));
    END IF;
END
$$;

CREATE UNIQUE INDEX IF NOT EXISTS routing_model_versions_one_per_mode
    ON routing_model_versions (mode) WHERE mode IS NOT NULL;

CREATE TABLE IF NOT EXISTS routing_feedback (
    request_id text PRIMARY KEY,
    score      double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    comment    text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One serving version at a time, of any strategy (the gateway routes with one): earlier
-- releases kept one active per strategy. Keep the one the gateway's router settings pin,
-- else the most recent, and enforce it.
UPDATE routing_model_versions v SET active = false
 WHERE v.active
   AND v.id <> COALESCE(
       (SELECT r.id FROM routing_model_versions r, settings s
         WHERE s.name = 'gateway' AND r.active
           AND 'llmrouter-' || r.strategy = s.value #>> '{router,routing_strategy}'
           AND r.sha256 = s.value #>> '{router,routing_strategy_args,model_sha256}'
         ORDER BY r.id DESC LIMIT 1),
       (SELECT max(id) FROM routing_model_versions WHERE active));
CREATE UNIQUE INDEX IF NOT EXISTS routing_model_versions_one_serving
    ON routing_model_versions ((true)) WHERE active;
