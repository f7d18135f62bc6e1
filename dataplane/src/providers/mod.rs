//! Upstream providers, one module each behind the [`Provider`] trait.
//!
//! A provider knows its wire format, how to build its upstream request (URL, auth headers),
//! and how to turn its error responses into client errors. Translation between wire formats
//! lives in `translate`; the providers only move bytes.

mod anthropic;
pub mod aws_auth;
mod azure;
pub mod bedrock;
mod cohere;
mod gemini;
pub mod google_auth;
mod mock;
mod openai;
pub mod refresh;
pub mod sigv4;
pub mod vertex;

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use routeiq_proto::{Deployment, ProviderKind};

use crate::error::{ApiError, ErrorKind};
use crate::state::{CompiledDeployment, Lasting};
use crate::translate::ChatFormat;
use crate::upstream::{Exchange, Target, Upstream, UpstreamRequest};

/// What a call asks the provider to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat {
        stream: bool,
        /// The request loads skills (`container.skills`): Anthropic's Skills and
        /// code-execution betas go with it.
        skills: bool,
    },
    Embeddings,
    /// Cohere's rerank (`/v1/rerank`).
    Rerank,
    /// OpenAI's moderations.
    Moderations,
    /// OpenAI's Responses API.
    Responses {
        stream: bool,
    },
    /// OpenAI's image generations.
    Images,
    /// OpenAI's legacy text completions (`/completions`), for deployments that answer
    /// them themselves ([`Operation::on`]).
    Completions {
        stream: bool,
    },
    /// OpenAI's audio transcriptions (a multipart upload).
    Transcriptions,
    /// OpenAI's audio translations (a multipart upload).
    Translations,
    /// OpenAI's text to speech: the audio streams back.
    Speech,
    /// OpenAI's image edits (a multipart upload).
    ImageEdits,
}

impl Operation {
    /// The endpoint, for errors.
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::Chat { .. } => "chat completions",
            Self::Embeddings => "embeddings",
            Self::Rerank => "rerank",
            Self::Moderations => "moderations",
            Self::Responses { .. } => "responses",
            Self::Images => "image generation",
            Self::Completions { .. } => "completions",
            Self::Transcriptions => "audio transcriptions",
            Self::Translations => "audio translations",
            Self::Speech => "audio speech",
            Self::ImageEdits => "image edits",
        }
    }

    /// The operation deployment `d` is sent: legacy completions and the Responses API go
    /// through chat where the deployment has no endpoint of its own for them.
    pub fn on(self, d: &CompiledDeployment) -> Self {
        match self {
            Self::Completions { stream } if !d.text_completions => Self::Chat {
                stream,
                skills: false,
            },
            Self::Responses { stream } if !d.responses_api => Self::Chat {
                stream,
                skills: false,
            },
            op => op,
        }
    }

    /// Whether the answer is a stream (read chunk by chunk, each within the
    /// deployment's `stream_timeout`).
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            Self::Chat { stream: true, .. }
                | Self::Responses { stream: true }
                | Self::Completions { stream: true }
                | Self::Speech
        )
    }
}

/// Whether an OpenAI-format deployment answers `/completions` itself: its
/// `model_info.mode` is `completion`, or LiteLLM knows its model as a completion model.
fn openai_text_completions(d: &Deployment) -> bool {
    d.model_info.mode.as_deref() == Some("completion")
        || routeiq_proto::litellm::text_completion_model(
            d.settings
                .param(routeiq_proto::litellm::CUSTOM_LLM_PROVIDER)
                .unwrap_or("openai"),
            &d.upstream_model,
        )
}

/// Whether an OpenAI deployment has the Responses API: OpenAI's own (no
/// compatible-family prefix), or any whose `model_info.mode` is `responses`.
fn openai_responses_api(d: &Deployment) -> bool {
    d.model_info.mode.as_deref() == Some("responses")
        || d.settings
            .param(routeiq_proto::litellm::CUSTOM_LLM_PROVIDER)
            .is_none()
}

/// The 400 for an operation a provider does not offer.
pub fn unsupported(d: &Deployment, provider: &str, op: Operation) -> ApiError {
    ApiError::unsupported(format!(
        "model group `{}` is served by {provider}, which RouteIQ does not send {} requests to",
        d.model_name,
        op.endpoint()
    ))
    .with_param("model")
}

/// A response body: from an upstream connection, or produced in-process (mock).
pub enum Body {
    Http(Box<Exchange>),
    Local(VecDeque<Bytes>),
}

impl Body {
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        match self {
            Self::Http(ex) => ex.next_chunk().await,
            Self::Local(chunks) => Ok(chunks.pop_front()),
        }
    }

    pub async fn read_all(&mut self, limit: usize) -> Result<Bytes, ApiError> {
        match self {
            Self::Http(ex) => ex.read_all(limit).await,
            Self::Local(chunks) => Ok(chunks
                .drain(..)
                .flat_map(|b| b.to_vec())
                .collect::<Vec<u8>>()
                .into()),
        }
    }

    async fn read_error(&mut self) -> Bytes {
        match self {
            Self::Http(ex) => ex.read_error_body().await,
            Self::Local(_) => self.read_all(64 * 1024).await.unwrap_or_default(),
        }
    }
}

pub struct ProviderResponse {
    pub status: u16,
    pub body: Body,
    /// What the provider says is left of its own rate limits for the deployment's key.
    pub remaining: Remaining,
}

/// A provider's own rate-limit headers: the requests and tokens left in its window
/// (OpenAI's and Azure's `x-ratelimit-remaining-*`, Anthropic's
/// `anthropic-ratelimit-*-remaining`), as LiteLLM reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
}

impl Remaining {
    /// What `ex`'s headers say, for a provider that sends them (OpenAI and the servers
    /// speaking its API, Azure, Anthropic); none for the others. One pass over the
    /// headers: looking each name up by a `&str` costs more (it is parsed and hashed).
    fn of(ex: &Exchange, provider: ProviderKind) -> Self {
        let names: [&str; 2] = match provider {
            ProviderKind::OpenAi | ProviderKind::Azure => [
                "x-ratelimit-remaining-requests",
                "x-ratelimit-remaining-tokens",
            ],
            ProviderKind::Anthropic => [
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-tokens-remaining",
            ],
            ProviderKind::Gemini
            | ProviderKind::VertexAi
            | ProviderKind::Bedrock
            | ProviderKind::Cohere
            | ProviderKind::Mock => return Self::default(),
        };
        let mut left = Self::default();
        for (name, value) in ex.headers() {
            let slot = match name.as_str() {
                n if n == names[0] => &mut left.requests,
                n if n == names[1] => &mut left.tokens,
                _ => continue,
            };
            *slot = value.to_str().ok().and_then(|v| v.trim().parse().ok());
        }
        left
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// The chat wire format the deployment speaks (read once, when it is compiled).
    fn chat_format(&self, d: &Deployment) -> ChatFormat;

    /// Whether the deployment answers legacy `/completions` itself (read once, when it
    /// is compiled); otherwise they go through chat.
    fn text_completions(&self, _d: &Deployment) -> bool {
        false
    }

    /// Whether the deployment has the Responses API itself (read once, when it is
    /// compiled); otherwise it goes through chat.
    fn responses_api(&self, _d: &Deployment) -> bool {
        false
    }

    /// The upstream request for `op`, whose `body` is already in the provider's format.
    fn request(
        &self,
        d: &CompiledDeployment,
        target: &Target,
        op: Operation,
        body: Bytes,
    ) -> Result<UpstreamRequest, ApiError>;

    /// Adds the deployment's credentials to a request built for its provider: the
    /// client's native request on a pass-through route, or the gateway's own (Vertex AI,
    /// Bedrock).
    async fn authorize(
        &self,
        upstream: &Arc<Upstream>,
        d: &CompiledDeployment,
        target: &Target,
        req: &mut UpstreamRequest,
    ) -> Result<(), ApiError>;

    /// Sends `op` to the deployment and returns the response once its status is known.
    /// Non-2xx statuses come back as errors carrying the provider's message. `trace`: the
    /// `traceparent` to send (see `RequestCtx::outgoing_traceparent`).
    async fn send(
        &self,
        upstream: &Arc<Upstream>,
        d: &CompiledDeployment,
        op: Operation,
        body: Bytes,
        trace: Option<crate::otel::Outgoing>,
    ) -> Result<ProviderResponse, ApiError> {
        let target = target_of(d)?;
        let req = self.request(d, target, op, body)?;
        exchange(upstream, d, target, op, req, trace).await
    }
}

/// The deployment's upstream address.
fn target_of(d: &CompiledDeployment) -> Result<&Target, ApiError> {
    d.target
        .as_ref()
        .ok_or_else(|| ApiError::internal(format!("{} has no upstream address", d.label)))
}

/// Sends a built request and returns the response once its status is known; non-2xx
/// statuses come back as errors carrying the provider's message.
async fn exchange(
    upstream: &Arc<Upstream>,
    d: &CompiledDeployment,
    target: &Target,
    op: Operation,
    mut req: UpstreamRequest,
    trace: Option<crate::otel::Outgoing>,
) -> Result<ProviderResponse, ApiError> {
    // Not signed (SigV4 signs what `authorize` saw): a header the signature leaves out.
    if let Some(t) = trace {
        req.headers.extend(t.headers());
    }
    // A stream's reads are bounded one by one; anything else is bounded whole by the
    // caller (`timeout`), with one timer.
    let reads = op.is_stream().then_some(d.stream_timeout);
    let ex = upstream
        .send(target, req, reads, Arc::clone(&d.label))
        .await?;
    let status = ex.status;
    let retry_after = ex.retry_after;
    let remaining = Remaining::of(&ex, d.deployment.provider);
    let mut body = Body::Http(Box::new(ex));
    if !(200..300).contains(&status) {
        let err_body = body.read_error().await;
        let mut e = upstream_error(d.deployment.provider, status, &err_body);
        e.message = format!("{}: {}", d.label, e.message);
        return Err(e.with_retry_after(retry_after));
    }
    Ok(ProviderResponse {
        status,
        body,
        remaining,
    })
}

/// What a deployment's provider needs besides `api_key`, resolved when it is compiled.
#[derive(Debug)]
pub enum Credentials {
    Vertex(vertex::VertexAuth),
    /// Boxed: its signer keeps the day's HMAC key with both pads hashed.
    Bedrock(Box<bedrock::BedrockAuth>),
}

/// The credentials of `d`'s provider, if it needs any, or why the deployment cannot be
/// used (its requests then fail with that reason).
pub fn credentials(d: &Deployment, lasting: &Lasting) -> Option<Result<Credentials, Arc<str>>> {
    let prepared = match d.provider {
        ProviderKind::VertexAi => {
            vertex::VertexAuth::prepare(d, &lasting.google, &lasting.upstream)
                .map(Credentials::Vertex)
        }
        ProviderKind::Bedrock => bedrock::BedrockAuth::prepare(d, &lasting.aws, &lasting.upstream)
            .map(|a| Credentials::Bedrock(Box::new(a))),
        _ => return None,
    };
    Some(prepared.map_err(|why| {
        tracing::warn!(deployment = %d.id, reason = %why, "deployment unusable");
        Arc::from(why)
    }))
}

/// The prepared credentials of a deployment whose provider needs them.
fn credentials_of(d: &CompiledDeployment) -> Result<&Credentials, ApiError> {
    match &d.credentials {
        Some(Ok(c)) => Ok(c),
        Some(Err(why)) => Err(ApiError::upstream(
            502,
            ErrorKind::Upstream,
            format!("{} cannot be used: {why}", d.label),
        )
        .with_code("upstream_auth_error")),
        None => Err(ApiError::internal(format!(
            "{} was compiled without its provider's credentials",
            d.label
        ))),
    }
}

/// The provider implementation for a kind.
pub fn get(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::OpenAi => &openai::OpenAi,
        ProviderKind::Azure => &azure::Azure,
        ProviderKind::Anthropic => &anthropic::Anthropic,
        ProviderKind::Gemini => &gemini::Gemini,
        ProviderKind::VertexAi => &vertex::Vertex,
        ProviderKind::Bedrock => &bedrock::Bedrock,
        ProviderKind::Cohere => &cohere::Cohere,
        ProviderKind::Mock => &mock::Mock,
    }
}

/// Turns a provider's error response into the client's error, keeping the provider's
/// message. The provider's fault or unavailability is a 5xx; a request the provider
/// rejected as invalid stays a 4xx the client can fix.
pub fn upstream_error(provider: ProviderKind, status: u16, body: &[u8]) -> ApiError {
    let message = provider_message(body);
    let text = format!("{provider} returned {status}: {message}");
    match status {
        // An object the request names (the Responses API's `previous_response_id`) is not
        // there: the client's 404, as the provider said it.
        404 if error_code(body).as_deref() == Some("previous_response_not_found") => {
            ApiError::not_found(text).with_code("previous_response_not_found")
        }
        // The deployment's model or path does not exist there: the deployment is
        // misconfigured, not the request (retried on the group's other deployments).
        404 => ApiError::upstream(
            502,
            ErrorKind::Upstream,
            format!("{text} (check the deployment's model name and api_base)"),
        )
        .with_code("upstream_not_found"),
        400 | 413 | 422 => {
            let mut e = ApiError::bad_request(text);
            e.status = if status == 413 { 413 } else { 400 };
            e.with_code(bad_request_code(body, &message))
        }
        401 | 403 => ApiError::upstream(
            502,
            ErrorKind::Upstream,
            format!("{text} (the deployment's credentials were refused; check its api_key)"),
        )
        .with_code("upstream_auth_error"),
        429 => {
            ApiError::upstream(429, ErrorKind::RateLimit, text).with_code("upstream_rate_limited")
        }
        408 | 504 => ApiError::timeout(text),
        503 | 529 => ApiError::upstream(503, ErrorKind::Unavailable, text),
        _ => ApiError::upstream(502, ErrorKind::Upstream, text),
    }
}

/// `error.code` of an OpenAI-shaped error body.
fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.get("code")?.as_str().map(str::to_owned)
}

/// The code of a provider's 400: the two failures with their own fallbacks
/// (`context_window_fallbacks`, `content_policy_fallbacks`) are recognised by OpenAI's,
/// Azure's, Anthropic's and Google's codes and messages.
fn bad_request_code(body: &[u8], message: &str) -> &'static str {
    let code = error_code(body).unwrap_or_default();
    let m = message.to_ascii_lowercase();
    if code == "context_length_exceeded"
        || m.contains("maximum context length")
        || m.contains("prompt is too long")
        || m.contains("context window")
        || m.contains("exceeds the maximum number of tokens")
        || m.contains("input is too long")
        || m.contains("too many tokens")
    {
        "context_length_exceeded"
    } else if code == "content_policy_violation"
        || code == "content_filter"
        || m.contains("content management policy")
        || m.contains("content policy")
    {
        "content_policy_violation"
    } else {
        "upstream_bad_request"
    }
}

/// `error.message` from an OpenAI-, Anthropic- or Google-shaped error body, `message`
/// from an AWS- or Cohere-shaped one, else the body's text.
fn provider_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let text = match v.get("error") {
            Some(e) => e
                .get("message")
                .and_then(serde_json::Value::as_str)
                .or_else(|| e.as_str()),
            None => v.get("message").and_then(serde_json::Value::as_str),
        };
        text.map(str::to_owned)
    });
    from_json.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            "(empty body)".to_owned()
        } else {
            text.chars().take(2000).collect()
        }
    })
}

/// `Authorization: Bearer <key>` when the deployment has a key.
fn bearer(d: &CompiledDeployment) -> Vec<(&'static str, String)> {
    d.deployment
        .api_key
        .as_ref()
        .filter(|k| !k.is_empty())
        .map(|k| vec![("authorization", format!("Bearer {}", k.expose()))])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_keep_the_message_and_pick_the_status() {
        let e = upstream_error(
            ProviderKind::OpenAi,
            500,
            br#"{"error":{"message":"boom"}}"#,
        );
        assert_eq!(e.status, 502);
        assert!(e.message.contains("boom"));
        let e = upstream_error(
            ProviderKind::Anthropic,
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.status, 503);
        assert!(e.message.contains("Overloaded"));
        assert_eq!(
            upstream_error(ProviderKind::OpenAi, 400, b"bad").status,
            400
        );
        assert_eq!(upstream_error(ProviderKind::OpenAi, 401, b"").status, 502);
        let code = |b: &[u8]| upstream_error(ProviderKind::OpenAi, 400, b).code.unwrap();
        assert_eq!(
            code(br#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#),
            "context_length_exceeded"
        );
        assert_eq!(
            code(br#"{"error":{"message":"flagged","code":"content_policy_violation"}}"#),
            "content_policy_violation"
        );
        assert_eq!(
            code(br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 250000 tokens > 200000 maximum"}}"#),
            "context_length_exceeded"
        );
        assert_eq!(code(b"bad"), "upstream_bad_request");
        assert_eq!(upstream_error(ProviderKind::OpenAi, 429, b"").status, 429);
        assert_eq!(upstream_error(ProviderKind::OpenAi, 504, b"").status, 504);
    }
}
