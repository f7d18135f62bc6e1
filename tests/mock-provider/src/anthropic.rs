//! Anthropic Messages API, direct and as Claude on Vertex AI: text, tool use, max_tokens,
//! and the real streaming event sequence.

use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::common::{self, State};
use crate::openai::sse;

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

/// `POST /v1/messages`: Anthropic's own API, `x-api-key` and `anthropic-version` headers.
pub async fn messages(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.record("/v1/messages", &headers, &body);
    if headers.get("x-api-key").is_none() {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        );
    }
    if headers.get("anthropic-version").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version header is required",
        );
    }
    if let Err(refused) = crate::skills::check_container(&state, &headers, &body) {
        return refused.into_response();
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    respond(&state, &headers, &body, model).await
}

/// The `anthropic_version` Claude on Vertex AI requires in the body.
pub const VERTEX_VERSION: &str = "vertex-2023-10-16";

/// Claude on Vertex AI (`rawPredict` / `streamRawPredict`, the caller has checked the
/// bearer token): a Messages request whose model is in the path, not the body, and whose
/// version is in the body, not a header. Answers as `/v1/messages` does.
pub async fn vertex_messages(
    state: &State,
    headers: &HeaderMap,
    body: &Value,
    model: &str,
) -> Response {
    if body.get("model").is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: Extra inputs are not permitted (on Vertex AI the model is in the URL)",
        );
    }
    match body.get("anthropic_version").and_then(Value::as_str) {
        Some(VERTEX_VERSION) => {}
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("anthropic_version: must be {VERTEX_VERSION}, not {other}"),
            )
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("anthropic_version: Field required (use {VERTEX_VERSION})"),
            )
        }
    }
    respond(state, headers, body, model.to_owned()).await
}

/// A Messages request's answer, once the transport's own checks passed.
async fn respond(state: &State, headers: &HeaderMap, body: &Value, model: String) -> Response {
    let answer = match reply(state, headers, body, &model).await {
        Ok(answer) => answer,
        Err(refusal) => return refused(refusal),
    };
    const RATELIMIT: [&str; 2] = [
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-remaining",
    ];
    let fault = answer.stream_fault;
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return fault.ratelimit_headers(Json(answer.message()).into_response(), RATELIMIT);
    }
    let events = answer
        .events()
        .iter()
        .map(|e| {
            let name = e.get("type").and_then(Value::as_str).unwrap_or("");
            format!("event: {name}\ndata: {e}\n\n")
        })
        .collect();
    fault.ratelimit_headers(sse(events, fault), RATELIMIT)
}

/// Anthropic's error for a refused request.
fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Invalid(message) => {
            error(StatusCode::BAD_REQUEST, "invalid_request_error", &message)
        }
        Refusal::Requested(status) => {
            let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(s, "api_error", &format!("mock failure {status}"))
        }
        Refusal::Injected(e, input_tokens) => {
            let status =
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = match e.status {
                429 => "rate_limit_error",
                529 => "overloaded_error",
                400 => "invalid_request_error",
                _ => "api_error",
            };
            let message = if e.code == "context_length_exceeded" {
                format!("prompt is too long: {input_tokens} tokens > maximum")
            } else {
                e.message
            };
            let mut r = error(status, kind, &message);
            if let Some(s) = e.retry_after {
                if let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string()) {
                    r.headers_mut().insert("retry-after", v);
                }
            }
            r
        }
    }
}

/// Why a Messages request gets no answer. Each transport (Anthropic's API, Vertex AI,
/// Bedrock) shapes the error its own way.
#[derive(Debug)]
pub enum Refusal {
    /// The request is malformed (a 400 with this message).
    Invalid(String),
    /// `mock-status-NNN` in the last user turn (or the `x-mock-status` header).
    Requested(u16),
    /// A `/__faults` injection, and the prompt's input tokens.
    Injected(common::Injected, u64),
}

/// What the mock Claude answers to a Messages request.
#[derive(Debug)]
pub struct Answer {
    pub model: String,
    pub text: String,
    /// A call of this tool, with `{"location": "Paris"}`.
    pub tool: Option<String>,
    pub stop: &'static str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub stream_fault: common::StreamFault,
}

impl Answer {
    fn input() -> Value {
        json!({"location": "Paris"})
    }

    /// The prompt's usage as Anthropic counts it: `input_tokens` leaves out the tokens
    /// read from and written to the prompt cache, which have fields of their own.
    fn prompt_usage(&self) -> Value {
        let read = self
            .stream_fault
            .cached_tokens
            .unwrap_or(0)
            .min(self.input_tokens);
        let written = self
            .stream_fault
            .cache_write_tokens
            .unwrap_or(0)
            .min(self.input_tokens - read);
        let mut u = json!({"input_tokens": self.input_tokens - read - written});
        if self.stream_fault.cached_tokens.is_some()
            || self.stream_fault.cache_write_tokens.is_some()
        {
            u["cache_read_input_tokens"] = json!(read);
            u["cache_creation_input_tokens"] = json!(written);
        }
        u
    }

    fn usage(&self, output_tokens: u64) -> Value {
        let mut u = self.prompt_usage();
        u["output_tokens"] = json!(output_tokens);
        u
    }

    /// The non-streamed response body.
    pub fn message(&self) -> Value {
        let mut blocks = vec![json!({"type": "text", "text": self.text})];
        if let Some(name) = &self.tool {
            blocks.push(json!({"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": Self::input()}));
        }
        json!({
            "id": "msg_mock_1", "type": "message", "role": "assistant", "model": self.model,
            "content": blocks, "stop_reason": self.stop, "stop_sequence": null,
            "usage": self.usage(self.output_tokens),
        })
    }

    /// The streamed events, in order; each names itself in `type`.
    pub fn events(&self) -> Vec<Value> {
        let mut events = vec![
            json!({"type": "message_start", "message": {
                "id": "msg_mock_1", "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": self.usage(1)}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
        ];
        for piece in self.text.split_inclusive(' ') {
            events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}));
        }
        events.push(json!({"type": "content_block_stop", "index": 0}));
        if let Some(name) = &self.tool {
            events.push(json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {}}}));
            let s = Self::input().to_string();
            let (a, b) = s.split_at(s.len() / 2);
            for part in [a, b] {
                events.push(json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": part}}));
            }
            events.push(json!({"type": "content_block_stop", "index": 1}));
        }
        // With cache figures, the delta restates the whole usage, as the current API does.
        let usage = if self.prompt_usage().get("cache_read_input_tokens").is_some() {
            self.usage(self.output_tokens)
        } else {
            json!({"output_tokens": self.output_tokens})
        };
        events.push(json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop, "stop_sequence": null},
            "usage": usage}));
        events.push(json!({"type": "message_stop"}));
        events
    }
}

/// Reads a Messages request, applies the test's faults and answers it: text, a tool call
/// when tools are declared, the tool result echoed back, `max_tokens` honoured.
pub async fn reply(
    state: &State,
    headers: &HeaderMap,
    body: &Value,
    model: &str,
) -> Result<Answer, Refusal> {
    let Some(max_tokens) = body.get("max_tokens").and_then(Value::as_u64) else {
        return Err(Refusal::Invalid("max_tokens: Field required".into()));
    };
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .cloned()
        .unwrap_or(Value::Null);
    let content = last_user.get("content").cloned().unwrap_or(Value::Null);
    let last_text = common::text_of(&content);
    if let Some(status) = common::requested_status(headers, &last_text) {
        return Err(Refusal::Requested(status));
    }
    common::maybe_delay(headers, model).await;

    let tool_result = content.as_array().and_then(|blocks| {
        blocks
            .iter()
            .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| common::text_of(b.get("content").unwrap_or(&Value::Null)))
    });
    let tool_name = body
        .get("tools")
        .and_then(|t| t.get(0))
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let chars: usize = messages
        .iter()
        .map(|m| common::text_of(m.get("content").unwrap_or(&Value::Null)).len())
        .sum::<usize>()
        + body
            .get("system")
            .map(|s| common::text_of(s).len())
            .unwrap_or(0);
    let input_tokens = common::prompt_tokens(chars);
    let (fault, stream_fault) = state.inject(model, input_tokens).await;
    if let Some(e) = fault {
        return Err(Refusal::Injected(e, input_tokens));
    }

    let (mut text, tool) = match (tool_result, &tool_name) {
        (Some(result), _) => (format!("tool result received: {result}"), None),
        (None, Some(name)) => ("Let me check.".to_owned(), Some(name.clone())),
        (None, None) => (common::reply_to(&last_text), None),
    };
    let mut stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let ws: Vec<&str> = text.split_whitespace().collect();
    if ws.len() as u64 > max_tokens {
        text = ws[..max_tokens as usize].join(" ");
        stop = "max_tokens";
    }
    let output_tokens = common::words(&text) + if tool.is_some() { 5 } else { 0 };
    Ok(Answer {
        model: model.to_owned(),
        text,
        tool,
        stop,
        input_tokens,
        output_tokens,
        stream_fault,
    })
}
