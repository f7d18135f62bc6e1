//! Organizations: `/organization/new`, `/organization/info`, `/organization/list`,
//! `/organization/update`, `/organization/delete`. Admins manage them; viewers read.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::{json_text, non_empty, object, Body, LimitFields, ObjectPermission, Params};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::time::iso;
use crate::AppState;

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct OrgSettings {
    pub organization_alias: Option<String>,
    /// A budget from `/budget/new`.
    pub budget_id: Option<String>,
    pub models: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// MCP grants (LiteLLM's `object_permission`): they bound the organization's keys'.
    pub object_permission: Option<ObjectPermission>,
}

impl OrgSettings {
    fn into_pb(self) -> pb::OrganizationFields {
        pb::OrganizationFields {
            organization_alias: self.organization_alias,
            budget_id: self.budget_id,
            set_models: self.models.is_some(),
            models: self.models.unwrap_or_default(),
            metadata_json: json_text(self.metadata),
            object_permission_json: ObjectPermission::json_text(self.object_permission),
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct NewOrgRequest {
    /// Generated when absent.
    pub organization_id: Option<String>,
    #[serde(flatten)]
    pub settings: OrgSettings,
    /// Limits for a budget created for the organization; ignored when `budget_id` names a
    /// budget, as LiteLLM ignores them.
    #[serde(flatten)]
    pub limits: LimitFields,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct UpdateOrgRequest {
    #[schema(min_length = 1)]
    pub organization_id: String,
    #[serde(flatten)]
    pub settings: OrgSettings,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct DeleteOrgRequest {
    #[schema(min_items = 1)]
    pub organization_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgObject {
    pub organization_id: String,
    pub organization_alias: Option<String>,
    pub budget_id: Option<String>,
    pub models: Vec<String>,
    pub spend: f64,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// MCP grants; null: none.
    pub object_permission: Option<ObjectPermission>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<pb::OrganizationInfo> for OrgObject {
    fn from(o: pb::OrganizationInfo) -> Self {
        Self {
            organization_id: o.organization_id,
            organization_alias: non_empty(o.organization_alias),
            budget_id: non_empty(o.budget_id),
            models: o.models,
            spend: o.spend,
            metadata: object(&o.metadata_json),
            object_permission: ObjectPermission::from_json_text(&o.object_permission_json),
            created_at: iso(o.created_at),
            updated_at: iso(o.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteOrgResponse {
    pub deleted_organizations: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrgQuery {
    pub organization_id: String,
}

/// Create an organization (and its budget, when limits are given without a `budget_id`).
#[utoipa::path(post, path = "/organization/new", tag = "organizations", request_body = NewOrgRequest,
    responses((status = 200, description = "The new organization", body = OrgObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn new(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(mut req): Body<NewOrgRequest>,
) -> ApiResult<Json<OrgObject>> {
    let mut cp = state.cp.clone();
    let names_budget = req
        .settings
        .budget_id
        .as_ref()
        .is_some_and(|b| !b.is_empty());
    if !names_budget && !req.limits.is_empty() {
        let budget = cp
            .create_budget(pb::UpsertBudgetRequest {
                actor: Some(caller.actor.clone()),
                budget_id: String::new(),
                limits: Some(req.limits.into_pb()),
            })
            .await?
            .into_inner();
        req.settings.budget_id = Some(budget.budget_id);
    }
    let o = cp
        .create_organization(pb::CreateOrganizationRequest {
            actor: Some(caller.actor),
            organization_id: req.organization_id.unwrap_or_default(),
            fields: Some(req.settings.into_pb()),
        })
        .await?
        .into_inner();
    Ok(Json(o.into()))
}

/// One organization.
#[utoipa::path(get, path = "/organization/info", tag = "organizations", params(OrgQuery),
    responses((status = 200, description = "The organization", body = OrgObject)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn info(
    State(state): State<Arc<AppState>>,
    Params(q): Params<OrgQuery>,
) -> ApiResult<Json<OrgObject>> {
    let o = state
        .cp
        .clone()
        .list_organizations(pb::ListRequest {
            ids: vec![q.organization_id.clone()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .organizations
        .pop()
        .ok_or_else(|| {
            ApiError::not_found(format!("organization `{}` not found", q.organization_id))
        })?;
    Ok(Json(o.into()))
}

/// Every organization.
#[utoipa::path(get, path = "/organization/list", tag = "organizations",
    responses((status = 200, description = "Organizations", body = Vec<OrgObject>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<Vec<OrgObject>>> {
    let out = state
        .cp
        .clone()
        .list_organizations(pb::ListRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Json(
        out.organizations.into_iter().map(OrgObject::from).collect(),
    ))
}

/// Change an organization.
#[utoipa::path(patch, path = "/organization/update", tag = "organizations", request_body = UpdateOrgRequest,
    responses((status = 200, description = "The organization as changed", body = OrgObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<UpdateOrgRequest>,
) -> ApiResult<Json<OrgObject>> {
    let o = state
        .cp
        .clone()
        .update_organization(pb::UpdateOrganizationRequest {
            actor: Some(caller.actor),
            organization_id: req.organization_id,
            fields: Some(req.settings.into_pb()),
        })
        .await?
        .into_inner();
    Ok(Json(o.into()))
}

/// Delete organizations (their teams and users stay, without an organization).
#[utoipa::path(delete, path = "/organization/delete", tag = "organizations", request_body = DeleteOrgRequest,
    responses((status = 200, description = "Deleted", body = DeleteOrgResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<DeleteOrgRequest>,
) -> ApiResult<Json<DeleteOrgResponse>> {
    let out = state
        .cp
        .clone()
        .delete_organizations(pb::DeleteRequest {
            actor: Some(caller.actor),
            ids: req.organization_ids,
        })
        .await?
        .into_inner();
    Ok(Json(DeleteOrgResponse {
        deleted_organizations: out.deleted,
    }))
}
