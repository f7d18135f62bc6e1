//! MCP servers the gateway fronts (LiteLLM's `mcp_servers:`): where each is, how the gateway
//! authenticates to it, and which of its tools it exposes. What keys, teams and
//! organizations may use of them is their [`crate::ObjectPermission`].

use serde::{Deserialize, Serialize};

use crate::Secret;

/// How the gateway reaches a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum McpTransport {
    /// Streamable HTTP (`http`, LiteLLM's default).
    #[default]
    Http,
    /// The legacy HTTP+SSE transport.
    Sse,
    /// A local process spoken to over stdin and stdout.
    Stdio,
}

impl McpTransport {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "http" | "streamable_http" | "streamable-http" | "streamablehttp" => Some(Self::Http),
            "sse" => Some(Self::Sse),
            "stdio" => Some(Self::Stdio),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Sse => "sse",
            Self::Stdio => "stdio",
        }
    }
}

/// The credential the gateway presents to a server (`auth_type` with `auth_value`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum McpAuth {
    #[default]
    None,
    /// `x-api-key: <value>`.
    ApiKey(Secret),
    /// `authorization: Bearer <value>`.
    BearerToken(Secret),
    /// `authorization: Basic <value>` (the value is already `base64(user:password)`).
    Basic(Secret),
    /// `authorization: <value>`, as given.
    Authorization(Secret),
    /// `authorization: Bearer <token>`, the token from the OAuth 2.0 client-credentials
    /// grant ([`OAuth2Client`]); the value is the client secret.
    OAuth2(Secret),
}

/// `auth_type: oauth2`: where and as whom the gateway gets its tokens (the client-credentials
/// grant of RFC 6749 §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuth2Client {
    pub client_id: String,
    pub token_url: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl McpAuth {
    /// The header that carries the credential, if any (an OAuth 2.0 token is fetched when
    /// needed, so it is not one).
    pub fn header(&self) -> Option<(&'static str, String)> {
        match self {
            Self::None | Self::OAuth2(_) => None,
            Self::ApiKey(v) => Some(("x-api-key", v.expose().to_owned())),
            Self::BearerToken(v) => Some(("authorization", format!("Bearer {}", v.expose()))),
            Self::Basic(v) => Some(("authorization", format!("Basic {}", v.expose()))),
            Self::Authorization(v) => Some(("authorization", v.expose().to_owned())),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ApiKey(_) => "api_key",
            Self::BearerToken(_) => "bearer_token",
            Self::Basic(_) => "basic",
            Self::Authorization(_) => "authorization",
            Self::OAuth2(_) => "oauth2",
        }
    }

    /// The credential's value (empty for `None`): stored and sent with [`Self::kind`].
    pub fn value(&self) -> &str {
        match self {
            Self::None => "",
            Self::ApiKey(v)
            | Self::BearerToken(v)
            | Self::Basic(v)
            | Self::Authorization(v)
            | Self::OAuth2(v) => v.expose(),
        }
    }

    /// From a stored [`Self::kind`] and [`Self::value`] (empty: no value).
    pub fn from_parts(kind: &str, value: String) -> Result<Self, String> {
        Self::parse(
            Some(kind),
            Some(Secret::new(value)).filter(|v| !v.is_empty()),
        )
    }

    /// From `auth_type` and its value; `Err` names what is wrong.
    pub fn parse(kind: Option<&str>, value: Option<Secret>) -> Result<Self, String> {
        let need = |v: Option<Secret>, k: &str| {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| format!("auth_type {k} needs auth_value"))
        };
        match kind.map(str::to_ascii_lowercase).as_deref() {
            None | Some("none") => Ok(Self::None),
            Some("api_key") => need(value, "api_key").map(Self::ApiKey),
            Some("bearer_token") => need(value, "bearer_token").map(Self::BearerToken),
            Some("basic") => need(value, "basic").map(Self::Basic),
            Some("authorization") => need(value, "authorization").map(Self::Authorization),
            Some("oauth2") => need(value, "oauth2").map(Self::OAuth2),
            Some(other) => Err(format!(
                "unknown auth_type `{other}` (none, api_key, bearer_token, basic, authorization, oauth2)"
            )),
        }
    }
}

/// What a call of a server's tools costs (USD): LiteLLM's
/// `mcp_info.mcp_server_cost_info`, charged to the caller like a model's usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpToolCost {
    /// `default_cost_per_query`: a call of any tool not priced on its own.
    pub per_call: f64,
    /// `tool_name_to_cost_per_query`, by the server's own tool names.
    pub per_tool: Vec<(String, f64)>,
}

impl McpToolCost {
    /// What one call of `tool` (the server's own name) costs.
    pub fn of(&self, tool: &str) -> f64 {
        self.per_tool
            .iter()
            .find(|(t, _)| t == tool)
            .map_or(self.per_call, |(_, c)| *c)
    }

    pub fn is_free(&self) -> bool {
        self.per_call == 0.0 && self.per_tool.iter().all(|(_, c)| *c == 0.0)
    }
}

/// One MCP server (the default: an `http` server with nothing configured).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct McpServer {
    /// Its name: the prefix of its tools on the aggregate endpoint (`<name>-<tool>`) and
    /// the path segment of its own endpoint.
    pub name: String,
    pub description: Option<String>,
    pub transport: McpTransport,
    /// The server's endpoint (`http` and `sse`).
    pub url: String,
    pub auth: McpAuth,
    /// Headers sent on every request to it (names lowercase; values may be secrets).
    pub static_headers: Vec<(String, Secret)>,
    /// Only these tools are exposed (`None`: all but the disallowed ones).
    pub allowed_tools: Option<Vec<String>>,
    pub disallowed_tools: Vec<String>,
    pub access_groups: Vec<String>,
    /// Every key may use it, whatever its grants (LiteLLM's `allow_all_keys`).
    pub allow_all_keys: bool,
    /// `stdio`: the program the data plane runs, its arguments, and its environment
    /// (values may be secrets).
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, Secret)>,
    /// `auth_type: oauth2`: the token endpoint and client.
    pub oauth2: Option<OAuth2Client>,
    /// An OpenAPI 3 description of the HTTP API at `url` (a file on each data plane's
    /// host, JSON or YAML): each operation is a tool, called over HTTP.
    pub spec_path: Option<String>,
    pub cost: McpToolCost,
}

impl McpServer {
    /// The request headers a stdio server's env value takes (`${X-HEADER}`, each replaced by
    /// that header of the request the process serves), in order. Only `x-` headers other than
    /// the gateway's own (`x-api-key`, `x-litellm-api-key`, `x-mcp-*`) may be named: a
    /// caller's key must never reach a process.
    pub fn env_placeholders(value: &str) -> Result<Vec<&str>, String> {
        let mut names = Vec::new();
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("`${{` without a closing `}}` in `{value}`"));
            };
            let name = &after[..end];
            let lower = name.to_ascii_lowercase();
            let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && lower.starts_with("x-")
                && !matches!(lower.as_str(), "x-api-key" | "x-litellm-api-key")
                && !lower.starts_with("x-mcp-");
            if !valid {
                return Err(format!(
                    "`${{{name}}}`: a request header named here starts with `x-` and is not one the gateway reads itself (x-api-key, x-litellm-api-key, x-mcp-*)"
                ));
            }
            names.push(name);
            rest = &after[end + 1..];
        }
        Ok(names)
    }

    /// Whether the server's configuration exposes `tool`.
    pub fn exposes(&self, tool: &str) -> bool {
        self.allowed_tools
            .as_ref()
            .is_none_or(|a| a.iter().any(|t| t == tool))
            && !self.disallowed_tools.iter().any(|t| t == tool)
    }

    /// Names are URL path segments and tool-name prefixes: letters, digits, `_` and `-`.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(allowed: Option<&[&str]>, disallowed: &[&str]) -> McpServer {
        McpServer {
            name: "s".into(),
            url: "http://x/mcp".into(),
            allowed_tools: allowed.map(|a| a.iter().map(|s| s.to_string()).collect()),
            disallowed_tools: disallowed.iter().map(|s| s.to_string()).collect(),
            ..McpServer::default()
        }
    }

    #[test]
    fn env_values_name_request_headers() {
        assert_eq!(
            McpServer::env_placeholders("plain").unwrap(),
            Vec::<&str>::new()
        );
        assert_eq!(
            McpServer::env_placeholders("Bearer ${X-Token} for ${x-team}").unwrap(),
            ["X-Token", "x-team"]
        );
        for bad in [
            "${Authorization}",
            "${x-api-key}",
            "${X-MCP-Servers}",
            "${x-open",
            "${x bad}",
        ] {
            assert!(McpServer::env_placeholders(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allowed_then_disallowed_tools() {
        assert!(server(None, &[]).exposes("any"));
        assert!(!server(None, &["rm"]).exposes("rm"));
        let s = server(Some(&["add", "rm"]), &["rm"]);
        assert!(s.exposes("add") && !s.exposes("rm") && !s.exposes("other"));
    }

    #[test]
    fn auth_headers_and_errors() {
        let v = || Some(Secret::new("t0k"));
        assert_eq!(
            McpAuth::parse(Some("bearer_token"), v()).unwrap().header(),
            Some(("authorization", "Bearer t0k".into()))
        );
        assert_eq!(
            McpAuth::parse(Some("api_key"), v()).unwrap().header(),
            Some(("x-api-key", "t0k".into()))
        );
        assert_eq!(McpAuth::parse(None, None).unwrap(), McpAuth::None);
        assert!(McpAuth::parse(Some("basic"), None)
            .unwrap_err()
            .contains("auth_value"));
        assert!(McpAuth::parse(Some("oauth3"), v())
            .unwrap_err()
            .contains("oauth3"));
    }
}
