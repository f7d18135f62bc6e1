//! OpenAI and Azure OpenAI: chat completions (streaming, tools and, with `reasoning_effort`,
//! `reasoning_content`), legacy text completions,
//! embeddings, moderations and image generations.

use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::common::{self, State};

pub fn injected(e: common::Injected) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = error(status, &e.message, &e.code);
    if let Some(s) = e.retry_after {
        if let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
    }
    r
}

fn error(status: StatusCode, message: &str, code: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}})),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    r
}

/// An `Authorization: Bearer <something>` header.
pub fn bearer_ok(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| !k.trim().is_empty())
}

/// The error response for a request that misses Azure's requirements.
fn azure_error(
    headers: &HeaderMap,
    query: &std::collections::HashMap<String, String>,
) -> Option<Response> {
    if !query.contains_key("api-version") {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "api-version query parameter is required",
            "missing_api_version",
        ));
    }
    if headers.get("api-key").is_none() {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "missing api-key header",
            "invalid_api_key",
        ));
    }
    None
}

/// Records an OpenAI call and checks its bearer key: the 401 when it is missing.
fn refused(state: &State, path: &str, headers: &HeaderMap, body: &Value) -> Option<Response> {
    state.record(path, headers, body);
    (!bearer_ok(headers)).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided",
            "invalid_api_key",
        )
    })
}

/// The body's `model` (empty when absent).
fn model_of(body: &Value) -> String {
    body.get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

pub async fn chat(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = refused(&state, "/v1/chat/completions", &headers, &body) {
        return r;
    }
    let model = model_of(&body);
    complete(&state, &headers, body, model).await
}

/// `POST /openai/deployments/{deployment}/{endpoint}`: Azure's chat completions,
/// embeddings and image generations, the deployment standing for the model.
pub async fn azure(
    AxumState(state): AxumState<State>,
    Path((deployment, endpoint)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    qs.sort();
    state.record(
        &format!(
            "/openai/deployments/{deployment}/{endpoint}?{}",
            qs.join("&")
        ),
        &headers,
        &body,
    );
    if let Some(r) = azure_error(&headers, &query) {
        return r;
    }
    match endpoint.as_str() {
        "chat/completions" => complete(&state, &headers, body, deployment).await,
        "completions" => text_complete(&state, body, deployment).await,
        "embeddings" => embed(&state, body, deployment).await,
        "images/generations" => generate(&state, body, deployment).await,
        _ => error(StatusCode::NOT_FOUND, "Resource not found", "404"),
    }
}

/// OpenAI's rate-limit headers.
const RATELIMIT: [&str; 2] = [
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
];

async fn complete(state: &State, headers: &HeaderMap, body: Value, model: String) -> Response {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let last_role = last.get("role").and_then(Value::as_str).unwrap_or("");
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| common::text_of(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    if let Some(status) = common::requested_status(headers, &last_user) {
        let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(s, &format!("mock failure {status}"), "mock_failure");
    }
    common::maybe_delay(headers, &model).await;

    let chars: usize = messages
        .iter()
        .map(|m| common::text_of(m.get("content").unwrap_or(&Value::Null)).len())
        .sum();
    let prompt = common::prompt_tokens(chars);
    let (fault, stream_fault) = state.inject(&model, prompt).await;
    if let Some(e) = fault {
        return injected(e);
    }
    let tool_name = body
        .get("tools")
        .and_then(|t| t.get(0))
        .and_then(|t| t.get("function"))
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (text, tool) = match (&tool_name, last_role) {
        (_, "tool") => (
            Some(format!(
                "tool result received: {}",
                common::text_of(last.get("content").unwrap_or(&Value::Null))
            )),
            None,
        ),
        (Some(name), "user") => (None, Some(name.clone())),
        _ => (Some(common::reply_to(&last_user)), None),
    };
    let mut text = text;
    let mut finish = if tool.is_some() { "tool_calls" } else { "stop" };
    if let (Some(t), Some(max)) = (&text, body.get("max_tokens").and_then(Value::as_u64)) {
        let ws: Vec<&str> = t.split_whitespace().collect();
        if ws.len() as u64 > max {
            text = Some(ws[..max as usize].join(" "));
            finish = "length";
        }
    }
    let completion = text.as_deref().map(common::words).unwrap_or(5);
    let mut usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    if let Some(cached) = stream_fault.cached_tokens {
        usage["prompt_tokens_details"] = json!({"cached_tokens": cached.min(prompt)});
    }
    if let Some(r) = stream_fault.reasoning_tokens {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": r.min(completion)});
    }
    let args = r#"{"location":"Paris"}"#;
    // A reasoning model's thoughts (DeepSeek's and vLLM's `reasoning_content`), when asked.
    let reasoning = body
        .get("reasoning_effort")
        .is_some()
        .then_some("Thinking it over first.");
    let id = "chatcmpl-mock-1";
    let created = 1_700_000_000u64;

    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let mut message = json!({"role": "assistant", "content": text});
        if let Some(r) = reasoning {
            message["reasoning_content"] = r.into();
        }
        if let Some(name) = &tool {
            message["tool_calls"] = json!([{"id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": args}}]);
        }
        let r = Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }))
        .into_response();
        return stream_fault.ratelimit_headers(r, RATELIMIT);
    }

    let chunk = |delta: Value, finish: Option<&str>| {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for piece in reasoning.iter().flat_map(|r| r.split_inclusive(' ')) {
        events.push(chunk(json!({"reasoning_content": piece}), None));
    }
    if let Some(name) = &tool {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": ""}}]}),
            None,
        ));
        let (a, b) = args.split_at(args.len() / 2);
        for part in [a, b] {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                None,
            ));
        }
    } else if let Some(t) = &text {
        for piece in t.split_inclusive(' ') {
            events.push(chunk(json!({"content": piece}), None));
        }
    }
    events.push(chunk(json!({}), Some(finish)));
    let wants_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    if wants_usage {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    stream_fault.ratelimit_headers(sse(events, stream_fault), RATELIMIT)
}

/// `POST /v1/completions`: OpenAI's legacy text completions.
pub async fn completions(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = refused(&state, "/v1/completions", &headers, &body) {
        return r;
    }
    let model = model_of(&body);
    text_complete(&state, body, model).await
}

/// One choice per prompt (a string, strings, or token ids), each at most `max_tokens`
/// words (OpenAI's default: 16); `echo` puts the prompt first.
async fn text_complete(state: &State, body: Value, model: String) -> Response {
    let prompts: Vec<String> = match body.get("prompt") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_string) && !items.is_empty() => {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        }
        Some(Value::Array(items)) if !items.is_empty() => vec![format!("{} tokens", items.len())],
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "prompt must be a string, strings or token ids",
                "invalid_prompt",
            )
        }
    };
    let chars = prompts.iter().map(String::len).sum();
    let prompt = common::prompt_tokens(chars);
    let (fault, stream_fault) = state.inject(&model, prompt).await;
    if let Some(e) = fault {
        return injected(e);
    }
    let max = body.get("max_tokens").and_then(Value::as_u64).unwrap_or(16) as usize;
    let echo = body.get("echo").and_then(Value::as_bool) == Some(true);
    let mut completion = 0;
    let choices: Vec<(String, &str)> = prompts
        .iter()
        .map(|p| {
            let reply = common::reply_to(p);
            let words: Vec<&str> = reply.split_whitespace().collect();
            let finish = if words.len() > max { "length" } else { "stop" };
            let text = words[..words.len().min(max)].join(" ");
            completion += common::words(&text);
            let text = if echo {
                format!("{p} {text}")
            } else {
                format!(" {text}")
            };
            (text, finish)
        })
        .collect();
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    let (id, created) = ("cmpl-mock-1", 1_700_000_000u64);
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, (text, finish))| json!({"text": text, "index": i, "logprobs": null, "finish_reason": finish}))
            .collect();
        return Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": choices, "usage": usage,
        }))
        .into_response();
    }
    let chunk = |i: usize, text: &str, finish: Option<&str>| {
        let c = json!({"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": i, "logprobs": null, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut events = Vec::new();
    for (i, (text, finish)) in choices.iter().enumerate() {
        for piece in text.split_inclusive(' ') {
            events.push(chunk(i, piece, None));
        }
        events.push(chunk(i, "", Some(finish)));
    }
    if body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
    {
        let c = json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    sse(events, stream_fault)
}

/// A Server-Sent Events body, one write per event; `fault` may slow it down or break it off.
pub fn sse(events: Vec<String>, fault: common::StreamFault) -> Response {
    let mut r = common::streamed(
        events.into_iter().map(Bytes::from).collect(),
        fault,
        "text/event-stream",
    );
    r.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-cache"),
    );
    r
}

pub async fn embeddings(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = refused(&state, "/v1/embeddings", &headers, &body) {
        return r;
    }
    let model = model_of(&body);
    embed(&state, body, model).await
}

async fn embed(state: &State, body: Value, model: String) -> Response {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "input must be a string or a non-empty array",
                "invalid_input",
            )
        }
    };
    let chars = inputs.iter().map(String::len).sum();
    if let (Some(e), _) = state.inject(&model, common::prompt_tokens(chars)).await {
        return injected(e);
    }
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens += common::prompt_tokens(text.len());
            let v = if model.starts_with("mock-bow") {
                common::bag_of_words(text)
            } else {
                common::vector(text)
            };
            let emb = if base64 {
                json!(common::base64(
                    &v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>()
                ))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    Json(json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
        .into_response()
}

/// `POST /v1/moderations`: `{model?, input: string | [string]}`. An input containing
/// `mock-flag` is flagged for violence; everything else is clean.
pub async fn moderations(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = refused(&state, "/v1/moderations", &headers, &body) {
        return r;
    }
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "input must be a string or a non-empty array of strings",
                "invalid_input",
            )
        }
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("omni-moderation-latest")
        .to_owned();
    let chars = inputs.iter().map(String::len).sum();
    if let (Some(e), _) = state.inject(&model, common::prompt_tokens(chars)).await {
        return injected(e);
    }
    const CATEGORIES: [&str; 13] = [
        "harassment",
        "harassment/threatening",
        "hate",
        "hate/threatening",
        "illicit",
        "illicit/violent",
        "self-harm",
        "self-harm/instructions",
        "self-harm/intent",
        "sexual",
        "sexual/minors",
        "violence",
        "violence/graphic",
    ];
    let results: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let flagged = text.contains("mock-flag");
            let mut categories = serde_json::Map::new();
            let mut scores = serde_json::Map::new();
            let mut applied = serde_json::Map::new();
            for c in CATEGORIES {
                let hit = flagged && c == "violence";
                categories.insert(c.into(), json!(hit));
                scores.insert(c.into(), json!(if hit { 0.97 } else { 0.0001 }));
                applied.insert(c.into(), json!(["text"]));
            }
            json!({"flagged": flagged, "categories": categories, "category_scores": scores,
                   "category_applied_input_types": applied})
        })
        .collect();
    Json(json!({"id": "modr-mock", "model": model, "results": results})).into_response()
}

/// `POST /v1/images/generations`: `{model, prompt, n?, response_format?}` → `n` tiny PNGs
/// (`b64_json`) or URLs; `gpt-image-*` models also report token usage, as OpenAI's do.
pub async fn images(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = refused(&state, "/v1/images/generations", &headers, &body) {
        return r;
    }
    let model = Some(model_of(&body))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "dall-e-2".into());
    generate(&state, body, model).await
}

pub(crate) async fn generate(state: &State, body: Value, model: String) -> Response {
    let Some(prompt) = body
        .get("prompt")
        .and_then(Value::as_str)
        .filter(|p| !p.trim().is_empty())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "prompt is required",
            "invalid_prompt",
        );
    };
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    let tokens = common::prompt_tokens(prompt.len());
    if let (Some(e), _) = state.inject(&model, tokens).await {
        return injected(e);
    }
    // A 1x1 transparent PNG.
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg==";
    let b64 = body.get("response_format").and_then(Value::as_str) == Some("b64_json")
        || model.starts_with("gpt-image");
    let data: Vec<Value> = (0..n)
        .map(|i| {
            if b64 {
                json!({"b64_json": PNG, "revised_prompt": prompt})
            } else {
                json!({"url": format!("https://images.mock.invalid/{i}.png"), "revised_prompt": prompt})
            }
        })
        .collect();
    let mut out = json!({"created": 1_700_000_000u64, "data": data});
    if model.starts_with("gpt-image") {
        let output = 272 * n;
        out["usage"] = json!({"input_tokens": tokens, "output_tokens": output,
                              "total_tokens": tokens + output,
                              "input_tokens_details": {"text_tokens": tokens, "image_tokens": 0}});
    }
    Json(out).into_response()
}
