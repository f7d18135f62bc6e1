//! The MCP server registry, LiteLLM's management routes: `GET`, `POST`, `PUT
//! /v1/mcp/server`, `GET` and `DELETE /v1/mcp/server/{server_id}`, and
//! `GET /v1/mcp/access_groups`. A server's `server_id` is its name. Credentials and static
//! header values are stored encrypted and never returned. Admins manage servers; viewers
//! read them. (`/v1/mcp/tools` and `/v1/mcp/server/health` need the servers themselves, so
//! data planes serve them.)

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{non_empty, Body};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// How the gateway reaches the server: streamable HTTP, the legacy HTTP+SSE transport, or
/// a program each data plane runs (`stdio`; data planes attached to the control plane run
/// it only when started with `--mcp-stdio`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Http,
    StreamableHttp,
    Sse,
    Stdio,
}

/// The credential the gateway presents to the server.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    None,
    ApiKey,
    BearerToken,
    Basic,
    Authorization,
    /// OAuth 2.0 client credentials: `credentials.client_id`, `credentials.client_secret`,
    /// `token_url` (and `credentials.scopes`); the gateway gets and renews its tokens.
    Oauth2,
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct Credentials {
    /// The API key, token or `base64(user:password)` for `auth_type`.
    #[schema(min_length = 1)]
    pub auth_value: Option<String>,
    /// `oauth2`: the client.
    #[schema(min_length = 1)]
    pub client_id: Option<String>,
    #[schema(min_length = 1)]
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
}

/// A server's settings, LiteLLM's shape.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct McpServerSettings {
    pub description: Option<String>,
    #[schema(schema_with = endpoint_url)]
    pub url: Option<String>,
    pub transport: Option<Transport>,
    /// `api_key`, `bearer_token`, `basic` and `authorization` need `credentials.auth_value`
    /// (on update: given, or stored).
    pub auth_type: Option<AuthType>,
    pub credentials: Option<Credentials>,
    /// Sent on every request to the server.
    #[schema(schema_with = header_map)]
    pub static_headers: Option<BTreeMap<String, String>>,
    /// Only these tools are exposed (empty: all).
    pub allowed_tools: Option<Vec<String>>,
    /// Never exposed.
    pub disallowed_tools: Option<Vec<String>>,
    /// Keys, teams and organizations granted one of these groups may use the server.
    pub mcp_access_groups: Option<Vec<String>>,
    /// Every key may use the server, whatever its grants.
    pub allow_all_keys: Option<bool>,
    #[schema(schema_with = token_url)]
    pub token_url: Option<String>,
    /// `stdio`: the program to run.
    #[schema(min_length = 1)]
    pub command: Option<String>,
    /// `stdio`: its arguments.
    pub args: Option<Vec<String>>,
    /// `stdio`: its environment (stored encrypted, never returned).
    #[schema(schema_with = env_map)]
    pub env: Option<BTreeMap<String, String>>,
    /// An OpenAPI 3 file (JSON or YAML) on each data plane's host: every operation of the
    /// API at `url` becomes a tool.
    #[schema(min_length = 1)]
    pub spec_path: Option<String>,
    /// What calls of the server's tools cost, charged to the caller (LiteLLM's `mcp_info`).
    pub mcp_info: Option<McpInfo>,
}

/// LiteLLM's `mcp_info`, as far as RouteIQ reads it (display fields are ignored).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct McpInfo {
    pub mcp_server_cost_info: Option<McpServerCostInfo>,
}

/// The cost of a tool call, in USD.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct McpServerCostInfo {
    /// A call of any tool not priced on its own.
    #[schema(minimum = 0)]
    pub default_cost_per_query: Option<f64>,
    /// By the server's own tool names.
    #[schema(schema_with = tool_prices)]
    pub tool_name_to_cost_per_query: Option<BTreeMap<String, f64>>,
}

/// Tool names to a price of 0 or more.
fn tool_prices() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Number))
                .minimum(Some(0.0))
                .into(),
        )))
        .build()
}

/// The server's MCP endpoint (a `schema_with` schema carries no doc comment, so the
/// description is set here).
fn endpoint_url() -> utoipa::openapi::schema::Object {
    http_url("The server's MCP endpoint.")
}

fn token_url() -> utoipa::openapi::schema::Object {
    http_url("`oauth2`: the token endpoint.")
}

/// An http(s) URL with a host (and a port in range), as the control plane accepts for a
/// server's `url` and `token_url`; or null.
fn http_url(description: &str) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(description))
        .pattern(Some(URL_PATTERN))
        .build()
}

pub(super) const URL_PATTERN: &str = "^https?://[A-Za-z0-9.-]+(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?$";

/// Environment variables: names and values without NUL or `=` in names.
fn env_map() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z_][A-Za-z0-9_]{0,127}$")),
        ))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

/// Header names and values as HTTP allows them.
pub(super) fn header_map() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[\\x20-\\x7e]*$")),
        ))
        .build()
}

/// The JSON-Schema condition of [`McpServerSettings`]: an `auth_type` with a credential
/// needs the credential (added to the spec by `openapi::finish`).
pub fn auth_conditions() -> utoipa::openapi::extensions::Extensions {
    let mut c = utoipa::openapi::extensions::Extensions::default();
    let string = json!({"type": "string", "minLength": 1});
    c.insert(
        "allOf".to_owned(),
        json!([
            {
                "if": {"required": ["auth_type"], "properties": {"auth_type": {
                    "enum": ["api_key", "bearer_token", "basic", "authorization"]}}},
                "then": {"required": ["credentials"], "properties": {"credentials": {
                    "type": "object", "required": ["auth_value"],
                    "properties": {"auth_value": string}}}},
            },
            {
                "if": {"required": ["auth_type"], "properties": {"auth_type": {"const": "oauth2"}}},
                "then": {"required": ["credentials", "token_url"], "properties": {
                    "token_url": {"type": "string"},
                    "credentials": {"type": "object", "required": ["client_id", "client_secret"],
                        "properties": {"client_id": string, "client_secret": string}}}},
            },
            {
                // An OpenAPI server is called over HTTP.
                "if": {"required": ["spec_path"], "properties": {"spec_path": {"type": "string"}}},
                "then": {"properties": {"transport": {"enum": ["http", null]}}},
            },
        ]),
    );
    c
}

/// A new server: `url` is required, or `command` for `transport: stdio`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct NewMcpServerRequest {
    /// The server's name, which is also its `server_id`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub server_name: String,
    #[serde(flatten)]
    pub settings: McpServerSettings,
}

/// The JSON-Schema condition of [`NewMcpServerRequest`]: a `stdio` server needs its
/// `command`, others their `url` (added to the spec by `openapi::finish`).
pub fn new_conditions() -> utoipa::openapi::extensions::Extensions {
    let mut c = utoipa::openapi::extensions::Extensions::default();
    c.extend([
        (
            "if".to_owned(),
            json!({"required": ["transport"], "properties": {"transport": {"const": "stdio"}}}),
        ),
        (
            "then".to_owned(),
            json!({"required": ["command"], "properties": {"command": {"type": "string"}}}),
        ),
        (
            "else".to_owned(),
            json!({"required": ["url"], "properties": {"url": {"type": "string"}}}),
        ),
    ]);
    c
}

/// A change to a server: the fields given replace the stored ones, the others stay
/// (`allowed_tools: []` exposes every tool again; absent credentials are kept).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct UpdateMcpServerRequest {
    /// The server's name.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub server_id: String,
    #[serde(flatten)]
    pub settings: McpServerSettings,
}

impl McpServerSettings {
    /// A 400 naming the first field the spec says may not be empty that is: a credential
    /// the server would not use is refused all the same, as the spec says.
    fn check(&self) -> ApiResult<()> {
        let credentials = self.credentials.as_ref();
        let fields = [
            ("command", self.command.as_deref()),
            ("spec_path", self.spec_path.as_deref()),
            (
                "credentials.auth_value",
                credentials.and_then(|c| c.auth_value.as_deref()),
            ),
            (
                "credentials.client_id",
                credentials.and_then(|c| c.client_id.as_deref()),
            ),
            (
                "credentials.client_secret",
                credentials.and_then(|c| c.client_secret.as_deref()),
            ),
        ];
        match fields.into_iter().find(|(_, v)| *v == Some("")) {
            Some((field, _)) => {
                Err(ApiError::bad_request(format!("`{field}` may not be empty")).param(field))
            }
            None => Ok(()),
        }
    }

    /// The `mcp_servers` entry the control plane compiles: only the fields given.
    fn entry(self) -> Value {
        let credentials = self.credentials.unwrap_or_default();
        let entry = Entry {
            description: self.description,
            url: self.url,
            transport: self.transport,
            auth_type: self.auth_type,
            auth_value: credentials.auth_value,
            client_id: credentials.client_id,
            client_secret: credentials.client_secret,
            scopes: credentials.scopes,
            token_url: self.token_url,
            static_headers: self.static_headers,
            allowed_tools: self.allowed_tools,
            disallowed_tools: self.disallowed_tools,
            access_groups: self.mcp_access_groups,
            allow_all_keys: self.allow_all_keys,
            command: self.command,
            args: self.args,
            env: self.env,
            spec_path: self.spec_path,
            mcp_info: self.mcp_info,
        };
        serde_json::to_value(entry).unwrap_or_else(|_| json!({}))
    }
}

/// An `mcp_servers` entry of `config.yaml`, as far as a request sets it.
#[derive(Serialize)]
struct Entry {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transport: Option<Transport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_type: Option<AuthType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    static_headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_tools: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disallowed_tools: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_groups: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_all_keys: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spec_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_info: Option<McpInfo>,
}

/// A server as stored, without its secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct McpServerObject {
    /// Its name.
    pub server_id: String,
    pub server_name: String,
    pub description: Option<String>,
    pub url: String,
    pub transport: String,
    pub auth_type: String,
    /// Always null: credentials are never returned.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Value>,
    /// The names of the headers sent on every request (values are not returned).
    pub static_header_names: Vec<String>,
    /// Only these tools are exposed; null: all.
    pub allowed_tools: Option<Vec<String>>,
    pub disallowed_tools: Vec<String>,
    pub mcp_access_groups: Vec<String>,
    pub allow_all_keys: bool,
    /// `stdio`: the program, its arguments, and the names of its environment variables
    /// (values are not returned).
    pub command: Option<String>,
    pub args: Vec<String>,
    pub env_names: Vec<String>,
    /// `oauth2`: the client id, token endpoint and scopes (the secret is not returned).
    pub client_id: Option<String>,
    pub token_url: Option<String>,
    pub scopes: Vec<String>,
    /// The OpenAPI file the server's tools come from.
    pub spec_path: Option<String>,
    /// What its tool calls cost; null: nothing.
    pub mcp_info: Option<McpInfo>,
    /// `config` (from config.yaml, replaced by the next import) or `api`.
    pub source: String,
}

impl From<pb::McpServerInfo> for McpServerObject {
    fn from(i: pb::McpServerInfo) -> Self {
        let s = i.server.unwrap_or_default();
        Self {
            server_id: s.name.clone(),
            server_name: s.name,
            description: non_empty(s.description),
            url: s.url,
            transport: s.transport,
            auth_type: s.auth_type,
            credentials: None,
            static_header_names: s.static_headers.into_keys().collect(),
            allowed_tools: s.restrict_tools.then_some(s.allowed_tools),
            disallowed_tools: s.disallowed_tools,
            mcp_access_groups: s.access_groups,
            allow_all_keys: s.allow_all_keys,
            command: non_empty(s.command),
            args: s.args,
            env_names: s.env.into_keys().collect(),
            client_id: non_empty(s.oauth2_client_id),
            token_url: non_empty(s.oauth2_token_url),
            scopes: s.oauth2_scopes,
            spec_path: non_empty(s.spec_path),
            mcp_info: (s.cost_per_call > 0.0 || !s.cost_per_tool.is_empty()).then(|| McpInfo {
                mcp_server_cost_info: Some(McpServerCostInfo {
                    default_cost_per_query: Some(s.cost_per_call),
                    tool_name_to_cost_per_query: Some(s.cost_per_tool.into_iter().collect()),
                }),
            }),
            source: i.source,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SavedMcpServer {
    #[serde(flatten)]
    pub server: McpServerObject,
    /// Parts of the request that were ignored.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessGroups {
    pub access_groups: Vec<String>,
}

async fn all(state: &AppState, ids: Vec<String>) -> ApiResult<Vec<McpServerObject>> {
    let out = state
        .cp
        .clone()
        .list_mcp_servers(pb::ListRequest {
            page_size: 1000,
            ids,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(out.servers.into_iter().map(Into::into).collect())
}

async fn save(
    state: &AppState,
    caller: Caller,
    name: String,
    entry: Value,
    create: bool,
) -> ApiResult<Json<SavedMcpServer>> {
    let request = pb::UpsertMcpServerRequest {
        actor: Some(caller.actor),
        name,
        entry_json: entry.to_string(),
    };
    let mut cp = state.cp.clone();
    let out = if create {
        cp.create_mcp_server(request).await
    } else {
        cp.update_mcp_server(request).await
    }?
    .into_inner();
    let warnings = out.warnings.clone();
    Ok(Json(SavedMcpServer {
        server: out.into(),
        warnings,
    }))
}

/// MCP servers, without their secrets.
#[utoipa::path(get, path = "/v1/mcp/server", tag = "mcp",
    responses((status = 200, description = "Every server", body = Vec<McpServerObject>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<Vec<McpServerObject>>> {
    Ok(Json(all(&state, Vec::new()).await?))
}

/// One MCP server.
#[utoipa::path(get, path = "/v1/mcp/server/{server_id}", tag = "mcp",
    params(("server_id" = String, Path, description = "The server's name")),
    responses((status = 200, description = "The server", body = McpServerObject)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<McpServerObject>> {
    let found = all(&state, vec![id.clone()]).await?.into_iter().next();
    found.map(Json).ok_or_else(|| {
        ApiError::not_found(if id == "health" {
            "MCP server health is served by data planes: GET /v1/mcp/server/health there".into()
        } else {
            format!("MCP server `{id}` not found")
        })
    })
}

/// Add an MCP server; data planes serve it once the change reaches them.
#[utoipa::path(post, path = "/v1/mcp/server", tag = "mcp", request_body = NewMcpServerRequest,
    responses((status = 201, description = "The server, without its secrets", body = SavedMcpServer)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<NewMcpServerRequest>,
) -> ApiResult<(StatusCode, Json<SavedMcpServer>)> {
    req.settings.check()?;
    let entry = req.settings.entry();
    let saved = save(&state, caller, req.server_name, entry, true).await?;
    Ok((StatusCode::CREATED, saved))
}

/// Change an MCP server: the fields given replace the stored ones; absent credentials keep
/// the stored ones.
#[utoipa::path(put, path = "/v1/mcp/server", tag = "mcp", request_body = UpdateMcpServerRequest,
    responses((status = 202, description = "The server as changed, without its secrets", body = SavedMcpServer)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<UpdateMcpServerRequest>,
) -> ApiResult<(StatusCode, Json<SavedMcpServer>)> {
    req.settings.check()?;
    let entry = req.settings.entry();
    let saved = save(&state, caller, req.server_id, entry, false).await?;
    Ok((StatusCode::ACCEPTED, saved))
}

/// Delete an MCP server.
#[utoipa::path(delete, path = "/v1/mcp/server/{server_id}", tag = "mcp",
    params(("server_id" = String, Path, description = "The server's name")),
    responses((status = 202, description = "Deleted")),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let out = state
        .cp
        .clone()
        .delete_mcp_servers(pb::DeleteRequest {
            actor: Some(caller.actor),
            ids: vec![id],
        })
        .await?
        .into_inner();
    Ok((StatusCode::ACCEPTED, Json(json!({"deleted": out.deleted}))))
}

/// The access groups the servers name.
#[utoipa::path(get, path = "/v1/mcp/access_groups", tag = "mcp",
    responses((status = 200, description = "Sorted, without duplicates", body = AccessGroups)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn access_groups(State(state): State<Arc<AppState>>) -> ApiResult<Json<AccessGroups>> {
    let mut groups: Vec<String> = all(&state, Vec::new())
        .await?
        .into_iter()
        .flat_map(|s| s.mcp_access_groups)
        .collect();
    groups.sort();
    groups.dedup();
    Ok(Json(AccessGroups {
        access_groups: groups,
    }))
}
