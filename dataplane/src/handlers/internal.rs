//! Calls the gateway makes on a request's behalf: `llmrouter-causallm` asking its router
//! model, `llmrouter-automix` asking its small model to verify a draft (a non-streaming
//! chat completion), the semantic cache embedding a message (an embedding). Each goes
//! through the same providers and translation as a client's request (on a model group,
//! with its retries and fallbacks, or on one deployment), without learned routing of its
//! own (no query). Its cost is added to the request's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::attempt::{self, Reply};
use super::request::RawObject;
use crate::error::ClientApi;
use crate::providers::Operation;
use crate::routing::failover::Failover;
use crate::routing::{Lease, RouteRequest};
use crate::state::{App, CompiledDeployment, LiveState};
use crate::translate::{
    openai_to_anthropic, openai_to_bedrock, openai_to_cohere, openai_to_gemini, ChatFormat,
};

/// Largest reply read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A completed internal call.
#[derive(Debug)]
pub struct Answer {
    pub text: String,
    /// USD, from the reply's usage and the deployment's prices (0 without usage).
    pub cost: f64,
}

/// `model`'s answer to `body` (an OpenAI chat request), within `timeout`.
pub async fn complete(
    app: &App,
    live: &LiveState,
    model: &str,
    body: Value,
    timeout: Duration,
) -> Result<Answer, String> {
    let raw = RawObject::parse(body.to_string().as_bytes()).map_err(|e| e.message)?;
    let call = async {
        let (d, reply) = on_group(app, live, model, &raw, Call::Chat).await?;
        answer(&d, &reply)
    };
    within(timeout, model, call).await
}

/// An embedding and what it cost.
#[derive(Debug)]
pub struct Embedding {
    pub vector: Vec<f32>,
    /// USD, as [`Answer::cost`].
    pub cost: f64,
}

/// `model`'s embedding of `text`, within `timeout`.
pub async fn embed(
    app: &App,
    live: &LiveState,
    model: &str,
    text: &str,
    timeout: Duration,
) -> Result<Embedding, String> {
    let body = serde_json::json!({"model": model, "input": text});
    let raw = RawObject::parse(body.to_string().as_bytes()).map_err(|e| e.message)?;
    let call = async {
        let reply = on_group(app, live, model, &raw, Call::Embeddings).await?;
        embedding(model, &raw, &reply)
    };
    within(timeout, model, call).await
}

/// Deployment `d`'s answer to `body`, one attempt, within `timeout`.
pub async fn complete_on(
    app: &App,
    d: &Arc<CompiledDeployment>,
    body: Value,
    timeout: Duration,
) -> Result<Answer, String> {
    let call = async {
        let raw = RawObject::parse(body.to_string().as_bytes()).map_err(|e| e.message)?;
        let reply = once(app, d, &raw, Call::Chat)
            .await
            .map_err(|e| e.message)?;
        answer(d, &reply)
    };
    within(timeout, &d.deployment.id.0, call).await
}

async fn within<T>(
    timeout: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "`{what}` did not answer within {:.1}s",
            timeout.as_secs_f64()
        )),
    }
}

/// What an internal call asks for.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// A non-streaming chat completion.
    Chat,
    Embeddings,
}

/// A model group's reply to `raw` (read as [`Call`] says), with its retries and
/// fallbacks; [`answer`] or [`embedding`] reads it.
async fn on_group(
    app: &App,
    live: &LiveState,
    model: &str,
    raw: &RawObject,
    call: Call,
) -> Result<(Arc<CompiledDeployment>, Bytes), String> {
    let mut plan =
        Failover::new(app, live, model, RouteRequest::default()).map_err(|e| e.message)?;
    let mut d = plan.first().map_err(|e| e.message)?;
    loop {
        // A fallback group's embedding model makes vectors the semantic cache cannot
        // compare with its own: not called at all.
        if matches!(call, Call::Embeddings) && d.deployment.model_name != model {
            // Not tried: a half-open breaker's probe taken for it is released.
            plan.abandon(&d);
            return Err(format!(
                "`{model}` fell back to `{}`, whose embeddings the cache does not use",
                d.deployment.model_name
            ));
        }
        match once(app, &d, raw, call).await {
            Ok(reply) => {
                plan.succeeded(&d);
                return Ok((d, reply));
            }
            Err(e) => d = plan.failed(&d, e).await.map_err(|e| e.message)?,
        }
    }
}

/// One non-streaming attempt on `d`.
async fn once(
    app: &App,
    d: &CompiledDeployment,
    raw: &RawObject,
    call: Call,
) -> Result<Bytes, crate::error::ApiError> {
    let (body, op) = match call {
        Call::Chat => (
            super::chat::upstream_body(raw, ClientApi::OpenAi, d, false)?,
            Operation::Chat {
                stream: false,
                skills: false,
            },
        ),
        Call::Embeddings => (
            super::oneshot::Kind::Embeddings.upstream_body(raw, d)?,
            Operation::Embeddings,
        ),
    };
    let _lease = Lease::start(d, 0);
    match attempt::send(app, d, op, body, MAX_RESPONSE_BYTES, None)
        .await?
        .0
    {
        Reply::Full(bytes) => Ok(bytes),
        Reply::Stream { .. } => Err(crate::error::ApiError::upstream(
            502,
            crate::error::ErrorKind::Upstream,
            "the deployment answered with a stream",
        )),
    }
}

/// The first embedding of a model group's reply to embeddings request `raw`, and its
/// cost.
fn embedding(
    model: &str,
    raw: &RawObject,
    (d, body): &(Arc<CompiledDeployment>, Bytes),
) -> Result<Embedding, String> {
    #[derive(serde::Deserialize)]
    struct Reply {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        embedding: Vec<f32>,
    }
    let (out, usage) = super::oneshot::Kind::Embeddings
        .response(body.clone(), raw, d, model)
        .map_err(|e| e.message)?;
    let reply: Reply = serde_json::from_slice(&out)
        .map_err(|e| format!("{} answered with no embedding: {e}", d.label))?;
    let vector = reply
        .data
        .into_iter()
        .next()
        .map(|i| i.embedding)
        .ok_or_else(|| format!("{} answered with no embedding", d.label))?;
    Ok(Embedding {
        vector,
        cost: d.prices.of(&usage),
    })
}

/// The text and cost of `d`'s reply.
fn answer(d: &CompiledDeployment, body: &Bytes) -> Result<Answer, String> {
    let usage = crate::usage::from_body(body);
    let text = reply_text(d.format, body)?;
    Ok(Answer {
        text,
        cost: usage.map_or(0.0, |u| d.prices.of(&u)),
    })
}

/// The first choice's text of a chat response in the provider's format.
pub fn reply_text(format: ChatFormat, body: &Bytes) -> Result<String, String> {
    let v: Value = match format {
        ChatFormat::OpenAi => serde_json::from_slice(body).map_err(|e| e.to_string())?,
        ChatFormat::Anthropic => {
            openai_to_anthropic::response(body)
                .map_err(|e| e.message)?
                .0
        }
        ChatFormat::Gemini => {
            openai_to_gemini::response(body, "")
                .map_err(|e| e.message)?
                .0
        }
        ChatFormat::Bedrock => {
            openai_to_bedrock::response(body, "")
                .map_err(|e| e.message)?
                .0
        }
        ChatFormat::Cohere => {
            openai_to_cohere::response(body, "")
                .map_err(|e| e.message)?
                .0
        }
    };
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "the answer has no text".into())
}
