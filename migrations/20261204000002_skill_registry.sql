-- Expand only: the skill registry (/v1/skills). `skills` (from the initial schema) gains its
-- label and authors (its `description` column stays unused: a skill's description is its
-- latest version's); each version's bundle lies in the object store under `object_key`,
-- with the SKILL.md front matter's name and description and the files' directory; `skill_copies` records each version
-- uploaded to each Anthropic deployment under that provider's ids, and a fingerprint of the
-- deployment's address and key, so a changed account gets a new copy. Older control planes
-- ignore the new columns and tables.
ALTER TABLE skills ADD COLUMN IF NOT EXISTS display_name text NOT NULL DEFAULT '';
ALTER TABLE skills ADD COLUMN IF NOT EXISTS created_by text NOT NULL DEFAULT '';
ALTER TABLE skills ADD COLUMN IF NOT EXISTS updated_by text NOT NULL DEFAULT '';

CREATE TABLE IF NOT EXISTS skill_versions (
    skill_id    text NOT NULL REFERENCES skills (skill_id) ON DELETE CASCADE,
    version     text NOT NULL,
    name        text NOT NULL,
    description text NOT NULL,
    directory   text NOT NULL,
    object_key  text NOT NULL,
    size        bigint NOT NULL,
    sha256      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (skill_id, version)
);

CREATE TABLE IF NOT EXISTS skill_copies (
    skill_id          text NOT NULL,
    version           text NOT NULL,
    deployment_id     text NOT NULL,
    account           text NOT NULL,
    upstream_skill_id text NOT NULL,
    upstream_version  text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (skill_id, version, deployment_id),
    FOREIGN KEY (skill_id, version) REFERENCES skill_versions (skill_id, version) ON DELETE CASCADE
);
