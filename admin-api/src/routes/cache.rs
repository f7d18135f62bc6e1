//! The response cache, as LiteLLM's `/cache/*` routes manage it: `/cache/ping` checks it,
//! `/cache/delete` removes answers by key (`x-litellm-cache-key`), `/cache/flushall`
//! removes every answer, `/cache/redis/info` shows the Redis behind it. Deletions reach
//! Redis and every data plane's memory (through the control plane's snapshot deltas).
//! Admins manage it; viewers read.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{Array, ArrayBuilder, ObjectBuilder, Type};
use utoipa::ToSchema;

use super::Body;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct CachePingResponse {
    /// `healthy`.
    pub status: String,
    /// `local` (each data plane's memory) or `redis`.
    pub cache_type: String,
    /// Redis answered PING (`null` for a `local` cache).
    pub ping_response: Option<bool>,
    /// `litellm_settings.cache_params`, as the gateway reads them.
    #[schema(value_type = Object)]
    pub litellm_cache_params: Value,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheDeleteRequest {
    /// `x-litellm-cache-key` values.
    #[schema(schema_with = cache_keys)]
    pub keys: Vec<String>,
}

/// At least one key of 64 hex digits.
fn cache_keys() -> Array {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9a-fA-F]{64}$")),
        )
        .min_items(Some(1))
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CacheChangeResponse {
    /// `success`.
    pub status: String,
    /// Answers Redis held (0 for a `local` cache).
    pub redis_deleted: u64,
    /// The snapshot version that carries the change to data planes.
    pub snapshot_version: u64,
}

impl From<pb::CacheChange> for CacheChangeResponse {
    fn from(c: pb::CacheChange) -> Self {
        Self {
            status: "success".into(),
            redis_deleted: c.redis_deleted,
            snapshot_version: c.snapshot_version,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CacheRedisInfoResponse {
    /// Redis `INFO`, field by field.
    pub info: BTreeMap<String, String>,
}

/// Check the response cache (and its Redis).
#[utoipa::path(get, path = "/cache/ping", tag = "cache",
    responses((status = 200, description = "The cache answers", body = CachePingResponse)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn ping(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<CachePingResponse>> {
    let p = state
        .cp
        .clone()
        .ping_cache(pb::CacheRequest {
            actor: Some(caller.actor),
        })
        .await?
        .into_inner();
    let redis = p.cache_type == "redis";
    Ok(Json(CachePingResponse {
        status: "healthy".into(),
        cache_type: p.cache_type,
        ping_response: redis.then_some(p.redis_ok),
        litellm_cache_params: serde_json::from_str(&p.params_json).unwrap_or(Value::Null),
    }))
}

/// Remove answers by key, from Redis and every data plane.
#[utoipa::path(post, path = "/cache/delete", tag = "cache",
    request_body = CacheDeleteRequest,
    responses((status = 200, description = "Removed", body = CacheChangeResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<CacheDeleteRequest>,
) -> ApiResult<Json<CacheChangeResponse>> {
    let c = state
        .cp
        .clone()
        .delete_cache_keys(pb::DeleteCacheKeysRequest {
            actor: Some(caller.actor),
            keys: req.keys,
        })
        .await?
        .into_inner();
    Ok(Json(c.into()))
}

/// Remove every answer, from Redis and every data plane.
#[utoipa::path(post, path = "/cache/flushall", tag = "cache",
    responses((status = 200, description = "Emptied", body = CacheChangeResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn flushall(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<CacheChangeResponse>> {
    let c = state
        .cp
        .clone()
        .flush_cache(pb::CacheRequest {
            actor: Some(caller.actor),
        })
        .await?
        .into_inner();
    Ok(Json(c.into()))
}

/// The Redis behind the response cache.
#[utoipa::path(get, path = "/cache/redis/info", tag = "cache",
    responses((status = 200, description = "Redis INFO", body = CacheRedisInfoResponse)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn redis_info(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<CacheRedisInfoResponse>> {
    let r = state
        .cp
        .clone()
        .cache_redis_info(pb::CacheRequest {
            actor: Some(caller.actor),
        })
        .await?
        .into_inner();
    Ok(Json(CacheRedisInfoResponse {
        info: r.info.into_iter().collect(),
    }))
}
