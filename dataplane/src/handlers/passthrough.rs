//! Pass-through routes, as LiteLLM serves them: `/gemini/{path}`, `/vertex_ai/{path}`,
//! `/bedrock/{path}`, `/anthropic/{path}`, `/openai/{path}` and `/cohere/{path}`.
//!
//! The client sends the provider's native request with a RouteIQ key. The gateway picks
//! the deployment of that provider whose upstream model the request names (in its path for
//! Gemini, Vertex AI and Bedrock, in its body otherwise), checks the key's access to that
//! deployment's model group, admits it under the key's limits and budgets, authorises the
//! request for the provider (API key, OAuth token, SigV4) and streams the reply back
//! unchanged, status and errors included. Usage and cost are read on the side where the
//! reply carries them (the same converters the translated routes use, their output
//! discarded).

use std::sync::Arc;

use bytes::Bytes;
use pingora::proxy::Session;
use routeiq_proto::ProviderKind;
use serde_json::Value;

use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi};
use crate::eventstream::Decoder;
use crate::providers::{self, bedrock};
use crate::respond;
use crate::routing::Lease;
use crate::state::{App, CompiledDeployment, LiveState};
use crate::translate::{
    openai_to_anthropic, openai_to_bedrock, openai_to_cohere, openai_to_gemini, stream, ChatFormat,
};
use crate::usage::{self, Usage};

/// Client headers forwarded upstream (the provider's API options); the rest, credentials
/// above all, stay behind.
const FORWARDED: &[&str] = &["anthropic-version", "anthropic-beta", "openai-beta"];

/// A non-streaming reply is kept (for its usage) up to this size; larger ones still pass.
const MAX_USAGE_BODY: usize = 16 * 1024 * 1024;

/// The upstream model a native request names, and the format its reply comes in (for
/// reading its usage; `None`: not read).
fn model_and_format(
    kind: ProviderKind,
    rest: &str,
    body: &[u8],
) -> Result<(String, Option<ChatFormat>), ApiError> {
    let from_path = |after: &str| -> Option<String> {
        let (_, tail) = rest.split_once(after)?;
        let segment = tail.split('/').next()?;
        let model = segment.split(':').next()?;
        let model = percent_encoding::percent_decode_str(model).decode_utf8_lossy();
        Some(model.into_owned()).filter(|m| !m.is_empty())
    };
    let from_body = || -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        v.get("model")?.as_str().map(str::to_owned)
    };
    let missing = |where_: &str| {
        ApiError::bad_request(format!(
            "a {} pass-through request names its model in {where_}",
            kind.as_str()
        ))
    };
    Ok(match kind {
        ProviderKind::Gemini => (
            from_path("/models/")
                .ok_or_else(|| missing("its path (`.../models/<model>:<method>`)"))?,
            Some(ChatFormat::Gemini),
        ),
        ProviderKind::VertexAi => {
            let model = from_path("/models/").ok_or_else(|| {
                missing("its path (`.../publishers/<publisher>/models/<model>:<method>`)")
            })?;
            let format = if rest.contains("/publishers/anthropic/") {
                ChatFormat::Anthropic
            } else {
                ChatFormat::Gemini
            };
            (model, Some(format))
        }
        ProviderKind::Bedrock => {
            let model = from_path("/model/")
                .ok_or_else(|| missing("its path (`/model/<model id>/<action>`)"))?;
            let format = if rest.ends_with("/converse") || rest.ends_with("/converse-stream") {
                Some(ChatFormat::Bedrock)
            } else if model.contains("anthropic.") {
                Some(ChatFormat::Anthropic)
            } else {
                None
            };
            (model, format)
        }
        ProviderKind::Anthropic => (
            from_body().ok_or_else(|| missing("its body's `model`"))?,
            Some(ChatFormat::Anthropic),
        ),
        ProviderKind::Cohere => (
            from_body().ok_or_else(|| missing("its body's `model`"))?,
            Some(ChatFormat::Cohere),
        ),
        ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::Mock => (
            from_body().ok_or_else(|| missing("its body's `model`"))?,
            Some(ChatFormat::OpenAi),
        ),
    })
}

/// The model id a deployment is reached by on its provider's native API.
fn native_model(d: &CompiledDeployment) -> &str {
    match d.deployment.provider {
        ProviderKind::Bedrock => bedrock::embedding_model(&d.deployment),
        _ => &d.deployment.upstream_model,
    }
}

/// The deployment of `kind` serving upstream model `model`: one whose credentials are
/// usable before one whose are not, then by model group and id (the same one every time).
fn find(
    live: &LiveState,
    kind: ProviderKind,
    model: &str,
) -> Result<Arc<CompiledDeployment>, ApiError> {
    live.compiled()
        .filter(|d| d.deployment.provider == kind && native_model(d) == model)
        .min_by_key(|d| {
            (
                matches!(d.credentials, Some(Err(_))),
                &d.deployment.model_name,
                &d.deployment.id,
            )
        })
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no {kind} deployment serves model `{model}`: a pass-through route reaches the deployments whose `litellm_params.model` is `{kind}/{model}`"
            ))
            .with_param("model")
        })
}

/// The root the provider's native paths hang off: `api_base` without its API version.
fn root(base_path: &str) -> &str {
    ["/v1beta", "/v1", "/v2"]
        .iter()
        .find_map(|v| base_path.strip_suffix(v))
        .unwrap_or(base_path)
}

pub async fn forward(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    kind: ProviderKind,
    rest: &str,
    body: Bytes,
) -> Result<(), ApiError> {
    let (model, format) = model_and_format(kind, rest, &body)?;
    let d = find(live, kind, &model)?;
    crate::access::check(live, ctx.key.as_deref(), &d.deployment.model_name)?;
    ctx.model = Some(d.deployment.model_name.clone());
    ctx.deployment = Some(Arc::clone(&d));
    let max_tokens = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        ["max_tokens", "max_completion_tokens", "maxTokens"]
            .iter()
            .find_map(|k| v.get(k).and_then(Value::as_u64))
    });
    let worst = crate::limits::WorstCase::of(
        body.len(),
        max_tokens,
        d.deployment.model_info.max_output_tokens,
    );
    ctx.admit(app, live, &d, worst).await?;
    ctx.lease = Some(Lease::start(&d, worst.prompt + worst.completion));

    let target = d
        .target
        .as_ref()
        .ok_or_else(|| ApiError::unsupported(format!("{} has no upstream address", d.label)))?;
    let query = session
        .req_header()
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let headers = FORWARDED
        .iter()
        .filter_map(|name| {
            let v = session.req_header().headers.get(*name)?.to_str().ok()?;
            Some((*name, v.to_owned()))
        })
        .chain(
            ctx.outgoing_trace(None)
                .into_iter()
                .flat_map(crate::otel::Outgoing::headers),
        )
        .collect();
    let mut req = crate::upstream::UpstreamRequest {
        method: http::Method::POST,
        path: format!("{}{rest}{query}", root(&target.base_path)),
        headers,
        body,
    };
    let provider = providers::get(kind);
    provider
        .authorize(&app.upstream, &d, target, &mut req)
        .await?;
    let sent = std::time::Instant::now();
    let mut ex = app
        .upstream
        .send(target, req, Some(d.stream_timeout), Arc::clone(&d.label))
        .await?;
    let status = ex.status;
    let content_type = ex
        .header("content-type")
        .unwrap_or("application/json")
        .to_owned();
    let streaming = content_type.starts_with("text/event-stream")
        || content_type.starts_with("application/vnd.amazon.eventstream");
    let mut extra = super::response_headers(ctx, &d);
    if let Some(s) = ex.retry_after {
        extra.push(("retry-after", s.to_string()));
    }
    if !(200..300).contains(&status) {
        ctx.error_type = Some(crate::error::ErrorKind::Upstream.type_str());
    }
    if respond::start(session, ctx, status, &content_type, &extra)
        .await
        .is_err()
    {
        return Ok(()); // client gone
    }
    let mut reader = UsageReader::new(
        kind,
        format.filter(|_| (200..300).contains(&status)),
        streaming,
        &model,
    );
    let mut out = Vec::with_capacity(1);
    loop {
        match ex.next_chunk().await {
            Ok(Some(chunk)) => {
                if ctx.time_to_first_token.is_none() {
                    ctx.time_to_first_token = Some(sent.elapsed());
                }
                reader.feed(&chunk);
                out.push(chunk);
                if respond::stream_write(session, &mut out).await.is_err() {
                    break; // client gone; dropping the exchange closes the upstream
                }
            }
            Ok(None) => break,
            Err(e) => {
                // The status is out; all that is left is to end the body early.
                tracing::warn!(error = %e, model = %model, "pass-through reply broke off");
                ctx.error_type = Some(e.kind.type_str());
                break;
            }
        }
    }
    ctx.upstream_latency = Some(sent.elapsed());
    ctx.usage = reader.usage();
    let _ = respond::stream_end(session).await;
    Ok(())
}

/// Reads the usage of a native reply as it passes.
enum UsageReader {
    None,
    Stream {
        decoder: Decoder,
        converter: Box<dyn stream::StreamConverter>,
        scratch: Vec<Bytes>,
    },
    Whole {
        format: ChatFormat,
        body: Vec<u8>,
    },
}

impl UsageReader {
    fn new(kind: ProviderKind, format: Option<ChatFormat>, streaming: bool, model: &str) -> Self {
        match (format, streaming) {
            (None, _) => Self::None,
            (Some(format), true) => {
                // Each format's own client reads it untranslated; the others convert to
                // OpenAI chunks, which carry the usage.
                let client = if format == ChatFormat::Anthropic {
                    ClientApi::Anthropic
                } else {
                    ClientApi::OpenAi
                };
                Self::Stream {
                    decoder: Decoder::for_provider(kind),
                    converter: stream::converter(format, client, true, model, Default::default()),
                    scratch: Vec::new(),
                }
            }
            (Some(format), false) => Self::Whole {
                format,
                body: Vec::new(),
            },
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        match self {
            Self::None => {}
            Self::Stream {
                decoder,
                converter,
                scratch,
            } => match decoder.feed(chunk) {
                Ok(events) => {
                    for ev in &events {
                        converter.event(ev, scratch);
                    }
                    scratch.clear();
                }
                Err(_) => *self = Self::None,
            },
            Self::Whole { body, .. } => {
                if body.len() + chunk.len() > MAX_USAGE_BODY {
                    *self = Self::None;
                } else {
                    body.extend_from_slice(chunk);
                }
            }
        }
    }

    fn usage(&mut self) -> Option<Usage> {
        match self {
            Self::None => None,
            Self::Stream { converter, .. } => converter.usage(),
            Self::Whole { format, body } => match format {
                ChatFormat::OpenAi => usage::from_body(body),
                ChatFormat::Anthropic => openai_to_anthropic::response(body).ok()?.1,
                ChatFormat::Gemini => {
                    openai_to_gemini::usage(&serde_json::from_slice::<Value>(body).ok()?)
                }
                ChatFormat::Bedrock => {
                    let v: Value = serde_json::from_slice(body).ok()?;
                    openai_to_bedrock::usage(v.get("usage")?)
                }
                ChatFormat::Cohere => {
                    let v: Value = serde_json::from_slice(body).ok()?;
                    openai_to_cohere::usage(v.get("usage")?)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_from_paths() {
        let (m, f) = model_and_format(
            ProviderKind::Bedrock,
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
            b"",
        )
        .unwrap();
        assert_eq!(m, "anthropic.claude-3-5-sonnet-20240620-v1:0");
        assert_eq!(f, Some(ChatFormat::Bedrock));
        let (m, f) = model_and_format(
            ProviderKind::VertexAi,
            "/v1/projects/p/locations/l/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict",
            b"",
        )
        .unwrap();
        assert_eq!(m, "claude-sonnet-4-5@20250929");
        assert_eq!(f, Some(ChatFormat::Anthropic));
        let (m, _) = model_and_format(
            ProviderKind::Cohere,
            "/v2/chat",
            br#"{"model": "command-r"}"#,
        )
        .unwrap();
        assert_eq!(m, "command-r");
        assert!(model_and_format(ProviderKind::Cohere, "/v2/chat", b"{}").is_err());
        assert_eq!(root("/v1beta"), "");
        assert_eq!(root("/proxy/v1"), "/proxy");
    }
}
