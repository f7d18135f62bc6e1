//! Reusable budgets: `/budget/new`, `/budget/update`, `/budget/info`, `/budget/list`,
//! `/budget/delete`. Admins manage them; viewers read.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Body, LimitFields, LimitsObject};
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::time::iso;
use crate::AppState;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct NewBudgetRequest {
    /// Generated when absent.
    pub budget_id: Option<String>,
    #[serde(flatten)]
    pub limits: LimitFields,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct UpdateBudgetRequest {
    #[schema(min_length = 1)]
    pub budget_id: String,
    #[serde(flatten)]
    pub limits: LimitFields,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct BudgetInfoRequest {
    #[schema(min_items = 1)]
    pub budgets: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct DeleteBudgetRequest {
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetObject {
    pub budget_id: String,
    #[serde(flatten)]
    pub limits: LimitsObject,
    pub created_at: String,
    pub updated_at: String,
}

impl From<pb::BudgetInfo> for BudgetObject {
    fn from(b: pb::BudgetInfo) -> Self {
        Self {
            budget_id: b.budget_id,
            limits: b.limits.into(),
            created_at: iso(b.created_at),
            updated_at: iso(b.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteBudgetResponse {
    pub deleted: Vec<String>,
}

/// Create a budget.
#[utoipa::path(post, path = "/budget/new", tag = "budgets", request_body = NewBudgetRequest,
    responses((status = 200, description = "The new budget", body = BudgetObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn new(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<NewBudgetRequest>,
) -> ApiResult<Json<BudgetObject>> {
    let b = state
        .cp
        .clone()
        .create_budget(pb::UpsertBudgetRequest {
            actor: Some(caller.actor),
            budget_id: req.budget_id.unwrap_or_default(),
            limits: Some(req.limits.into_pb()),
        })
        .await?
        .into_inner();
    Ok(Json(b.into()))
}

/// Change a budget's limits.
#[utoipa::path(post, path = "/budget/update", tag = "budgets", request_body = UpdateBudgetRequest,
    responses((status = 200, description = "The budget as changed", body = BudgetObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<UpdateBudgetRequest>,
) -> ApiResult<Json<BudgetObject>> {
    let b = state
        .cp
        .clone()
        .update_budget(pb::UpsertBudgetRequest {
            actor: Some(caller.actor),
            budget_id: req.budget_id,
            limits: Some(req.limits.into_pb()),
        })
        .await?
        .into_inner();
    Ok(Json(b.into()))
}

/// The budgets with the given ids (unknown ids are left out).
#[utoipa::path(post, path = "/budget/info", tag = "budgets", request_body = BudgetInfoRequest,
    responses((status = 200, description = "Budgets", body = Vec<BudgetObject>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn info(
    State(state): State<Arc<AppState>>,
    Body(req): Body<BudgetInfoRequest>,
) -> ApiResult<Json<Vec<BudgetObject>>> {
    if req.budgets.is_empty() {
        return Err(crate::error::ApiError::bad_request("`budgets` is empty").param("budgets"));
    }
    let out = state
        .cp
        .clone()
        .list_budgets(pb::ListRequest {
            ids: req.budgets,
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Json(
        out.budgets.into_iter().map(BudgetObject::from).collect(),
    ))
}

/// Every budget.
#[utoipa::path(get, path = "/budget/list", tag = "budgets",
    responses((status = 200, description = "Budgets", body = Vec<BudgetObject>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<Vec<BudgetObject>>> {
    let out = state
        .cp
        .clone()
        .list_budgets(pb::ListRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Json(
        out.budgets.into_iter().map(BudgetObject::from).collect(),
    ))
}

/// Delete a budget.
#[utoipa::path(post, path = "/budget/delete", tag = "budgets", request_body = DeleteBudgetRequest,
    responses((status = 200, description = "Deleted", body = DeleteBudgetResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<DeleteBudgetRequest>,
) -> ApiResult<Json<DeleteBudgetResponse>> {
    let out = state
        .cp
        .clone()
        .delete_budgets(pb::DeleteRequest {
            actor: Some(caller.actor),
            ids: vec![req.id],
        })
        .await?
        .into_inner();
    Ok(Json(DeleteBudgetResponse {
        deleted: out.deleted,
    }))
}
