//! `/health/liveliness` (the process answers) and `/health/readiness` (the control plane
//! answers too).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use routeiq_proto::wire::pb;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveliness {
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    pub controlplane: String,
    /// The control plane's current snapshot version.
    pub snapshot_version: u64,
}

/// The process is up.
#[utoipa::path(get, path = "/health/liveliness", tag = "health",
    responses((status = 200, description = "Alive", body = Liveliness)))]
pub async fn liveliness() -> Json<Liveliness> {
    Json(Liveliness {
        status: "alive".into(),
    })
}

/// The control plane (and through it, PostgreSQL) answers.
#[utoipa::path(get, path = "/health/readiness", tag = "health",
    responses((status = 200, description = "Ready", body = Readiness)))]
pub async fn readiness(State(state): State<Arc<AppState>>) -> ApiResult<Json<Readiness>> {
    let v = state
        .cp
        .clone()
        .get_snapshot_version(pb::GetSnapshotRequest {})
        .await
        .map_err(ApiError::from)?
        .into_inner();
    Ok(Json(Readiness {
        status: "healthy".into(),
        controlplane: "connected".into(),
        snapshot_version: v.version,
    }))
}
