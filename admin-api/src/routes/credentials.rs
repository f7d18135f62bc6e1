//! Provider credentials: `POST /credentials`, `GET /credentials`,
//! `GET /credentials/by_name/{credential_name}`, `PATCH` and `DELETE
//! /credentials/{credential_name}`. Values are stored encrypted and never returned: answers
//! name them with masked values. Admins manage credentials; viewers see their names.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::ToSchema;

use super::{json_text, object, Body};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::time::iso;
use crate::AppState;

/// What a stored value is shown as.
const MASK: &str = "********";

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct NewCredentialRequest {
    #[schema(min_length = 1)]
    pub credential_name: String,
    #[schema(schema_with = secret_values)]
    pub credential_values: BTreeMap<String, String>,
    /// Non-secret description.
    #[schema(value_type = Option<Object>)]
    pub credential_info: Option<Map<String, Value>>,
}

/// A new credential's values: at least one.
fn secret_values() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Secret values: `api_key`, `api_base`, `api_version`, ...",
        ))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
        .min_properties(Some(1))
        .build()
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct UpdateCredentialRequest {
    /// Replaces every value when given.
    pub credential_values: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<Object>)]
    pub credential_info: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialObject {
    pub credential_name: String,
    /// The stored values' names, each with a masked value.
    pub credential_values: BTreeMap<String, String>,
    #[schema(value_type = Object)]
    pub credential_info: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<pb::CredentialInfo> for CredentialObject {
    fn from(c: pb::CredentialInfo) -> Self {
        Self {
            credential_name: c.credential_name,
            credential_values: c
                .value_names
                .into_iter()
                .map(|n| (n, MASK.to_owned()))
                .collect(),
            credential_info: object(&c.info_json),
            created_at: iso(c.created_at),
            updated_at: iso(c.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialObject>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteCredentialResponse {
    pub deleted: Vec<String>,
}

/// Store a credential for models to use (`litellm_params.litellm_credential_name`).
#[utoipa::path(post, path = "/credentials", tag = "credentials", request_body = NewCredentialRequest,
    responses((status = 200, description = "The credential, values masked", body = CredentialObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<NewCredentialRequest>,
) -> ApiResult<Json<CredentialObject>> {
    let c = state
        .cp
        .clone()
        .create_credential(pb::UpsertCredentialRequest {
            actor: Some(caller.actor),
            credential_name: req.credential_name,
            values: req.credential_values.into_iter().collect(),
            info_json: json_text(req.credential_info),
        })
        .await?
        .into_inner();
    Ok(Json(c.into()))
}

/// Every credential, values masked.
#[utoipa::path(get, path = "/credentials", tag = "credentials",
    responses((status = 200, description = "Credentials", body = CredentialList)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<CredentialList>> {
    let out = state
        .cp
        .clone()
        .list_credentials(pb::ListRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Json(CredentialList {
        credentials: out.credentials.into_iter().map(Into::into).collect(),
    }))
}

/// One credential, values masked.
#[utoipa::path(get, path = "/credentials/by_name/{credential_name}", tag = "credentials",
    params(("credential_name" = String, Path, description = "The credential's name")),
    responses((status = 200, description = "The credential", body = CredentialObject)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<CredentialObject>> {
    let out = state
        .cp
        .clone()
        .list_credentials(pb::ListRequest {
            ids: vec![name.clone()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let c = out
        .credentials
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("credential `{name}` not found")))?;
    Ok(Json(c.into()))
}

/// Change a credential. Models copy a credential's values when they are saved: re-save a
/// model (`/model/update`) for it to use the new values.
#[utoipa::path(patch, path = "/credentials/{credential_name}", tag = "credentials",
    params(("credential_name" = String, Path, description = "The credential's name")),
    request_body = UpdateCredentialRequest,
    responses((status = 200, description = "The credential, values masked", body = CredentialObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Body(req): Body<UpdateCredentialRequest>,
) -> ApiResult<Json<CredentialObject>> {
    let c = state
        .cp
        .clone()
        .update_credential(pb::UpsertCredentialRequest {
            actor: Some(caller.actor),
            credential_name: name,
            values: req
                .credential_values
                .unwrap_or_default()
                .into_iter()
                .collect(),
            info_json: json_text(req.credential_info),
        })
        .await?
        .into_inner();
    Ok(Json(c.into()))
}

/// Delete a credential.
#[utoipa::path(delete, path = "/credentials/{credential_name}", tag = "credentials",
    params(("credential_name" = String, Path, description = "The credential's name")),
    responses((status = 200, description = "Deleted", body = DeleteCredentialResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<DeleteCredentialResponse>> {
    let out = state
        .cp
        .clone()
        .delete_credential(pb::DeleteRequest {
            actor: Some(caller.actor),
            ids: vec![name],
        })
        .await?
        .into_inner();
    Ok(Json(DeleteCredentialResponse {
        deleted: out.deleted,
    }))
}
