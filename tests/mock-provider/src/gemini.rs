//! Google Gemini, on the Gemini API (an API key) and on Vertex AI (a bearer token from the
//! mock's own `/token`): GenerateContent with text, function calling, JSON mode, max tokens,
//! stop sequences, safety blocks and `alt=sse` streaming; embedContent and
//! batchEmbedContents; and Claude on Vertex AI (`rawPredict` / `streamRawPredict`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::common::{self, State};
use crate::oauth::TokenCheck;
use crate::openai::sse;

/// Every answer's `responseId` (the other protocols' ids are fixed too).
const RESPONSE_ID: &str = "mock-response-1";
/// What the mock's function calls pass, as the other protocols' tool calls do.
const CALL_ARGS: &str = r#"{"location": "Paris"}"#;
/// The harm categories Gemini rates.
const HARM_CATEGORIES: [&str; 4] = [
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
];

/// The canonical status name (`google.rpc.Code`) Google puts next to an HTTP status.
fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// Google's error body: `{"error": {"code", "message", "status"}}`.
fn error_body(code: u16, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status_name(code)}})
}

fn error(code: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(error_body(code, message))).into_response()
}

/// An injected fault, shaped as Google shapes it. `retry_after` becomes both the header and
/// the `RetryInfo` detail Google's 429s carry.
fn injected(e: common::Injected, prompt_tokens: u64) -> Response {
    let message = if e.code == "context_length_exceeded" {
        let max = e
            .max_prompt_tokens
            .unwrap_or(prompt_tokens.saturating_sub(1));
        format!(
            "The input token count ({prompt_tokens}) exceeds the maximum number of tokens allowed ({max})."
        )
    } else {
        e.message
    };
    let mut body = error_body(e.status, &message);
    if let Some(s) = e.retry_after {
        body["error"]["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{s}s"),
        }]);
    }
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, Json(body)).into_response();
    if let Some(s) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
    }
    r
}

/// `gemini-2.0-flash:generateContent` → (`gemini-2.0-flash`, `generateContent`). axum cannot
/// route on a `:` inside a path segment, so the handlers take the whole segment.
pub fn split_model_method(segment: &str) -> Option<(&str, &str)> {
    let (model, method) = segment.rsplit_once(':')?;
    (!model.is_empty() && !method.is_empty()).then_some((model, method))
}

/// The path and query, as recorded for `/__last_request`.
fn recorded(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

/// `POST /v1beta/models/{model}:{method}` (and `/v1/...`): the Gemini API, authenticated by
/// the `x-goog-api-key` header or the `key` query parameter.
pub async fn gemini_api(
    AxumState(state): AxumState<State>,
    Path(segment): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.record(&recorded(&uri), &headers, &body);
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .or(query.get("key").map(String::as_str));
    if key.is_none_or(|k| k.trim().is_empty()) {
        return error(
            401,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
        );
    }
    dispatch(&state, &headers, &query, &segment, &body).await
}

/// The 401 for a Vertex AI request whose bearer token the mock did not issue or that expired;
/// `details` says which (`ErrorInfo.reason`).
fn vertex_auth(state: &State, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let (message, reason) = match token.map(|t| state.oauth.check(t)) {
        Some(TokenCheck::Valid) => return None,
        Some(TokenCheck::Expired) => (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential.",
            "ACCESS_TOKEN_EXPIRED",
        ),
        Some(TokenCheck::Unknown) => (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential.",
            "ACCESS_TOKEN_TYPE_UNSUPPORTED",
        ),
        None => (
            "Request is missing required authentication credential. Expected OAuth 2 access \
             token, login cookie or other valid authentication credential.",
            "CREDENTIALS_MISSING",
        ),
    };
    let mut body = error_body(401, message);
    body["error"]["details"] = json!([{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason, "domain": "googleapis.com",
    }]);
    Some((StatusCode::UNAUTHORIZED, Json(body)).into_response())
}

/// `POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}`:
/// Gemini on Vertex AI, same methods and bodies as the Gemini API, a bearer token from
/// `/token` instead of a key.
pub async fn vertex_google(
    AxumState(state): AxumState<State>,
    Path((_project, _location, segment)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.record(&recorded(&uri), &headers, &body);
    if let Some(r) = vertex_auth(&state, &headers) {
        return r;
    }
    dispatch(&state, &headers, &query, &segment, &body).await
}

/// `POST /v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:{method}`
/// with `rawPredict` or `streamRawPredict`: Claude on Vertex AI, an Anthropic Messages body
/// (see [`crate::anthropic::vertex_messages`]).
pub async fn vertex_anthropic(
    AxumState(state): AxumState<State>,
    Path((_project, _location, segment)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.record(&recorded(&uri), &headers, &body);
    if let Some(r) = vertex_auth(&state, &headers) {
        return r;
    }
    match split_model_method(&segment) {
        Some((model, "rawPredict" | "streamRawPredict")) => {
            crate::anthropic::vertex_messages(&state, &headers, &body, model).await
        }
        _ => not_found(&segment),
    }
}

fn not_found(segment: &str) -> Response {
    error(
        404,
        &format!("`{segment}` is not a known model method (expected <model>:<method>)."),
    )
}

async fn dispatch(
    state: &State,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    segment: &str,
    body: &Value,
) -> Response {
    let Some((model, method)) = split_model_method(segment) else {
        return not_found(segment);
    };
    match method {
        "generateContent" => generate(state, headers, body, model, false).await,
        "streamGenerateContent" if query.get("alt").map(String::as_str) == Some("sse") => {
            generate(state, headers, body, model, true).await
        }
        "streamGenerateContent" => error(
            400,
            "streamGenerateContent needs ?alt=sse: this mock streams Server-Sent Events only.",
        ),
        "embedContent" => embed_content(state, body, model).await,
        "batchEmbedContents" => batch_embed(state, body, model).await,
        _ => not_found(segment),
    }
}

/// A field by its JSON name (`systemInstruction`) or its proto name (`system_instruction`):
/// Google's parser takes both.
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).or_else(|| {
        let mut snake = String::with_capacity(name.len() + 4);
        for c in name.chars() {
            if c.is_ascii_uppercase() {
                snake.push('_');
                snake.push(c.to_ascii_lowercase());
            } else {
                snake.push(c);
            }
        }
        v.get(snake)
    })
}

/// The text parts of a `Content` (`{role, parts: [{text}, ...]}`), joined.
fn parts_text(content: &Value) -> String {
    field(content, "parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// What a GenerateContent request asks of the mock model.
#[derive(Debug, Clone, PartialEq)]
struct Ask {
    /// The text of the last user turn.
    last_user: String,
    /// Characters of text in `contents` and `systemInstruction`.
    prompt_chars: usize,
    /// The last user turn answers a function call with this.
    function_response: Option<String>,
    /// The first declared function.
    function: Option<String>,
    json: bool,
    max_output_tokens: Option<u64>,
    stop_sequences: Vec<String>,
    candidate_count: u64,
}

/// Reads a GenerateContent request; `Err` is the 400 INVALID_ARGUMENT message.
fn read_request(body: &Value) -> Result<Ask, String> {
    let contents = field(body, "contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    for (i, content) in contents.iter().enumerate() {
        match content.get("role").and_then(Value::as_str) {
            None | Some("" | "user" | "model") => {}
            Some(_) => return Err("Please use a valid role: user, model.".into()),
        }
        if field(content, "parts")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            return Err(format!(
                "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            ));
        }
    }
    let is_user = |c: &&Value| {
        matches!(
            c.get("role").and_then(Value::as_str),
            None | Some("" | "user")
        )
    };
    let last_user = contents.iter().rev().find(is_user);
    let function_response = last_user
        .and_then(|c| field(c, "parts"))
        .and_then(Value::as_array)
        .and_then(|parts| parts.iter().find_map(|p| field(p, "functionResponse")))
        .map(|fr| {
            let response = fr.get("response").unwrap_or(&Value::Null);
            match response.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => response.to_string(),
            }
        });
    let prompt_chars = contents.iter().map(|c| parts_text(c).len()).sum::<usize>()
        + field(body, "systemInstruction").map_or(0, |s| parts_text(s).len());
    let function = field(body, "tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| field(t, "functionDeclarations").and_then(Value::as_array))
        .flatten()
        .find_map(|d| d.get("name").and_then(Value::as_str))
        .map(str::to_owned);
    let config = field(body, "generationConfig").unwrap_or(&Value::Null);
    let candidate_count = field(config, "candidateCount")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    if !(1..=8).contains(&candidate_count) {
        return Err(format!(
            "* GenerateContentRequest.generation_config.candidate_count: must be between 1 and 8, got {candidate_count}."
        ));
    }
    Ok(Ask {
        last_user: last_user.map(parts_text).unwrap_or_default(),
        prompt_chars,
        function_response,
        function,
        json: field(config, "responseMimeType").and_then(Value::as_str) == Some("application/json"),
        max_output_tokens: field(config, "maxOutputTokens").and_then(Value::as_u64),
        stop_sequences: field(config, "stopSequences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        candidate_count,
    })
}

/// What the mock model says.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    text: String,
    /// A call of this function, with `CALL_ARGS`.
    call: Option<String>,
    finish: &'static str,
}

impl Answer {
    /// `candidatesTokenCount` of one candidate.
    fn tokens(&self) -> u64 {
        common::words(&self.text) + if self.call.is_some() { 5 } else { 0 }
    }

    fn parts(&self) -> Vec<Value> {
        let mut parts = vec![json!({"text": self.text})];
        if let Some(call) = self.call_part() {
            parts.push(call);
        }
        parts
    }

    fn call_part(&self) -> Option<Value> {
        let args: Value = serde_json::from_str(CALL_ARGS).unwrap_or(Value::Null);
        self.call
            .as_ref()
            .map(|name| json!({"functionCall": {"name": name, "args": args}}))
    }
}

fn answer(ask: &Ask) -> Answer {
    let (mut text, call) = match (&ask.function_response, &ask.function) {
        (Some(result), _) => (format!("tool result received: {result}"), None),
        (None, Some(name)) => ("Let me check.".to_owned(), Some(name.clone())),
        (None, None) => (common::reply_to(&ask.last_user), None),
    };
    if ask.json {
        text = json!({"reply": text}).to_string();
    }
    for stop in &ask.stop_sequences {
        if let Some(at) = text.find(stop.as_str()) {
            text.truncate(at);
        }
    }
    let mut finish = "STOP";
    if let Some(max) = ask.max_output_tokens {
        let ws: Vec<&str> = text.split_whitespace().collect();
        if ws.len() as u64 > max {
            text = ws[..max as usize].join(" ");
            finish = "MAX_TOKENS";
        }
    }
    Answer { text, call, finish }
}

fn safety_ratings(blocked: bool) -> Value {
    HARM_CATEGORIES
        .iter()
        .map(|category| {
            if blocked && *category == "HARM_CATEGORY_DANGEROUS_CONTENT" {
                json!({"category": category, "probability": "HIGH", "blocked": true})
            } else {
                json!({"category": category, "probability": "NEGLIGIBLE"})
            }
        })
        .collect()
}

/// `usageMetadata`; like any proto3 JSON, it leaves out zero counts.
fn usage(prompt: u64, candidates: u64, cached: Option<u64>) -> Value {
    let mut u = json!({"promptTokenCount": prompt, "totalTokenCount": prompt + candidates});
    if candidates > 0 {
        u["candidatesTokenCount"] = json!(candidates);
    }
    if let Some(c) = cached {
        u["cachedContentTokenCount"] = json!(c.min(prompt));
    }
    u
}

/// A GenerateContentResponse around `candidates` (`None`: the prompt was blocked).
fn response(model: &str, candidates: Option<Vec<Value>>, usage: Value) -> Value {
    let mut r = json!({"usageMetadata": usage, "modelVersion": model, "responseId": RESPONSE_ID});
    match candidates {
        Some(c) => r["candidates"] = Value::Array(c),
        None => {
            r["promptFeedback"] =
                json!({"blockReason": "SAFETY", "safetyRatings": safety_ratings(true)});
        }
    }
    r
}

/// `count` copies of a candidate, indexed.
fn candidates(candidate: &Value, count: u64) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let mut c = candidate.clone();
            c["index"] = json!(i);
            c
        })
        .collect()
}

/// One SSE event as Google frames them (CRLF line ends).
fn event(chunk: &Value) -> String {
    format!("data: {chunk}\r\n\r\n")
}

/// The chunks of a streamed answer: a text part per word, the function call whole in its
/// own chunk, `finishReason` and the full usage on the last one.
fn stream_chunks(
    model: &str,
    a: &Answer,
    ask: &Ask,
    prompt: u64,
    cached: Option<u64>,
) -> Vec<Value> {
    let mut pieces: Vec<Value> = a
        .text
        .split_inclusive(' ')
        .map(|piece| json!([{"text": piece}]))
        .collect();
    if let Some(call) = a.call_part() {
        pieces.push(json!([call]));
    }
    if pieces.is_empty() {
        pieces.push(json!([{"text": ""}]));
    }
    let last = pieces.len() - 1;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, parts)| {
            let mut candidate = json!({"content": {"role": "model", "parts": parts}});
            let u = if i == last {
                candidate["finishReason"] = json!(a.finish);
                candidate["safetyRatings"] = safety_ratings(false);
                usage(prompt, a.tokens() * ask.candidate_count, cached)
            } else {
                json!({"promptTokenCount": prompt})
            };
            response(model, Some(candidates(&candidate, ask.candidate_count)), u)
        })
        .collect()
}

/// The whole answer to a GenerateContent request: one response, or the chunks of a stream.
fn reply(model: &str, ask: &Ask, prompt: u64, cached: Option<u64>, stream: bool) -> Vec<Value> {
    if ask.last_user.contains("mock-blocked-prompt") {
        return vec![response(model, None, usage(prompt, 0, cached))];
    }
    if ask.last_user.contains("mock-safety-block") {
        let candidate = json!({"finishReason": "SAFETY", "safetyRatings": safety_ratings(true)});
        return vec![response(
            model,
            Some(candidates(&candidate, ask.candidate_count)),
            usage(prompt, 0, cached),
        )];
    }
    let a = answer(ask);
    if stream {
        return stream_chunks(model, &a, ask, prompt, cached);
    }
    let candidate = json!({
        "content": {"role": "model", "parts": a.parts()},
        "finishReason": a.finish, "safetyRatings": safety_ratings(false),
    });
    vec![response(
        model,
        Some(candidates(&candidate, ask.candidate_count)),
        usage(prompt, a.tokens() * ask.candidate_count, cached),
    )]
}

async fn generate(
    state: &State,
    headers: &HeaderMap,
    body: &Value,
    model: &str,
    stream: bool,
) -> Response {
    let ask = match read_request(body) {
        Ok(ask) => ask,
        Err(message) => return error(400, &message),
    };
    if let Some(status) = common::requested_status(headers, &ask.last_user) {
        return error(status, &format!("mock failure {status}"));
    }
    common::maybe_delay(headers, model).await;
    let prompt = common::prompt_tokens(ask.prompt_chars);
    let (fault, stream_fault) = state.inject(model, prompt).await;
    if let Some(e) = fault {
        return injected(e, prompt);
    }
    let chunks = reply(model, &ask, prompt, stream_fault.cached_tokens, stream);
    if stream {
        sse(chunks.iter().map(event).collect(), stream_fault)
    } else {
        Json(chunks.into_iter().next().unwrap_or(Value::Null)).into_response()
    }
}

/// `embedContent`: `{"content": {"parts": [{"text"}]}}` → `{"embedding": {"values"}}`.
async fn embed_content(state: &State, body: &Value, model: &str) -> Response {
    let Some(content) = field(body, "content") else {
        return error(
            400,
            "* EmbedContentRequest.content: content is not specified",
        );
    };
    let text = parts_text(content);
    if let (Some(e), _) = state.inject(model, common::prompt_tokens(text.len())).await {
        return injected(e, common::prompt_tokens(text.len()));
    }
    Json(json!({"embedding": {"values": common::vector(&text)}})).into_response()
}

/// `batchEmbedContents`: `{"requests": [{"model": "models/<m>", "content"}, ...]}` →
/// `{"embeddings": [{"values"}, ...]}`. Each request must name the model of the URL.
async fn batch_embed(state: &State, body: &Value, model: &str) -> Response {
    let Some(requests) = field(body, "requests")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
    else {
        return error(
            400,
            "* BatchEmbedContentsRequest.requests: requests is not specified",
        );
    };
    let wanted = format!("models/{model}");
    let mut texts = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        match request.get("model").and_then(Value::as_str) {
            Some(m) if m == wanted || m.ends_with(&format!("/{wanted}")) => {}
            Some(m) => {
                return error(
                    400,
                    &format!("* BatchEmbedContentsRequest.requests[{i}].model: `{m}` does not match the model of the URL, `{wanted}`."),
                )
            }
            None => {
                return error(
                    400,
                    &format!("* BatchEmbedContentsRequest.requests[{i}].model: unexpected model name format"),
                )
            }
        }
        let Some(content) = field(request, "content") else {
            return error(
                400,
                &format!(
                    "* BatchEmbedContentsRequest.requests[{i}].content: content is not specified"
                ),
            );
        };
        texts.push(parts_text(content));
    }
    let prompt = common::prompt_tokens(texts.iter().map(String::len).sum());
    if let (Some(e), _) = state.inject(model, prompt).await {
        return injected(e, prompt);
    }
    let embeddings: Vec<Value> = texts
        .iter()
        .map(|t| json!({"values": common::vector(t)}))
        .collect();
    Json(json!({"embeddings": embeddings})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::tests::{grant, register_test_account};

    fn ask(body: Value) -> Ask {
        read_request(&body).unwrap()
    }

    async fn body_json(r: Response) -> Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn body_text(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn user(text: &str) -> Value {
        json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
    }

    #[test]
    fn splits_model_and_method() {
        assert_eq!(
            split_model_method("gemini-2.0-flash:generateContent"),
            Some(("gemini-2.0-flash", "generateContent"))
        );
        assert_eq!(
            split_model_method("claude-3-5-sonnet@20240620:streamRawPredict"),
            Some(("claude-3-5-sonnet@20240620", "streamRawPredict"))
        );
        assert_eq!(
            split_model_method("a:b:embedContent"),
            Some(("a:b", "embedContent"))
        );
        assert_eq!(split_model_method("gemini-2.0-flash"), None);
        assert_eq!(split_model_method(":generateContent"), None);
        assert_eq!(split_model_method("gemini:"), None);
    }

    #[test]
    fn reads_requests() {
        assert!(read_request(&json!({})).unwrap_err().contains("contents"));
        assert!(read_request(&json!({"contents": []})).is_err());
        assert!(read_request(
            &json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]})
        )
        .unwrap_err()
        .contains("valid role"));
        assert!(read_request(&json!({"contents": [{"role": "user", "parts": []}]})).is_err());
        let a = ask(json!({
            "system_instruction": {"parts": [{"text": "be brief"}]},
            "contents": [
                {"role": "user", "parts": [{"text": "hello"}]},
                {"role": "model", "parts": [{"text": "hi"}]},
                {"parts": [{"text": "how"}, {"inlineData": {"mimeType": "image/png", "data": "AA=="}}]},
            ],
            "tools": [{"googleSearch": {}}, {"functionDeclarations": [{"name": "get_weather", "parameters": {}}]}],
            "generationConfig": {"maxOutputTokens": 3, "stopSequences": ["END"], "responseMimeType": "application/json"},
        }));
        assert_eq!(a.last_user, "how");
        assert_eq!(a.prompt_chars, 8 + 5 + 2 + 3);
        assert_eq!(a.function.as_deref(), Some("get_weather"));
        assert!(a.json);
        assert_eq!(a.max_output_tokens, Some(3));
        assert_eq!(a.stop_sequences, vec!["END".to_owned()]);
        assert_eq!(a.candidate_count, 1);
    }

    #[test]
    fn builds_answers() {
        let plain = answer(&ask(user("hi there")));
        assert_eq!(plain.text, "mock reply to: hi there");
        assert_eq!((plain.call.clone(), plain.finish), (None, "STOP"));
        assert_eq!(plain.tokens(), 5);

        let mut body = user("weather?");
        body["tools"] = json!([{"functionDeclarations": [{"name": "get_weather"}]}]);
        let call = answer(&ask(body.clone()));
        assert_eq!(call.text, "Let me check.");
        assert_eq!(call.call.as_deref(), Some("get_weather"));
        assert_eq!(call.tokens(), 3 + 5);
        assert_eq!(
            call.parts()[1],
            json!({"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}})
        );

        body["contents"] = json!([
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}]},
        ]);
        assert_eq!(
            answer(&ask(body.clone())).text,
            "tool result received: sunny"
        );
        body["contents"][2]["parts"][0]["functionResponse"]["response"] = json!({"temp": 20});
        assert_eq!(
            answer(&ask(body)).text,
            r#"tool result received: {"temp":20}"#
        );

        let mut json_mode = user("hi");
        json_mode["generationConfig"] = json!({"responseMimeType": "application/json"});
        let a = answer(&ask(json_mode));
        let parsed: Value = serde_json::from_str(&a.text).unwrap();
        assert_eq!(parsed, json!({"reply": "mock reply to: hi"}));

        let mut short = user("one two three four");
        short["generationConfig"] = json!({"maxOutputTokens": 2});
        let a = answer(&ask(short));
        assert_eq!((a.text.as_str(), a.finish), ("mock reply", "MAX_TOKENS"));

        let mut stop = user("alpha beta");
        stop["generation_config"] = json!({"stop_sequences": [" beta"]});
        assert_eq!(answer(&ask(stop)).text, "mock reply to: alpha");
    }

    #[test]
    fn builds_responses() {
        let a = ask(user("hi"));
        let r = &reply("gemini-x", &a, 7, Some(100), false)[0];
        assert_eq!(r["candidates"][0]["content"]["role"], "model");
        assert_eq!(
            r["candidates"][0]["content"]["parts"][0]["text"],
            "mock reply to: hi"
        );
        assert_eq!(r["candidates"][0]["finishReason"], "STOP");
        assert_eq!(r["candidates"][0]["index"], 0);
        assert_eq!(
            r["usageMetadata"],
            json!({"promptTokenCount": 7, "candidatesTokenCount": 4, "totalTokenCount": 11, "cachedContentTokenCount": 7})
        );
        assert_eq!(r["modelVersion"], "gemini-x");
        assert_eq!(r["responseId"], RESPONSE_ID);

        let blocked = &reply("m", &ask(user("mock-blocked-prompt")), 3, None, false)[0];
        assert!(blocked.get("candidates").is_none());
        assert_eq!(blocked["promptFeedback"]["blockReason"], "SAFETY");
        assert_eq!(blocked["usageMetadata"]["promptTokenCount"], 3);

        let unsafe_ = &reply("m", &ask(user("mock-safety-block")), 3, None, true);
        assert_eq!(unsafe_.len(), 1);
        let c = &unsafe_[0]["candidates"][0];
        assert_eq!(c["finishReason"], "SAFETY");
        assert!(c.get("content").is_none());
        let blocked_ratings: Vec<&Value> = c["safetyRatings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["blocked"] == true)
            .collect();
        assert_eq!(blocked_ratings.len(), 1);

        let mut two = user("hi");
        two["generationConfig"] = json!({"candidateCount": 2});
        let r = &reply("m", &ask(two), 1, None, false)[0];
        assert_eq!(r["candidates"][1]["index"], 1);
        assert_eq!(r["usageMetadata"]["candidatesTokenCount"], 8);
    }

    #[test]
    fn streams_words_then_the_call() {
        let mut body = user("weather?");
        body["tools"] = json!([{"functionDeclarations": [{"name": "get_weather"}]}]);
        let chunks = reply("m", &ask(body), 2, None, true);
        let parts: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["candidates"][0]["content"]["parts"][0])
            .collect();
        assert_eq!(parts[0]["text"], "Let ");
        assert_eq!(parts[1]["text"], "me ");
        assert_eq!(parts[2]["text"], "check.");
        assert_eq!(parts[3]["functionCall"]["name"], "get_weather");
        assert_eq!(parts[3]["functionCall"]["args"]["location"], "Paris");
        assert!(chunks[..3]
            .iter()
            .all(|c| c["candidates"][0].get("finishReason").is_none()
                && c["usageMetadata"] == json!({"promptTokenCount": 2})));
        assert_eq!(chunks[3]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(chunks[3]["usageMetadata"]["candidatesTokenCount"], 8);
        assert_eq!(chunks[3]["usageMetadata"]["totalTokenCount"], 10);
        assert!(event(&chunks[0]).starts_with("data: {"));
    }

    fn api_key() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-goog-api-key", "test-key".parse().unwrap());
        h
    }

    async fn call_gemini(
        state: &State,
        headers: HeaderMap,
        path: &str,
        segment: &str,
        query: &[(&str, &str)],
        body: Value,
    ) -> Response {
        let query = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        gemini_api(
            AxumState(state.clone()),
            Path(segment.to_owned()),
            Query(query),
            path.parse().unwrap(),
            headers,
            Json(body),
        )
        .await
    }

    #[tokio::test]
    async fn gemini_api_needs_a_key() {
        let state = State::default();
        let path = "/v1beta/models/gemini-x:generateContent";
        let seg = "gemini-x:generateContent";
        let r = call_gemini(&state, HeaderMap::new(), path, seg, &[], user("hi")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body_json(r).await["error"]["status"], "UNAUTHENTICATED");
        let r = call_gemini(
            &state,
            HeaderMap::new(),
            path,
            seg,
            &[("key", "k")],
            user("hi"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = call_gemini(&state, api_key(), path, seg, &[], user("hi")).await;
        assert_eq!(body_json(r).await["candidates"][0]["finishReason"], "STOP");
        let r = call_gemini(&state, api_key(), path, seg, &[], json!({"contents": []})).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body_json(r).await["error"]["status"], "INVALID_ARGUMENT");
        let r = call_gemini(&state, api_key(), path, seg, &[], user("mock-status-503")).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_json(r).await["error"]["status"], "UNAVAILABLE");
    }

    #[tokio::test]
    async fn streams_only_with_alt_sse() {
        let state = State::default();
        let path = "/v1beta/models/gemini-x:streamGenerateContent";
        let seg = "gemini-x:streamGenerateContent";
        let r = call_gemini(&state, api_key(), path, seg, &[], user("hi")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = call_gemini(&state, api_key(), path, seg, &[("alt", "sse")], user("a b")).await;
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let text = body_text(r).await;
        let events: Vec<&str> = text.split("\r\n\r\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 5, "{text}");
        assert!(events.iter().all(|e| e.starts_with("data: ")));
    }

    #[tokio::test]
    async fn faults_are_google_shaped() {
        let state = State::default();
        let faults = HashMap::from([
            (
                "busy".to_owned(),
                common::Fault {
                    status: Some(429),
                    retry_after: Some(7),
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
        let r = call_gemini(
            &state,
            api_key(),
            "/",
            "busy:generateContent",
            &[],
            user("hi"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "7");
        let body = body_json(r).await;
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(body["error"]["details"][0]["retryDelay"], "7s");
        let long = user("a prompt long enough for a few tokens");
        let r = call_gemini(&state, api_key(), "/", "small:generateContent", &[], long).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let message = body_json(r).await["error"]["message"].clone();
        assert_eq!(
            message,
            "The input token count (10) exceeds the maximum number of tokens allowed (1)."
        );
    }

    #[tokio::test]
    async fn embeds() {
        let state = State::default();
        let one = json!({"content": {"parts": [{"text": "hello"}]}});
        let r = call_gemini(&state, api_key(), "/", "emb:embedContent", &[], one).await;
        let body = body_json(r).await;
        assert_eq!(body["embedding"]["values"], json!(common::vector("hello")));
        let batch = json!({"requests": [
            {"model": "models/emb", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/emb", "content": {"parts": [{"text": "b"}]}},
        ]});
        let r = call_gemini(&state, api_key(), "/", "emb:batchEmbedContents", &[], batch).await;
        let body = body_json(r).await;
        assert_eq!(body["embeddings"][1]["values"], json!(common::vector("b")));
        let wrong =
            json!({"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]});
        let r = call_gemini(&state, api_key(), "/", "emb:batchEmbedContents", &[], wrong).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h
    }

    async fn call_vertex_google(state: &State, headers: HeaderMap, body: Value) -> Response {
        let path = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-x:generateContent";
        vertex_google(
            AxumState(state.clone()),
            Path((
                "p".to_owned(),
                "us-central1".to_owned(),
                "gemini-x:generateContent".to_owned(),
            )),
            Query(HashMap::new()),
            path.parse().unwrap(),
            headers,
            Json(body),
        )
        .await
    }

    async fn call_vertex_claude(
        state: &State,
        headers: HeaderMap,
        method: &str,
        body: Value,
    ) -> Response {
        let segment = format!("claude-x@20250101:{method}");
        let path =
            format!("/v1/projects/p/locations/us-east5/publishers/anthropic/models/{segment}");
        vertex_anthropic(
            AxumState(state.clone()),
            Path(("p".to_owned(), "us-east5".to_owned(), segment)),
            path.parse().unwrap(),
            headers,
            Json(body),
        )
        .await
    }

    #[tokio::test]
    async fn vertex_needs_a_live_token_from_the_mock() {
        let state = State::default();
        let r = call_vertex_google(&state, HeaderMap::new(), user("hi")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            body_json(r).await["error"]["details"][0]["reason"],
            "CREDENTIALS_MISSING"
        );
        let r = call_vertex_google(&state, bearer("ya29.made-up"), user("hi")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

        register_test_account(&state, None).await;
        let token = body_json(grant(&state).await).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = call_vertex_google(&state, bearer(&token), user("hi")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            body_json(r).await["candidates"][0]["content"]["parts"][0]["text"],
            "mock reply to: hi"
        );

        register_test_account(&state, Some(0)).await;
        let expired = body_json(grant(&state).await).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = call_vertex_google(&state, bearer(&expired), user("hi")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body = body_json(r).await;
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(
            body["error"]["details"][0]["reason"],
            "ACCESS_TOKEN_EXPIRED"
        );
    }

    #[tokio::test]
    async fn claude_on_vertex() {
        let state = State::default();
        let msg = json!({
            "anthropic_version": crate::anthropic::VERTEX_VERSION, "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}],
        });
        let r = call_vertex_claude(&state, HeaderMap::new(), "rawPredict", msg.clone()).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

        register_test_account(&state, None).await;
        let token = body_json(grant(&state).await).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = call_vertex_claude(&state, bearer(&token), "rawPredict", msg.clone()).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = body_json(r).await;
        assert_eq!(body["model"], "claude-x@20250101");
        assert_eq!(body["content"][0]["text"], "mock reply to: hi");

        let mut with_model = msg.clone();
        with_model["model"] = json!("claude-x");
        let r = call_vertex_claude(&state, bearer(&token), "rawPredict", with_model).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let mut old = msg.clone();
        old["anthropic_version"] = json!("2023-06-01");
        let r = call_vertex_claude(&state, bearer(&token), "rawPredict", old).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = call_vertex_claude(&state, bearer(&token), "predict", msg.clone()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        let mut streamed = msg;
        streamed["stream"] = json!(true);
        let r = call_vertex_claude(&state, bearer(&token), "streamRawPredict", streamed).await;
        let text = body_text(r).await;
        assert!(text.starts_with("event: message_start"), "{text}");
        assert!(text.contains("event: message_stop"));
    }
}
