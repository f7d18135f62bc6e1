//! Google Cloud Vertex AI: Gemini models through `generateContent` (as `gemini`), and
//! Anthropic models (`vertex_ai/claude-*`) through `rawPredict` with the Anthropic
//! Messages body, both with a service account's OAuth2 token (see `google_auth`).
//!
//! URLs: `<api_base>/v1/projects/<project>/locations/<location>/publishers/<publisher>/
//! models/<model>:<method>`, `api_base` defaulting to the location's regional endpoint.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use routeiq_proto::Deployment;
use serde_json::Value;

use super::google_auth::{GoogleTokens, TokenSource};
use super::{exchange, gemini, target_of, Credentials, Operation, Provider, ProviderResponse};
use crate::error::ApiError;
use crate::state::CompiledDeployment;
use crate::translate::ChatFormat;
use crate::upstream::{Target, Upstream, UpstreamRequest};

pub struct Vertex;

/// The `anthropic_version` Vertex AI takes in the body of Anthropic models.
const ANTHROPIC_VERTEX_VERSION: &str = "vertex-2023-10-16";

/// What a Vertex AI deployment needs besides its address, resolved when it is compiled.
pub struct VertexAuth {
    project: String,
    location: String,
    tokens: Arc<TokenSource>,
}

impl VertexAuth {
    /// From the deployment's `vertex_project`, `vertex_location` and `vertex_credentials`
    /// (the project defaults to the service account's).
    pub fn prepare(
        d: &Deployment,
        tokens: &GoogleTokens,
        upstream: &Arc<Upstream>,
    ) -> Result<Self, String> {
        let s = &d.settings;
        let credentials = s.secret("vertex_credentials").ok_or_else(|| {
            "vertex_ai deployments need vertex_credentials (a service account key file or its JSON), or GOOGLE_APPLICATION_CREDENTIALS".to_owned()
        })?;
        let tokens = tokens.source(credentials.expose(), upstream)?;
        let project = s
            .param("vertex_project")
            .map(str::to_owned)
            .or_else(|| tokens.fetcher().project_id.clone())
            .ok_or_else(|| {
                "vertex_ai deployments need vertex_project (or a service account with a project_id)"
                    .to_owned()
            })?;
        let location = s
            .param("vertex_location")
            .unwrap_or(routeiq_proto::litellm::VERTEX_DEFAULT_LOCATION)
            .to_owned();
        Ok(Self {
            project,
            location,
            tokens,
        })
    }
}

impl std::fmt::Debug for VertexAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VertexAuth")
            .field("project", &self.project)
            .field("location", &self.location)
            .field("account", &self.tokens.fetcher().client_email)
            .finish()
    }
}

fn is_anthropic(d: &Deployment) -> bool {
    d.upstream_model.starts_with("claude")
}

#[async_trait]
impl Provider for Vertex {
    fn chat_format(&self, d: &Deployment) -> ChatFormat {
        if is_anthropic(d) {
            ChatFormat::Anthropic
        } else {
            ChatFormat::Gemini
        }
    }

    fn request(
        &self,
        d: &CompiledDeployment,
        target: &Target,
        op: Operation,
        body: Bytes,
    ) -> Result<UpstreamRequest, ApiError> {
        let auth = auth(d)?;
        let dep = &d.deployment;
        let (publisher, method, body) = match (is_anthropic(dep), op) {
            (
                _,
                Operation::Rerank
                | Operation::Moderations
                | Operation::Responses { .. }
                | Operation::Images
                | Operation::Completions { .. }
                | Operation::Transcriptions
                | Operation::Translations
                | Operation::Speech
                | Operation::ImageEdits,
            ) => {
                return Err(super::unsupported(dep, "Vertex AI", op))
            }
            (_, Operation::Embeddings) => {
                return Err(ApiError::unsupported(format!(
                    "model `{}` is a Vertex AI deployment; RouteIQ does not send embeddings to Vertex AI yet (use a `gemini/` deployment)",
                    dep.model_name
                ))
                .with_param("model"))
            }
            (true, Operation::Chat { stream, .. }) => (
                "anthropic",
                if stream { "streamRawPredict" } else { "rawPredict" },
                anthropic_body(&body)?,
            ),
            (false, op) => (
                "google",
                gemini::method(op).ok_or_else(|| super::unsupported(dep, "Vertex AI", op))?,
                body,
            ),
        };
        let base = target
            .base_path
            .strip_suffix("/v1")
            .unwrap_or(&target.base_path);
        Ok(UpstreamRequest {
            method: http::Method::POST,
            path: format!(
                "{base}/v1/projects/{}/locations/{}/publishers/{publisher}/models/{}:{method}",
                auth.project, auth.location, dep.upstream_model
            ),
            headers: Vec::new(),
            body,
        })
    }

    /// The service account's access token.
    async fn authorize(
        &self,
        upstream: &Arc<Upstream>,
        d: &CompiledDeployment,
        _target: &Target,
        req: &mut UpstreamRequest,
    ) -> Result<(), ApiError> {
        let token = auth(d)?.tokens.get(upstream).await.map_err(|mut e| {
            e.message = format!("{}: {}", d.label, e.message);
            e
        })?;
        req.headers
            .push(("authorization", format!("Bearer {token}")));
        Ok(())
    }

    async fn send(
        &self,
        upstream: &Arc<Upstream>,
        d: &CompiledDeployment,
        op: Operation,
        body: Bytes,
        trace: Option<crate::otel::Outgoing>,
    ) -> Result<ProviderResponse, ApiError> {
        let target = target_of(d)?;
        let mut req = self.request(d, target, op, body)?;
        self.authorize(upstream, d, target, &mut req).await?;
        exchange(upstream, d, target, op, req, trace).await
    }
}

fn auth(d: &CompiledDeployment) -> Result<&VertexAuth, ApiError> {
    match super::credentials_of(d)? {
        Credentials::Vertex(a) => Ok(a),
        Credentials::Bedrock(_) => Err(ApiError::internal(format!(
            "{} has Bedrock credentials",
            d.label
        ))),
    }
}

/// An Anthropic Messages body as Vertex AI takes it: the model is in the URL, and the body
/// names the API version.
fn anthropic_body(body: &Bytes) -> Result<Bytes, ApiError> {
    let mut v: serde_json::Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| ApiError::internal(format!("translated body is not JSON: {e}")))?;
    v.remove("model");
    v.insert(
        "anthropic_version".into(),
        Value::String(ANTHROPIC_VERTEX_VERSION.to_owned()),
    );
    Ok(crate::json::bytes(&Value::Object(v)))
}
