//! Model deployments in `model_deployments`: the snapshot's `Deployment`s, with the API key
//! encrypted at rest.

use std::time::Duration;

use routeiq_proto::{Deployment, DeploymentId, ModelInfo, ProviderKind, Secret};
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
    };
    let api_key = d
        .api_key
        .as_ref()
        .map(|k| secrets.seal(k.expose()))
        .transpose()?;
    sqlx::query(
        "INSERT INTO model_deployments
           (model_id, model_name, provider, upstream_model, api_base, api_key, litellm_params, model_info, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (model_id) DO UPDATE SET
           model_name = EXCLUDED.model_name, provider = EXCLUDED.provider,
           upstream_model = EXCLUDED.upstream_model, api_base = EXCLUDED.api_base,
           api_key = EXCLUDED.api_key, litellm_params = EXCLUDED.litellm_params,
           model_info = EXCLUDED.model_info, source = EXCLUDED.source, updated_at = now()",
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
                litellm_params, model_info, source
           FROM model_deployments ORDER BY created_at, model_id",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let provider = match r.try_get::<String, _>("provider")?.as_str() {
                "openai" => ProviderKind::OpenAi,
                "azure" => ProviderKind::Azure,
                "anthropic" => ProviderKind::Anthropic,
                "mock" => ProviderKind::Mock,
                other => return Err(StoreError::Corrupt(format!("provider `{other}`"))),
            };
            let params: Params = serde_json::from_value(r.try_get("litellm_params")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let model_info: ModelInfo = serde_json::from_value(r.try_get("model_info")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let api_key = r
                .try_get::<Option<Vec<u8>>, _>("api_key")?
                .map(|b| secrets.open(&b).map(Secret::new))
                .transpose()?;
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
                model_info,
            };
            Ok((d, r.try_get("source")?))
        })
        .collect()
}
