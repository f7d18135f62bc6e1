//! Imports a LiteLLM `config.yaml` into PostgreSQL at startup, idempotently: deployments
//! from the file are upserted (`source = 'config'`), config deployments no longer in the
//! file are removed, credentials from `credential_list` are stored (encrypted) when new or
//! changed, MCP servers and agents are upserted and removed like deployments, settings are
//! replaced, and one snapshot delta records what actually changed. Importing the same file
//! again changes nothing and appends no delta. A config agent whose name an agent made
//! through the API already has is skipped, with a warning: the API's stays.

use std::collections::BTreeMap;

use routeiq_proto::litellm::Loaded;
use routeiq_proto::DeltaOp;
use sqlx::PgPool;

use crate::crypto::SecretBox;
use crate::error::StoreError;
use crate::{agents, changes, deployments, mcp_servers, settings};

/// What an import did.
#[derive(Debug, PartialEq, Eq)]
pub struct Imported {
    pub upserted: usize,
    /// Credentials stored because they were new or changed.
    pub credentials: usize,
    pub removed: usize,
    pub settings_changed: bool,
    /// The new snapshot version, when anything changed.
    pub version: Option<u64>,
}

pub async fn import(
    pool: &PgPool,
    secrets: &SecretBox,
    loaded: &Loaded,
    source: &str,
) -> Result<Imported, StoreError> {
    let (config, credentials) = (&loaded.snapshot, &loaded.credentials);
    let mut tx = pool.begin().await?;
    deployments::lock(&mut tx).await?;
    sqlx::query(
        "INSERT INTO config_versions (sha256, source) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&loaded.sha256)
    .bind(source)
    .execute(&mut *tx)
    .await?;
    let mut stored_credentials = 0;
    for c in credentials {
        let values: BTreeMap<String, String> = c
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect();
        let current = deployments::credential_values(&mut *tx, secrets, &c.name).await?;
        if current.as_ref() != Some(&(values.clone(), c.info.clone())) {
            deployments::put_credential(&mut *tx, secrets, &c.name, &values, &c.info).await?;
            stored_credentials += 1;
        }
    }
    let existing: BTreeMap<String, _> = deployments::load_all(&mut *tx, secrets)
        .await?
        .into_iter()
        .map(|(d, src)| (d.id.0.clone(), (d, src)))
        .collect();
    let mut ops = Vec::new();
    let mut upserted = 0;
    for d in &config.deployments {
        let same = existing
            .get(&d.id.0)
            .is_some_and(|(old, src)| old == d && src == "config");
        if !same {
            deployments::upsert(&mut *tx, secrets, d, "config").await?;
            ops.push(DeltaOp::UpsertDeployment(d.clone()));
            upserted += 1;
        }
    }
    let mut removed = 0;
    for (id, (_, src)) in &existing {
        if src == "config" && !config.deployments.iter().any(|d| &d.id.0 == id) {
            sqlx::query("DELETE FROM model_deployments WHERE model_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            ops.push(DeltaOp::DeleteDeployment(routeiq_proto::DeploymentId(
                id.clone(),
            )));
            removed += 1;
        }
    }
    let stored: BTreeMap<String, _> = mcp_servers::load_all(&mut *tx, secrets)
        .await?
        .into_iter()
        .map(|(m, src)| (m.name.clone(), (m, src)))
        .collect();
    for m in &config.mcp_servers {
        let same = stored
            .get(&m.name)
            .is_some_and(|(old, src)| old == m && src == "config");
        if !same {
            mcp_servers::upsert(&mut *tx, secrets, m, "config").await?;
            ops.push(DeltaOp::UpsertMcpServer(m.clone()));
            upserted += 1;
        }
    }
    for (name, (_, src)) in &stored {
        if src == "config" && !config.mcp_servers.iter().any(|m| &m.name == name) {
            mcp_servers::delete(&mut *tx, name).await?;
            ops.push(DeltaOp::DeleteMcpServer(name.clone()));
            removed += 1;
        }
    }
    let stored = agents::load_all(&mut *tx, secrets).await?;
    for a in &config.agents {
        match stored.iter().find(|s| s.agent.name == a.name) {
            Some(s) if s.source != "config" => {
                tracing::warn!(
                    agent = %a.name,
                    id = %s.agent.id,
                    "agents: not imported: an agent made through the API has this name"
                );
            }
            Some(s) if &s.agent == a => {}
            _ => {
                agents::upsert(&mut *tx, secrets, a, "config", "config-import").await?;
                ops.push(DeltaOp::UpsertAgent(a.clone()));
                upserted += 1;
            }
        }
    }
    for s in &stored {
        if s.source == "config" && !config.agents.iter().any(|a| a.id == s.agent.id) {
            agents::delete(&mut *tx, &s.agent.id).await?;
            ops.push(DeltaOp::DeleteAgent(s.agent.id.clone()));
            removed += 1;
        }
    }
    let new_settings = config.settings();
    let settings_changed = settings::load(&mut *tx).await? != new_settings;
    if settings_changed {
        settings::store(&mut *tx, &new_settings).await?;
        ops.push(DeltaOp::Settings(new_settings));
    }
    let version = if ops.is_empty() {
        None
    } else {
        Some(changes::append(&mut tx, ops).await?)
    };
    sqlx::query(
        "INSERT INTO audit_log (actor, action, object_type, object_id, after, snapshot_version)
         VALUES ('config-import', 'config.import', 'config', $1, $2, $3)",
    )
    .bind(source)
    .bind(serde_json::json!({"sha256": loaded.sha256, "upserted": upserted, "removed": removed, "credentials": stored_credentials, "settings_changed": settings_changed}))
    .bind(version.map(|v| v as i64))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Imported {
        upserted,
        credentials: stored_credentials,
        removed,
        settings_changed,
        version,
    })
}
