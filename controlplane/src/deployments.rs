//! Model deployments in `model_deployments`: the snapshot's `Deployment`s, with the API key
//! encrypted at rest.

use std::collections::BTreeMap;
use std::time::Duration;

use routeiq_proto::{Deployment, DeploymentId, ModelInfo, ProviderKind, ProviderSettings, Secret};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgExecutor, Row};

use crate::crypto::SecretBox;
use crate::error::StoreError;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Params {
    api_version: Option<String>,
    timeout_seconds: Option<f64>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    weight: Option<f64>,
    mock_response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream_timeout_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    /// Plain provider settings (`vertex_project`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    provider: BTreeMap<String, String>,
}

fn json<T: Serialize>(v: &T) -> Result<Value, StoreError> {
    serde_json::to_value(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Inserts or replaces a deployment.
pub async fn upsert(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
    d: &Deployment,
    source: &str,
) -> Result<(), StoreError> {
    let params = Params {
        api_version: d.api_version.clone(),
        timeout_seconds: d.timeout.map(|t| t.as_secs_f64()),
        rpm: d.rpm,
        tpm: d.tpm,
        weight: d.weight,
        mock_response: d.mock_response.clone(),
        stream_timeout_seconds: d.stream_timeout.map(|t| t.as_secs_f64()),
        tags: d.tags.clone(),
        provider: d.settings.params.clone(),
    };
    let api_key = d
        .api_key
        .as_ref()
        .map(|k| secrets.seal(k.expose()))
        .transpose()?;
    let secret_params = if d.settings.secrets.is_empty() {
        None
    } else {
        let plain: BTreeMap<&str, &str> = d
            .settings
            .secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        Some(secrets.seal(&json(&plain)?.to_string())?)
    };
    sqlx::query(
        "INSERT INTO model_deployments
           (model_id, model_name, provider, upstream_model, api_base, api_key, litellm_params, model_info, source, secret_params)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (model_id) DO UPDATE SET
           model_name = EXCLUDED.model_name, provider = EXCLUDED.provider,
           upstream_model = EXCLUDED.upstream_model, api_base = EXCLUDED.api_base,
           api_key = EXCLUDED.api_key, litellm_params = EXCLUDED.litellm_params,
           model_info = EXCLUDED.model_info, source = EXCLUDED.source,
           secret_params = EXCLUDED.secret_params, updated_at = now()",
    )
    .bind(&d.id.0)
    .bind(&d.model_name)
    .bind(d.provider.as_str())
    .bind(&d.upstream_model)
    .bind(&d.api_base)
    .bind(api_key)
    .bind(json(&params)?)
    .bind(json(&d.model_info)?)
    .bind(source)
    .bind(secret_params)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every deployment, in insertion order.
pub async fn load_all(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
) -> Result<Vec<(Deployment, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT model_id, model_name, provider, upstream_model, api_base, api_key,
                litellm_params, model_info, source, secret_params
           FROM model_deployments ORDER BY created_at, model_id",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let provider_name: String = r.try_get("provider")?;
            let provider = ProviderKind::parse(&provider_name)
                .ok_or_else(|| StoreError::Corrupt(format!("provider `{provider_name}`")))?;
            let params: Params = serde_json::from_value(r.try_get("litellm_params")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let model_info: ModelInfo = serde_json::from_value(r.try_get("model_info")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let api_key = r
                .try_get::<Option<Vec<u8>>, _>("api_key")?
                .map(|b| secrets.open(&b).map(Secret::new))
                .transpose()?;
            let secret_params = open_params(secrets, r.try_get("secret_params")?)?;
            let d = Deployment {
                id: DeploymentId(r.try_get("model_id")?),
                model_name: r.try_get("model_name")?,
                provider,
                upstream_model: r.try_get("upstream_model")?,
                api_base: r.try_get("api_base")?,
                api_key,
                api_version: params.api_version,
                timeout: params
                    .timeout_seconds
                    .and_then(|s| Duration::try_from_secs_f64(s).ok()),
                rpm: params.rpm,
                tpm: params.tpm,
                weight: params.weight,
                mock_response: params.mock_response,
                stream_timeout: params
                    .stream_timeout_seconds
                    .and_then(|s| Duration::try_from_secs_f64(s).ok()),
                tags: params.tags,
                model_info,
                settings: ProviderSettings {
                    params: params.provider,
                    secrets: secret_params
                        .into_iter()
                        .map(|(k, v)| (k, Secret::new(v)))
                        .collect(),
                },
            };
            Ok((d, r.try_get("source")?))
        })
        .collect()
}

/// Serialises changes to the deployment set ("RIQD"): each reads the whole set to check
/// it, so two concurrent changes must not both pass on the same reading.
pub async fn lock(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(0x5249_5144_i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Compiles a LiteLLM model entry given through the API (see
/// [`routeiq_proto::litellm::compile_model`]), resolving its named credential from the
/// stored ones. Returns the deployment and the warnings about ignored keys.
pub async fn compile_entry(
    pool: &sqlx::PgPool,
    secrets: &SecretBox,
    entry: &Value,
) -> Result<(Deployment, Vec<String>), StoreError> {
    let credential = match routeiq_proto::litellm::credential_name(entry) {
        None => None,
        Some(name) => {
            let (values, _) = credential_values(pool, secrets, name)
                .await?
                .ok_or_else(|| {
                    StoreError::NotFound(format!(
                        "litellm_params.litellm_credential_name: no credential named `{name}`"
                    ))
                })?;
            Some((name.to_owned(), values.into_iter().collect()))
        }
    };
    routeiq_proto::litellm::compile_model(
        entry,
        credential.as_ref().map(|(n, v)| (n.as_str(), v)),
        &|var| std::env::var(var).ok(),
    )
    .map_err(|(at, message)| {
        StoreError::Invalid(if at.is_empty() {
            message
        } else {
            format!("{at}: {message}")
        })
    })
}

/// A deployment change through the API: checked, stored (`source = 'api'`), audited, and
/// sent to data planes as one delta.
pub async fn save(
    pool: &sqlx::PgPool,
    secrets: &SecretBox,
    actor: &crate::audit::Actor,
    mut d: Deployment,
    create: bool,
) -> Result<(Deployment, u64), StoreError> {
    if d.id.0.is_empty() {
        if !create {
            return Err(StoreError::Invalid("the deployment id is required".into()));
        }
        d.id = DeploymentId(crate::crypto::new_id()?);
    }
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    let mut all = load_all(&mut *tx, secrets).await?;
    let existing = all.iter().position(|(x, _)| x.id == d.id);
    let before = match (existing, create) {
        (Some(_), true) => {
            return Err(StoreError::Conflict(format!(
                "deployment `{}` already exists",
                d.id.0
            )))
        }
        (None, false) => {
            return Err(StoreError::NotFound(format!(
                "deployment `{}` not found",
                d.id.0
            )))
        }
        (Some(i), false) => {
            let (old, _) = all.remove(i);
            if d.api_key.is_none() {
                d.api_key = old.api_key.clone();
            }
            Some(old)
        }
        (None, true) => None,
    };
    let mut list: Vec<Deployment> = all.into_iter().map(|(x, _)| x).collect();
    list.push(d.clone());
    routeiq_proto::Snapshot::validate_deployments(&list)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    upsert(&mut *tx, secrets, &d, "api").await?;
    let version = crate::changes::append(
        &mut tx,
        vec![routeiq_proto::DeltaOp::UpsertDeployment(d.clone())],
    )
    .await?;
    crate::audit::record(
        &mut *tx,
        actor,
        crate::audit::Entry {
            action: if create {
                "model.create"
            } else {
                "model.update"
            },
            object_type: "model",
            object_id: &d.id.0,
            before: before.map(|b| redacted(&b)),
            after: Some(redacted(&d)),
            snapshot_version: Some(version),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((d, version))
}

/// Deletes deployments by id, as one delta.
pub async fn delete(
    pool: &sqlx::PgPool,
    secrets: &SecretBox,
    actor: &crate::audit::Actor,
    ids: &[String],
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Err(StoreError::Invalid("no deployments given".into()));
    }
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    let all = load_all(&mut *tx, secrets).await?;
    let mut ops = Vec::with_capacity(ids.len());
    let mut befores = Vec::with_capacity(ids.len());
    for id in ids {
        let (d, _) = all
            .iter()
            .find(|(d, _)| &d.id.0 == id)
            .ok_or_else(|| StoreError::NotFound(format!("deployment `{id}` not found")))?;
        befores.push(redacted(d));
        ops.push(routeiq_proto::DeltaOp::DeleteDeployment(d.id.clone()));
    }
    sqlx::query("DELETE FROM model_deployments WHERE model_id = ANY($1)")
        .bind(ids)
        .execute(&mut *tx)
        .await?;
    let version = crate::changes::append(&mut tx, ops).await?;
    crate::audit::deletions(&mut tx, actor, "model", ids, befores, version).await?;
    tx.commit().await?;
    Ok(version)
}

/// A deployment for the audit log: everything but the key.
fn redacted(d: &Deployment) -> Value {
    serde_json::json!({
        "id": d.id.0, "model_name": d.model_name, "provider": d.provider.as_str(),
        "upstream_model": d.upstream_model, "api_base": d.api_base,
        "has_api_key": d.api_key.is_some(), "model_info": json(&d.model_info).ok(),
    })
}

// ---- credentials: named secret sets (LiteLLM's credential_list) ----

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CredentialRecord {
    pub name: String,
    /// The names of the stored values; the values never leave the control plane this way.
    pub value_names: Vec<String>,
    pub info: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Creates (`create`) or replaces a credential. Empty `values` on update keeps the stored
/// ones.
pub async fn save_credential(
    pool: &sqlx::PgPool,
    secrets: &SecretBox,
    actor: &crate::audit::Actor,
    name: &str,
    values: &std::collections::BTreeMap<String, String>,
    info: Option<Value>,
    create: bool,
) -> Result<CredentialRecord, StoreError> {
    if name.is_empty() {
        return Err(StoreError::Invalid("credential_name is required".into()));
    }
    if info.as_ref().is_some_and(|i| !i.is_object()) {
        return Err(StoreError::Invalid(
            "credential_info must be a JSON object".into(),
        ));
    }
    if create && values.is_empty() {
        return Err(StoreError::Invalid("credential_values is empty".into()));
    }
    let sealed = if values.is_empty() {
        None
    } else {
        Some(secrets.seal(
            &serde_json::to_string(values).map_err(|e| StoreError::Invalid(e.to_string()))?,
        )?)
    };
    let mut tx = pool.begin().await?;
    let done = if create {
        sqlx::query(
            "INSERT INTO credentials (credential_name, credential_values, credential_info)
             VALUES ($1, $2, COALESCE($3, '{}'::jsonb)) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(&sealed)
        .bind(&info)
        .execute(&mut *tx)
        .await?
    } else {
        sqlx::query(
            "UPDATE credentials SET credential_values = COALESCE($2, credential_values),
                 credential_info = COALESCE($3, credential_info), updated_at = now()
             WHERE credential_name = $1",
        )
        .bind(name)
        .bind(&sealed)
        .bind(&info)
        .execute(&mut *tx)
        .await?
    };
    if done.rows_affected() == 0 {
        return Err(if create {
            StoreError::Conflict(format!("credential `{name}` already exists"))
        } else {
            StoreError::NotFound(format!("credential `{name}` not found"))
        });
    }
    let rec = credentials(
        &mut *tx,
        secrets,
        &[name.to_owned()],
        crate::Page::new(1, 1),
    )
    .await?
    .0
    .pop()
    .ok_or_else(|| StoreError::NotFound(format!("credential `{name}` not found")))?;
    crate::audit::record(
        &mut *tx,
        actor,
        crate::audit::Entry {
            action: if create {
                "credential.create"
            } else {
                "credential.update"
            },
            object_type: "credential",
            object_id: name,
            before: None,
            after: crate::audit::json(&rec),
            snapshot_version: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(rec)
}

pub async fn delete_credential(
    pool: &sqlx::PgPool,
    actor: &crate::audit::Actor,
    names: &[String],
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for name in names {
        let r = sqlx::query("DELETE FROM credentials WHERE credential_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                    StoreError::Conflict(format!("credential `{name}` is used by a deployment"))
                }
                _ => StoreError::Db(e),
            })?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "credential `{name}` not found"
            )));
        }
        crate::audit::record(
            &mut *tx,
            actor,
            crate::audit::Entry {
                action: "credential.delete",
                object_type: "credential",
                object_id: name,
                before: None,
                after: None,
                snapshot_version: None,
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Credentials (those named in `names`, or a page of all), with value names but no values.
pub async fn credentials(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
    names: &[String],
    page: crate::Page,
) -> Result<(Vec<CredentialRecord>, u64), StoreError> {
    let rows = sqlx::query(
        "SELECT credential_name, credential_values, credential_info,
                EXTRACT(EPOCH FROM created_at)::bigint AS created_at,
                EXTRACT(EPOCH FROM updated_at)::bigint AS updated_at,
                count(*) OVER () AS total
           FROM credentials
          WHERE cardinality($1::text[]) = 0 OR credential_name = ANY($1)
          ORDER BY credential_name LIMIT $2 OFFSET $3",
    )
    .bind(names)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(conn)
    .await?;
    let total = rows
        .first()
        .map(|r| r.try_get::<i64, _>("total"))
        .transpose()?
        .unwrap_or(0) as u64;
    let recs = rows
        .iter()
        .map(|r| {
            let sealed: Vec<u8> = r.try_get("credential_values")?;
            let values: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&secrets.open(&sealed)?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(CredentialRecord {
                name: r.try_get("credential_name")?,
                value_names: values.into_keys().collect(),
                info: r.try_get("credential_info")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok((recs, total))
}

/// A credential's decrypted values and info, if it exists (for the config import's
/// change check; never returned through the API).
pub async fn credential_values(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
    name: &str,
) -> Result<Option<(std::collections::BTreeMap<String, String>, Value)>, StoreError> {
    let row = sqlx::query(
        "SELECT credential_values, credential_info FROM credentials WHERE credential_name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        let sealed: Vec<u8> = r.try_get("credential_values")?;
        let values = serde_json::from_str(&secrets.open(&sealed)?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok((values, r.try_get("credential_info")?))
    })
    .transpose()
}

/// Inserts or replaces a credential (config import).
pub async fn put_credential(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
    name: &str,
    values: &std::collections::BTreeMap<String, String>,
    info: &Value,
) -> Result<(), StoreError> {
    let sealed = secrets
        .seal(&serde_json::to_string(values).map_err(|e| StoreError::Invalid(e.to_string()))?)?;
    sqlx::query(
        "INSERT INTO credentials (credential_name, credential_values, credential_info)
         VALUES ($1, $2, $3)
         ON CONFLICT (credential_name) DO UPDATE SET credential_values = EXCLUDED.credential_values,
             credential_info = EXCLUDED.credential_info, updated_at = now()",
    )
    .bind(name)
    .bind(sealed)
    .bind(info)
    .execute(conn)
    .await?;
    Ok(())
}

/// What the outbox leaves out of a deployment: its API key and secret provider settings.
#[derive(Debug, Default)]
pub struct Secrets {
    pub api_key: Option<String>,
    pub params: BTreeMap<String, String>,
}

/// The secrets of deployments `ids` (those that have any), decrypted, for the publisher.
pub async fn secrets_of(
    conn: impl PgExecutor<'_>,
    secrets: &SecretBox,
    ids: &[String],
) -> Result<std::collections::HashMap<String, Secrets>, StoreError> {
    let rows = sqlx::query(
        "SELECT model_id, api_key, secret_params FROM model_deployments
          WHERE model_id = ANY($1) AND (api_key IS NOT NULL OR secret_params IS NOT NULL)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let api_key = r
                .try_get::<Option<Vec<u8>>, _>("api_key")?
                .map(|sealed| secrets.open(&sealed))
                .transpose()?;
            let params = open_params(secrets, r.try_get("secret_params")?)?;
            Ok((r.try_get("model_id")?, Secrets { api_key, params }))
        })
        .collect()
}

/// Secret provider settings from their sealed JSON (`NULL`: none).
fn open_params(
    secrets: &SecretBox,
    sealed: Option<Vec<u8>>,
) -> Result<BTreeMap<String, String>, StoreError> {
    match sealed {
        None => Ok(BTreeMap::new()),
        Some(b) => {
            serde_json::from_str(&secrets.open(&b)?).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
    }
}
