//! The built-in `mock/` provider: an instant, deterministic OpenAI-format answer with token
//! usage, streaming included (LiteLLM's `mock_response`). It needs no network, so the
//! example config works offline.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use super::{Body, Operation, Provider, ProviderResponse};
use crate::clock::now_secs;
use crate::error::ApiError;
use crate::sse;
use crate::state::CompiledDeployment;
use crate::translate::{content_text, ChatFormat};
use crate::upstream::{Target, Upstream, UpstreamRequest};
use routeiq_proto::Deployment;

pub struct Mock;

/// Dimensions of mock embeddings.
const EMBEDDING_DIMS: usize = 16;

#[async_trait]
impl Provider for Mock {
    fn chat_format(&self, _d: &Deployment) -> ChatFormat {
        ChatFormat::OpenAi
    }

    fn request(
        &self,
        _d: &CompiledDeployment,
        _target: &Target,
        _op: Operation,
        _body: Bytes,
    ) -> Result<UpstreamRequest, ApiError> {
        Err(ApiError::internal(
            "the mock provider makes no upstream requests",
        ))
    }

    async fn authorize(
        &self,
        _upstream: &Arc<Upstream>,
        d: &CompiledDeployment,
        _target: &Target,
        _req: &mut UpstreamRequest,
    ) -> Result<(), ApiError> {
        Err(ApiError::unsupported(format!(
            "model `{}` is served by the built-in mock provider, which has no native API to pass through to",
            d.deployment.model_name
        )))
    }

    async fn send(
        &self,
        _upstream: &Arc<Upstream>,
        d: &CompiledDeployment,
        op: Operation,
        body: Bytes,
        _trace: Option<crate::otel::Outgoing>,
    ) -> Result<ProviderResponse, ApiError> {
        let req: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("request body is not JSON: {e}")))?;
        let chunks = match op {
            Operation::Chat { stream: false, .. } => {
                VecDeque::from([crate::json::bytes(&chat(d, &req))])
            }
            Operation::Chat { stream: true, .. } => chat_stream(d, &req),
            Operation::Embeddings => VecDeque::from([crate::json::bytes(&embeddings(&req)?)]),
            Operation::Rerank
            | Operation::Moderations
            | Operation::Responses { .. }
            | Operation::Images
            | Operation::Completions { .. }
            | Operation::Transcriptions
            | Operation::Translations
            | Operation::Speech
            | Operation::ImageEdits => {
                return Err(super::unsupported(
                    &d.deployment,
                    "the built-in mock provider",
                    op,
                ))
            }
        };
        Ok(ProviderResponse {
            status: 200,
            body: Body::Local(chunks),
            remaining: Default::default(),
        })
    }
}

/// Roughly four characters per token, as a deterministic stand-in for a tokenizer.
fn approx_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}

fn prompt_tokens(req: &Value) -> u64 {
    let chars: usize = req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)).len())
        .sum();
    approx_tokens(chars)
}

fn reply_text(d: &CompiledDeployment, req: &Value) -> String {
    if let Some(fixed) = &d.deployment.mock_response {
        return fixed.clone();
    }
    let last_user = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let echoed: String = last_user.chars().take(200).collect();
    format!("This is a mock response from RouteIQ. You said: {echoed}")
}

fn completion_tokens(text: &str) -> u64 {
    text.split_whitespace().count().max(1) as u64
}

fn chat(d: &CompiledDeployment, req: &Value) -> Value {
    let text = reply_text(d, req);
    let (p, c) = (prompt_tokens(req), completion_tokens(&text));
    json!({
        "id": format!("chatcmpl-mock-{:016x}", fastrand::u64(..)),
        "object": "chat.completion",
        "created": now_secs(),
        "model": d.deployment.upstream_model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    })
}

fn chat_stream(d: &CompiledDeployment, req: &Value) -> VecDeque<Bytes> {
    let text = reply_text(d, req);
    let (p, c) = (prompt_tokens(req), completion_tokens(&text));
    let id = format!("chatcmpl-mock-{:016x}", fastrand::u64(..));
    let created = now_secs();
    let model = &d.deployment.upstream_model;
    let chunk = |delta: Value, finish: Option<&str>| {
        let c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        sse::data_json(&c)
    };
    let mut out = VecDeque::new();
    out.push_back(chunk(json!({"role": "assistant", "content": ""}), None));
    for piece in text.split_inclusive(' ') {
        out.push_back(chunk(json!({"content": piece}), None));
    }
    out.push_back(chunk(json!({}), Some("stop")));
    let wants_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    if wants_usage {
        let u = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        });
        out.push_back(sse::data_json(&u));
    }
    out.push_back(Bytes::from_static(sse::DONE));
    out
}

fn embeddings(req: &Value) -> Result<Value, ApiError> {
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        _ => {
            return Err(
                ApiError::bad_request("`input` must be a string or a non-empty array")
                    .with_param("input"),
            )
        }
    };
    let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens += approx_tokens(text.len());
            let v = vector(text);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": req.get("model").cloned().unwrap_or_default(),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

/// A unit vector derived from the text's bytes: same text, same vector.
fn vector(text: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut v = Vec::with_capacity(EMBEDDING_DIMS);
    for i in 0..EMBEDDING_DIMS {
        for b in text.bytes().chain([i as u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        v.push(((h >> 40) as f32 / (1u64 << 24) as f32) - 0.5);
    }
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_vectors() {
        assert_eq!(vector("a"), vector("a"));
        assert_ne!(vector("a"), vector("b"));
        let n: f32 = vector("hello").iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }

    #[test]
    fn embeddings_validate_input() {
        assert!(embeddings(&json!({"input": []})).is_err());
        let e = embeddings(&json!({"input": ["a", "b"], "encoding_format": "base64"})).unwrap();
        assert_eq!(e["data"].as_array().unwrap().len(), 2);
        assert!(e["data"][0]["embedding"].is_string());
    }
}
