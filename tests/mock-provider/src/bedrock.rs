//! AWS Bedrock Runtime: Converse and ConverseStream (text, tool use, max tokens, stop
//! sequences, guardrail interventions), InvokeModel and InvokeModelWithResponseStream for Claude
//! (an Anthropic Messages body), Titan and Cohere embeddings. Every request must carry a valid
//! SigV4 signature for the service `bedrock` (see [`crate::aws`]); errors are AWS's JSON errors
//! (`x-amzn-ErrorType` and `{"message"}`); streams use AWS's binary event-stream framing.
//!
//! Besides the faults every protocol has, `mock-stream-error-NNN` in the last user turn makes a
//! stream break off after its first events with the exception frame for that status
//! (`throttlingException` for 429, ...).

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue as FrameValue, Message};
use axum::extract::{OriginalUri, Path, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::anthropic::{self, Refusal};
use crate::aws::{self, Signed};
use crate::common::{self, State};

/// The `anthropic_version` Claude on Bedrock requires in the body.
pub const BEDROCK_VERSION: &str = "bedrock-2023-05-31";
/// What a guardrail answers instead of the model (the default blocked-input message).
const GUARDRAIL_MESSAGE: &str = "Sorry, the model cannot answer this question.";
/// The id of every tool call, as the other protocols' are fixed.
const TOOL_USE_ID: &str = "tooluse_mock_1";
/// The input of every tool call, as JSON text.
const CALL_INPUT: &str = r#"{"location":"Paris"}"#;
/// ValidationException's message for a prompt over the context window.
const CONTEXT_WINDOW: &str = "Input is too long for requested model.";
/// Bedrock pads stream events with a `p` field (so their sizes leak nothing).
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// The content type of AWS event streams.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// AWS's JSON error: `x-amzn-ErrorType: <kind>`, body `{"message"}`.
pub fn aws_error(status: u16, kind: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (code, Json(json!({"message": message}))).into_response();
    if let Ok(v) = HeaderValue::from_str(kind) {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    if let Ok(v) = HeaderValue::from_str(&aws::request_id()) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

/// The exception Bedrock Runtime answers with for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 | 403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        409 => "ConflictException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        s if s >= 500 => "InternalServerException",
        _ => "ValidationException",
    }
}

/// Bedrock's own message for the exceptions a test usually asks for.
fn aws_message(status: u16) -> Option<&'static str> {
    Some(match status {
        403 => "You don't have access to the model with the specified model ID.",
        404 => "Could not resolve the foundation model from the provided model identifier.",
        408 => "Model has timed out in processing the request. Try your request again.",
        424 => "Received an error from the model. Try your request again.",
        429 => "Too many requests, please wait before trying again.",
        500 => "The server encountered an internal error while processing the request.",
        503 => "Bedrock is unable to process your request.",
        _ => return None,
    })
}

/// The error for `mock-status-NNN`.
fn failure(status: u16) -> Response {
    let fallback = format!("mock failure {status}");
    aws_error(
        status,
        error_type(status),
        aws_message(status).unwrap_or(&fallback),
    )
}

/// A `/__faults` error, Bedrock-shaped: the context window's ValidationException, or the
/// status's exception (the fault's `code`, when it names one, e.g. `ModelNotReadyException`),
/// with `retry-after` when asked.
fn injected(e: common::Injected) -> Response {
    let (kind, message) = if e.code == "context_length_exceeded" {
        ("ValidationException", CONTEXT_WINDOW.to_owned())
    } else {
        let kind = if e.code.ends_with("Exception") {
            e.code.as_str()
        } else {
            error_type(e.status)
        };
        (
            kind,
            aws_message(e.status)
                .map(str::to_owned)
                .unwrap_or(e.message),
        )
    };
    let mut r = aws_error(e.status, kind, &message);
    if let Some(s) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
    }
    r
}

/// A 400 for a body the model's schema refuses, worded as Bedrock does.
fn malformed(detail: &str) -> Response {
    aws_error(
        400,
        "ValidationException",
        &format!("Malformed input request: {detail}, please reformat your input and try again."),
    )
}

fn validation(message: &str) -> Response {
    aws_error(400, "ValidationException", message)
}

/// One event-stream message (prelude, headers, payload, CRCs), encoded by
/// `aws-smithy-eventstream`.
fn frame(headers: Vec<Header>, payload: &Value) -> Bytes {
    let message = Message::new_from_parts(headers, payload.to_string().into_bytes());
    let mut buf = Vec::new();
    match write_message_to(&message, &mut buf) {
        Ok(()) => Bytes::from(buf),
        Err(e) => {
            tracing::warn!(error = %e, "could not encode an event-stream message");
            Bytes::new()
        }
    }
}

fn string_header(name: &'static str, value: &str) -> Header {
    Header::new(name, FrameValue::String(value.to_owned().into()))
}

/// An `event` message: `:event-type` names it, the payload is its JSON.
fn event(name: &str, payload: &Value) -> Bytes {
    frame(
        vec![
            string_header(":event-type", name),
            string_header(":content-type", "application/json"),
            string_header(":message-type", "event"),
        ],
        payload,
    )
}

/// The `exception` message that ends a stream for an HTTP-like status (`invoke`: the
/// InvokeModelWithResponseStream union, which also has `modelTimeoutException`).
fn stream_exception(status: u16, invoke: bool) -> Bytes {
    let (name, message) = match status {
        400 => ("validationException", "The request is not valid."),
        408 if invoke => (
            "modelTimeoutException",
            "Model has timed out in processing the request. Try your request again.",
        ),
        424 => (
            "modelStreamErrorException",
            "The model returned an error while streaming.",
        ),
        429 => (
            "throttlingException",
            "Too many requests, please wait before trying again.",
        ),
        503 => (
            "serviceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        _ => (
            "internalServerException",
            "The server encountered an internal error while processing the request.",
        ),
    };
    let mut payload = json!({"message": message});
    if name == "modelStreamErrorException" {
        payload["originalStatusCode"] = json!(500);
        payload["originalMessage"] = json!("mock model stream error");
    }
    frame(
        vec![
            string_header(":exception-type", name),
            string_header(":content-type", "application/json"),
            string_header(":message-type", "exception"),
        ],
        &payload,
    )
}

/// An event-stream body; chunk delay and reset faults apply per message.
fn event_stream(frames: Vec<Bytes>, fault: common::StreamFault) -> Response {
    common::streamed(frames, fault, EVENT_STREAM)
}

/// `mock-stream-error-NNN` in the last user turn: the stream's exception status.
fn stream_error(last_user: &str) -> Option<u16> {
    last_user
        .split("mock-stream-error-")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

/// Records the request, checks its signature (counting it when it verifies) and parses its
/// body, a JSON object; `Err` is the error to answer with.
fn admit(
    state: &State,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Box<Response>> {
    let path = path_and_query(uri);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let recorded = parsed
        .clone()
        .unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned()));
    state.record(&path, headers, &recorded);
    let signed = Signed {
        method: "POST",
        path_and_query: &path,
        headers,
        body,
    };
    match state.aws.verify(&signed, "bedrock") {
        Ok(signer) => state.aws.count_verified(&signer),
        Err(e) => return Err(Box::new(aws_error(e.status(), e.json_type(), &e.message))),
    }
    parsed.filter(Value::is_object).ok_or_else(|| {
        Box::new(aws_error(
            400,
            "SerializationException",
            "The request body is not a JSON object.",
        ))
    })
}

/// The model families the mock serves, from a model id, an inference profile id
/// (`us.anthropic.claude-...`) or an ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Claude,
    TitanEmbed { v2: bool },
    CohereEmbed,
    Other,
}

fn family(model: &str) -> Family {
    let id = model.rsplit('/').next().unwrap_or(model);
    if id.contains("anthropic.") {
        Family::Claude
    } else if id.contains("amazon.titan-embed") {
        Family::TitanEmbed {
            v2: id.contains("titan-embed-text-v2"),
        }
    } else if id.contains("cohere.embed") {
        Family::CohereEmbed
    } else {
        Family::Other
    }
}

// ---------------------------------------------------------------------------------------
// Converse

/// What a Converse request asks of the mock model.
#[derive(Debug, Clone, PartialEq)]
struct Ask {
    /// The text of the last user turn.
    last_user: String,
    /// Characters of text in the messages (tool results included) and the system prompt.
    prompt_chars: usize,
    /// The last user turn answers a tool call with this.
    tool_result: Option<String>,
    /// The first declared tool.
    tool: Option<String>,
    max_tokens: Option<u64>,
    stop_sequences: Vec<String>,
}

/// The text blocks of a content array, joined.
fn blocks_text(blocks: &Value) -> String {
    blocks
        .as_array()
        .map(|b| {
            b.iter()
                .filter_map(|block| block.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// The text of a `toolResult` block: its text parts, and its JSON parts as JSON.
fn tool_result_text(result: &Value) -> String {
    result
        .get("content")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| match (p.get("text"), p.get("json")) {
                    (Some(Value::String(t)), _) => Some(t.clone()),
                    (_, Some(j)) => Some(j.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// Reads a Converse request; `Err` is the ValidationException's message.
fn read_converse(body: &Value) -> Result<Ask, String> {
    const START: &str = "A conversation must start with a user message. Try again with a \
                         conversation that starts with a user message.";
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or(START)?;
    let mut uses_tools = false;
    let mut previous = "";
    let mut prompt_chars = 0;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(format!(
                "1 validation error detected: Value '{role}' at 'messages.{i}.member.role' \
                 failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]"
            ));
        }
        if i == 0 && role != "user" {
            return Err(START.into());
        }
        if role == previous {
            return Err(
                "A conversation must alternate between user and assistant roles. Make \
                        sure the conversation alternates between user and assistant roles and \
                        try again."
                    .into(),
            );
        }
        previous = role;
        let Some(blocks) = m
            .get("content")
            .and_then(Value::as_array)
            .filter(|b| !b.is_empty())
        else {
            return Err(format!(
                "The content field in the Message object at messages.{i} is empty. Add a \
                 ContentBlock object to the content field and try again."
            ));
        };
        for (j, block) in blocks.iter().enumerate() {
            if let Some(text) = block.get("text") {
                let text = text.as_str().unwrap_or("");
                if text.trim().is_empty() {
                    return Err(format!(
                        "The text field in the ContentBlock object at messages.{i}.content.{j} \
                         is blank. Add text to the text field, and try again."
                    ));
                }
                prompt_chars += text.len();
            }
            if let Some(result) = block.get("toolResult") {
                prompt_chars += tool_result_text(result).len();
                uses_tools = true;
            }
            uses_tools |= block.get("toolUse").is_some();
        }
    }
    let tool_config = body.get("toolConfig");
    if uses_tools && tool_config.is_none() {
        return Err(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
                .into(),
        );
    }
    let tools = tool_config
        .and_then(|c| c.get("tools"))
        .and_then(Value::as_array);
    if tool_config.is_some() && tools.is_none_or(Vec::is_empty) {
        return Err(
            "1 validation error detected: Value '[]' at 'toolConfig.tools' failed to \
                    satisfy constraint: Member must have length greater than or equal to 1"
                .into(),
        );
    }
    let tool = tools
        .into_iter()
        .flatten()
        .find_map(|t| t.get("toolSpec")?.get("name")?.as_str())
        .map(str::to_owned);
    let config = body.get("inferenceConfig").unwrap_or(&Value::Null);
    let max_tokens = config.get("maxTokens").and_then(Value::as_u64);
    if max_tokens == Some(0) {
        return Err("1 validation error detected: Value '0' at 'inferenceConfig.maxTokens' \
                    failed to satisfy constraint: Member must have value greater than or equal to 1"
            .into());
    }
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    let content = last_user.and_then(|m| m.get("content"));
    let tool_result = content
        .and_then(Value::as_array)
        .and_then(|blocks| blocks.iter().find_map(|b| b.get("toolResult")))
        .map(tool_result_text);
    prompt_chars += body.get("system").map_or(0, |s| blocks_text(s).len());
    Ok(Ask {
        last_user: content.map(blocks_text).unwrap_or_default(),
        prompt_chars,
        tool_result,
        tool,
        max_tokens,
        stop_sequences: config
            .get("stopSequences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// What the mock model says.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    text: String,
    /// A call of this tool, with `CALL_INPUT`.
    tool: Option<String>,
    stop: &'static str,
}

impl Answer {
    fn tokens(&self) -> u64 {
        common::words(&self.text) + if self.tool.is_some() { 5 } else { 0 }
    }
}

fn answer(ask: &Ask) -> Answer {
    if ask.last_user.contains("mock-guardrail") {
        return Answer {
            text: GUARDRAIL_MESSAGE.into(),
            tool: None,
            stop: "guardrail_intervened",
        };
    }
    let (mut text, tool) = match (&ask.tool_result, &ask.tool) {
        (Some(result), _) => (format!("tool result received: {result}"), None),
        (None, Some(name)) => ("Let me check.".to_owned(), Some(name.clone())),
        (None, None) => (common::reply_to(&ask.last_user), None),
    };
    let mut stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    if tool.is_none() {
        for s in &ask.stop_sequences {
            if let Some(at) = text.find(s.as_str()) {
                text.truncate(at);
                stop = "stop_sequence";
            }
        }
    }
    if let Some(max) = ask.max_tokens {
        let ws: Vec<&str> = text.split_whitespace().collect();
        if ws.len() as u64 > max {
            text = ws[..max as usize].join(" ");
            stop = "max_tokens";
        }
    }
    Answer { text, tool, stop }
}

/// Converse's `usage`: `inputTokens` leaves out what came from the prompt cache.
fn usage(prompt: u64, output: u64, cached: Option<u64>) -> Value {
    let cached = cached.map(|c| c.min(prompt));
    let mut u = json!({
        "inputTokens": prompt - cached.unwrap_or(0), "outputTokens": output,
        "totalTokens": prompt + output,
    });
    if let Some(c) = cached {
        u["cacheReadInputTokens"] = json!(c);
        u["cacheWriteInputTokens"] = json!(0);
    }
    u
}

fn converse_response(a: &Answer, usage: Value) -> Value {
    let mut content = vec![json!({"text": a.text})];
    if let Some(name) = &a.tool {
        let input: Value = serde_json::from_str(CALL_INPUT).unwrap_or(Value::Null);
        content.push(json!({"toolUse": {"toolUseId": TOOL_USE_ID, "name": name, "input": input}}));
    }
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": a.stop, "usage": usage, "metrics": {"latencyMs": 1},
    })
}

/// ConverseStream's events, in order: `messageStart`, the text block's deltas (one per word)
/// and stop, the tool call's `contentBlockStart`, input deltas and stop, `messageStop`,
/// `metadata`.
fn converse_events(a: &Answer, usage: Value) -> Vec<(&'static str, Value)> {
    let mut events = vec![("messageStart", json!({"role": "assistant"}))];
    let pieces: Vec<&str> = if a.text.is_empty() {
        vec![""]
    } else {
        a.text.split_inclusive(' ').collect()
    };
    for piece in pieces {
        events.push((
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
        ));
    }
    events.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
    if let Some(name) = &a.tool {
        events.push((
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": TOOL_USE_ID, "name": name}}}),
        ));
        let (x, y) = CALL_INPUT.split_at(CALL_INPUT.len() / 2);
        for part in [x, y] {
            events.push((
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": part}}}),
            ));
        }
        events.push(("contentBlockStop", json!({"contentBlockIndex": 1})));
    }
    events.push(("messageStop", json!({"stopReason": a.stop})));
    for (i, (_, payload)) in events.iter_mut().enumerate() {
        let len = 1 + (i * 7) % PADDING.len();
        payload["p"] = json!(&PADDING[..len]);
    }
    events.push((
        "metadata",
        json!({"usage": usage, "metrics": {"latencyMs": 1}}),
    ));
    events
}

async fn converse_reply(
    state: &State,
    headers: &HeaderMap,
    body: &Value,
    model: &str,
    stream: bool,
) -> Response {
    if matches!(
        family(model),
        Family::TitanEmbed { .. } | Family::CohereEmbed
    ) {
        return validation(
            "This action doesn't support the model that you provided. Try again with a \
             supported text or chat model.",
        );
    }
    let ask = match read_converse(body) {
        Ok(ask) => ask,
        Err(message) => return validation(&message),
    };
    if let Some(status) = common::requested_status(headers, &ask.last_user) {
        return failure(status);
    }
    common::maybe_delay(headers, model).await;
    let prompt = common::prompt_tokens(ask.prompt_chars);
    let (fault, stream_fault) = state.inject(model, prompt).await;
    if let Some(e) = fault {
        return injected(e);
    }
    let a = answer(&ask);
    let usage = usage(prompt, a.tokens(), stream_fault.cached_tokens);
    if !stream {
        return Json(converse_response(&a, usage)).into_response();
    }
    let mut frames: Vec<Bytes> = converse_events(&a, usage)
        .iter()
        .map(|(name, payload)| event(name, payload))
        .collect();
    if let Some(status) = stream_error(&ask.last_user) {
        frames.truncate(2);
        frames.push(stream_exception(status, false));
    }
    event_stream(frames, stream_fault)
}

/// `POST /model/{modelId}/converse`.
pub async fn converse(
    AxumState(state): AxumState<State>,
    Path(model): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admit(&state, &uri, &headers, &body) {
        Ok(body) => converse_reply(&state, &headers, &body, &model, false).await,
        Err(r) => *r,
    }
}

/// `POST /model/{modelId}/converse-stream`.
pub async fn converse_stream(
    AxumState(state): AxumState<State>,
    Path(model): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admit(&state, &uri, &headers, &body) {
        Ok(body) => converse_reply(&state, &headers, &body, &model, true).await,
        Err(r) => *r,
    }
}

// ---------------------------------------------------------------------------------------
// InvokeModel

/// The headers InvokeModel answers carry.
fn token_headers(r: &mut Response, input: u64, output: Option<u64>) {
    let mut set = |name: &'static str, value: u64| {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            r.headers_mut().insert(name, v);
        }
    };
    set("x-amzn-bedrock-input-token-count", input);
    if let Some(output) = output {
        set("x-amzn-bedrock-output-token-count", output);
    }
    set("x-amzn-bedrock-invocation-latency", 1);
}

/// The schema checks Claude on Bedrock makes before the Messages ones.
fn check_claude(body: &Value) -> Result<(), String> {
    match body.get("anthropic_version").and_then(Value::as_str) {
        Some(BEDROCK_VERSION) => {}
        Some(other) => {
            return Err(format!(
                "#/anthropic_version: {other} is not a valid enum value (use {BEDROCK_VERSION})"
            ))
        }
        None => return Err("#: required key [anthropic_version] not found".into()),
    }
    for key in ["model", "stream"] {
        if body.get(key).is_some() {
            return Err(format!("#: extraneous key [{key}] is not permitted"));
        }
    }
    if body.get("max_tokens").is_none() {
        return Err("#: required key [max_tokens] not found".into());
    }
    Ok(())
}

/// Claude: an Anthropic Messages body without `model`, answered as `/v1/messages` would;
/// streamed, each Anthropic event is a `chunk` event whose `bytes` are the event's JSON
/// (base64), and the last one carries `amazon-bedrock-invocationMetrics`.
async fn claude(
    state: &State,
    headers: &HeaderMap,
    body: &Value,
    model: &str,
    stream: bool,
) -> Response {
    if let Err(detail) = check_claude(body) {
        return malformed(&detail);
    }
    let answer = match anthropic::reply(state, headers, body, model).await {
        Ok(answer) => answer,
        Err(Refusal::Invalid(detail)) => return malformed(&detail),
        Err(Refusal::Requested(status)) => return failure(status),
        Err(Refusal::Injected(e, _)) => return injected(e),
    };
    if !stream {
        let mut r = Json(answer.message()).into_response();
        token_headers(&mut r, answer.input_tokens, Some(answer.output_tokens));
        return r;
    }
    let mut events = answer.events();
    if let Some(last) = events.last_mut() {
        last["amazon-bedrock-invocationMetrics"] = json!({
            "inputTokenCount": answer.input_tokens, "outputTokenCount": answer.output_tokens,
            "invocationLatency": 1, "firstByteLatency": 1,
        });
    }
    let mut frames: Vec<Bytes> = events
        .iter()
        .map(|e| {
            let bytes = common::base64(e.to_string().as_bytes());
            event("chunk", &json!({"bytes": bytes}))
        })
        .collect();
    let last_user = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(|m| common::text_of(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    if let Some(status) = stream_error(&last_user) {
        frames.truncate(2);
        frames.push(stream_exception(status, true));
    }
    let mut r = event_stream(frames, answer.stream_fault);
    r.headers_mut().insert(
        "x-amzn-bedrock-content-type",
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Titan text embeddings: `{"inputText", "dimensions"?, "normalize"?}` →
/// `{"embedding", "inputTextTokenCount"}` (v2 adds `embeddingsByType`). `dimensions` (v2 only:
/// 256, 512 or 1024) sizes the vector; without it the vector has the mock's usual 8.
async fn titan_embed(state: &State, body: &Value, model: &str, v2: bool) -> Response {
    let Some(text) = body.get("inputText").and_then(Value::as_str) else {
        return malformed("#: required key [inputText] not found");
    };
    if text.is_empty() {
        return malformed("#/inputText: expected minLength: 1, actual: 0");
    }
    let dims = match body.get("dimensions") {
        None => None,
        Some(_) if !v2 => return malformed("#: extraneous key [dimensions] is not permitted"),
        Some(d) => match d.as_u64() {
            Some(n @ (256 | 512 | 1024)) => Some(n as usize),
            _ => return malformed(&format!("#/dimensions: {d} is not a valid enum value")),
        },
    };
    let tokens = common::prompt_tokens(text.len());
    if let (Some(e), _) = state.inject(model, tokens).await {
        return injected(e);
    }
    let embedding = dims.map_or_else(|| common::vector(text), |n| common::vector_n(text, n));
    let mut out = json!({"embedding": embedding, "inputTextTokenCount": tokens});
    if v2 {
        out["embeddingsByType"] = json!({"float": embedding});
    }
    let mut r = Json(out).into_response();
    token_headers(&mut r, tokens, None);
    r
}

/// Cohere embeddings on Bedrock: `{"texts", "input_type", "embedding_types"?}` →
/// `{"embeddings": [[...]], "response_type": "embeddings_floats"}`, or by type when
/// `embedding_types` is given.
async fn cohere_embed(state: &State, body: &Value, model: &str) -> Response {
    let Some(texts) = body.get("texts").and_then(Value::as_array) else {
        return malformed("#: required key [texts] not found");
    };
    let Some(texts) = texts
        .iter()
        .map(|t| t.as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .filter(|t| (1..=96).contains(&t.len()))
    else {
        return malformed("#/texts: expected 1 to 96 strings");
    };
    match body.get("input_type").and_then(Value::as_str) {
        Some("search_document" | "search_query" | "classification" | "clustering") => {}
        Some(other) => {
            return malformed(&format!("#/input_type: {other} is not a valid enum value"))
        }
        None => return malformed("#: required key [input_type] not found"),
    }
    let tokens: u64 = texts.iter().map(|t| common::prompt_tokens(t.len())).sum();
    if let (Some(e), _) = state.inject(model, tokens).await {
        return injected(e);
    }
    let (embeddings, response_type) = match body.get("embedding_types").and_then(Value::as_array) {
        Some(types) => {
            let types: Vec<String> = types
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            match crate::cohere::embeddings_by_type(&texts, &types, None) {
                Ok(by_type) => (by_type, "embeddings_by_type"),
                Err(detail) => return malformed(&detail),
            }
        }
        None => (
            json!(texts.iter().map(|t| common::vector(t)).collect::<Vec<_>>()),
            "embeddings_floats",
        ),
    };
    let mut r = Json(json!({
        "embeddings": embeddings, "id": aws::request_id(), "response_type": response_type,
        "texts": texts,
    }))
    .into_response();
    token_headers(&mut r, tokens, None);
    r
}

/// `POST /model/{modelId}/invoke`.
pub async fn invoke(
    AxumState(state): AxumState<State>,
    Path(model): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match admit(&state, &uri, &headers, &body) {
        Ok(body) => body,
        Err(r) => return *r,
    };
    match family(&model) {
        Family::Claude => claude(&state, &headers, &body, &model, false).await,
        Family::TitanEmbed { v2 } => titan_embed(&state, &body, &model, v2).await,
        Family::CohereEmbed => cohere_embed(&state, &body, &model).await,
        Family::Other => validation("The provided model identifier is invalid."),
    }
}

/// `POST /model/{modelId}/invoke-with-response-stream`: Claude only.
pub async fn invoke_stream(
    AxumState(state): AxumState<State>,
    Path(model): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match admit(&state, &uri, &headers, &body) {
        Ok(body) => body,
        Err(r) => return *r,
    };
    match family(&model) {
        Family::Claude => claude(&state, &headers, &body, &model, true).await,
        Family::Other => validation("The provided model identifier is invalid."),
        _ => validation("The model is unsupported for streaming."),
    }
}

/// `POST /rerank`: the Bedrock Agent Runtime's Rerank (SigV4 for `bedrock`): text sources
/// scored by word overlap with the query, best first.
pub async fn rerank(
    AxumState(state): AxumState<State>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match admit(&state, &uri, &headers, &body) {
        Ok(body) => body,
        Err(r) => return *r,
    };
    let config = &body["rerankingConfiguration"]["bedrockRerankingConfiguration"];
    let arn = config["modelConfiguration"]["modelArn"]
        .as_str()
        .unwrap_or("");
    let Some((_, model)) = arn
        .strip_prefix("arn:aws:bedrock:")
        .and_then(|r| r.split_once("::foundation-model/"))
    else {
        return aws_error(
            400,
            "ValidationException",
            "modelArn must be a foundation model's ARN",
        );
    };
    let Some(query) = body
        .pointer("/queries/0/textQuery/text")
        .and_then(Value::as_str)
    else {
        return aws_error(
            400,
            "ValidationException",
            "queries[0].textQuery.text is required",
        );
    };
    let texts: Vec<&str> = body["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            s.pointer("/inlineDocumentSource/textDocument/text")
                .and_then(Value::as_str)
        })
        .collect();
    if texts.is_empty() {
        return aws_error(
            400,
            "ValidationException",
            "sources must hold inline text documents",
        );
    }
    if let (Some(e), _) = state.inject(model, 1).await {
        return aws_error(e.status, "ThrottlingException", &e.message);
    }
    let n = config["numberOfResults"]
        .as_u64()
        .map_or(texts.len(), |n| n as usize);
    let mut scored: Vec<(usize, f64)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (i, crate::cohere::relevance(query, t)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let results: Vec<Value> = scored
        .into_iter()
        .take(n)
        .map(|(i, s)| json!({"index": i, "relevanceScore": s}))
        .collect();
    Json(json!({"results": results})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::tests::{register_test_key, signed_headers, ACCESS_KEY, SECRET};
    use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
    use bytes::Buf;
    use std::collections::HashMap;
    use std::time::SystemTime;

    const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

    /// The path an AWS SDK sends for `model` and `action` (the model id URI-encoded).
    fn path(model: &str, action: &str) -> String {
        format!("/model/{}/{action}", model.replace(':', "%3A"))
    }

    /// What a Bedrock handler answers to a request signed with `secret`.
    async fn call_as(
        state: &State,
        action: &str,
        model: &str,
        body: &Value,
        secret: &str,
    ) -> Response {
        let path = path(model, action);
        let bytes = Bytes::from(body.to_string());
        let creds = (ACCESS_KEY, secret, None);
        let headers = signed_headers("POST", &path, &bytes, "bedrock", creds, SystemTime::now());
        let (s, p, u) = (
            AxumState(state.clone()),
            Path(model.to_owned()),
            OriginalUri(path.parse().unwrap()),
        );
        match action {
            "converse" => converse(s, p, u, headers, bytes).await,
            "converse-stream" => converse_stream(s, p, u, headers, bytes).await,
            "invoke" => invoke(s, p, u, headers, bytes).await,
            "invoke-with-response-stream" => invoke_stream(s, p, u, headers, bytes).await,
            other => panic!("no action {other}"),
        }
    }

    async fn call(state: &State, action: &str, model: &str, body: &Value) -> Response {
        call_as(state, action, model, body, SECRET).await
    }

    async fn registered() -> State {
        let state = State::default();
        register_test_key(&state).await;
        state
    }

    async fn body_json(r: Response) -> Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The messages of an event-stream body.
    async fn frames(r: Response) -> Vec<Message> {
        let mut bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let mut decoder = MessageFrameDecoder::new();
        let mut out = Vec::new();
        while bytes.has_remaining() {
            match decoder.decode_frame(&mut bytes).unwrap() {
                DecodedFrame::Complete(m) => out.push(m),
                DecodedFrame::Incomplete => panic!("a truncated frame"),
            }
        }
        out
    }

    fn header(m: &Message, name: &str) -> String {
        m.headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .map(|h| h.value().as_string().unwrap().as_str().to_owned())
            .unwrap_or_default()
    }

    fn payload(m: &Message) -> Value {
        serde_json::from_slice(m.payload()).unwrap()
    }

    fn user(text: &str) -> Value {
        json!({"messages": [{"role": "user", "content": [{"text": text}]}]})
    }

    fn with_tools(mut body: Value) -> Value {
        body["toolConfig"] = json!({"tools": [{"toolSpec": {
            "name": "get_weather", "description": "weather",
            "inputSchema": {"json": {"type": "object"}},
        }}]});
        body
    }

    #[test]
    fn reads_converse_requests() {
        let ask = read_converse(&json!({
            "system": [{"text": "be brief"}],
            "messages": [
                {"role": "user", "content": [{"text": "weather?"}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "get_weather", "input": {}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "sunny"}, {"json": {"c": 20}}]}}]},
            ],
            "toolConfig": {"tools": [{"cachePoint": {"type": "default"}}, {"toolSpec": {"name": "get_weather"}}]},
            "inferenceConfig": {"maxTokens": 3, "stopSequences": ["END", ""]},
        }))
        .unwrap();
        assert_eq!(ask.tool_result.as_deref(), Some(r#"sunny{"c":20}"#));
        assert_eq!(ask.tool.as_deref(), Some("get_weather"));
        assert_eq!(ask.prompt_chars, 8 + 13 + 8);
        assert_eq!(ask.max_tokens, Some(3));
        assert_eq!(ask.stop_sequences, vec!["END".to_owned()]);

        let refused = |body: Value| read_converse(&body).unwrap_err();
        assert!(refused(json!({})).contains("must start with a user message"));
        assert!(
            refused(json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}))
                .contains("must start with a user message")
        );
        assert!(refused(json!({"messages": [
            {"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}]}))
        .contains("alternate"));
        assert!(
            refused(json!({"messages": [{"role": "user", "content": []}]}))
                .contains("messages.0 is empty")
        );
        assert!(
            refused(json!({"messages": [{"role": "user", "content": [{"text": " "}]}]}))
                .contains("is blank")
        );
        assert!(
            refused(json!({"messages": [{"role": "system", "content": [{"text": "x"}]}]}))
                .contains("enum value set")
        );
        assert!(refused(json!({"messages": [
            {"role": "user", "content": [{"text": "a"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "r"}]}}]}]}))
        .contains("toolConfig field must be defined"));
        let mut zero = user("hi");
        zero["inferenceConfig"] = json!({"maxTokens": 0});
        assert!(refused(zero).contains("maxTokens"));
    }

    #[test]
    fn answers() {
        let a = |body: Value| answer(&read_converse(&body).unwrap());
        let plain = a(user("hi there"));
        assert_eq!(
            (plain.text.as_str(), plain.stop),
            ("mock reply to: hi there", "end_turn")
        );
        let call = a(with_tools(user("weather?")));
        assert_eq!(
            (call.text.as_str(), call.tool.as_deref(), call.stop),
            ("Let me check.", Some("get_weather"), "tool_use")
        );
        assert_eq!(call.tokens(), 8);
        let mut short = user("one two three");
        short["inferenceConfig"] = json!({"maxTokens": 2});
        assert_eq!(
            (a(short.clone()).text.as_str(), a(short).stop),
            ("mock reply", "max_tokens")
        );
        let mut stop = user("alpha beta");
        stop["inferenceConfig"] = json!({"stopSequences": [" beta"]});
        assert_eq!(
            (a(stop.clone()).text.as_str(), a(stop).stop),
            ("mock reply to: alpha", "stop_sequence")
        );
        let blocked = a(with_tools(user("mock-guardrail please")));
        assert_eq!(
            (blocked.text.as_str(), blocked.tool, blocked.stop),
            (GUARDRAIL_MESSAGE, None, "guardrail_intervened")
        );
    }

    #[test]
    fn knows_model_families() {
        assert_eq!(family(CLAUDE), Family::Claude);
        assert_eq!(
            family("us.anthropic.claude-3-7-sonnet-20250219-v1:0"),
            Family::Claude
        );
        assert_eq!(
            family("arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0"),
            Family::Claude
        );
        assert_eq!(
            family("amazon.titan-embed-text-v2:0"),
            Family::TitanEmbed { v2: true }
        );
        assert_eq!(
            family("amazon.titan-embed-text-v1"),
            Family::TitanEmbed { v2: false }
        );
        assert_eq!(family("cohere.embed-english-v3"), Family::CohereEmbed);
        assert_eq!(family("meta.llama3-70b-instruct-v1:0"), Family::Other);
    }

    #[tokio::test]
    async fn converse_text_and_tools() {
        let state = registered().await;
        let r = call(&state, "converse", CLAUDE, &user("hello there")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = body_json(r).await;
        assert_eq!(
            body,
            json!({
                "output": {"message": {"role": "assistant", "content": [{"text": "mock reply to: hello there"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8},
                "metrics": {"latencyMs": 1},
            })
        );
        let body =
            body_json(call(&state, "converse", CLAUDE, &with_tools(user("weather?"))).await).await;
        assert_eq!(body["stopReason"], "tool_use");
        assert_eq!(
            body["output"]["message"]["content"][0]["text"],
            "Let me check."
        );
        assert_eq!(
            body["output"]["message"]["content"][1],
            json!({"toolUse": {"toolUseId": TOOL_USE_ID, "name": "get_weather", "input": {"location": "Paris"}}})
        );
        assert_eq!(body["usage"]["outputTokens"], 8);

        let result = with_tools(json!({"messages": [
            {"role": "user", "content": [{"text": "weather?"}]},
            {"role": "assistant", "content": [{"text": "Let me check."}, {"toolUse": {"toolUseId": TOOL_USE_ID, "name": "get_weather", "input": {"location": "Paris"}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": TOOL_USE_ID, "content": [{"text": "sunny"}]}}]},
        ]}));
        let body = body_json(call(&state, "converse", CLAUDE, &result).await).await;
        assert_eq!(
            body["output"]["message"]["content"][0]["text"],
            "tool result received: sunny"
        );
        assert_eq!(body["stopReason"], "end_turn");

        let body = body_json(call(&state, "converse", CLAUDE, &user("mock-guardrail")).await).await;
        assert_eq!(body["stopReason"], "guardrail_intervened");

        let r = call(&state, "converse", CLAUDE, &json!({"messages": []})).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()["x-amzn-errortype"], "ValidationException");
        let r = call(
            &state,
            "converse",
            "amazon.titan-embed-text-v2:0",
            &user("hi"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);

        let stats = crate::aws::stats(AxumState(state.clone())).await.0;
        assert_eq!(stats["verified_requests"], 6);
        assert_eq!(stats["last_access_key_id"], ACCESS_KEY);
        assert_eq!(stats["last_region"], "us-east-1");
    }

    #[tokio::test]
    async fn signatures_are_checked() {
        let state = State::default();
        let r = call(&state, "converse", CLAUDE, &user("hi")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            r.headers()["x-amzn-errortype"],
            "UnrecognizedClientException"
        );
        assert_eq!(
            body_json(r).await["message"],
            "The security token included in the request is invalid."
        );

        register_test_key(&state).await;
        let r = call_as(&state, "converse", CLAUDE, &user("hi"), "wrong-secret").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()["x-amzn-errortype"], "InvalidSignatureException");
        let message = body_json(r).await["message"].clone();
        assert!(message
            .as_str()
            .unwrap()
            .starts_with("The request signature we calculated does not match"));

        let path = path(CLAUDE, "converse");
        let unsigned = converse(
            AxumState(state.clone()),
            Path(CLAUDE.to_owned()),
            OriginalUri(path.parse().unwrap()),
            HeaderMap::new(),
            Bytes::from(user("hi").to_string()),
        )
        .await;
        assert_eq!(unsigned.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            unsigned.headers()["x-amzn-errortype"],
            "MissingAuthenticationTokenException"
        );
        assert_eq!(
            crate::aws::stats(AxumState(state)).await.0["verified_requests"],
            0
        );
    }

    #[tokio::test]
    async fn faults_are_aws_shaped() {
        let state = registered().await;
        let faults = HashMap::from([
            (
                CLAUDE.to_owned(),
                common::Fault {
                    status: Some(429),
                    retry_after: Some(3),
                    ..Default::default()
                },
            ),
            (
                "small".to_owned(),
                common::Fault {
                    max_prompt_tokens: Some(1),
                    ..Default::default()
                },
            ),
            (
                "odd".to_owned(),
                common::Fault {
                    status: Some(400),
                    code: Some("ModelNotReadyException".into()),
                    ..Default::default()
                },
            ),
        ]);
        let _ = common::set_faults(AxumState(state.clone()), Json(faults)).await;
        let r = call(&state, "converse", CLAUDE, &user("hi")).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["x-amzn-errortype"], "ThrottlingException");
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(
            body_json(r).await,
            json!({"message": "Too many requests, please wait before trying again."})
        );
        let r = call(&state, "converse", "small", &user("a prompt long enough")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()["x-amzn-errortype"], "ValidationException");
        assert_eq!(body_json(r).await["message"], CONTEXT_WINDOW);
        let r = call(&state, "converse", "odd", &user("hi")).await;
        assert_eq!(r.headers()["x-amzn-errortype"], "ModelNotReadyException");
        let r = call(&state, "converse", "other", &user("mock-status-503")).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers()["x-amzn-errortype"],
            "ServiceUnavailableException"
        );
        let r = call(&state, "converse", "other", &user("mock-status-424")).await;
        assert_eq!(r.headers()["x-amzn-errortype"], "ModelErrorException");
        let r = call(&state, "converse", "other", &user("mock-status-500")).await;
        assert_eq!(r.headers()["x-amzn-errortype"], "InternalServerException");
    }

    #[tokio::test]
    async fn converse_stream_frames_decode() {
        let state = registered().await;
        let r = call(
            &state,
            "converse-stream",
            CLAUDE,
            &with_tools(user("weather?")),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], EVENT_STREAM);
        let messages = frames(r).await;
        let names: Vec<String> = messages.iter().map(|m| header(m, ":event-type")).collect();
        assert_eq!(
            names,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "contentBlockStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata",
            ]
        );
        assert!(messages
            .iter()
            .all(|m| header(m, ":message-type") == "event"
                && header(m, ":content-type") == "application/json"));
        let p: Vec<Value> = messages.iter().map(payload).collect();
        assert_eq!(p[0]["role"], "assistant");
        let text: String = p[1..4]
            .iter()
            .map(|e| e["delta"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, "Let me check.");
        assert_eq!(p[4]["contentBlockIndex"], 0);
        assert_eq!(
            p[5]["start"]["toolUse"],
            json!({"toolUseId": TOOL_USE_ID, "name": "get_weather"})
        );
        let input: String = p[6..8]
            .iter()
            .map(|e| e["delta"]["toolUse"]["input"].as_str().unwrap())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&input).unwrap(),
            json!({"location": "Paris"})
        );
        assert_eq!(p[9]["stopReason"], "tool_use");
        assert_eq!(
            p[10],
            json!({"usage": {"inputTokens": 2, "outputTokens": 8, "totalTokens": 10}, "metrics": {"latencyMs": 1}})
        );
    }

    #[tokio::test]
    async fn streams_break_off_as_asked() {
        let state = registered().await;
        let r = call(
            &state,
            "converse-stream",
            CLAUDE,
            &user("mock-stream-error-429 go"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let messages = frames(r).await;
        assert_eq!(messages.len(), 3);
        let last = &messages[2];
        assert_eq!(header(last, ":message-type"), "exception");
        assert_eq!(header(last, ":exception-type"), "throttlingException");
        assert_eq!(
            payload(last)["message"],
            "Too many requests, please wait before trying again."
        );

        let faults = HashMap::from([(
            CLAUDE.to_owned(),
            common::Fault {
                reset_after_chunks: Some(2),
                ..Default::default()
            },
        )]);
        let _ = common::set_faults(AxumState(state.clone()), Json(faults)).await;
        let r = call(&state, "converse-stream", CLAUDE, &user("a b c d")).await;
        assert!(axum::body::to_bytes(r.into_body(), 1 << 20).await.is_err());
    }

    fn claude_body(text: &str) -> Value {
        json!({"anthropic_version": BEDROCK_VERSION, "max_tokens": 100,
            "messages": [{"role": "user", "content": text}]})
    }

    #[tokio::test]
    async fn invokes_claude() {
        let state = registered().await;
        let r = call(&state, "invoke", CLAUDE, &claude_body("hi")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-amzn-bedrock-input-token-count"], "1");
        assert_eq!(r.headers()["x-amzn-bedrock-output-token-count"], "4");
        let body = body_json(r).await;
        assert_eq!(body["type"], "message");
        assert_eq!(body["content"][0]["text"], "mock reply to: hi");
        assert_eq!(body["stop_reason"], "end_turn");

        for (key, value) in [
            ("model", json!("claude")),
            ("stream", json!(true)),
            ("anthropic_version", json!("2023-06-01")),
        ] {
            let mut wrong = claude_body("hi");
            wrong[key] = value;
            let r = call(&state, "invoke", CLAUDE, &wrong).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{key}");
            let message = body_json(r).await["message"].as_str().unwrap().to_owned();
            assert!(
                message.starts_with("Malformed input request: ") && message.contains(key),
                "{message}"
            );
        }
        let mut no_max = claude_body("hi");
        no_max.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(
            call(&state, "invoke", CLAUDE, &no_max).await.status(),
            StatusCode::BAD_REQUEST
        );

        let r = call(
            &state,
            "invoke-with-response-stream",
            CLAUDE,
            &claude_body("a b"),
        )
        .await;
        assert_eq!(r.headers()["content-type"], EVENT_STREAM);
        let events: Vec<Value> = frames(r)
            .await
            .iter()
            .map(|m| {
                assert_eq!(header(m, ":event-type"), "chunk");
                let b64 = payload(m)["bytes"].as_str().unwrap().to_owned();
                serde_json::from_slice(&aws_smithy_types::base64::decode(b64).unwrap()).unwrap()
            })
            .collect();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types[0], "message_start");
        assert_eq!(types[types.len() - 1], "message_stop");
        assert!(types.contains(&"content_block_delta"));
        let metrics = &events[events.len() - 1]["amazon-bedrock-invocationMetrics"];
        assert_eq!(metrics["outputTokenCount"], 5);

        let r = call(
            &state,
            "invoke-with-response-stream",
            CLAUDE,
            &claude_body("mock-stream-error-503"),
        )
        .await;
        let messages = frames(r).await;
        assert_eq!(
            header(&messages[messages.len() - 1], ":exception-type"),
            "serviceUnavailableException"
        );
        let r = call(
            &state,
            "invoke",
            "meta.llama3-70b-instruct-v1:0",
            &claude_body("hi"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn invokes_embedding_models() {
        let state = registered().await;
        let titan = "amazon.titan-embed-text-v2:0";
        let body =
            body_json(call(&state, "invoke", titan, &json!({"inputText": "hello"})).await).await;
        assert_eq!(body["embedding"], json!(common::vector("hello")));
        assert_eq!(body["inputTextTokenCount"], 2);
        let body = body_json(
            call(
                &state,
                "invoke",
                titan,
                &json!({"inputText": "hello", "dimensions": 256}),
            )
            .await,
        )
        .await;
        assert_eq!(body["embedding"].as_array().unwrap().len(), 256);
        let r = call(
            &state,
            "invoke",
            titan,
            &json!({"inputText": "hello", "dimensions": 100}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = call(
            &state,
            "invoke",
            "amazon.titan-embed-text-v1",
            &json!({"inputText": "a", "dimensions": 256}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = call(&state, "invoke", titan, &json!({"texts": ["a"]})).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = call(
            &state,
            "invoke-with-response-stream",
            titan,
            &json!({"inputText": "a"}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);

        let cohere = "cohere.embed-english-v3";
        let body = body_json(
            call(
                &state,
                "invoke",
                cohere,
                &json!({"texts": ["a", "b"], "input_type": "search_document"}),
            )
            .await,
        )
        .await;
        assert_eq!(body["response_type"], "embeddings_floats");
        assert_eq!(body["embeddings"][1], json!(common::vector("b")));
        assert_eq!(body["texts"], json!(["a", "b"]));
        let typed = json!({"texts": ["a"], "input_type": "search_query", "embedding_types": ["float", "int8"]});
        let body = body_json(call(&state, "invoke", cohere, &typed).await).await;
        assert_eq!(body["response_type"], "embeddings_by_type");
        assert_eq!(body["embeddings"]["float"][0], json!(common::vector("a")));
        assert_eq!(body["embeddings"]["int8"][0].as_array().unwrap().len(), 8);
        let r = call(&state, "invoke", cohere, &json!({"texts": ["a"]})).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
