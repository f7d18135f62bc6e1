//! The A2A agent registry, LiteLLM's management routes: `GET` and `POST /v1/agents`, `GET`,
//! `PUT`, `PATCH` and `DELETE /v1/agents/{agent_id}`, and `GET /agent/daily/activity`. An agent made here gets a generated
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
use utoipa::{IntoParams, ToSchema};

use super::mcp::{header_map, URL_PATTERN};
use super::Forwarded;
use super::{Date, Params};
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// `YYYY-MM-DD` (UTC), inclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub start_date: Option<String>,
    /// `YYYY-MM-DD` (UTC), inclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub end_date: Option<String>,
    /// Comma-separated agent ids; empty: every agent.
    pub agent_ids: Option<String>,
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u32>,
}

/// Calls, their outcome, tokens and spend.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ActivityMetrics {
    pub spend: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub api_requests: u64,
    pub successful_requests: u64,
    pub failed_requests: u64,
}

impl ActivityMetrics {
    fn add(&mut self, d: &pb::AgentDay) {
        self.spend += d.spend;
        self.prompt_tokens += d.prompt_tokens;
        self.completion_tokens += d.completion_tokens;
        self.total_tokens += d.prompt_tokens + d.completion_tokens;
        self.api_requests += d.requests;
        self.successful_requests += d.successful;
        self.failed_requests += d.requests.saturating_sub(d.successful);
    }
}

/// One agent's share of a day.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentShare {
    pub metrics: ActivityMetrics,
    /// `agent_name` (empty when the agent has been deleted).
    #[schema(value_type = Object)]
    pub metadata: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityBreakdown {
    /// By agent id.
    pub entities: BTreeMap<String, AgentShare>,
}

/// One UTC day.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub metrics: ActivityMetrics,
    pub breakdown: ActivityBreakdown,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityTotals {
    pub total_spend: f64,
    pub total_prompt_tokens: u64,
    pub total_completion_tokens: u64,
    pub total_tokens: u64,
    pub total_api_requests: u64,
    pub total_successful_requests: u64,
    pub total_failed_requests: u64,
    pub page: u32,
    pub total_pages: u64,
    pub has_more: bool,
}

/// LiteLLM's daily activity shape: days with their totals and a breakdown by agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentActivity {
    pub results: Vec<ActivityDay>,
    pub metadata: ActivityTotals,
}

/// Calls to agents per UTC day: totals and each agent's share, from the spend logs (calls
/// made through attached data planes). Pages are of days.
#[utoipa::path(get, path = "/agent/daily/activity", tag = "agents", params(ActivityQuery),
    responses((status = 200, description = "Days, oldest first", body = AgentActivity)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn daily_activity(
    State(state): State<Arc<AppState>>,
    Params(q): Params<ActivityQuery>,
) -> ApiResult<Json<AgentActivity>> {
    let size = super::count_param("page_size", q.page_size, 10, 1000)?;
    let page = super::count_param("page", q.page, 1, super::MAX_PAGE)?;
    let filter = super::spend::range(q.start_date.as_deref(), None)?;
    // The end day is included: the bound is the next day's start.
    let until = super::spend::range(q.end_date.as_deref(), None)?
        .since_ms
        .map(|ms| ms + 86_400_000);
    let agent_ids: Vec<String> = q
        .agent_ids
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let days = state
        .cp
        .clone()
        .agent_activity(pb::AgentActivityRequest {
            since_ms: filter.since_ms,
            until_ms: until,
            agent_ids,
        })
        .await?
        .into_inner()
        .days;
    let names: BTreeMap<String, String> = all(&state, Vec::new())
        .await?
        .into_iter()
        .map(|a| (a.agent_id, a.agent_name))
        .collect();
    let mut all = ActivityMetrics::default();
    let mut results: Vec<ActivityDay> = Vec::new();
    for d in &days {
        all.add(d);
        let mut whole = ActivityMetrics::default();
        whole.add(d);
        if results.last().is_none_or(|r| r.date != d.day) {
            results.push(ActivityDay {
                date: d.day.clone(),
                metrics: ActivityMetrics::default(),
                breakdown: ActivityBreakdown {
                    entities: BTreeMap::new(),
                },
            });
        }
        if let Some(day) = results.last_mut() {
            day.metrics.add(d);
            let name = names.get(&d.agent_id).cloned().unwrap_or_default();
            day.breakdown.entities.insert(
                d.agent_id.clone(),
                AgentShare {
                    metrics: whole,
                    metadata: json!({"agent_name": name}),
                },
            );
        }
    }
    let total_pages = super::total_pages(results.len() as u64, size);
    let totals = ActivityTotals {
        total_spend: all.spend,
        total_prompt_tokens: all.prompt_tokens,
        total_completion_tokens: all.completion_tokens,
        total_tokens: all.total_tokens,
        total_api_requests: all.api_requests,
        total_successful_requests: all.successful_requests,
        total_failed_requests: all.failed_requests,
        page,
        total_pages,
        has_more: u64::from(page) < total_pages,
    };
    let results = results
        .into_iter()
        .skip((page as usize - 1).saturating_mul(size as usize))
        .take(size as usize)
        .collect();
    Ok(Json(AgentActivity {
        results,
        metadata: totals,
    }))
}
