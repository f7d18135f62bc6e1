//! The A2A agent registry, LiteLLM's management routes: `GET` and `POST /v1/agents`, `GET`,
//! `PUT`, `PATCH` and `DELETE /v1/agents/{agent_id}`. An agent made here gets a generated
//! `agent_id`; one from `config.yaml` has its name as its id and is changed in the file.
//! Data planes serve an agent at `/a2a/{agent_name}` (or `/a2a/{agent_id}`) once the change
//! reaches them. Header values (and `litellm_params.api_key`, sent as a bearer token) are
//! stored encrypted and shown as `***`. Admins manage agents; viewers read them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::mcp::{header_map, URL_PATTERN};
use super::Forwarded;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::time::iso;
use crate::AppState;

/// The agent's card, or at least where it answers. With a `name` it is a card, served to
/// callers instead of the agent's own (its interfaces pointing at the gateway); without,
/// callers get the agent's own card, fetched from beside its URL. Other A2A card fields
/// (`skills`, `capabilities`, ...) are kept as given.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct AgentCardParams {
    /// The agent's JSON-RPC endpoint.
    #[schema(schema_with = agent_url)]
    pub url: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub version: Option<String>,
}

/// How the gateway reaches the agent.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct AgentLitellmParams {
    /// Sent to the agent as `Authorization: Bearer <api_key>` (empty: none).
    pub api_key: Option<String>,
    /// Sent on every request to the agent (`extra_headers` is read the same).
    #[schema(schema_with = header_map)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Keys no object permission restricts may call it even under
    /// `general_settings.agent_access_default_deny`.
    pub make_public: Option<bool>,
    /// USD charged for each call the agent answers (held against the caller's budgets).
    #[schema(minimum = 0)]
    pub cost_per_query: Option<f64>,
}

/// LiteLLM's `/v1/agents` body.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct AgentRequest {
    /// Its path segment at `/a2a/{agent_name}`: letters, digits, `-`, `_`, `.`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub agent_name: String,
    pub agent_card_params: AgentCardParams,
    pub litellm_params: Option<AgentLitellmParams>,
    /// Keys and teams granted one of these groups (`object_permission.agent_access_groups`)
    /// may call it.
    #[schema(schema_with = group_names)]
    pub agent_access_groups: Option<Vec<String>>,
}

/// A change to an agent (`PATCH`): the fields given replace the stored ones.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct AgentPatch {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$", nullable = false)]
    pub agent_name: Option<String>,
    #[schema(nullable = false)]
    pub agent_card_params: Option<AgentCardParams>,
    pub litellm_params: Option<AgentLitellmParams>,
    #[schema(schema_with = group_names)]
    pub agent_access_groups: Option<Vec<String>>,
}

/// An agent as stored, LiteLLM's `AgentResponse`; header values shown as `***`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentResponse {
    pub agent_id: String,
    pub agent_name: String,
    #[schema(value_type = Object)]
    pub agent_card_params: Value,
    #[schema(value_type = Object)]
    pub litellm_params: Value,
    pub agent_access_groups: Vec<String>,
    /// `config` (from config.yaml) or `api`.
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: String,
    pub updated_by: String,
    /// Parts of the request that were ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentResponse>,
}

/// Access group names: not blank, without U+0000.
fn group_names() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")),
        )
        .build()
}

fn agent_url() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("The agent's JSON-RPC endpoint."))
        .pattern(Some(URL_PATTERN))
        .build()
}

impl TryFrom<pb::AgentInfo> for AgentResponse {
    type Error = ApiError;
    fn try_from(i: pb::AgentInfo) -> Result<Self, ApiError> {
        let mut entry: Value = serde_json::from_str(&i.entry_json).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the control plane sent an unreadable agent: {e}"),
            )
        })?;
        let take = |entry: &mut Value, k: &str| entry.get_mut(k).map(Value::take);
        Ok(Self {
            agent_name: take(&mut entry, "agent_name")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            agent_card_params: take(&mut entry, "agent_card_params").unwrap_or(json!({})),
            litellm_params: take(&mut entry, "litellm_params").unwrap_or(json!({})),
            agent_access_groups: take(&mut entry, "agent_access_groups")
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            agent_id: i.agent_id,
            source: i.source,
            created_at: iso(i.created_at),
            updated_at: iso(i.updated_at),
            created_by: i.created_by,
            updated_by: i.updated_by,
            warnings: i.warnings,
        })
    }
}

async fn all(state: &AppState, ids: Vec<String>) -> ApiResult<Vec<AgentResponse>> {
    let out = state
        .cp
        .clone()
        .list_agents(pb::ListRequest {
            page_size: 1000,
            ids,
            ..Default::default()
        })
        .await?
        .into_inner();
    out.agents.into_iter().map(TryInto::try_into).collect()
}

async fn save(
    state: &AppState,
    caller: Caller,
    agent_id: String,
    entry: Value,
    create: bool,
    patch: bool,
) -> ApiResult<Json<AgentResponse>> {
    let request = pb::UpsertAgentRequest {
        actor: Some(caller.actor),
        agent_id,
        entry_json: entry.to_string(),
        patch,
    };
    let mut cp = state.cp.clone();
    let out = if create {
        cp.create_agent(request).await
    } else {
        cp.update_agent(request).await
    }?
    .into_inner();
    Ok(Json(out.try_into()?))
}

/// Registered agents.
#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    responses((status = 200, description = "Every agent", body = AgentList)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<AgentList>> {
    Ok(Json(AgentList {
        agents: all(&state, Vec::new()).await?,
    }))
}

/// One agent.
#[utoipa::path(get, path = "/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, description = "The agent", body = AgentResponse)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentResponse>> {
    let found = all(&state, vec![id.clone()]).await?.into_iter().next();
    found
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("agent `{id}` not found")))
}

/// Register an agent.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = AgentRequest,
    responses((status = 201, description = "The agent, its header values hidden", body = AgentResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Forwarded<AgentRequest>,
) -> ApiResult<(StatusCode, Json<AgentResponse>)> {
    let saved = save(&state, caller, String::new(), body.json, true, false).await?;
    Ok((StatusCode::CREATED, saved))
}

/// Replace an agent: what the body leaves out is removed.
#[utoipa::path(put, path = "/v1/agents/{agent_id}", tag = "agents", request_body = AgentRequest,
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, description = "The agent as replaced", body = AgentResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn replace(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Forwarded<AgentRequest>,
) -> ApiResult<Json<AgentResponse>> {
    save(&state, caller, id, body.json, false, false).await
}

/// Change an agent: the fields given replace the stored ones (`null` removes one).
#[utoipa::path(patch, path = "/v1/agents/{agent_id}", tag = "agents", request_body = AgentPatch,
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, description = "The agent as changed", body = AgentResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn patch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Forwarded<AgentPatch>,
) -> ApiResult<Json<AgentResponse>> {
    save(&state, caller, id, body.json, false, true).await
}

/// Remove an agent.
#[utoipa::path(delete, path = "/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path, description = "The agent's id")),
    responses((status = 200, description = "Deleted")),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .cp
        .clone()
        .delete_agent(pb::DeleteRequest {
            actor: Some(caller.actor),
            ids: vec![id.clone()],
        })
        .await?;
    Ok(Json(
        json!({"message": format!("Agent {id} deleted successfully")}),
    ))
}
