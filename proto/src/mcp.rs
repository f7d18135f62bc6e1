//! MCP servers the gateway fronts (LiteLLM's `mcp_servers:`): where each is, how the gateway
//! authenticates to it, and which of its tools it exposes.

use crate::Secret;

/// How the gateway reaches a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpTransport {
    /// Streamable HTTP (`http`, LiteLLM's default).
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpAuth {
    None,
    /// `x-api-key: <value>`.
    ApiKey(Secret),
    /// `authorization: Bearer <value>`.
    BearerToken(Secret),
    /// `authorization: Basic <value>` (the value is already `base64(user:password)`).
    Basic(Secret),
    /// `authorization: <value>`, as given.
    Authorization(Secret),
}

impl McpAuth {
    /// The header that carries the credential, if any.
    pub fn header(&self) -> Option<(&'static str, String)> {
        match self {
            Self::None => None,
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
        }
    }

    /// The credential's value (empty for `None`): stored and sent with [`Self::kind`].
    pub fn value(&self) -> &str {
        match self {
            Self::None => "",
            Self::ApiKey(v) | Self::BearerToken(v) | Self::Basic(v) | Self::Authorization(v) => {
                v.expose()
            }
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
            Some(other) => Err(format!(
                "unknown auth_type `{other}` (none, api_key, bearer_token, basic, authorization)"
            )),
        }
    }
}

/// One MCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl McpServer {
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
            description: None,
            transport: McpTransport::Http,
            url: "http://x/mcp".into(),
            auth: McpAuth::None,
            static_headers: Vec::new(),
            allowed_tools: allowed.map(|a| a.iter().map(|s| s.to_string()).collect()),
            disallowed_tools: disallowed.iter().map(|s| s.to_string()).collect(),
            access_groups: Vec::new(),
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
