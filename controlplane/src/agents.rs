//! The A2A agent registry (`agents`): an agent's endpoint in `url`, the card served for it
//! in `card_json` (JSON text, so a card may hold any text; NULL: the agent's own),
//! `make_public`, `agent_access_groups` and `cost_per_query` in `config`, and the headers
//! sent to it sealed in `auth`, like provider keys. `config.source` says who owns the row
//! (`config`: the imported config file, which replaces its rows on each import, keyed by
//! name; `api`: `/v1/agents`, keyed by a generated id).

use std::collections::BTreeMap;

use routeiq_proto::{A2aAgent, Secret};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgExecutor, Row};

use crate::audit::Actor;
use crate::crypto::SecretBox;
use crate::error::StoreError;

/// `config`: what is not secret.
#[derive(Serialize, Deserialize)]
struct Config {
    #[serde(default)]
    public: bool,
    #[serde(default)]
    access_groups: Vec<String>,
    #[serde(default)]
    cost_per_query: f64,
    source: String,
}

/// `auth`, sealed.
#[derive(Serialize, Deserialize, Default)]
struct Sealed {
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// An agent as stored, with who owns and changed it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub agent: A2aAgent,
    /// `config` or `api`.
    pub source: String,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub created_by: String,
    pub updated_by: String,
}

/// How an API change applies to the stored agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new agent, under a new id.
    Create,
    /// The whole entry replaces the stored one (`PUT`).
    Replace,
    /// The entry's fields replace the stored ones, `null` removing one (`PATCH`).
    Patch,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("agents: {e}"))
}

/// Inserts or replaces an agent (by id).
pub async fn upsert(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
    a: &A2aAgent,
    source: &str,
    actor: &str,
) -> Result<(), StoreError> {
    let config = Config {
        public: a.public,
        access_groups: a.access_groups.clone(),
        cost_per_query: a.cost_per_query,
        source: source.to_owned(),
    };
    let sealed = Sealed {
        headers: a
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect(),
    };
    let sealed = secrets.seal(&serde_json::to_string(&sealed).map_err(corrupt)?)?;
    sqlx::query(
        "INSERT INTO agents (agent_id, name, url, card_json, config, auth, created_by, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (agent_id) DO UPDATE SET
           name = EXCLUDED.name, url = EXCLUDED.url, card_json = EXCLUDED.card_json,
           config = EXCLUDED.config, auth = EXCLUDED.auth, updated_by = EXCLUDED.updated_by,
           updated_at = now()",
    )
    .bind(&a.id)
    .bind(&a.name)
    .bind(&a.url)
    .bind(a.card.as_ref().map(Value::to_string))
    .bind(serde_json::to_value(&config).map_err(corrupt)?)
    .bind(sealed)
    .bind(actor)
    .execute(conn)
    .await
    .map_err(|e| {
        StoreError::on_constraint(
            e,
            [(
                "agents_name_key",
                StoreError::Conflict(format!("an agent named `{}` already exists", a.name)),
            )],
        )
    })?;
    Ok(())
}

pub async fn delete(conn: impl PgExecutor<'_>, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM agents WHERE agent_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every agent, by name.
pub async fn load_all(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
) -> Result<Vec<Stored>, StoreError> {
    load(conn, secrets, None).await
}

/// The agent whose id is `id`, if there is one.
async fn find(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
    id: &str,
) -> Result<Option<Stored>, StoreError> {
    Ok(load(conn, secrets, Some(id)).await?.pop())
}

/// Every agent, or only the one whose id is `only`, by name.
async fn load(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
    only: Option<&str>,
) -> Result<Vec<Stored>, StoreError> {
    let rows = sqlx::query(
        "SELECT agent_id, name, url, card_json, config, auth, created_by, updated_by,
                EXTRACT(EPOCH FROM created_at)::bigint AS created_at,
                EXTRACT(EPOCH FROM updated_at)::bigint AS updated_at
           FROM agents WHERE $1::text IS NULL OR agent_id = $1 ORDER BY name",
    )
    .bind(only)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let config: Config = serde_json::from_value(r.try_get("config")?).map_err(corrupt)?;
            let sealed: Sealed = match r.try_get::<Option<Vec<u8>>, _>("auth")? {
                Some(b) => serde_json::from_str(&secrets.open(&b)?).map_err(corrupt)?,
                None => Sealed::default(),
            };
            let card = match r.try_get::<Option<String>, _>("card_json")? {
                Some(text) => Some(serde_json::from_str(&text).map_err(corrupt)?),
                None => None,
            };
            let agent = A2aAgent {
                id: r.try_get("agent_id")?,
                name: r.try_get("name")?,
                url: r.try_get("url")?,
                card,
                headers: sealed
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, Secret::new(v)))
                    .collect(),
                public: config.public,
                access_groups: config.access_groups,
                cost_per_query: config.cost_per_query,
            };
            Ok(Stored {
                agent,
                source: config.source,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
                created_by: r.try_get("created_by")?,
                updated_by: r.try_get("updated_by")?,
            })
        })
        .collect()
}

/// An agent as the audit log records it: everything but its headers' values, and U+0000 in
/// its card (which jsonb cannot hold) as U+FFFD.
fn redacted(a: &A2aAgent) -> Value {
    fn printable(v: Value) -> Value {
        let text = |s: String| {
            if s.contains('\0') {
                s.replace('\0', "\u{FFFD}")
            } else {
                s
            }
        };
        match v {
            Value::String(s) => Value::String(text(s)),
            Value::Array(items) => Value::Array(items.into_iter().map(printable).collect()),
            Value::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (text(k), printable(v)))
                    .collect(),
            ),
            other => other,
        }
    }
    printable(routeiq_proto::litellm::agent_entry(a, false))
}

/// An agent change through the API (`source = 'api'`): `entry` is LiteLLM's `/v1/agents`
/// body (`agent_name`, `agent_card_params`, `litellm_params`, `agent_access_groups`), checked
/// like a config entry, stored, audited and sent to data planes as one delta. `id`: the
/// agent changed (ignored on create, which draws a new one). Returns the stored agent, the
/// ignored fields and the version.
pub async fn save(
    pool: &sqlx::PgPool,
    secrets: &SecretBox,
    actor: &Actor,
    id: &str,
    entry: &Value,
    change: Change,
) -> Result<(Stored, Vec<String>, u64), StoreError> {
    let Value::Object(given) = entry else {
        return Err(StoreError::Invalid(
            "the agent must be a JSON object".into(),
        ));
    };
    let mut tx = pool.begin().await?;
    crate::deployments::lock(&mut tx).await?;
    let (id, before) = match change {
        Change::Create => (crate::crypto::new_id()?, None),
        Change::Replace | Change::Patch => {
            let before = find(&mut *tx, secrets, id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("agent `{id}` not found")))?;
            (id.to_owned(), Some(before))
        }
    };
    if let Some(b) = &before {
        if b.source == "config" {
            return Err(StoreError::Conflict(format!(
                "agent `{id}` comes from the config file: change it there"
            )));
        }
    }
    let merged = match (&before, change) {
        (Some(old), Change::Patch) => {
            let Value::Object(mut e) = routeiq_proto::litellm::agent_entry(&old.agent, true) else {
                return Err(corrupt(format!("entry of `{id}`")));
            };
            for (k, v) in given {
                if v.is_null() {
                    e.remove(k);
                } else {
                    e.insert(k.clone(), v.clone());
                }
            }
            Value::Object(e)
        }
        _ => entry.clone(),
    };
    let (agent, warnings) =
        routeiq_proto::litellm::compile_agent(&id, &merged, &|v| std::env::var(v).ok()).map_err(
            |(at, m)| {
                StoreError::Invalid(if at.is_empty() {
                    m
                } else {
                    format!("{at}: {m}")
                })
            },
        )?;
    upsert(&mut *tx, secrets, &agent, "api", &actor.id).await?;
    let version = crate::changes::append(
        &mut tx,
        vec![routeiq_proto::DeltaOp::UpsertAgent(agent.clone())],
    )
    .await?;
    crate::audit::record(
        &mut *tx,
        actor,
        crate::audit::Entry {
            action: if change == Change::Create {
                "agent.create"
            } else {
                "agent.update"
            },
            object_type: "agent",
            object_id: &id,
            before: before.as_ref().map(|b| redacted(&b.agent)),
            after: Some(redacted(&agent)),
            snapshot_version: Some(version),
        },
    )
    .await?;
    let stored = find(&mut *tx, secrets, &id)
        .await?
        .ok_or_else(|| corrupt(format!("`{id}` vanished")))?;
    tx.commit().await?;
    Ok((stored, warnings, version))
}

/// Deletes an agent made through the API, as one delta.
pub async fn remove(
    pool: &sqlx::PgPool,
    secrets: &SecretBox,
    actor: &Actor,
    id: &str,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    crate::deployments::lock(&mut tx).await?;
    let before = find(&mut *tx, secrets, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("agent `{id}` not found")))?;
    if before.source == "config" {
        return Err(StoreError::Conflict(format!(
            "agent `{id}` comes from the config file: remove it there"
        )));
    }
    delete(&mut *tx, id).await?;
    let version = crate::changes::append(
        &mut tx,
        vec![routeiq_proto::DeltaOp::DeleteAgent(id.to_owned())],
    )
    .await?;
    crate::audit::deletions(
        &mut tx,
        actor,
        "agent",
        &[id.to_owned()],
        vec![redacted(&before.agent)],
        version,
    )
    .await?;
    tx.commit().await?;
    Ok(version)
}
