//! The routing-model registry (`routing_model_versions`): versions of the learned
//! `llmrouter-*` strategies' artifacts, one active per strategy. Activating a version
//! switches the gateway's router settings to its strategy and artifact, pinned by the
//! manifest's sha256, and sends them to data planes as a settings delta in the same
//! transaction; data planes load it in the background (a pinned artifact whose manifest
//! differs is refused).

use routeiq_proto::{DeltaOp, RoutingStrategy, LEARNED_STRATEGIES};
use serde_json::{Map, Value};
use sqlx::Row;

use crate::audit::{self, Actor};
use crate::error::StoreError;
use crate::{changes, settings};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Version {
    pub id: i64,
    pub strategy: String,
    pub artifact_uri: String,
    pub sha256: String,
    pub metrics: Value,
    pub active: bool,
    pub created_at_ms: i64,
}

macro_rules! columns {
    () => {
        "id, strategy, artifact_uri, sha256, metrics, active, \
         (extract(epoch FROM created_at) * 1000)::bigint AS created_at_ms"
    };
}

fn read(row: &sqlx::postgres::PgRow) -> Result<Version, StoreError> {
    Ok(Version {
        id: row.try_get("id")?,
        strategy: row.try_get("strategy")?,
        artifact_uri: row.try_get("artifact_uri")?,
        sha256: row.try_get("sha256")?,
        metrics: row.try_get("metrics")?,
        active: row.try_get("active")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// Where an artifact is, as router settings say it.
#[derive(Debug, PartialEq)]
enum Location {
    Path(String),
    S3 { bucket: String, key: String },
}

fn location(uri: &str) -> Result<Location, StoreError> {
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Invalid(format!(
                "artifact_uri `{uri}` names no bucket"
            )));
        }
        return Ok(Location::S3 {
            bucket: bucket.to_owned(),
            key: key.trim_end_matches('/').to_owned(),
        });
    }
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    if path.starts_with('/') {
        return Ok(Location::Path(path.to_owned()));
    }
    Err(StoreError::Invalid(format!(
        "artifact_uri `{uri}` must be s3://bucket/prefix, file:///dir or an absolute path"
    )))
}

fn strategy_name(s: &str) -> Result<String, StoreError> {
    let name = s.strip_prefix("llmrouter-").unwrap_or(s);
    if LEARNED_STRATEGIES.contains(&name) {
        Ok(name.to_owned())
    } else {
        Err(StoreError::Invalid(format!(
            "strategy `{s}` is not a learned strategy ({})",
            LEARNED_STRATEGIES.join(", ")
        )))
    }
}

pub async fn register(
    pool: &sqlx::PgPool,
    actor: &Actor,
    strategy: &str,
    artifact_uri: &str,
    sha256: &str,
    metrics: Value,
) -> Result<Version, StoreError> {
    let strategy = strategy_name(strategy)?;
    location(artifact_uri)?;
    let sha256 = sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Invalid(
            "sha256 must be the manifest's SHA-256 in 64 hex digits".into(),
        ));
    }
    if !metrics.is_object() {
        return Err(StoreError::Invalid("metrics must be a JSON object".into()));
    }
    let mut tx = pool.begin().await?;
    let row = sqlx::query(concat!(
        "INSERT INTO routing_model_versions (strategy, artifact_uri, sha256, metrics) \
         VALUES ($1, $2, $3, $4) RETURNING ",
        columns!()
    ))
    .bind(&strategy)
    .bind(artifact_uri)
    .bind(&sha256)
    .bind(&metrics)
    .fetch_one(&mut *tx)
    .await?;
    let v = read(&row)?;
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action: "routing_model.register",
            object_type: "routing_model",
            object_id: &v.id.to_string(),
            before: None,
            after: audit::json(&v),
            snapshot_version: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(v)
}

/// Activates version `id`; returns it and the snapshot version of the settings delta.
pub async fn activate(
    pool: &sqlx::PgPool,
    actor: &Actor,
    id: i64,
) -> Result<(Version, u64), StoreError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM routing_model_versions WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("routing model version {id} not found")))?;
    let before = read(&row)?;
    sqlx::query("UPDATE routing_model_versions SET active = (id = $1) WHERE strategy = $2")
        .bind(id)
        .bind(&before.strategy)
        .execute(&mut *tx)
        .await?;
    let mut gateway = settings::load(&mut *tx).await?;
    let router = &mut gateway.router;
    router.routing_strategy = RoutingStrategy::LlmRouter(format!("llmrouter-{}", before.strategy));
    point_at(&mut router.routing_strategy_args, &before)?;
    settings::store(&mut *tx, &gateway).await?;
    let version = changes::append(&mut tx, vec![DeltaOp::Settings(gateway)]).await?;
    let after = Version {
        active: true,
        ..before.clone()
    };
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action: "routing_model.activate",
            object_type: "routing_model",
            object_id: &id.to_string(),
            before: audit::json(&before),
            after: audit::json(&after),
            snapshot_version: Some(version),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((after, version))
}

/// Points `routing_strategy_args` at `v`'s artifact, pinned by its sha256; other
/// arguments (cost_weight, fallback_strategy, reload_interval, ...) stay.
fn point_at(args: &mut Map<String, Value>, v: &Version) -> Result<(), StoreError> {
    for k in ["model_path", "model_s3_bucket", "model_s3_key"] {
        args.remove(k);
    }
    match location(&v.artifact_uri)? {
        Location::Path(p) => {
            args.insert("model_path".into(), p.into());
        }
        Location::S3 { bucket, key } => {
            args.insert("model_s3_bucket".into(), bucket.into());
            args.insert("model_s3_key".into(), key.into());
        }
    }
    args.insert("model_sha256".into(), v.sha256.clone().into());
    Ok(())
}

pub async fn list(pool: &sqlx::PgPool, strategy: &str) -> Result<Vec<Version>, StoreError> {
    let strategy = strategy.trim().trim_start_matches("llmrouter-");
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM routing_model_versions WHERE $1 = '' OR strategy = $1 ORDER BY id"
    ))
    .bind(strategy)
    .fetch_all(pool)
    .await?;
    rows.iter().map(read).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            location("s3://models/routers/knn/").unwrap(),
            Location::S3 {
                bucket: "models".into(),
                key: "routers/knn".into()
            }
        );
        assert_eq!(
            location("file:///srv/knn").unwrap(),
            Location::Path("/srv/knn".into())
        );
        assert_eq!(
            location("/srv/knn").unwrap(),
            Location::Path("/srv/knn".into())
        );
        assert!(location("knn").is_err() && location("s3:///x").is_err());
        assert!(strategy_name("llmrouter-knn").is_ok() && strategy_name("causallm").is_err());
        for bad in [" knn", "llmrouter-llmrouter-knn", ""] {
            assert!(strategy_name(bad).is_err(), "{bad}");
        }
    }
}
