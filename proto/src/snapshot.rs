//! The snapshot: everything a data plane needs to serve requests, immutable once built.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::{KeyHash, RouterSettings, Secret, VirtualKey};

/// Which wire protocol and URL scheme a deployment speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI itself, and any OpenAI-compatible server (`hosted_vllm/`, `openai_compatible`,
    /// Groq, Ollama, ... reached through `api_base`).
    OpenAi,
    /// Azure OpenAI: deployment URLs, `api-version` query, `api-key` header.
    Azure,
    /// Anthropic Messages API.
    Anthropic,
    /// Google's Gemini API (`generativelanguage.googleapis.com`), with an API key.
    Gemini,
    /// Google Cloud Vertex AI: Gemini models, and Anthropic models on Vertex, with a
    /// service account's OAuth2 token.
    VertexAi,
    /// AWS Bedrock Runtime: Converse (and InvokeModel for `bedrock/invoke/...`), SigV4.
    Bedrock,
    /// Cohere's v2 API: chat, embed, rerank.
    Cohere,
    /// Built-in deterministic provider; answers without any upstream.
    Mock,
}

impl ProviderKind {
    /// The provider label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::VertexAi => "vertex_ai",
            Self::Bedrock => "bedrock",
            Self::Cohere => "cohere",
            Self::Mock => "mock",
        }
    }

    /// The kind [`as_str`](Self::as_str) names.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "openai" => Self::OpenAi,
            "azure" => Self::Azure,
            "anthropic" => Self::Anthropic,
            "gemini" => Self::Gemini,
            "vertex_ai" => Self::VertexAi,
            "bedrock" => Self::Bedrock,
            "cohere" => Self::Cohere,
            "mock" => Self::Mock,
            _ => return None,
        })
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stable identifier of a deployment inside a snapshot (LiteLLM's `model_info.id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentId(pub String);

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Optional metadata about a deployment (LiteLLM's `model_info`). Serialisable: the
/// control plane stores it as JSON.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub mode: Option<String>,
    #[serde(default)]
    pub access_groups: Vec<String>,
    /// Everything else in `model_info`, kept as given.
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One concrete upstream a model group can route to.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: DeploymentId,
    /// The public name clients ask for (`model_name`).
    pub model_name: String,
    pub provider: ProviderKind,
    /// The model id sent upstream (the part after `<provider>/`).
    pub upstream_model: String,
    /// Base URL, e.g. `https://api.openai.com/v1`. Always set after compilation.
    pub api_base: String,
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
    pub timeout: Option<Duration>,
    /// Wait for a stream's first chunk and between chunks (`litellm_params.stream_timeout`).
    pub stream_timeout: Option<Duration>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub weight: Option<f64>,
    /// Fixed reply for the mock provider (LiteLLM's `mock_response`).
    pub mock_response: Option<String>,
    /// `litellm_params.tags`, for tag filtering.
    pub tags: Vec<String>,
    pub model_info: ModelInfo,
    /// What only some providers read (`vertex_project`, ...).
    pub settings: ProviderSettings,
}

/// A deployment's provider-specific `litellm_params`, by their LiteLLM names: plain ones
/// (`vertex_project`, `aws_region_name`, ...) and secret ones (`vertex_credentials`,
/// `aws_secret_access_key`, ...), which are kept as [`Secret`]s and sealed at rest like
/// `api_key`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderSettings {
    pub params: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, Secret>,
}

impl ProviderSettings {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name)
    }
}

impl Deployment {
    /// A deployment of the built-in mock provider, with nothing else set (tests, benches,
    /// examples).
    pub fn mock(id: &str, model_name: &str) -> Self {
        Self {
            id: DeploymentId(id.to_owned()),
            model_name: model_name.to_owned(),
            provider: ProviderKind::Mock,
            upstream_model: model_name.to_owned(),
            api_base: String::new(),
            api_key: None,
            api_version: None,
            timeout: None,
            stream_timeout: None,
            rpm: None,
            tpm: None,
            weight: None,
            mock_response: None,
            tags: Vec::new(),
            model_info: ModelInfo::default(),
            settings: ProviderSettings::default(),
        }
    }
}

/// The gateway-wide part of a snapshot (from `general_settings` and `router_settings`).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    pub master_key_hash: Option<KeyHash>,
    pub router: RouterSettings,
    pub max_request_body_bytes: usize,
    /// `general_settings.user_header_name`: the request header naming the end user.
    pub user_header_name: Option<String>,
    /// `general_settings.allowed_egress`; `None`: every destination may be reached.
    pub allowed_egress: Option<crate::AllowedEgress>,
    /// `general_settings.agent_access_default_deny`: see [`Snapshot`].
    pub agent_access_default_deny: bool,
    /// See [`Snapshot`].
    pub cache: Option<crate::CacheSettings>,
    /// See [`Snapshot`].
    pub turn_off_message_logging: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            master_key_hash: None,
            router: RouterSettings::default(),
            max_request_body_bytes: Snapshot::DEFAULT_MAX_REQUEST_BODY_BYTES,
            user_header_name: None,
            allowed_egress: None,
            agent_access_default_deny: false,
            cache: None,
            turn_off_message_logging: false,
        }
    }
}

/// A deployment's `api_base`, parsed: the one check both planes apply, so the control plane
/// never stores a URL data planes would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiBase {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `api_base`'s path, without a trailing slash (`/v1`, or empty).
    pub base_path: String,
    /// Value of the `Host` header.
    pub authority: String,
}

impl ApiBase {
    pub fn parse(api_base: &str) -> Result<Self, String> {
        let uri: http::Uri = api_base
            .parse()
            .map_err(|e| format!("`{api_base}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{api_base}` must start with http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("`{api_base}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        // `http::Uri` accepts any text after the host's colon and reports no port for it;
        // a port that is there must be a number.
        let authority_text = uri.authority().map(|a| a.as_str()).unwrap_or("");
        let after_host = authority_text.rfind(']').map_or(0, |i| i + 1);
        let port = match authority_text[after_host..].rfind(':') {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(i) => {
                let p = &authority_text[after_host + i + 1..];
                p.parse::<u16>()
                    .map_err(|_| format!("`{api_base}` has an invalid port `{p}`"))?
            }
        };
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| host.clone());
        Ok(Self {
            tls,
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            authority,
        })
    }
}

/// Why a snapshot cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("duplicate deployment id `{0}`")]
    DuplicateDeploymentId(String),
    #[error("duplicate virtual key {0:?}")]
    DuplicateKey(KeyHash),
    #[error("deployment `{id}` has an empty {field}")]
    Empty { id: String, field: &'static str },
    #[error("deployment `{id}`: api_base {message}")]
    ApiBase { id: String, message: String },
}

/// Everything a data plane serves from. Immutable: a change builds a new snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Monotonic version; 0 for a snapshot compiled from a local config file.
    pub version: u64,
    /// SHA-256 of the master key; `None` leaves the gateway open, as LiteLLM does.
    pub master_key_hash: Option<KeyHash>,
    pub deployments: Vec<Deployment>,
    /// Shared, so building the data plane's key map moves pointers, not keys.
    pub keys: Vec<std::sync::Arc<VirtualKey>>,
    pub router: RouterSettings,
    /// Largest request body accepted, in bytes.
    pub max_request_body_bytes: usize,
    /// `general_settings.user_header_name`: the request header naming the end user.
    pub user_header_name: Option<String>,
    /// Teams, users and organizations with a budget or limits.
    pub scopes: Vec<crate::Scope>,
    /// `general_settings.allowed_egress`; `None`: every destination may be reached.
    pub allowed_egress: Option<crate::AllowedEgress>,
    /// `mcp_servers`, by name (unique).
    pub mcp_servers: Vec<crate::McpServer>,
    /// `agents`, unique by name and by id.
    pub agents: Vec<crate::A2aAgent>,
    /// `general_settings.agent_access_default_deny`: a virtual key that no object
    /// permission (its own, its team's, its organization's) restricts may call only the
    /// public agents. `false`: it may call every agent, as in LiteLLM.
    pub agent_access_default_deny: bool,
    /// `litellm_settings.cache_params` when `litellm_settings.cache` is on.
    pub cache: Option<crate::CacheSettings>,
    /// `litellm_settings.turn_off_message_logging`: spans never carry message content,
    /// even with `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`.
    pub turn_off_message_logging: bool,
    /// Skills of the registry, with their copies on Anthropic deployments.
    pub skills: Vec<crate::Skill>,
}

impl Snapshot {
    pub const DEFAULT_MAX_REQUEST_BODY_BYTES: usize = 32 * 1024 * 1024;

    pub fn settings(&self) -> GatewaySettings {
        GatewaySettings {
            master_key_hash: self.master_key_hash,
            router: self.router.clone(),
            max_request_body_bytes: self.max_request_body_bytes,
            user_header_name: self.user_header_name.clone(),
            allowed_egress: self.allowed_egress.clone(),
            agent_access_default_deny: self.agent_access_default_deny,
            cache: self.cache.clone(),
            turn_off_message_logging: self.turn_off_message_logging,
        }
    }

    /// Checks the invariants the data plane relies on.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        Self::validate_deployments(&self.deployments)?;
        let mut keys = std::collections::HashSet::new();
        for k in &self.keys {
            if !keys.insert(k.hash) {
                return Err(SnapshotError::DuplicateKey(k.hash));
            }
        }
        Ok(())
    }

    /// The deployment part of [`Self::validate`]: unique ids, no empty names.
    pub fn validate_deployments(deployments: &[Deployment]) -> Result<(), SnapshotError> {
        let mut seen = std::collections::HashSet::new();
        for d in deployments {
            if !seen.insert(d.id.0.as_str()) {
                return Err(SnapshotError::DuplicateDeploymentId(d.id.0.clone()));
            }
            if d.provider != ProviderKind::Mock {
                ApiBase::parse(&d.api_base).map_err(|message| SnapshotError::ApiBase {
                    id: d.id.0.clone(),
                    message,
                })?;
            }
            for (field, value) in [
                ("model_name", &d.model_name),
                ("upstream model", &d.upstream_model),
            ] {
                if value.is_empty() {
                    return Err(SnapshotError::Empty {
                        id: d.id.0.clone(),
                        field,
                    });
                }
            }
        }
        Ok(())
    }

    /// Deployments grouped by public model name, in the order they were declared.
    pub fn model_groups(&self) -> BTreeMap<&str, Vec<&Deployment>> {
        let mut groups: BTreeMap<&str, Vec<&Deployment>> = BTreeMap::new();
        for d in &self.deployments {
            groups.entry(d.model_name.as_str()).or_default().push(d);
        }
        groups
    }
}

#[cfg(test)]
mod api_base_tests {
    use super::ApiBase;

    #[test]
    fn parses_what_data_planes_can_call_and_refuses_the_rest() {
        let a = ApiBase::parse("https://api.example.com/v1/").unwrap();
        assert_eq!(
            (a.tls, a.host.as_str(), a.port, a.base_path.as_str()),
            (true, "api.example.com", 443, "/v1")
        );
        let b = ApiBase::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.authority.as_str()),
            ("::1", 8080, "[::1]:8080")
        );
        for bad in [
            "",
            "ftp://x",
            "https://exa mple.com",
            "https://api.example.com:abc",
            "https://api.example.com:99999",
            "api.example.com",
        ] {
            assert!(ApiBase::parse(bad).is_err(), "{bad}");
        }
    }
}
