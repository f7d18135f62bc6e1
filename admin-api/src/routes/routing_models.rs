//! The routing-model registry of the learned `llmrouter-*` strategies:
//! `/routing_model/new` registers an artifact version, `/routing_model/activate` routes
//! with it from now on (the router settings switch to its strategy and artifact, pinned by
//! its manifest's sha256, and data planes load it), `/routing_model/list` lists versions.
//! Admins manage them; viewers read.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use routeiq_proto::LEARNED_STRATEGIES;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use super::{Body, Params};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::time::iso;
use crate::AppState;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct NewRoutingModelRequest {
    #[schema(schema_with = learned_strategy)]
    pub strategy: String,
    /// `s3://bucket/prefix`, `file:///dir` or `/dir`: where `manifest.json` is.
    #[schema(pattern = "^(?:s3://[^/\\u0000]|(?:file://)?/)[^\\u0000]*$")]
    pub artifact_uri: String,
    /// SHA-256 of the artifact's `manifest.json`, 64 hex digits.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sha256: String,
    /// Evaluation metrics (the manifest's `metrics`).
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<Value>,
    /// Activate the version at once.
    #[serde(default)]
    pub activate: bool,
}

/// The strategies a version can be registered for: the learned ones, each also with its
/// `llmrouter-` prefix.
fn learned_strategy() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "A learned strategy (the `llmrouter-` prefix is optional).",
        ))
        .enum_values(Some(
            LEARNED_STRATEGIES
                .iter()
                .flat_map(|s| [s.to_string(), format!("llmrouter-{s}")]),
        ))
        .build()
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ActivateRoutingModelRequest {
    pub id: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRoutingModelsQuery {
    /// Only this strategy's versions.
    pub strategy: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoutingModelObject {
    pub id: i64,
    pub strategy: String,
    pub artifact_uri: String,
    pub sha256: String,
    #[schema(value_type = Object)]
    pub metrics: Value,
    pub active: bool,
    pub created_at: String,
    /// The snapshot version that carried the activation to data planes (activations).
    pub snapshot_version: Option<u64>,
}

impl From<pb::RoutingModelInfo> for RoutingModelObject {
    fn from(m: pb::RoutingModelInfo) -> Self {
        Self {
            id: m.id,
            strategy: m.strategy,
            artifact_uri: m.artifact_uri,
            sha256: m.sha256,
            metrics: serde_json::from_str(&m.metrics_json).unwrap_or(Value::Null),
            active: m.active,
            created_at: iso(m.created_at),
            snapshot_version: (m.snapshot_version > 0).then_some(m.snapshot_version),
        }
    }
}

/// Register a routing-model version (and activate it with `activate: true`).
#[utoipa::path(post, path = "/routing_model/new", tag = "routing models",
    request_body = NewRoutingModelRequest,
    responses((status = 200, description = "The registered version", body = RoutingModelObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn new(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<NewRoutingModelRequest>,
) -> ApiResult<Json<RoutingModelObject>> {
    let metrics = match req.metrics {
        None | Some(Value::Null) => String::new(),
        Some(m @ Value::Object(_)) => m.to_string(),
        Some(_) => {
            return Err(ApiError::bad_request("metrics must be a JSON object").param("metrics"))
        }
    };
    let mut cp = state.cp.clone();
    let m = cp
        .register_routing_model(pb::RegisterRoutingModelRequest {
            actor: Some(caller.actor.clone()),
            strategy: req.strategy,
            artifact_uri: req.artifact_uri,
            sha256: req.sha256,
            metrics_json: metrics,
        })
        .await?
        .into_inner();
    if !req.activate {
        return Ok(Json(m.into()));
    }
    let m = cp
        .activate_routing_model(pb::ActivateRoutingModelRequest {
            actor: Some(caller.actor),
            id: m.id,
        })
        .await?
        .into_inner();
    Ok(Json(m.into()))
}

/// Route with a registered version from now on.
#[utoipa::path(post, path = "/routing_model/activate", tag = "routing models",
    request_body = ActivateRoutingModelRequest,
    responses((status = 200, description = "The activated version", body = RoutingModelObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn activate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<ActivateRoutingModelRequest>,
) -> ApiResult<Json<RoutingModelObject>> {
    let m = state
        .cp
        .clone()
        .activate_routing_model(pb::ActivateRoutingModelRequest {
            actor: Some(caller.actor),
            id: req.id,
        })
        .await?
        .into_inner();
    Ok(Json(m.into()))
}

/// Registered routing-model versions, oldest first.
#[utoipa::path(get, path = "/routing_model/list", tag = "routing models",
    params(ListRoutingModelsQuery),
    responses((status = 200, description = "Versions", body = Vec<RoutingModelObject>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Params(q): Params<ListRoutingModelsQuery>,
) -> ApiResult<Json<Vec<RoutingModelObject>>> {
    let r = state
        .cp
        .clone()
        .list_routing_models(pb::ListRoutingModelsRequest {
            strategy: q.strategy.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Json(r.models.into_iter().map(Into::into).collect()))
}
