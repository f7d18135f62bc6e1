//! The LiteLLM `config.yaml` schema, as far as RouteIQ reads it.
//!
//! Every struct keeps the keys it does not know in `unknown`, so that they can be reported
//! as warnings instead of failing the load.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::{
    Deployment, DeploymentId, KeyHash, ModelInfo, ProviderKind, ProviderSettings, RouterSettings,
    RoutingStrategy, Secret, Snapshot,
};
use serde::Deserialize;
use serde_json::Value as Json;

use super::model::{
    bedrock_api_base, compatible_row, parse_model, vertex_api_base, BEDROCK_DEFAULT_REGION,
    VERTEX_DEFAULT_LOCATION,
};

type Unknown = BTreeMap<String, serde_norway::Value>;

#[derive(Debug, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    model_list: Vec<RawDeployment>,
    #[serde(default)]
    credential_list: Vec<RawCredential>,
    #[serde(default)]
    general_settings: RawGeneralSettings,
    #[serde(default)]
    router_settings: RawRouterSettings,
    #[serde(default)]
    litellm_settings: RawLitellmSettings,
    /// By server name.
    #[serde(default)]
    mcp_servers: BTreeMap<String, RawMcpServer>,
    /// A2A agents (`agent_list` before LiteLLM 1.95).
    #[serde(default, alias = "agent_list")]
    agents: Vec<RawAgent>,
    /// Consumed before deserialisation (see `env::environment_variables_section`).
    #[serde(default, rename = "environment_variables")]
    _environment_variables: Option<serde_norway::Value>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub struct RawDeployment {
    model_name: String,
    litellm_params: RawLitellmParams,
    #[serde(default)]
    pub model_info: RawModelInfo,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize)]
struct RawLitellmParams {
    model: String,
    api_base: Option<String>,
    api_key: Option<String>,
    api_version: Option<String>,
    timeout: Option<f64>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    weight: Option<f64>,
    mock_response: Option<String>,
    stream_timeout: Option<f64>,
    #[serde(default)]
    tags: Vec<String>,
    litellm_credential_name: Option<String>,
    input_cost_per_token: Option<f64>,
    output_cost_per_token: Option<f64>,
    vertex_project: Option<String>,
    vertex_location: Option<String>,
    vertex_credentials: Option<String>,
    aws_access_key_id: Option<String>,
    aws_secret_access_key: Option<String>,
    aws_session_token: Option<String>,
    aws_region_name: Option<String>,
    aws_role_name: Option<String>,
    aws_session_name: Option<String>,
    aws_profile_name: Option<String>,
    aws_web_identity_token: Option<String>,
    aws_sts_endpoint: Option<String>,
    aws_bedrock_runtime_endpoint: Option<String>,
    drop_params: Option<bool>,
    additional_drop_params: Option<Vec<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawModelInfo {
    pub id: Option<String>,
    mode: Option<String>,
    max_tokens: Option<u64>,
    max_input_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    input_cost_per_token: Option<f64>,
    output_cost_per_token: Option<f64>,
    #[serde(default)]
    access_groups: Vec<String>,
    /// `model_info` is free-form metadata in LiteLLM: nothing here is unknown.
    #[serde(flatten)]
    extra: BTreeMap<String, Json>,
}

#[derive(Debug, Deserialize)]
struct RawCredential {
    credential_name: String,
    #[serde(default)]
    credential_values: HashMap<String, String>,
    #[serde(default)]
    credential_info: Option<serde_norway::Value>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// One entry of `mcp_servers:`.
#[derive(Debug, Deserialize)]
struct RawMcpServer {
    url: Option<String>,
    transport: Option<String>,
    description: Option<String>,
    auth_type: Option<String>,
    /// LiteLLM's two names for the credential.
    #[serde(alias = "authentication_token")]
    auth_value: Option<String>,
    #[serde(default)]
    static_headers: BTreeMap<String, String>,
    allowed_tools: Option<Vec<String>>,
    #[serde(default)]
    disallowed_tools: Vec<String>,
    #[serde(default)]
    access_groups: Vec<String>,
    #[serde(default)]
    allow_all_keys: bool,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// `auth_type: oauth2` (machine to machine: `client_credentials`).
    oauth2_flow: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    token_url: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// An OpenAPI 3 file: the API at `url` as tools.
    spec_path: Option<String>,
    mcp_info: Option<RawMcpInfo>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// LiteLLM's `mcp_info`: display fields (kept by LiteLLM's UI, ignored here) and the cost
/// of tool calls.
#[derive(Debug, Deserialize)]
struct RawMcpInfo {
    mcp_server_cost_info: Option<RawMcpCost>,
    #[serde(flatten)]
    _display: BTreeMap<String, Json>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcpCost {
    default_cost_per_query: Option<f64>,
    #[serde(default)]
    tool_name_to_cost_per_query: BTreeMap<String, Option<f64>>,
}

impl RawMcpCost {
    fn compile(self, at: &str) -> Result<crate::McpToolCost, (String, String)> {
        let price = |v: f64, field: String| {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err((
                    field,
                    format!("`{v}` is not a price: a cost per call is 0 or more USD"),
                ))
            }
        };
        let at = format!("{at}.mcp_info.mcp_server_cost_info");
        let per_call = price(
            self.default_cost_per_query.unwrap_or(0.0),
            format!("{at}.default_cost_per_query"),
        )?;
        let mut per_tool = Vec::new();
        // A tool without a price (null) costs the default, as in LiteLLM.
        for (tool, v) in self.tool_name_to_cost_per_query {
            if let Some(v) = v {
                let field = format!("{at}.tool_name_to_cost_per_query.{tool}");
                per_tool.push((tool, price(v, field)?));
            }
        }
        Ok(crate::McpToolCost { per_call, per_tool })
    }
}

/// Whether `url` is an http(s) URL with a host name (letters, digits, `.`, `-`) or an IP
/// address, a port in range and no user info (the admin API's spec says the same).
fn http_url(url: &str) -> bool {
    let Ok(base) = crate::ApiBase::parse(url) else {
        return false;
    };
    let host = &base.host;
    let name = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    // No `user@` before the host: credentials go in headers.
    let userinfo = base.authority.contains('@');
    (name || host.parse::<std::net::Ipv6Addr>().is_ok()) && !userinfo
}

/// Whether `name: value` is a valid HTTP header.
fn header(name: &str, value: &str) -> bool {
    http::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && http::HeaderValue::from_str(value).is_ok()
}

/// One entry of `agents:`: LiteLLM's agent gateway.
#[derive(Debug, Deserialize)]
struct RawAgent {
    agent_name: String,
    /// The agent's card, or at least its `url`.
    agent_card_params: serde_json::Map<String, Json>,
    litellm_params: Option<RawAgentParams>,
    agent_access_groups: Option<Vec<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
struct RawAgentParams {
    /// Presented to the agent as a bearer token.
    api_key: Option<String>,
    #[serde(alias = "extra_headers")]
    headers: Option<BTreeMap<String, String>>,
    make_public: Option<bool>,
    /// USD per call the agent answers.
    cost_per_query: Option<f64>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// An `agents` entry given through the management API (`agent_name`, `agent_card_params`,
/// `litellm_params`, `agent_access_groups`), compiled like one from the config file, with
/// the registry's id; unknown fields are warnings. Errors are `(path in the entry, message)`.
pub(crate) fn compile_agent_entry(
    id: &str,
    value: serde_norway::Value,
) -> Result<(crate::A2aAgent, Vec<String>), (String, String)> {
    let raw: RawAgent = serde_path_to_error::deserialize(value)
        .map_err(|e| (e.path().to_string(), e.into_inner().to_string()))?;
    let mut warnings = Vec::new();
    raw.warn(&mut warnings, "");
    let mut agent = raw
        .compile("")
        .map_err(|(at, m)| (at.trim_start_matches('.').to_owned(), m))?;
    agent.id = id.to_owned();
    Ok((agent, warnings))
}

impl RawAgent {
    /// Its fields RouteIQ does not read (`at`: where it is, `""` for an API entry).
    fn warn(&self, warnings: &mut Vec<String>, at: &str) {
        warn_unknown(warnings, at, &self.unknown);
        if let Some(p) = &self.litellm_params {
            let at = if at.is_empty() {
                "litellm_params".to_owned()
            } else {
                format!("{at}.litellm_params")
            };
            warn_unknown(warnings, &at, &p.unknown);
        }
    }

    fn compile(self, at: &str) -> Result<crate::A2aAgent, (String, String)> {
        let name = self.agent_name;
        if !crate::A2aAgent::valid_name(&name) {
            return Err((
                format!("{at}.agent_name"),
                format!("`{name}` cannot name an agent: it is a URL path segment (letters, digits, `-`, `_`, `.`; at most 128)"),
            ));
        }
        let url = match self.agent_card_params.get("url") {
            Some(Json::String(u)) => u.clone(),
            _ => {
                return Err((
                    format!("{at}.agent_card_params.url"),
                    "the agent's URL (its JSON-RPC endpoint) is required".into(),
                ))
            }
        };
        let ok = http_url(&url);
        if !ok {
            return Err((
                format!("{at}.agent_card_params.url"),
                format!("`{url}` is not an http(s) URL"),
            ));
        }
        let params = self.litellm_params.unwrap_or_default();
        let mut headers = Vec::new();
        if let Some(k) = params.api_key.filter(|k| !k.is_empty()) {
            headers.push((
                "authorization".to_owned(),
                Secret::new(format!("Bearer {k}")),
            ));
        }
        for (k, v) in params.headers.unwrap_or_default() {
            let valid = header(&k, &v);
            if !valid {
                return Err((
                    format!("{at}.litellm_params.headers"),
                    format!("`{k}` is not a valid HTTP header name and value"),
                ));
            }
            headers.push((k.to_ascii_lowercase(), Secret::new(v)));
        }
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        headers.dedup_by(|a, b| a.0 == b.0);
        let card = self
            .agent_card_params
            .contains_key("name")
            .then_some(Json::Object(self.agent_card_params));
        let cost_per_query = params.cost_per_query.unwrap_or(0.0);
        if !(cost_per_query.is_finite() && cost_per_query >= 0.0) {
            return Err((
                format!("{at}.litellm_params.cost_per_query"),
                format!("{cost_per_query} is not a price: a number of USD, 0 or more"),
            ));
        }
        let access_groups = self.agent_access_groups.unwrap_or_default();
        if let Some(g) = access_groups.iter().find(|g| g.trim().is_empty()) {
            return Err((
                format!("{at}.agent_access_groups"),
                format!("`{g}` cannot name an access group"),
            ));
        }
        Ok(crate::A2aAgent {
            // An agent from the config file is known by its name.
            id: name.clone(),
            name,
            url,
            card,
            headers,
            public: params.make_public.unwrap_or(false),
            access_groups,
            cost_per_query,
        })
    }
}

/// An `mcp_servers` entry given through the management API, compiled like one from the
/// config file; unknown fields are warnings. Errors are `(path in the entry, message)`.
pub(crate) fn compile_mcp_entry(
    name: &str,
    value: serde_norway::Value,
) -> Result<(crate::McpServer, Vec<String>), (String, String)> {
    let raw: RawMcpServer = serde_path_to_error::deserialize(value)
        .map_err(|e| (e.path().to_string(), e.into_inner().to_string()))?;
    let mut warnings = Vec::new();
    warn_unknown(&mut warnings, "", &raw.unknown);
    let server = raw
        .compile(name, "")
        .map_err(|(at, m)| (at.trim_start_matches('.').to_owned(), m))?;
    Ok((server, warnings))
}

impl RawMcpServer {
    fn compile(self, name: &str, at: &str) -> Result<crate::McpServer, (String, String)> {
        use crate::{McpAuth, McpServer, McpTransport};
        if !McpServer::valid_name(name) {
            return Err((
                at.to_owned(),
                "an MCP server name is 1 to 64 letters, digits, `_` or `-`".into(),
            ));
        }
        let transport = match self.transport.as_deref() {
            None => McpTransport::Http,
            Some(t) => McpTransport::parse(t).ok_or_else(|| {
                (
                    format!("{at}.transport"),
                    format!("unknown transport `{t}` (http, sse, stdio)"),
                )
            })?,
        };
        let url = self.url.unwrap_or_default();
        let command = self.command.unwrap_or_default();
        if transport == McpTransport::Stdio && command.trim().is_empty() {
            return Err((
                format!("{at}.command"),
                "a stdio server needs the command to run".into(),
            ));
        }
        let spec_path = self.spec_path.filter(|p| !p.trim().is_empty());
        if spec_path.is_some() && transport != McpTransport::Http {
            return Err((
                format!("{at}.spec_path"),
                "an OpenAPI server is called over HTTP: its transport is http, its url the API's base".into(),
            ));
        }
        if transport != McpTransport::Stdio {
            let ok = http_url(&url);
            if !ok {
                return Err((
                    format!("{at}.url"),
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        }
        let oauth2 = self
            .auth_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("oauth2"));
        // A token URL given is checked even where it goes unused.
        if let Some(t) = self.token_url.as_deref().filter(|t| !t.is_empty()) {
            if !http_url(t) {
                return Err((
                    format!("{at}.token_url"),
                    format!("`{t}` is not an http(s) URL"),
                ));
            }
        }
        let value = if oauth2 {
            self.client_secret.or(self.auth_value)
        } else {
            self.auth_value
        };
        let auth = McpAuth::parse(self.auth_type.as_deref(), value.map(Secret::new))
            .map_err(|e| (format!("{at}.auth_type"), e))?;
        let oauth2 = if oauth2 {
            if let Some(flow) = self.oauth2_flow.filter(|f| f != "client_credentials") {
                return Err((
                    format!("{at}.oauth2_flow"),
                    format!("`{flow}` is not supported: the gateway gets its own tokens with client_credentials"),
                ));
            }
            let token_url = self.token_url.unwrap_or_default();
            let ok = http_url(&token_url);
            if !ok {
                return Err((
                    format!("{at}.token_url"),
                    format!("`{token_url}` is not an http(s) URL"),
                ));
            }
            let client_id = self.client_id.filter(|c| !c.is_empty()).ok_or_else(|| {
                (
                    format!("{at}.client_id"),
                    "auth_type oauth2 needs client_id".to_owned(),
                )
            })?;
            Some(crate::OAuth2Client {
                client_id,
                token_url,
                scopes: self.scopes,
            })
        } else {
            None
        };
        for (k, v) in &self.env {
            if let Err(e) = crate::McpServer::env_placeholders(v) {
                return Err((format!("{at}.env.{k}"), e));
            }
        }
        let cost = match self.mcp_info.and_then(|i| i.mcp_server_cost_info) {
            Some(c) => c.compile(at)?,
            None => crate::McpToolCost::default(),
        };
        for (k, v) in &self.static_headers {
            let valid = header(k, v);
            if !valid {
                return Err((
                    format!("{at}.static_headers"),
                    format!("`{k}` is not a valid HTTP header name and value"),
                ));
            }
        }
        Ok(McpServer {
            name: name.to_owned(),
            description: self.description,
            transport,
            url,
            auth,
            static_headers: self
                .static_headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), Secret::new(v)))
                .collect(),
            // An empty list restricts nothing, as in LiteLLM.
            allowed_tools: self.allowed_tools.filter(|a| !a.is_empty()),
            disallowed_tools: self.disallowed_tools,
            access_groups: self.access_groups,
            allow_all_keys: self.allow_all_keys,
            command,
            oauth2,
            spec_path,
            cost,
            args: self.args,
            env: self
                .env
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect(),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawGeneralSettings {
    master_key: Option<String>,
    max_request_size_mb: Option<f64>,
    user_header_name: Option<String>,
    allowed_egress: Option<Vec<String>>,
    #[serde(default)]
    agent_access_default_deny: bool,
    #[serde(flatten)]
    unknown: Unknown,
}

/// `router_settings`, read by [`RouterSettings::from_litellm`].
#[derive(Debug, Default, Deserialize)]
struct RawRouterSettings {
    #[serde(flatten)]
    all: Unknown,
}

/// LiteLLM's Redis keys in `router_settings` (the data plane's shared limits and health).
const REDIS_KEYS: [&str; 3] = ["redis_host", "redis_port", "redis_password"];

/// The router keys LiteLLM also reads from `litellm_settings` (`router_settings` wins).
const LITELLM_SETTINGS_ROUTER_KEYS: [&str; 6] = [
    "request_timeout",
    "num_retries",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "default_fallbacks",
];

#[derive(Debug, Default, Deserialize)]
struct RawLitellmSettings {
    #[serde(flatten)]
    all: Unknown,
}

impl RawConfig {
    /// `litellm_settings.<key>` as a boolean (false when absent or null).
    fn litellm_flag(&self, key: &str) -> Result<bool, (String, String)> {
        match self.litellm_settings.all.get(key) {
            None | Some(serde_norway::Value::Null) => Ok(false),
            Some(serde_norway::Value::Bool(b)) => Ok(*b),
            Some(_) => Err((
                format!("litellm_settings.{key}"),
                "must be true or false".into(),
            )),
        }
    }

    /// `redis://[:password@]host:port` from `router_settings.redis_host`, `redis_port`
    /// (default 6379) and `redis_password`; `None` without a host.
    /// Without `redis_host`, the cache's `litellm_settings.cache_params.host` (`port`,
    /// `password`) when the cache is on and its `type` is `redis`.
    pub fn redis_url(&self) -> Result<Option<crate::Secret>, (String, String)> {
        // Only a Redis cache that is on names a Redis.
        let cache_on = matches!(
            self.litellm_settings.all.get("cache"),
            Some(serde_norway::Value::Bool(true))
        );
        let cache_params = match self.litellm_settings.all.get("cache_params") {
            Some(serde_norway::Value::Mapping(m))
                if cache_on
                    && m.get("type").and_then(serde_norway::Value::as_str) == Some("redis") =>
            {
                Some(m)
            }
            _ => None,
        };
        let router_has_host = self
            .router_settings
            .all
            .get("redis_host")
            .is_some_and(|v| !v.is_null());
        let (section, prefix) = match cache_params {
            Some(m) if !router_has_host => (
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.clone())))
                    .collect::<BTreeMap<_, _>>(),
                "",
            ),
            _ => (self.router_settings.all.clone(), "redis_"),
        };
        let at = |k: &str| {
            if prefix.is_empty() {
                format!("litellm_settings.cache_params.{k}")
            } else {
                format!("router_settings.{prefix}{k}")
            }
        };
        let text = |k: &str| -> Result<Option<String>, (String, String)> {
            match section
                .get(&format!("{prefix}{k}"))
                .filter(|v| !v.is_null())
            {
                None => Ok(None),
                Some(serde_norway::Value::String(s)) => Ok(Some(s.clone())),
                Some(serde_norway::Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err((at(k), "must be a string".into())),
            }
        };
        let Some(host) = text("host")?.filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        let port = text("port")?.unwrap_or_else(|| "6379".into());
        if port.parse::<u16>().is_err() {
            return Err((at("port"), format!("`{port}` is not a port")));
        }
        let auth = match text("password")?.filter(|p| !p.is_empty()) {
            Some(p) => format!(":{}@", percent_encode(&p)),
            None => String::new(),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(Some(crate::Secret::new(format!(
            "redis://{auth}{host}:{port}"
        ))))
    }

    /// `litellm_settings.cache_params` when `litellm_settings.cache` is true.
    fn cache(
        &self,
        warnings: &mut Vec<String>,
    ) -> Result<Option<crate::CacheSettings>, (String, String)> {
        let on = match self.litellm_settings.all.get("cache") {
            None | Some(serde_norway::Value::Null) => false,
            Some(serde_norway::Value::Bool(b)) => *b,
            Some(_) => {
                return Err((
                    "litellm_settings.cache".into(),
                    "must be true or false".into(),
                ))
            }
        };
        let params = match self.litellm_settings.all.get("cache_params") {
            None | Some(serde_norway::Value::Null) => serde_json::Map::new(),
            Some(v) => match serde_json::to_value(v) {
                Ok(Json::Object(m)) => m,
                _ => {
                    return Err((
                        "litellm_settings.cache_params".into(),
                        "must be a mapping".into(),
                    ))
                }
            },
        };
        if !on {
            if !params.is_empty() {
                warnings.push(
                    "litellm_settings.cache_params is set but litellm_settings.cache is not true: responses are not cached".into(),
                );
            }
            return Ok(None);
        }
        crate::CacheSettings::from_litellm(&params, "litellm_settings.cache_params", warnings)
            .map(Some)
    }

    /// The router settings: `router_settings`, plus the router keys of `litellm_settings`
    /// that `router_settings` does not set.
    fn router(&self, warnings: &mut Vec<String>) -> Result<RouterSettings, (String, String)> {
        // Each section is read on its own first, so an error names the section it is in.
        let section =
            |name: &str, keys: &mut dyn Iterator<Item = (&String, &serde_norway::Value)>| {
                let mut m = serde_json::Map::new();
                for (k, v) in keys {
                    let v = serde_json::to_value(v)
                        .map_err(|e| (format!("{name}.{k}"), e.to_string()))?;
                    m.insert(k.clone(), v);
                }
                RouterSettings::from_litellm(&m, name).map_err(|e| match e.split_once(": ") {
                    Some((at, message)) => (at.to_owned(), message.to_owned()),
                    None => (name.to_owned(), e),
                })?;
                Ok::<_, (String, String)>(m)
            };
        let mut m = section(
            "litellm_settings",
            &mut self
                .litellm_settings
                .all
                .iter()
                .filter(|(k, _)| LITELLM_SETTINGS_ROUTER_KEYS.contains(&k.as_str())),
        )?;
        let own = section("router_settings", &mut self.router_settings.all.iter())?;
        if own.contains_key("timeout") {
            m.remove("request_timeout");
        }
        m.extend(own);
        let s = RouterSettings::from_litellm(&m, "router_settings")
            .map_err(|e| ("router_settings".to_owned(), e))?;
        for (name, secs) in [
            ("request_timeout", s.request_timeout),
            ("stream_timeout", s.stream_timeout),
        ] {
            if secs.is_some_and(|d| d.is_zero()) {
                return Err((
                    format!("router_settings.{name}"),
                    "must be a positive number of seconds".into(),
                ));
            }
        }
        if let RoutingStrategy::Unknown(n) = &s.routing_strategy {
            warnings.push(format!(
                "router_settings.routing_strategy `{n}` is not a known strategy; using simple-shuffle"
            ));
        }
        warnings.extend(s.learned_arg_warnings());
        Ok(s)
    }
}

fn warn_unknown(warnings: &mut Vec<String>, at: &str, unknown: &Unknown) {
    for key in unknown.keys() {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        warnings.push(format!(
            "config key `{path}` is not supported by this RouteIQ version and is ignored"
        ));
    }
}

fn seconds(at: &str, v: Option<f64>) -> Result<Option<Duration>, (String, String)> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= crate::router::MAX_SECS => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        Some(s) => Err((
            at.to_owned(),
            format!(
                "must be a positive number of seconds, at most {}, got {s}",
                crate::router::MAX_SECS
            ),
        )),
    }
}

impl RawDeployment {
    pub fn collect_unknown(&self, at: &str, warnings: &mut Vec<String>) {
        warn_unknown(warnings, at, &self.unknown);
        let params = if at.is_empty() {
            "litellm_params".to_owned()
        } else {
            format!("{at}.litellm_params")
        };
        warn_unknown(warnings, &params, &self.litellm_params.unknown);
    }
}

impl RawConfig {
    pub fn collect_unknown(&self, warnings: &mut Vec<String>) {
        warn_unknown(warnings, "", &self.unknown);
        warn_unknown(warnings, "general_settings", &self.general_settings.unknown);
        let unknown_of = |all: &Unknown, known: &[&str]| -> Unknown {
            all.iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let known: Vec<&str> = RouterSettings::KEYS
            .iter()
            .chain(&REDIS_KEYS)
            .copied()
            .collect();
        warn_unknown(
            warnings,
            "router_settings",
            &unknown_of(&self.router_settings.all, &known),
        );
        warn_unknown(
            warnings,
            "litellm_settings",
            &unknown_of(
                &self.litellm_settings.all,
                &[
                    &LITELLM_SETTINGS_ROUTER_KEYS[..],
                    &[
                        DROP_PARAMS,
                        "cache",
                        "cache_params",
                        TURN_OFF_MESSAGE_LOGGING,
                    ],
                ]
                .concat(),
            ),
        );
        for (i, d) in self.model_list.iter().enumerate() {
            d.collect_unknown(&format!("model_list[{i}]"), warnings);
        }
        for (name, m) in &self.mcp_servers {
            warn_unknown(warnings, &format!("mcp_servers.{name}"), &m.unknown);
        }
        for (i, a) in self.agents.iter().enumerate() {
            a.warn(warnings, &format!("agents[{i}]"));
        }
        for (i, c) in self.credential_list.iter().enumerate() {
            warn_unknown(warnings, &format!("credential_list[{i}]"), &c.unknown);
        }
    }

    /// The `credential_list`, for the control plane to store (the snapshot carries the
    /// values already resolved into deployments).
    pub fn credentials(&self) -> Vec<super::Credential> {
        self.credential_list
            .iter()
            .map(|c| super::Credential {
                name: c.credential_name.clone(),
                values: c
                    .credential_values
                    .iter()
                    .map(|(k, v)| (k.clone(), crate::Secret::new(v.clone())))
                    .collect(),
                info: c
                    .credential_info
                    .as_ref()
                    .and_then(|i| serde_json::to_value(i).ok())
                    .filter(serde_json::Value::is_object)
                    .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
            })
            .collect()
    }

    /// Checks the config and turns it into a snapshot. Errors are `(yaml path, message)`.
    pub fn into_snapshot(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        warnings: &mut Vec<String>,
    ) -> Result<Snapshot, (String, String)> {
        let mut credentials: HashMap<&str, &HashMap<String, String>> = HashMap::new();
        for (i, c) in self.credential_list.iter().enumerate() {
            if credentials
                .insert(c.credential_name.as_str(), &c.credential_values)
                .is_some()
            {
                return Err((
                    format!("credential_list[{i}].credential_name"),
                    format!("duplicate credential name `{}`", c.credential_name),
                ));
            }
        }

        let cache = self.cache(warnings)?;
        // `litellm_settings.drop_params`: the default of every deployment here.
        let drop_params = self.litellm_flag(DROP_PARAMS)?;
        let turn_off_message_logging = self.litellm_flag(TURN_OFF_MESSAGE_LOGGING)?;
        let mut deployments = Vec::with_capacity(self.model_list.len());
        let mut ids = HashSet::new();
        for (i, raw) in self.model_list.iter().enumerate() {
            let at = format!("model_list[{i}]");
            let mut d = compile_deployment(raw, &at, &credentials, env)?;
            if drop_params {
                d.settings
                    .params
                    .entry(DROP_PARAMS.to_owned())
                    .or_insert_with(|| "true".to_owned());
            }
            if !ids.insert(d.id.0.clone()) {
                return Err((
                    format!("{at}.model_info.id"),
                    format!("duplicate deployment id `{}`", d.id),
                ));
            }
            deployments.push(d);
        }
        if deployments.is_empty() {
            warnings
                .push("config has an empty `model_list`: every model request will get 404".into());
        }
        let embedder = cache
            .as_ref()
            .and_then(|c| c.semantic.as_ref())
            .and_then(|s| match &s.encoder {
                crate::EncoderSource::Deployment(group) => Some(group),
                _ => None,
            });
        if let Some(group) = embedder {
            let at = "litellm_settings.cache_params.redis_semantic_cache_embedding_model";
            let in_group: Vec<&Deployment> = deployments
                .iter()
                .filter(|d| &d.model_name == group)
                .collect();
            // The model each serves: `model_info.base_model` where given, else the upstream
            // model (an Azure deployment's name says nothing of its model: not compared).
            let mut models: Vec<&str> = in_group
                .iter()
                .filter_map(|d| {
                    let base = d.model_info.extra.get("base_model").and_then(Json::as_str);
                    match (base, d.provider) {
                        (Some(base), _) => Some(base),
                        (None, ProviderKind::Azure) => None,
                        (None, _) => Some(d.upstream_model.as_str()),
                    }
                })
                .collect();
            models.sort_unstable();
            models.dedup();
            if in_group.is_empty() {
                return Err((
                    at.into(),
                    format!("`{group}` is not a model_name of model_list"),
                ));
            }
            if models.len() > 1 {
                warnings.push(format!(
                    "{at}: `{group}` has deployments of {} models; the semantic cache compares vectors of any of them with each other, so give the group one embedding model",
                    models.len()
                ));
            }
        }

        let router = self.router(warnings)?;
        let max_request_body_bytes = match self.general_settings.max_request_size_mb {
            None => Snapshot::DEFAULT_MAX_REQUEST_BODY_BYTES,
            Some(mb) if mb.is_finite() && mb > 0.0 => (mb * 1024.0 * 1024.0) as usize,
            Some(mb) => {
                return Err((
                    "general_settings.max_request_size_mb".into(),
                    format!("must be a positive number, got {mb}"),
                ))
            }
        };
        let master_key = match self.general_settings.master_key {
            Some(k) if k.is_empty() => {
                return Err((
                    "general_settings.master_key".into(),
                    "must not be empty".into(),
                ))
            }
            Some(k) => Some(KeyHash::of(&k)),
            None => {
                warnings.push(
                    "general_settings.master_key is not set: the gateway accepts requests without a key".into(),
                );
                None
            }
        };

        let allowed_egress = self
            .general_settings
            .allowed_egress
            .as_deref()
            .map(crate::AllowedEgress::parse)
            .transpose()
            .map_err(|e| ("general_settings.allowed_egress".to_owned(), e))?;
        if let Some(egress) = &allowed_egress {
            warnings.extend(egress.unreachable(&deployments));
        }
        let mut mcp_servers = Vec::with_capacity(self.mcp_servers.len());
        for (name, raw) in self.mcp_servers {
            mcp_servers.push(raw.compile(&name, &format!("mcp_servers.{name}"))?);
        }
        let mut agents: Vec<crate::A2aAgent> = Vec::with_capacity(self.agents.len());
        for (i, raw) in self.agents.into_iter().enumerate() {
            let at = format!("agents[{i}]");
            let agent = raw.compile(&at)?;
            if agents.iter().any(|a| a.name == agent.name) {
                return Err((
                    format!("{at}.agent_name"),
                    format!("agent `{}` is configured twice", agent.name),
                ));
            }
            agents.push(agent);
        }
        let snapshot = Snapshot {
            cache,
            allowed_egress,
            mcp_servers,
            agents,
            agent_access_default_deny: self.general_settings.agent_access_default_deny,
            turn_off_message_logging,
            version: 0,
            master_key_hash: master_key,
            deployments,
            keys: Vec::new(),
            scopes: Vec::new(),
            // Skills live in the control plane's registry only.
            skills: Vec::new(),
            router,
            max_request_body_bytes,
            user_header_name: self
                .general_settings
                .user_header_name
                .filter(|h| !h.trim().is_empty())
                .map(|h| h.trim().to_ascii_lowercase()),
        };
        snapshot
            .validate()
            .map_err(|e| ("model_list".to_owned(), e.to_string()))?;
        Ok(snapshot)
    }
}

pub fn compile_deployment(
    raw: &RawDeployment,
    at: &str,
    credentials: &HashMap<&str, &HashMap<String, String>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Deployment, (String, String)> {
    let p = &raw.litellm_params;
    if raw.model_name.trim().is_empty() {
        return Err((format!("{at}.model_name"), "must not be empty".into()));
    }
    let parsed =
        parse_model(&p.model).map_err(|e| (format!("{at}.litellm_params.model"), e.to_string()))?;
    if parsed.upstream_model.is_empty() {
        return Err((
            format!("{at}.litellm_params.model"),
            format!("`{}` names no model after the provider prefix", p.model),
        ));
    }
    let provider = if p.mock_response.is_some() {
        ProviderKind::Mock
    } else {
        parsed.provider
    };

    let credential = match p
        .litellm_credential_name
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        None => None,
        Some(name) => Some(*credentials.get(name).ok_or_else(|| {
            (
                format!("{at}.litellm_params.litellm_credential_name"),
                format!("no credential named `{name}` in credential_list"),
            )
        })?),
    };
    let from_credential = |key: &str| credential.and_then(|c| c.get(key).cloned());
    let env_fallback = |var: &str| env(var).filter(|v| !v.is_empty());

    let (key_vars, base_vars, version_var): (&[&str], &[&str], _) = match provider {
        ProviderKind::OpenAi => compatible_row(&parsed.prefix)
            .map_or((&[], &[], None), |c| (c.key_vars, c.base_vars, None)),
        ProviderKind::Azure => (
            &["AZURE_API_KEY"],
            &["AZURE_API_BASE"],
            Some("AZURE_API_VERSION"),
        ),
        ProviderKind::Anthropic => (&["ANTHROPIC_API_KEY"], &["ANTHROPIC_API_BASE"], None),
        ProviderKind::Gemini => (
            &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
            &["GEMINI_API_BASE"],
            None,
        ),
        ProviderKind::Cohere => (
            &["COHERE_API_KEY", "CO_API_KEY"],
            &["COHERE_API_BASE"],
            None,
        ),
        ProviderKind::VertexAi | ProviderKind::Bedrock | ProviderKind::Mock => (&[], &[], None),
    };
    let first_env = |vars: &[&str]| vars.iter().find_map(|v| env_fallback(v));
    let mut settings = provider_settings(provider, p, &from_credential, &first_env);
    request_param_settings(&mut settings, provider, &parsed.prefix, p)
        .map_err(|m| (format!("{at}.litellm_params.additional_drop_params"), m))?;

    let api_base = p
        .api_base
        .clone()
        .or_else(|| from_credential("api_base"))
        .or_else(|| first_env(base_vars))
        .or_else(|| parsed.default_api_base.map(str::to_owned))
        .or_else(|| match provider {
            ProviderKind::VertexAi => Some(vertex_api_base(
                settings
                    .param("vertex_location")
                    .unwrap_or(VERTEX_DEFAULT_LOCATION),
            )),
            ProviderKind::Bedrock => {
                Some(settings.param("aws_bedrock_runtime_endpoint").map_or_else(
                    || {
                        bedrock_api_base(
                            settings
                                .param("aws_region_name")
                                .unwrap_or(BEDROCK_DEFAULT_REGION),
                        )
                    },
                    str::to_owned,
                ))
            }
            _ => None,
        });
    let api_base = match (provider, api_base) {
        (ProviderKind::Mock, base) => base.unwrap_or_default(),
        (_, Some(base)) => {
            validate_base(&base).map_err(|m| (format!("{at}.litellm_params.api_base"), m))?;
            base.trim_end_matches('/').to_owned()
        }
        (_, None) => {
            return Err((
                format!("{at}.litellm_params.api_base"),
                format!("`{}` needs an api_base", p.model),
            ))
        }
    };
    let api_key = p
        .api_key
        .clone()
        .or_else(|| from_credential("api_key"))
        .or_else(|| first_env(key_vars))
        .map(Secret::new);
    let api_version = p
        .api_version
        .clone()
        .or_else(|| from_credential("api_version"))
        .or_else(|| version_var.and_then(env_fallback));
    if provider == ProviderKind::Azure && api_version.is_none() {
        return Err((
            format!("{at}.litellm_params.api_version"),
            "azure deployments need an api_version (or AZURE_API_VERSION)".into(),
        ));
    }

    let mi = &raw.model_info;
    for (name, v) in [
        ("litellm_params.rpm", p.rpm),
        ("litellm_params.tpm", p.tpm),
        ("model_info.max_tokens", mi.max_tokens),
        ("model_info.max_input_tokens", mi.max_input_tokens),
        ("model_info.max_output_tokens", mi.max_output_tokens),
    ] {
        if v.is_some_and(|v| v > i64::MAX as u64) {
            return Err((
                format!("{at}.{name}"),
                format!("must be at most {}", i64::MAX),
            ));
        }
    }
    for (name, v) in [
        ("litellm_params.weight", p.weight),
        (
            "litellm_params.input_cost_per_token",
            p.input_cost_per_token,
        ),
        (
            "litellm_params.output_cost_per_token",
            p.output_cost_per_token,
        ),
        ("model_info.input_cost_per_token", mi.input_cost_per_token),
        ("model_info.output_cost_per_token", mi.output_cost_per_token),
    ] {
        if v.is_some_and(|v| v.is_nan() || v < 0.0) {
            return Err((format!("{at}.{name}"), "must not be negative".into()));
        }
    }
    let id = mi
        .id
        .clone()
        .unwrap_or_else(|| stable_id(&[&raw.model_name, &p.model, &api_base, at]));
    Ok(Deployment {
        id: DeploymentId(id),
        model_name: raw.model_name.clone(),
        provider,
        upstream_model: parsed.upstream_model,
        api_base,
        api_key,
        api_version,
        timeout: seconds(&format!("{at}.litellm_params.timeout"), p.timeout)?,
        stream_timeout: seconds(
            &format!("{at}.litellm_params.stream_timeout"),
            p.stream_timeout,
        )?,
        tags: p.tags.clone(),
        rpm: p.rpm,
        tpm: p.tpm,
        weight: p.weight,
        mock_response: p.mock_response.clone(),
        model_info: ModelInfo {
            max_input_tokens: mi.max_input_tokens.or(mi.max_tokens),
            max_output_tokens: mi.max_output_tokens,
            input_cost_per_token: mi.input_cost_per_token.or(p.input_cost_per_token),
            output_cost_per_token: mi.output_cost_per_token.or(p.output_cost_per_token),
            mode: mi.mode.clone(),
            access_groups: mi.access_groups.clone(),
            extra: mi.extra.clone(),
        },
        settings,
    })
}

/// The provider-specific `litellm_params` each provider reads: (name, secret, environment
/// variables LiteLLM falls back to).
type SettingSpec = (&'static str, bool, &'static [&'static str]);

const VERTEX_SETTINGS: &[SettingSpec] = &[
    (
        "vertex_project",
        false,
        &["VERTEXAI_PROJECT", "VERTEX_PROJECT"],
    ),
    (
        "vertex_location",
        false,
        &["VERTEXAI_LOCATION", "VERTEX_LOCATION"],
    ),
    (
        "vertex_credentials",
        true,
        &[
            "VERTEXAI_CREDENTIALS",
            "VERTEX_CREDENTIALS",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ],
    ),
];

/// Bedrock's; without keys, role or profile the AWS SDK's default chain applies (which
/// reads `AWS_ACCESS_KEY_ID`, profiles, web identity (IRSA) and instance roles itself).
const BEDROCK_SETTINGS: &[SettingSpec] = &[
    (
        "aws_region_name",
        false,
        &["AWS_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION"],
    ),
    ("aws_role_name", false, &[]),
    ("aws_session_name", false, &[]),
    ("aws_profile_name", false, &[]),
    ("aws_sts_endpoint", false, &[]),
    (
        "aws_bedrock_runtime_endpoint",
        false,
        &["AWS_BEDROCK_RUNTIME_ENDPOINT"],
    ),
    ("aws_access_key_id", true, &[]),
    ("aws_secret_access_key", true, &[]),
    ("aws_session_token", true, &[]),
    ("aws_web_identity_token", true, &[]),
];

impl RawLitellmParams {
    fn setting(&self, name: &str) -> Option<&String> {
        match name {
            "vertex_project" => self.vertex_project.as_ref(),
            "vertex_location" => self.vertex_location.as_ref(),
            "vertex_credentials" => self.vertex_credentials.as_ref(),
            "aws_access_key_id" => self.aws_access_key_id.as_ref(),
            "aws_secret_access_key" => self.aws_secret_access_key.as_ref(),
            "aws_session_token" => self.aws_session_token.as_ref(),
            "aws_region_name" => self.aws_region_name.as_ref(),
            "aws_role_name" => self.aws_role_name.as_ref(),
            "aws_session_name" => self.aws_session_name.as_ref(),
            "aws_profile_name" => self.aws_profile_name.as_ref(),
            "aws_web_identity_token" => self.aws_web_identity_token.as_ref(),
            "aws_sts_endpoint" => self.aws_sts_endpoint.as_ref(),
            "aws_bedrock_runtime_endpoint" => self.aws_bedrock_runtime_endpoint.as_ref(),
            _ => None,
        }
    }
}

/// The provider-specific `litellm_params` of a deployment: given, else from its
/// credential, else from LiteLLM's environment variables. Vertex AI's project may come
/// from its service account instead, which the data plane reads.
fn provider_settings(
    provider: ProviderKind,
    p: &RawLitellmParams,
    from_credential: &dyn Fn(&str) -> Option<String>,
    first_env: &dyn Fn(&[&str]) -> Option<String>,
) -> ProviderSettings {
    let specs = match provider {
        ProviderKind::VertexAi => VERTEX_SETTINGS,
        ProviderKind::Bedrock => BEDROCK_SETTINGS,
        _ => &[],
    };
    let mut settings = ProviderSettings::default();
    for &(name, secret, vars) in specs {
        let value = p
            .setting(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| from_credential(name))
            .or_else(|| first_env(vars));
        match (value, secret) {
            (None, _) => {}
            (Some(v), true) => {
                settings.secrets.insert(name.to_owned(), Secret::new(v));
            }
            (Some(v), false) => {
                settings.params.insert(name.to_owned(), v);
            }
        }
    }
    settings
}

/// What decides which request parameters reach the deployment, kept in its
/// `settings.params` under LiteLLM's names: `drop_params` (`"true"`/`"false"`, when set),
/// `additional_drop_params` (comma-separated) and, for the OpenAI-compatible family,
/// `custom_llm_provider` (the prefix, whose row holds the provider's parameter quirks).
fn request_param_settings(
    settings: &mut ProviderSettings,
    provider: ProviderKind,
    prefix: &str,
    p: &RawLitellmParams,
) -> Result<(), String> {
    if let Some(drop) = p.drop_params {
        settings
            .params
            .insert(DROP_PARAMS.to_owned(), drop.to_string());
    }
    if let Some(names) = p.additional_drop_params.as_ref().filter(|n| !n.is_empty()) {
        if let Some(bad) = names
            .iter()
            .find(|n| n.is_empty() || n.contains(',') || n.contains('.'))
        {
            return Err(format!(
                "`{bad}` is not a top-level request field name (nested paths are not supported)"
            ));
        }
        settings
            .params
            .insert(ADDITIONAL_DROP_PARAMS.to_owned(), names.join(","));
    }
    if provider == ProviderKind::OpenAi && prefix != "openai" && compatible_row(prefix).is_some() {
        settings
            .params
            .insert(CUSTOM_LLM_PROVIDER.to_owned(), prefix.to_owned());
    }
    Ok(())
}

/// `settings.params` names (see [`request_param_settings`]).
pub const DROP_PARAMS: &str = "drop_params";
/// `litellm_settings.turn_off_message_logging`: no message content in telemetry.
const TURN_OFF_MESSAGE_LOGGING: &str = "turn_off_message_logging";
pub const ADDITIONAL_DROP_PARAMS: &str = "additional_drop_params";
pub const CUSTOM_LLM_PROVIDER: &str = "custom_llm_provider";

/// Percent-encodes everything but RFC 3986's unreserved characters (for a URL's userinfo).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn validate_base(base: &str) -> Result<(), String> {
    let uri: http::Uri = base
        .parse()
        .map_err(|e| format!("`{base}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(()),
        _ => Err(format!(
            "`{base}` must be an http:// or https:// URL with a host"
        )),
    }
}

/// A short id that stays the same for the same deployment across restarts.
fn stable_id(parts: &[&str]) -> String {
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}
