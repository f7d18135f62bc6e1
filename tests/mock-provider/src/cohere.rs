//! Cohere's v2 API (a bearer API key): chat (text, tool calls with a tool plan, JSON mode,
//! max tokens, stop sequences, and the typed SSE stream), embed and rerank.

use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::common::{self, State};
use crate::openai::{bearer_ok, sse};

/// Every answer's `id`, as the other protocols' are fixed.
const RESPONSE_ID: &str = "c0c0a000-0000-4000-a000-000000000001";
/// The arguments of every tool call.
const CALL_ARGS: &str = r#"{"location":"Paris"}"#;
const INPUT_TYPES: [&str; 5] = [
    "search_document",
    "search_query",
    "classification",
    "clustering",
    "image",
];
const EMBEDDING_TYPES: [&str; 6] = ["float", "int8", "uint8", "binary", "ubinary", "base64"];

/// Cohere's error: `{"message"}`.
fn error(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(json!({"message": message}))).into_response()
}

fn invalid(detail: &str) -> Response {
    error(400, &format!("invalid request: {detail}"))
}

/// A `/__faults` error, Cohere-shaped; context length is Cohere's "too many tokens".
fn injected(e: common::Injected, prompt: u64) -> Response {
    let message = if e.code == "context_length_exceeded" {
        let max = e.max_prompt_tokens.unwrap_or(prompt.saturating_sub(1));
        format!(
            "too many tokens: total number of tokens in the prompt cannot exceed {max} - \
             received {prompt}. Try using a shorter prompt, or enabling prompt truncating. See \
             https://docs.cohere.com/reference/chat for more info."
        )
    } else {
        e.message
    };
    let mut r = error(e.status, &message);
    if let Some(s) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
    }
    r
}

/// The 401 for a request without an API key, if it is one.
fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    (!bearer_ok(headers)).then(|| error(401, "invalid api token"))
}

fn model_of(body: &Value) -> Option<String> {
    body.get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
        .map(str::to_owned)
}

/// The text of a message's `content`: a string, or text and document parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") | None => p.get("text").and_then(Value::as_str).map(str::to_owned),
                Some("document") => p.get("document").and_then(|d| d.get("data")).map(|d| {
                    d.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| d.to_string())
                }),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// What a chat request asks of the mock model.
#[derive(Debug, Clone, PartialEq)]
struct Ask {
    model: String,
    last_user: String,
    prompt_chars: usize,
    /// The conversation ends with tool results: this.
    tool_result: Option<String>,
    /// The first declared function.
    tool: Option<String>,
    max_tokens: Option<u64>,
    stop_sequences: Vec<String>,
    json: bool,
    stream: bool,
}

/// Reads a chat request; `Err` is the 400's detail.
fn read_chat(body: &Value) -> Result<Ask, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
        .ok_or("model is required")?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("messages cannot be empty")?;
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("system" | "user" | "assistant" | "tool") => {}
            other => {
                return Err(format!(
                    "messages[{i}].role: {} is not one of system, user, assistant, tool",
                    other.unwrap_or("null")
                ))
            }
        }
    }
    fn role(m: &Value) -> &str {
        m.get("role").and_then(Value::as_str).unwrap_or("")
    }
    let content = |m: &Value| content_text(m.get("content").unwrap_or(&Value::Null));
    // The tool results that end the conversation, if it ends with some.
    let results: Vec<String> = messages
        .iter()
        .rev()
        .take_while(|m| role(m) == "tool")
        .map(content)
        .collect();
    let tool_result =
        (!results.is_empty()).then(|| results.into_iter().rev().collect::<Vec<_>>().join(""));
    let tools = body.get("tools").and_then(Value::as_array);
    let tool = tools
        .into_iter()
        .flatten()
        .find_map(|t| t.get("function")?.get("name")?.as_str())
        .map(str::to_owned);
    Ok(Ask {
        model: model.to_owned(),
        last_user: messages
            .iter()
            .rev()
            .find(|m| role(m) == "user")
            .map(content)
            .unwrap_or_default(),
        prompt_chars: messages.iter().map(|m| content(m).len()).sum(),
        tool_result,
        tool,
        max_tokens: body.get("max_tokens").and_then(Value::as_u64),
        stop_sequences: body
            .get("stop_sequences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        json: body
            .get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            == Some("json_object"),
        stream: body.get("stream").and_then(Value::as_bool) == Some(true),
    })
}

/// What the mock model says: text, or a tool plan and a call.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    /// The content, or the tool plan when there is a call.
    text: String,
    tool: Option<String>,
    finish: &'static str,
}

impl Answer {
    fn tokens(&self) -> u64 {
        common::words(&self.text) + if self.tool.is_some() { 5 } else { 0 }
    }

    fn call_id(&self) -> String {
        format!("{}_mock1", self.tool.as_deref().unwrap_or("call"))
    }
}

fn answer(ask: &Ask) -> Answer {
    let (mut text, tool) = match (&ask.tool_result, &ask.tool) {
        (Some(result), _) => (format!("tool result received: {result}"), None),
        (None, Some(name)) => ("Let me check.".to_owned(), Some(name.clone())),
        (None, None) => (common::reply_to(&ask.last_user), None),
    };
    let mut finish = if tool.is_some() {
        "TOOL_CALL"
    } else {
        "COMPLETE"
    };
    if tool.is_none() {
        if ask.json {
            text = json!({"reply": text}).to_string();
        }
        for s in &ask.stop_sequences {
            if let Some(at) = text.find(s.as_str()) {
                text.truncate(at);
                finish = "STOP_SEQUENCE";
            }
        }
    }
    if let Some(max) = ask.max_tokens {
        let ws: Vec<&str> = text.split_whitespace().collect();
        if ws.len() as u64 > max {
            text = ws[..max as usize].join(" ");
            finish = "MAX_TOKENS";
        }
    }
    Answer { text, tool, finish }
}

fn usage(prompt: u64, output: u64, cached: Option<u64>) -> Value {
    let mut u = json!({
        "billed_units": {"input_tokens": prompt, "output_tokens": output},
        "tokens": {"input_tokens": prompt, "output_tokens": output},
    });
    if let Some(c) = cached {
        u["cached_tokens"] = json!(c.min(prompt));
    }
    u
}

fn response(a: &Answer, usage: Value) -> Value {
    let mut message = json!({"role": "assistant"});
    if let Some(name) = &a.tool {
        message["tool_plan"] = json!(a.text);
        message["tool_calls"] = json!([{
            "id": a.call_id(), "type": "function",
            "function": {"name": name, "arguments": CALL_ARGS},
        }]);
    } else {
        message["content"] = json!([{"type": "text", "text": a.text}]);
    }
    json!({"id": RESPONSE_ID, "finish_reason": a.finish, "message": message, "usage": usage})
}

/// The streamed events, in order: `message-start`; the content's `content-start`, a
/// `content-delta` per word and `content-end`, or the plan's `tool-plan-delta`s and the call's
/// `tool-call-start`, two `tool-call-delta`s and `tool-call-end`; `message-end`.
fn stream_events(a: &Answer, usage: &Value) -> Vec<Value> {
    let mut events = vec![json!({
        "id": RESPONSE_ID, "type": "message-start",
        "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}},
    })];
    match &a.tool {
        Some(name) => {
            for piece in a.text.split_inclusive(' ') {
                events.push(
                    json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}}),
                );
            }
            events.push(json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
                "id": a.call_id(), "type": "function", "function": {"name": name, "arguments": ""},
            }}}}));
            let (x, y) = CALL_ARGS.split_at(CALL_ARGS.len() / 2);
            for part in [x, y] {
                events.push(json!({"type": "tool-call-delta", "index": 0,
                    "delta": {"message": {"tool_calls": {"function": {"arguments": part}}}}}));
            }
            events.push(json!({"type": "tool-call-end", "index": 0}));
        }
        None => {
            events.push(json!({"type": "content-start", "index": 0,
                "delta": {"message": {"content": {"type": "text", "text": ""}}}}));
            for piece in a.text.split_inclusive(' ') {
                events.push(json!({"type": "content-delta", "index": 0,
                    "delta": {"message": {"content": {"text": piece}}}}));
            }
            events.push(json!({"type": "content-end", "index": 0}));
        }
    }
    events
        .push(json!({"type": "message-end", "delta": {"finish_reason": a.finish, "usage": usage}}));
    events
}

fn sse_event(e: &Value) -> String {
    let name = e.get("type").and_then(Value::as_str).unwrap_or("");
    format!("event: {name}\ndata: {e}\n\n")
}

/// `POST /v2/chat`.
pub async fn chat(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.record("/v2/chat", &headers, &body);
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let ask = match read_chat(&body) {
        Ok(ask) => ask,
        Err(detail) => return invalid(&detail),
    };
    if let Some(status) = common::requested_status(&headers, &ask.last_user) {
        return error(status, &format!("mock failure {status}"));
    }
    common::maybe_delay(&headers, &ask.model).await;
    let prompt = common::prompt_tokens(ask.prompt_chars);
    let (fault, stream_fault) = state.inject(&ask.model, prompt).await;
    if let Some(e) = fault {
        return injected(e, prompt);
    }
    let a = answer(&ask);
    let usage = usage(prompt, a.tokens(), stream_fault.cached_tokens);
    if ask.stream {
        let events = stream_events(&a, &usage).iter().map(sse_event).collect();
        sse(events, stream_fault)
    } else {
        Json(response(&a, usage)).into_response()
    }
}

/// Embeddings of `texts` keyed by type (`{"float": [[...]], "int8": ...}`), `dims` long (the
/// mock's usual 8 without). `Err` names a type Cohere does not have.
pub fn embeddings_by_type(
    texts: &[String],
    types: &[String],
    dims: Option<usize>,
) -> Result<Value, String> {
    let vectors: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| dims.map_or_else(|| common::vector(t), |n| common::vector_n(t, n)))
        .collect();
    // Packs the signs of a vector's values into bytes, 8 to a byte, first value highest.
    let packed = |v: &[f32]| -> Vec<u8> {
        v.chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |b, (i, x)| b | (u8::from(*x > 0.0) << (7 - i)))
            })
            .collect()
    };
    let mut out = serde_json::Map::new();
    for kind in types {
        let value = match kind.as_str() {
            "float" => json!(vectors),
            "int8" => json!(vectors
                .iter()
                .map(|v| v
                    .iter()
                    .map(|x| (x * 127.0).round() as i8)
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()),
            "uint8" => json!(vectors
                .iter()
                .map(|v| v
                    .iter()
                    .map(|x| ((x + 1.0) * 127.5).round() as u8)
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()),
            "binary" => json!(vectors
                .iter()
                .map(|v| packed(v)
                    .into_iter()
                    .map(|b| i16::from(b) - 128)
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()),
            "ubinary" => json!(vectors.iter().map(|v| packed(v)).collect::<Vec<_>>()),
            "base64" => json!(vectors
                .iter()
                .map(|v| common::base64(
                    &v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>()
                ))
                .collect::<Vec<_>>()),
            other => {
                return Err(format!(
                    "embedding_types: {other} is not one of {}",
                    EMBEDDING_TYPES.join(", ")
                ))
            }
        };
        out.insert(kind.clone(), value);
    }
    Ok(Value::Object(out))
}

/// `POST /v2/embed`: `{model, texts, input_type, embedding_types?, output_dimension?}`.
pub async fn embed(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.record("/v2/embed", &headers, &body);
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let Some(model) = model_of(&body) else {
        return invalid("model is required");
    };
    let Some(texts) = body
        .get("texts")
        .and_then(Value::as_array)
        .and_then(|t| {
            t.iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        })
        .filter(|t| (1..=96).contains(&t.len()))
    else {
        return invalid("texts must be an array of 1 to 96 strings");
    };
    match body.get("input_type").and_then(Value::as_str) {
        Some(t) if INPUT_TYPES.contains(&t) => {}
        _ => {
            return invalid(&format!(
                "valid input_type must be provided with the provided model ({})",
                INPUT_TYPES.join(", ")
            ))
        }
    }
    let types: Vec<String> = match body.get("embedding_types").and_then(Value::as_array) {
        Some(t) => t
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        None => vec!["float".to_owned()],
    };
    let dims = match body.get("output_dimension") {
        None | Some(Value::Null) => None,
        Some(d) => match d.as_u64() {
            Some(n @ (256 | 512 | 1024 | 1536)) => Some(n as usize),
            _ => return invalid("output_dimension must be one of 256, 512, 1024, 1536"),
        },
    };
    let tokens: u64 = texts.iter().map(|t| common::prompt_tokens(t.len())).sum();
    if let (Some(e), _) = state.inject(&model, tokens).await {
        return injected(e, tokens);
    }
    let embeddings = match embeddings_by_type(&texts, &types, dims) {
        Ok(e) => e,
        Err(detail) => return invalid(&detail),
    };
    Json(json!({
        "id": RESPONSE_ID, "embeddings": embeddings, "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        "response_type": "embeddings_by_type",
    }))
    .into_response()
}

/// Lower-case words, without punctuation.
fn word_set(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// How relevant a document is: the share of the query's words it contains.
pub fn relevance(query: &str, document: &str) -> f64 {
    let q = word_set(query);
    if q.is_empty() {
        return 0.0;
    }
    let d = word_set(document);
    q.intersection(&d).count() as f64 / q.len() as f64
}

/// `POST /v2/rerank`: `{model, query, documents: [string | {text}], top_n?}` → results by
/// relevance (word overlap with the query), ties in document order.
pub async fn rerank(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.record("/v2/rerank", &headers, &body);
    rank(&state, &headers, &body, false).await
}

/// `POST /v1/rerank` (and `/rerank`): the same in the shape OpenAI-compatible servers
/// (vLLM, Jina, Infinity) answer, with `usage` and each result's `document`.
pub async fn compatible_rerank(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.record("/v1/rerank", &headers, &body);
    rank(&state, &headers, &body, true).await
}

async fn rank(state: &State, headers: &HeaderMap, body: &Value, compatible: bool) -> Response {
    if let Some(r) = unauthorized(headers) {
        return r;
    }
    let Some(model) = model_of(body) else {
        return invalid("model is required");
    };
    let Some(query) = body
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.trim().is_empty())
    else {
        return invalid("query must be a non-empty string");
    };
    let Some(documents) = body
        .get("documents")
        .and_then(Value::as_array)
        .and_then(|docs| {
            docs.iter()
                .map(|d| match d {
                    Value::String(s) => Some(s.clone()),
                    other => other.get("text").and_then(Value::as_str).map(str::to_owned),
                })
                .collect::<Option<Vec<String>>>()
        })
        .filter(|d| !d.is_empty())
    else {
        return invalid("documents must be a non-empty array of strings");
    };
    let top_n = match body.get("top_n") {
        None | Some(Value::Null) => documents.len(),
        Some(n) => match n.as_u64().filter(|n| *n >= 1) {
            Some(n) => (n as usize).min(documents.len()),
            None => return invalid("top_n must be a positive integer"),
        },
    };
    let chars = query.len() + documents.iter().map(String::len).sum::<usize>();
    let tokens = common::prompt_tokens(chars);
    if let (Some(e), _) = state.inject(&model, tokens).await {
        return injected(e, tokens);
    }
    let mut scored: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| (i, relevance(query, d)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let results: Vec<Value> = scored
        .into_iter()
        .take(top_n)
        .map(|(index, score)| {
            if compatible {
                json!({"index": index, "relevance_score": score, "document": {"text": documents[index]}})
            } else {
                json!({"index": index, "relevance_score": score})
            }
        })
        .collect();
    if compatible {
        return Json(json!({
            "id": RESPONSE_ID, "model": model, "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }))
        .into_response();
    }
    let search_units = documents.len().div_ceil(100).max(1);
    Json(json!({
        "id": RESPONSE_ID, "results": results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": search_units}},
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn key() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer co-test-key".parse().unwrap());
        h
    }

    async fn body_json(r: Response) -> Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn body_text(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    async fn post_chat(state: &State, body: Value) -> Response {
        chat(AxumState(state.clone()), key(), Json(body)).await
    }

    fn user(text: &str) -> Value {
        json!({"model": "command-r-plus", "messages": [{"role": "user", "content": text}]})
    }

    fn with_tools(mut body: Value) -> Value {
        body["tools"] = json!([{"type": "function", "function": {
            "name": "get_weather", "description": "weather", "parameters": {"type": "object"},
        }}]);
        body
    }

    #[tokio::test]
    async fn needs_a_key() {
        let r = chat(
            AxumState(State::default()),
            HeaderMap::new(),
            Json(user("hi")),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body_json(r).await, json!({"message": "invalid api token"}));
        let r = embed(
            AxumState(State::default()),
            HeaderMap::new(),
            Json(json!({})),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = rerank(
            AxumState(State::default()),
            HeaderMap::new(),
            Json(json!({})),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn chat_replies() {
        let state = State::default();
        let body = body_json(post_chat(&state, user("hello there")).await).await;
        assert_eq!(
            body,
            json!({
                "id": RESPONSE_ID, "finish_reason": "COMPLETE",
                "message": {"role": "assistant", "content": [{"type": "text", "text": "mock reply to: hello there"}]},
                "usage": {"billed_units": {"input_tokens": 3, "output_tokens": 5}, "tokens": {"input_tokens": 3, "output_tokens": 5}},
            })
        );

        let body = body_json(post_chat(&state, with_tools(user("weather?"))).await).await;
        assert_eq!(body["finish_reason"], "TOOL_CALL");
        assert_eq!(body["message"]["tool_plan"], "Let me check.");
        assert!(body["message"].get("content").is_none());
        let call = &body["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"location": "Paris"}));
        assert_eq!(body["usage"]["billed_units"]["output_tokens"], 8);

        let result = with_tools(json!({"model": "command-r-plus", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {"role": "assistant", "tool_plan": "Let me check.", "tool_calls": [{"id": "get_weather_mock1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "get_weather_mock1", "content": [{"type": "document", "document": {"data": "sunny"}}]},
        ]}));
        let body = body_json(post_chat(&state, result).await).await;
        assert_eq!(
            body["message"]["content"][0]["text"],
            "tool result received: sunny"
        );
        assert_eq!(body["finish_reason"], "COMPLETE");

        let mut short = user("one two three");
        short["max_tokens"] = json!(2);
        let body = body_json(post_chat(&state, short).await).await;
        assert_eq!(
            (
                body["finish_reason"].as_str(),
                body["message"]["content"][0]["text"].as_str()
            ),
            (Some("MAX_TOKENS"), Some("mock reply"))
        );
        let mut stop = user("alpha beta");
        stop["stop_sequences"] = json!([" beta"]);
        let body = body_json(post_chat(&state, stop).await).await;
        assert_eq!(body["finish_reason"], "STOP_SEQUENCE");
        assert_eq!(
            body["message"]["content"][0]["text"],
            "mock reply to: alpha"
        );
        let mut json_mode = user("hi");
        json_mode["response_format"] = json!({"type": "json_object"});
        let body = body_json(post_chat(&state, json_mode).await).await;
        let text: Value =
            serde_json::from_str(body["message"]["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, json!({"reply": "mock reply to: hi"}));

        let r = post_chat(&state, json!({"model": "m", "messages": []})).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body_json(r).await["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid request: "));
        let r = post_chat(
            &state,
            json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = post_chat(&state, user("mock-status-429")).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    /// The `(event, data)` pairs of an SSE body.
    fn events(text: &str) -> Vec<(String, Value)> {
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_owned();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name.as_str());
                (name, data)
            })
            .collect()
    }

    #[tokio::test]
    async fn chat_streams() {
        let state = State::default();
        let mut body = user("a b");
        body["stream"] = json!(true);
        let r = post_chat(&state, body).await;
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let ev = events(&body_text(r).await);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message-start",
                "content-start",
                "content-delta",
                "content-delta",
                "content-delta",
                "content-delta",
                "content-delta",
                "content-end",
                "message-end"
            ]
        );
        assert_eq!(ev[0].1["id"], RESPONSE_ID);
        assert_eq!(ev[0].1["delta"]["message"]["role"], "assistant");
        let text: String = ev[2..7]
            .iter()
            .map(|(_, e)| e["delta"]["message"]["content"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, "mock reply to: a b");
        assert_eq!(ev[8].1["delta"]["finish_reason"], "COMPLETE");
        assert_eq!(ev[8].1["delta"]["usage"]["tokens"]["output_tokens"], 5);

        let mut body = with_tools(user("weather?"));
        body["stream"] = json!(true);
        let ev = events(&body_text(post_chat(&state, body).await).await);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message-start",
                "tool-plan-delta",
                "tool-plan-delta",
                "tool-plan-delta",
                "tool-call-start",
                "tool-call-delta",
                "tool-call-delta",
                "tool-call-end",
                "message-end"
            ]
        );
        let plan: String = ev[1..4]
            .iter()
            .map(|(_, e)| e["delta"]["message"]["tool_plan"].as_str().unwrap())
            .collect();
        assert_eq!(plan, "Let me check.");
        let start = &ev[4].1["delta"]["message"]["tool_calls"];
        assert_eq!(
            start["function"],
            json!({"name": "get_weather", "arguments": ""})
        );
        assert_eq!(start["type"], "function");
        assert!(start["id"].as_str().is_some());
        let args: String = ev[5..7]
            .iter()
            .map(|(_, e)| {
                e["delta"]["message"]["tool_calls"]["function"]["arguments"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(args, CALL_ARGS);
        assert_eq!(ev[8].1["delta"]["finish_reason"], "TOOL_CALL");
    }

    #[tokio::test]
    async fn faults_are_cohere_shaped() {
        let state = State::default();
        let faults = HashMap::from([
            (
                "busy".to_owned(),
                common::Fault {
                    status: Some(429),
                    retry_after: Some(2),
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
        ]);
        let _ = common::set_faults(AxumState(state.clone()), Json(faults)).await;
        let mut busy = user("hi");
        busy["model"] = json!("busy");
        let r = post_chat(&state, busy).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "2");
        let mut small = user("a prompt long enough for a few tokens");
        small["model"] = json!("small");
        let r = post_chat(&state, small).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let message = body_json(r).await["message"].as_str().unwrap().to_owned();
        assert!(message.starts_with("too many tokens: "), "{message}");
        assert!(
            message.contains("cannot exceed 1 - received 10"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn embeds() {
        let state = State::default();
        let body = json!({"model": "embed-english-v3.0", "texts": ["a", "b"], "input_type": "search_document"});
        let r = embed(AxumState(state.clone()), key(), Json(body.clone())).await;
        let out = body_json(r).await;
        assert_eq!(out["embeddings"]["float"][1], json!(common::vector("b")));
        assert_eq!(out["texts"], json!(["a", "b"]));
        assert_eq!(out["meta"]["billed_units"]["input_tokens"], 2);
        assert_eq!(out["response_type"], "embeddings_by_type");
        let mut typed = body.clone();
        typed["embedding_types"] = json!(["int8", "ubinary", "base64"]);
        typed["output_dimension"] = json!(256);
        let out = body_json(embed(AxumState(state.clone()), key(), Json(typed)).await).await;
        assert_eq!(out["embeddings"]["int8"][0].as_array().unwrap().len(), 256);
        assert_eq!(
            out["embeddings"]["ubinary"][0].as_array().unwrap().len(),
            32
        );
        assert!(out["embeddings"]["base64"][0].is_string());
        assert!(out["embeddings"].get("float").is_none());
        let mut bad = body.clone();
        bad["embedding_types"] = json!(["double"]);
        let r = embed(AxumState(state.clone()), key(), Json(bad)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let mut no_type = body;
        no_type.as_object_mut().unwrap().remove("input_type");
        let r = embed(AxumState(state), key(), Json(no_type)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn reranks_by_overlap() {
        let state = State::default();
        let body = json!({"model": "rerank-v3.5", "query": "capital of France",
            "documents": ["Berlin is in Germany", {"text": "Paris is the capital of France"}, "The capital of Italy", "nothing"],
            "top_n": 3});
        let out = body_json(rerank(AxumState(state.clone()), key(), Json(body)).await).await;
        let results = out["results"].as_array().unwrap();
        let order: Vec<u64> = results
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect();
        assert_eq!(order, [1, 2, 0]);
        assert_eq!(results[0]["relevance_score"], 1.0);
        assert!(
            results[1]["relevance_score"].as_f64().unwrap()
                > results[2]["relevance_score"].as_f64().unwrap()
        );
        assert_eq!(out["meta"]["billed_units"]["search_units"], 1);
        let r = rerank(
            AxumState(state),
            key(),
            Json(json!({"model": "m", "query": "q", "documents": []})),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
