//! `GET /audit`: who changed what, when and from where. Admins and viewers read it.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{count_param, date_ms, Date, Params, DEFAULT_PAGE_SIZE, MAX_PAGE};
use crate::error::ApiResult;
use crate::time;
use crate::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// `master_key`, a user id, or `key:<token prefix>`.
    pub actor: Option<String>,
    /// `key.generate`, `team.update`, ...
    pub action: Option<String>,
    /// `key`, `team`, `user`, `organization`, `budget`, `model`, `credential`.
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), inclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub start_date: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), exclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub end_date: Option<String>,
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditObject {
    pub id: i64,
    /// ISO 8601, UTC.
    pub at: String,
    pub actor: String,
    pub source_ip: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    /// The object before the change (secrets left out).
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    /// The snapshot version that carried the change to data planes.
    pub snapshot_version: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    pub entries: Vec<AuditObject>,
    pub page: u32,
    pub page_size: u32,
}

fn json(text: &str) -> Option<Value> {
    serde_json::from_str(text)
        .ok()
        .filter(|v: &Value| !v.is_null())
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Audit entries", body = AuditLog)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Params(q): Params<AuditQuery>,
) -> ApiResult<Json<AuditLog>> {
    let page = count_param("page", q.page, 1, MAX_PAGE)?;
    let page_size = count_param("page_size", q.page_size, DEFAULT_PAGE_SIZE, 1000)?;
    let out = state
        .cp
        .clone()
        .list_audit_log(pb::AuditQuery {
            actor: q.actor,
            action: q.action,
            object_type: q.object_type,
            object_id: q.object_id,
            since_ms: date_ms("start_date", q.start_date.as_deref())?,
            until_ms: date_ms("end_date", q.end_date.as_deref())?,
            page,
            page_size,
        })
        .await?
        .into_inner();
    Ok(Json(AuditLog {
        entries: out
            .entries
            .into_iter()
            .map(|e| AuditObject {
                id: e.id,
                at: time::iso(e.at_ms.div_euclid(1000)),
                actor: e.actor,
                source_ip: e.source_ip,
                action: e.action,
                object_type: e.object_type,
                object_id: e.object_id,
                before: json(&e.before_json),
                after: json(&e.after_json),
                snapshot_version: e.snapshot_version,
            })
            .collect(),
        page,
        page_size,
    }))
}
