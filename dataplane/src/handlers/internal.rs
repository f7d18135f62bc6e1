//! Calls the gateway makes on its own behalf (`llmrouter-causallm` asking its router
//! model): a non-streaming chat completion on one of its model groups, through the same
//! providers, translation, retries and fallbacks as a client's request, but without a key
//! (nothing is billed or rate-limited) and without learned routing of its own (no query).

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::attempt::{self, Reply};
use super::request::RawObject;
use crate::error::ClientApi;
use crate::providers::{self, Operation};
use crate::routing::failover::Failover;
use crate::routing::{Lease, RouteRequest};
use crate::state::{App, LiveState};
use crate::translate::{openai_to_anthropic, ChatFormat};

/// Largest reply read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The text of `model`'s answer to `body` (an OpenAI chat request), within `timeout`.
pub async fn complete(
    app: &App,
    live: &LiveState,
    model: &str,
    body: Value,
    timeout: Duration,
) -> Result<String, String> {
    match tokio::time::timeout(timeout, call(app, live, model, body)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "`{model}` did not answer within {:.1}s",
            timeout.as_secs_f64()
        )),
    }
}

async fn call(app: &App, live: &LiveState, model: &str, body: Value) -> Result<String, String> {
    let raw = RawObject::parse(body.to_string().as_bytes()).map_err(|e| e.message)?;
    let mut plan =
        Failover::new(app, live, model, RouteRequest::default()).map_err(|e| e.message)?;
    let mut d = plan.first().map_err(|e| e.message)?;
    let reply = loop {
        let body = match super::chat::upstream_body(&raw, ClientApi::OpenAi, &d) {
            Ok(b) => b,
            Err(e) => {
                plan.abandon(&d);
                return Err(e.message);
            }
        };
        let _lease = Lease::start(&d, 0);
        let op = Operation::Chat { stream: false };
        match attempt::send(app, &d, op, body, MAX_RESPONSE_BYTES).await {
            Ok(Reply::Full(bytes)) => {
                plan.succeeded(&d);
                break bytes;
            }
            Ok(Reply::Stream { .. }) => {
                plan.abandon(&d);
                return Err("the router model answered with a stream".into());
            }
            Err(e) => d = plan.failed(&d, e).await.map_err(|e| e.message)?,
        }
    };
    text(providers::get(d.deployment.provider).chat_format(), &reply)
}

/// The first choice's text of a chat response in the provider's format.
fn text(format: ChatFormat, body: &Bytes) -> Result<String, String> {
    let v: Value = match format {
        ChatFormat::OpenAi => serde_json::from_slice(body).map_err(|e| e.to_string())?,
        ChatFormat::Anthropic => {
            openai_to_anthropic::response(body)
                .map_err(|e| e.message)?
                .0
        }
    };
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "the router model's answer has no text".into())
}
