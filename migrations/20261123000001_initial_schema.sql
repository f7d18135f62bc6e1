-- RouteIQ control-plane schema, first release.
-- Rolling-deploy rule for later migrations: expand/contract. Add columns and tables in one
-- release; stop using a column in the next; drop it only in the release after that.

CREATE TABLE organizations (
    organization_id    text PRIMARY KEY,
    organization_alias text NOT NULL DEFAULT '',
    budget_id          text,
    models             text[] NOT NULL DEFAULT '{}',
    spend              double precision NOT NULL DEFAULT 0,
    metadata           jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE budgets (
    budget_id             text PRIMARY KEY,
    max_budget            double precision,
    soft_budget           double precision,
    max_parallel_requests bigint,
    tpm_limit             bigint,
    rpm_limit             bigint,
    budget_duration       text,
    budget_reset_at       timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE teams (
    team_id               text PRIMARY KEY,
    team_alias            text NOT NULL DEFAULT '',
    organization_id       text REFERENCES organizations (organization_id) ON DELETE SET NULL,
    models                text[] NOT NULL DEFAULT '{}',
    max_budget            double precision,
    spend                 double precision NOT NULL DEFAULT 0,
    budget_duration       text,
    budget_reset_at       timestamptz,
    rpm_limit             bigint,
    tpm_limit             bigint,
    max_parallel_requests bigint,
    blocked               boolean NOT NULL DEFAULT false,
    metadata              jsonb NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    user_id               text PRIMARY KEY,
    user_email            text,
    user_role             text NOT NULL DEFAULT 'internal_user'
        CHECK (user_role IN ('proxy_admin', 'proxy_admin_viewer', 'internal_user', 'internal_user_viewer')),
    organization_id       text REFERENCES organizations (organization_id) ON DELETE SET NULL,
    models                text[] NOT NULL DEFAULT '{}',
    max_budget            double precision,
    spend                 double precision NOT NULL DEFAULT 0,
    budget_duration       text,
    budget_reset_at       timestamptz,
    rpm_limit             bigint,
    tpm_limit             bigint,
    max_parallel_requests bigint,
    metadata              jsonb NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(user_email)) WHERE user_email IS NOT NULL;

CREATE TABLE team_memberships (
    team_id    text NOT NULL REFERENCES teams (team_id) ON DELETE CASCADE,
    user_id    text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    role       text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    budget_id  text REFERENCES budgets (budget_id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_memberships_user ON team_memberships (user_id);

-- Virtual keys: only the SHA-256 of the key is stored.
CREATE TABLE virtual_keys (
    key_hash              bytea PRIMARY KEY CHECK (octet_length(key_hash) = 32),
    key_name              text NOT NULL,            -- "sk-...abcd", for display
    key_alias             text,
    team_id               text REFERENCES teams (team_id) ON DELETE SET NULL,
    user_id               text REFERENCES users (user_id) ON DELETE SET NULL,
    organization_id       text REFERENCES organizations (organization_id) ON DELETE SET NULL,
    models                text[] NOT NULL DEFAULT '{}',
    max_budget            double precision,
    soft_budget           double precision,
    spend                 double precision NOT NULL DEFAULT 0,
    budget_duration       text,
    budget_reset_at       timestamptz,
    model_max_budget      jsonb NOT NULL DEFAULT '{}',
    rpm_limit             bigint,
    tpm_limit             bigint,
    max_parallel_requests bigint,
    expires_at            timestamptz,
    blocked               boolean NOT NULL DEFAULT false,
    metadata              jsonb NOT NULL DEFAULT '{}',
    tags                  text[] NOT NULL DEFAULT '{}',
    created_by            text NOT NULL DEFAULT '',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX virtual_keys_alias ON virtual_keys (key_alias) WHERE key_alias IS NOT NULL;
CREATE INDEX virtual_keys_team ON virtual_keys (team_id);
CREATE INDEX virtual_keys_user ON virtual_keys (user_id);
CREATE INDEX virtual_keys_reset ON virtual_keys (budget_reset_at) WHERE budget_reset_at IS NOT NULL;

-- Credentials and deployment secrets are encrypted at rest (AES-256-GCM under a key derived
-- from the salt key); `nonce || ciphertext` in one column.
CREATE TABLE credentials (
    credential_name   text PRIMARY KEY,
    credential_values bytea NOT NULL,
    credential_info   jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_deployments (
    model_id        text PRIMARY KEY,
    model_name      text NOT NULL,
    provider        text NOT NULL,
    upstream_model  text NOT NULL,
    api_base        text NOT NULL DEFAULT '',
    api_key         bytea,                        -- encrypted
    credential_name text REFERENCES credentials (credential_name) ON DELETE RESTRICT,
    litellm_params  jsonb NOT NULL DEFAULT '{}',  -- everything else, no secrets
    model_info      jsonb NOT NULL DEFAULT '{}',
    source          text NOT NULL DEFAULT 'api' CHECK (source IN ('config', 'api')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_deployments_name ON model_deployments (model_name);

-- Gateway-wide settings imported from config.yaml (general_settings, router_settings, ...).
CREATE TABLE settings (
    name       text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Request-level spend log, partitioned by month so it stays fast at tens of millions of
-- rows: recent partitions stay hot, old ones can be detached and archived. The primary key
-- (request_id, started_at) makes ingestion idempotent: a redelivered event carries the same
-- request id and start time.
CREATE TABLE spend_logs (
    request_id        text NOT NULL,
    started_at        timestamptz NOT NULL,
    key_hash          bytea,
    team_id           text,
    user_id           text,
    model_group       text NOT NULL DEFAULT '',
    deployment_id     text NOT NULL DEFAULT '',
    provider          text NOT NULL DEFAULT '',
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost              double precision NOT NULL DEFAULT 0,
    latency_ms        bigint NOT NULL DEFAULT 0,
    status            integer NOT NULL DEFAULT 0,
    dataplane_id      text NOT NULL DEFAULT '',
    ingested_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, started_at)
) PARTITION BY RANGE (started_at);
CREATE TABLE spend_logs_default PARTITION OF spend_logs DEFAULT;
CREATE INDEX spend_logs_key_time ON spend_logs (key_hash, started_at);
CREATE INDEX spend_logs_team_time ON spend_logs (team_id, started_at);
CREATE INDEX spend_logs_model_time ON spend_logs (model_group, started_at);

-- Daily aggregates, updated in the same transaction as the spend log rows they summarise.
CREATE TABLE daily_spend (
    day               date NOT NULL,
    key_hash          bytea NOT NULL DEFAULT '\x'::bytea,
    team_id           text NOT NULL DEFAULT '',
    user_id           text NOT NULL DEFAULT '',
    model_group       text NOT NULL DEFAULT '',
    requests          bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    spend             double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (day, key_hash, team_id, user_id, model_group)
);

-- A2A agents, MCP servers and skills: registries filled by later releases' APIs.
CREATE TABLE agents (
    agent_id   text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    url        text NOT NULL,
    card       jsonb NOT NULL DEFAULT '{}',
    team_id    text REFERENCES teams (team_id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE mcp_servers (
    server_id  text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    url        text NOT NULL,
    transport  text NOT NULL DEFAULT 'http' CHECK (transport IN ('http', 'sse', 'stdio')),
    auth       bytea,                         -- encrypted
    config     jsonb NOT NULL DEFAULT '{}',
    team_id    text REFERENCES teams (team_id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE skills (
    skill_id    text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    definition  jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE routing_model_versions (
    id           bigserial PRIMARY KEY,
    strategy     text NOT NULL,
    artifact_uri text NOT NULL,
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    metrics      jsonb NOT NULL DEFAULT '{}',
    active       boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX routing_model_versions_one_active ON routing_model_versions (strategy) WHERE active;

-- Every config.yaml import, by content hash.
CREATE TABLE config_versions (
    id          bigserial PRIMARY KEY,
    sha256      text NOT NULL UNIQUE,
    source      text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now()
);

-- Every mutation: who, what, when, from where.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    source_ip   text NOT NULL DEFAULT '',
    action      text NOT NULL,
    object_type text NOT NULL,
    object_id   text NOT NULL,
    before      jsonb,
    after       jsonb,
    snapshot_version bigint
);
CREATE INDEX audit_log_actor_at ON audit_log (actor, at);
CREATE INDEX audit_log_action_at ON audit_log (action, at);

-- The snapshot change log (transactional outbox). A mutation appends its delta here in the
-- same transaction, under an advisory lock, so versions are gap-free and commit in order;
-- the publisher sends unpublished rows to JetStream in version order.
CREATE TABLE snapshot_deltas (
    version      bigint PRIMARY KEY,
    ops          bytea NOT NULL,                  -- routeiq.v1.SnapshotDelta
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    stream_seq   bigint
);
CREATE INDEX snapshot_deltas_unpublished ON snapshot_deltas (version) WHERE published_at IS NULL;
