//! OpenAI-format requests to Google's `generateContent` (Gemini API and Vertex AI), and
//! Gemini responses back to OpenAI format. Used when a client reaches a Gemini deployment;
//! Anthropic clients go through the OpenAI format first.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::content_text;
use crate::clock::now_secs;
use crate::error::ApiError;
use crate::usage::Usage;

/// Builds a `generateContent` request from an OpenAI chat request. The model and whether
/// it streams go in the URL, not the body.
pub fn request(req: &Map<String, Value>) -> Result<Value, ApiError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::missing_field("messages"))?;

    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // A tool result names its call by id; Gemini names it by function name.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, parts) = match m.get("role").and_then(Value::as_str).unwrap_or("") {
            "system" | "developer" => {
                let text = content_text(content);
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
                continue;
            }
            "user" => ("user", user_parts(i, content)?),
            "assistant" => {
                let mut parts = Vec::new();
                let text = content_text(content);
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = call.get("function").unwrap_or(&Value::Null);
                    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.insert(id, name);
                    }
                    let args = f
                        .get("arguments")
                        .and_then(Value::as_str)
                        .and_then(|a| serde_json::from_str::<Value>(a).ok())
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                ("model", parts)
            }
            "tool" | "function" => {
                let name = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .and_then(|id| call_names.get(id).copied())
                    .or_else(|| m.get("name").and_then(Value::as_str))
                    .unwrap_or_default();
                let text = content_text(content);
                // A JSON object result is passed as the response; anything else is wrapped.
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"content": text}));
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role `{other}` is not one of system, developer, user, assistant, tool"
                ))
                .with_param("messages"))
            }
        };
        if parts.is_empty() {
            continue;
        }
        // Gemini wants alternating turns: merge consecutive messages of one role (parallel
        // tool results become one turn, as Gemini expects).
        match contents.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    if contents.is_empty() {
        return Err(
            ApiError::bad_request("`messages` has no user or assistant content to send")
                .with_param("messages"),
        );
    }

    let mut g = Map::new();
    g.insert(
        "contents".into(),
        Value::Array(
            contents
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        g.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let config = generation_config(req)?;
    if !config.is_empty() {
        g.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let declarations: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut d = Map::new();
                d.insert("name".into(), f.get("name").cloned().unwrap_or_default());
                if let Some(desc) = f.get("description") {
                    d.insert("description".into(), desc.clone());
                }
                if let Some(p) = f.get("parameters") {
                    // The full JSON Schema; `parameters` takes only an OpenAPI subset.
                    d.insert("parametersJsonSchema".into(), p.clone());
                }
                Value::Object(d)
            })
            .collect();
        if !declarations.is_empty() {
            g.insert(
                "tools".into(),
                json!([{"functionDeclarations": declarations}]),
            );
        }
    }
    if let Some(choice) = req.get("tool_choice") {
        let config = match choice {
            Value::String(s) if s == "none" => json!({"mode": "NONE"}),
            Value::String(s) if s == "required" => json!({"mode": "ANY"}),
            Value::Object(o) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .cloned()
                    .unwrap_or_default();
                json!({"mode": "ANY", "allowedFunctionNames": [name]})
            }
            _ => json!({"mode": "AUTO"}),
        };
        g.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    Ok(Value::Object(g))
}

/// OpenAI's sampling parameters, as `generationConfig`.
fn generation_config(req: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut c = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            c.insert(to.into(), v.clone());
        }
    }
    if let Some(max) = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64)
    {
        c.insert("maxOutputTokens".into(), json!(max));
    }
    match req.get("stop") {
        Some(Value::String(s)) => {
            c.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(s)) if !s.is_empty() => {
            c.insert("stopSequences".into(), Value::Array(s.clone()));
        }
        _ => {}
    }
    if let Some(format) = req.get("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                c.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                c.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = format.get("json_schema").and_then(|s| s.get("schema")) {
                    c.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            Some("text") | None => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "response_format.type `{other}` is not one of text, json_object, json_schema"
                ))
                .with_param("response_format"))
            }
        }
    }
    Ok(c)
}

/// A user message's content as Gemini parts: text, and images or audio inline (data URLs)
/// or by URI.
fn user_parts(i: usize, content: &Value) -> Result<Vec<Value>, ApiError> {
    let parts = match content {
        Value::String(s) => return Ok(vec![json!({"text": s})]),
        Value::Array(parts) => parts,
        Value::Null => return Ok(Vec::new()),
        _ => {
            return Err(ApiError::bad_request(format!(
                "messages[{i}].content must be a string or an array of parts"
            ))
            .with_param("messages"))
        }
    };
    parts
        .iter()
        .map(|p| match p.get("type").and_then(Value::as_str) {
            Some("text") => Ok(json!({"text": p.get("text").cloned().unwrap_or_default()})),
            Some("image_url") => {
                let url = p
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Ok(media_part(url))
            }
            Some("input_audio") => {
                let a = p.get("input_audio").unwrap_or(&Value::Null);
                let format = a.get("format").and_then(Value::as_str).unwrap_or("wav");
                Ok(json!({"inlineData": {
                    "mimeType": format!("audio/{format}"),
                    "data": a.get("data").cloned().unwrap_or_default(),
                }}))
            }
            other => Err(ApiError::bad_request(format!(
                "messages[{i}].content has a part of type `{}` that Gemini deployments do not take",
                other.unwrap_or("(missing)")
            ))
            .with_param("messages")),
        })
        .collect()
}

/// `data:<mime>;base64,<data>` inline; any other URL by reference.
fn media_part(url: &str) -> Value {
    if let Some((mime, data)) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
    {
        return json!({"inlineData": {"mimeType": mime, "data": data}});
    }
    let lower = url.to_ascii_lowercase();
    let mime = [
        (".png", "image/png"),
        (".gif", "image/gif"),
        (".webp", "image/webp"),
        (".pdf", "application/pdf"),
        (".mp3", "audio/mpeg"),
        (".wav", "audio/wav"),
        (".mp4", "video/mp4"),
    ]
    .into_iter()
    .find(|(ext, _)| lower.ends_with(ext))
    .map_or("image/jpeg", |(_, m)| m);
    json!({"fileData": {"mimeType": mime, "fileUri": url}})
}

/// OpenAI's `finish_reason` for a Gemini `finishReason`.
pub fn finish_reason(reason: &str, has_tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// Token usage from a response's `usageMetadata` (thinking tokens count as output).
pub fn usage(v: &Value) -> Option<Usage> {
    let m = v.get("usageMetadata")?;
    let get = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
    let input = get("promptTokenCount");
    Some(Usage {
        input_tokens: input,
        output_tokens: get("candidatesTokenCount") + get("thoughtsTokenCount"),
        cached_input_tokens: get("cachedContentTokenCount").min(input),
        reasoning_tokens: get("thoughtsTokenCount"),
        ..Usage::default()
    })
}

/// The error for a prompt Gemini refused to answer (`promptFeedback.blockReason`): a
/// content-policy 400, so `content_policy_fallbacks` apply.
pub fn blocked(v: &Value) -> Option<ApiError> {
    let reason = v.get("promptFeedback")?.get("blockReason")?.as_str()?;
    Some(
        ApiError::bad_request(format!(
            "the provider blocked the prompt ({reason}): it violates its content policy"
        ))
        .with_code("content_policy_violation"),
    )
}

/// The parts of a candidate: its text, its thinking, and its function calls as OpenAI
/// tool calls (numbered from `first_call`).
pub struct Parts {
    pub text: String,
    pub reasoning: String,
    pub tool_calls: Vec<Value>,
}

pub fn parts(candidate: &Value, response_id: &str, first_call: usize) -> Parts {
    let mut out = Parts {
        text: String::new(),
        reasoning: String::new(),
        tool_calls: Vec::new(),
    };
    for p in candidate
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(call) = p.get("functionCall") {
            let n = first_call + out.tool_calls.len();
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("call_{response_id}_{n}"), str::to_owned);
            out.tool_calls.push(json!({
                "index": n,
                "id": id,
                "type": "function",
                "function": {
                    "name": call.get("name").cloned().unwrap_or_default(),
                    "arguments": call.get("args").unwrap_or(&json!({})).to_string(),
                },
            }));
        } else if let Some(t) = p.get("text").and_then(Value::as_str) {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                out.reasoning.push_str(t);
            } else {
                out.text.push_str(t);
            }
        }
    }
    out
}

/// A response id for OpenAI clients: Gemini's `responseId` when it sent one.
pub fn response_id(v: &Value) -> String {
    v.get("responseId")
        .and_then(Value::as_str)
        .map_or_else(|| format!("{:016x}", fastrand::u64(..)), str::to_owned)
}

/// Converts a `generateContent` response to an OpenAI chat completion for `model`.
pub fn response(body: &[u8], model: &str) -> Result<(Value, Option<Usage>), ApiError> {
    let v = super::upstream_json(body, "Gemini")?;
    let candidates = v
        .get("candidates")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty());
    let Some(candidates) = candidates else {
        return Err(blocked(&v).unwrap_or_else(|| {
            ApiError::upstream(
                502,
                crate::error::ErrorKind::Upstream,
                "Gemini returned no candidates",
            )
        }));
    };
    let id = response_id(&v);
    let choices: Vec<Value> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = parts(c, &id, 0);
            let reason = c
                .get("finishReason")
                .and_then(Value::as_str)
                .unwrap_or("STOP");
            let mut message = Map::new();
            message.insert("role".into(), json!("assistant"));
            message.insert(
                "content".into(),
                if p.text.is_empty() && !p.tool_calls.is_empty() {
                    Value::Null
                } else {
                    Value::String(p.text)
                },
            );
            if !p.reasoning.is_empty() {
                message.insert("reasoning_content".into(), Value::String(p.reasoning));
            }
            let has_calls = !p.tool_calls.is_empty();
            if has_calls {
                let calls = p
                    .tool_calls
                    .into_iter()
                    .map(|mut t| {
                        if let Value::Object(o) = &mut t {
                            o.remove("index");
                        }
                        t
                    })
                    .collect();
                message.insert("tool_calls".into(), Value::Array(calls));
            }
            json!({
                "index": c.get("index").and_then(Value::as_u64).unwrap_or(i as u64),
                "message": message,
                "finish_reason": finish_reason(reason, has_calls),
            })
        })
        .collect();
    let u = usage(&v);
    let mut out = json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": choices,
    });
    if let Some(u) = u {
        out["usage"] = super::openai_to_anthropic::openai_usage(u);
    }
    Ok((out, u))
}

/// The texts of an OpenAI embeddings `input` (a string or an array of strings).
fn embedding_inputs(req: &Map<String, Value>) -> Result<Vec<&str>, ApiError> {
    let texts = match req.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::bad_request(
                    "Gemini deployments embed text: `input` must be a string or an array of strings, not tokens",
                )
                .with_param("input")
            })?,
        _ => return Err(ApiError::missing_field("input")),
    };
    Ok(texts)
}

/// Builds a `batchEmbedContents` request from an OpenAI embeddings request.
pub fn embeddings_request(
    req: &Map<String, Value>,
    upstream_model: &str,
) -> Result<Value, ApiError> {
    let dims = req.get("dimensions").and_then(Value::as_u64);
    let requests: Vec<Value> = embedding_inputs(req)?
        .into_iter()
        .map(|text| {
            let mut r = json!({
                "model": format!("models/{upstream_model}"),
                "content": {"parts": [{"text": text}]},
            });
            if let Some(d) = dims {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    Ok(json!({"requests": requests}))
}

/// Converts a `batchEmbedContents` response to OpenAI's list of embeddings. Gemini does
/// not count the input's tokens: usage is estimated from the request's text (4 characters
/// a token), so spend and budgets still see the call.
pub fn embeddings_response(
    body: &[u8],
    req: &Map<String, Value>,
    model: &str,
) -> Result<(Value, Usage), ApiError> {
    let v = super::upstream_json(body, "Gemini")?;
    let data: Vec<Value> = v
        .get("embeddings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "object": "embedding",
                "index": i,
                "embedding": e.get("values").cloned().unwrap_or_else(|| json!([])),
            })
        })
        .collect();
    let chars: usize = embedding_inputs(req)?
        .iter()
        .map(|t| t.chars().count())
        .sum();
    let tokens = (chars as u64).div_ceil(4).max(1);
    let usage = Usage {
        input_tokens: tokens,
        ..Usage::default()
    };
    Ok((
        json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
        usage,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn request_maps_roles_tools_and_config() {
        let req = map(json!({
            "model": "g",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            "temperature": 0.2, "max_tokens": 50, "stop": "END",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
        }));
        let g = request(&req).unwrap();
        assert_eq!(
            g["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );
        assert_eq!(g["contents"][0]["role"], "user");
        assert_eq!(
            g["contents"][0]["parts"][1],
            json!({"inlineData": {"mimeType": "image/png", "data": "AAAA"}})
        );
        assert_eq!(
            g["contents"][1]["parts"][0]["functionCall"],
            json!({"name": "get_weather", "args": {"city": "Paris"}})
        );
        assert_eq!(
            g["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "get_weather", "response": {"content": "sunny"}})
        );
        let c = &g["generationConfig"];
        assert_eq!(c["temperature"], 0.2);
        assert_eq!(c["maxOutputTokens"], 50);
        assert_eq!(c["stopSequences"], json!(["END"]));
        assert_eq!(c["responseMimeType"], "application/json");
        assert_eq!(c["responseJsonSchema"], json!({"type": "object"}));
        assert_eq!(
            g["tools"][0]["functionDeclarations"][0]["name"],
            "get_weather"
        );
        assert_eq!(g["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
        assert!(g.get("model").is_none());
    }

    #[test]
    fn request_refuses_what_gemini_cannot_take() {
        let e = request(&map(
            json!({"messages": [{"role": "robot", "content": "x"}]}),
        ))
        .unwrap_err();
        assert_eq!(e.status, 400);
        let e = request(&map(
            json!({"messages": [{"role": "system", "content": "x"}]}),
        ))
        .unwrap_err();
        assert_eq!(e.status, 400);
        let e = request(&map(
            json!({"messages": [{"role": "user", "content": [{"type": "file_search"}]}]}),
        ))
        .unwrap_err();
        assert!(e.message.contains("file_search"));
    }

    #[test]
    fn response_maps_text_calls_usage_and_finish() {
        let body = json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Let me check."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            ]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 2, "totalTokenCount": 16, "cachedContentTokenCount": 3},
            "responseId": "abc",
        });
        let (v, u) = response(body.to_string().as_bytes(), "client-model").unwrap();
        assert_eq!(v["model"], "client-model");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["choices"][0]["message"]["content"], "Let me check.");
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert!(call.get("index").is_none());
        let u = u.unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (10, 6, 3)
        );
        assert_eq!(v["usage"]["prompt_tokens"], 10);
    }

    #[test]
    fn embeddings_both_ways() {
        let req = map(json!({"model": "e", "input": ["hello", "world!!"], "dimensions": 8}));
        let g = embeddings_request(&req, "text-embedding-004").unwrap();
        assert_eq!(g["requests"][1]["model"], "models/text-embedding-004");
        assert_eq!(g["requests"][1]["content"]["parts"][0]["text"], "world!!");
        assert_eq!(g["requests"][0]["outputDimensionality"], 8);
        let body = json!({"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3]}]});
        let (v, u) = embeddings_response(body.to_string().as_bytes(), &req, "e").unwrap();
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["data"][1]["embedding"], json!([0.3]));
        assert_eq!(u.input_tokens, 3);
        assert!(embeddings_request(&map(json!({"input": [[1, 2]]})), "m").is_err());
    }

    #[test]
    fn safety_blocks_are_content_filter_or_policy_errors() {
        let body = json!({"candidates": [{"finishReason": "SAFETY", "index": 0}]});
        let (v, _) = response(body.to_string().as_bytes(), "m").unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        let body = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        let e = response(body.to_string().as_bytes(), "m").unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.code.as_deref(), Some("content_policy_violation"));
        assert_eq!(finish_reason("MAX_TOKENS", false), "length");
    }
}
