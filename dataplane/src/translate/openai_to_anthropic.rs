//! OpenAI-format requests to Anthropic, and Anthropic responses back to OpenAI format.
//! Used when an OpenAI client reaches an Anthropic deployment.

use serde_json::{json, Map, Value};

use super::{content_text, obj, DEFAULT_ANTHROPIC_MAX_TOKENS};
use crate::clock::now_secs;
use crate::error::ApiError;
use crate::usage::Usage;

/// Builds an Anthropic Messages request from an OpenAI chat request.
pub fn request(
    req: &Map<String, Value>,
    upstream_model: &str,
    default_max_tokens: Option<u64>,
) -> Result<Value, ApiError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::missing_field("messages"))?;

    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = content_text(content);
                if !text.is_empty() {
                    system.push(json!({"type": "text", "text": text}));
                }
                continue;
            }
            "user" => ("user", user_blocks(content)?),
            "assistant" => ("assistant", assistant_blocks(m, content)),
            "tool" | "function" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .or_else(|| m.get("name").and_then(Value::as_str))
                    .unwrap_or_default();
                (
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": id,
                        "content": content_text(content),
                    })],
                )
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role `{other}` is not one of system, developer, user, assistant, tool"
                ))
                .with_param("messages"))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        // Anthropic wants alternating roles: merge consecutive messages of one role.
        match out.last_mut() {
            Some((last, existing)) if last == role => existing.extend(blocks),
            _ => out.push((role.to_owned(), blocks)),
        }
    }

    let max_tokens = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64)
        .or(default_max_tokens)
        .unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS);

    let mut a = Map::new();
    a.insert("model".into(), Value::String(upstream_model.to_owned()));
    a.insert("max_tokens".into(), json!(max_tokens));
    if !system.is_empty() {
        a.insert("system".into(), Value::Array(system));
    }
    a.insert(
        "messages".into(),
        Value::Array(
            out.into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    for key in ["temperature", "top_p", "top_k"] {
        if let Some(v) = req.get(key) {
            a.insert(key.into(), v.clone());
        }
    }
    match req.get("stop") {
        Some(Value::String(s)) => {
            a.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(s)) if !s.is_empty() => {
            a.insert("stop_sequences".into(), Value::Array(s.clone()));
        }
        _ => {}
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        a.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        a.insert("stream".into(), Value::Bool(true));
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut t = Map::new();
                t.insert("name".into(), f.get("name").cloned().unwrap_or(Value::Null));
                if let Some(d) = f.get("description") {
                    t.insert("description".into(), d.clone());
                }
                t.insert(
                    "input_schema".into(),
                    f.get("parameters")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                );
                Value::Object(t)
            })
            .collect();
        if !tools.is_empty() {
            a.insert("tools".into(), Value::Array(tools));
        }
    }
    let parallel = req.get("parallel_tool_calls").and_then(Value::as_bool);
    let choice = match req.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|name| json!({"type": "tool", "name": name})),
        _ => None,
    };
    let choice = match (choice, parallel) {
        (Some(mut c), Some(false)) => {
            c["disable_parallel_tool_use"] = Value::Bool(true);
            Some(c)
        }
        (None, Some(false)) if a.contains_key("tools") => {
            Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
        }
        (c, _) => c,
    };
    if let Some(c) = choice {
        a.insert("tool_choice".into(), c);
    }
    Ok(Value::Object(a))
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts.iter().map(user_part).collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(
            ApiError::bad_request("message content must be a string or an array of parts")
                .with_param("messages"),
        ),
    }
}

fn user_part(part: &Value) -> Result<Value, ApiError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            Ok(json!({"type": "text", "text": part.get("text").cloned().unwrap_or_default()}))
        }
        Some("image_url") => {
            let url = part
                .get("image_url")
                .and_then(|u| u.get("url").or(Some(u)))
                .and_then(Value::as_str)
                .unwrap_or_default();
            match url
                .strip_prefix("data:")
                .and_then(|r| r.split_once(";base64,"))
            {
                Some((media_type, data)) => Ok(json!({
                    "type": "image",
                    "source": {"type": "base64", "media_type": media_type, "data": data},
                })),
                None => Ok(json!({"type": "image", "source": {"type": "url", "url": url}})),
            }
        }
        other => Err(ApiError::unsupported(format!(
            "content part type `{}` cannot be sent to an Anthropic model",
            other.unwrap_or("(missing)")
        ))
        .with_param("messages")),
    }
}

fn assistant_blocks(m: &Value, content: &Value) -> Vec<Value> {
    let mut blocks = Vec::new();
    let text = content_text(content);
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let f = c.get("function").unwrap_or(&Value::Null);
            let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
            let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
            blocks.push(json!({
                "type": "tool_use",
                "id": c.get("id").cloned().unwrap_or_default(),
                "name": f.get("name").cloned().unwrap_or_default(),
                "input": input,
            }));
        }
    }
    blocks
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> Option<&'static str> {
    Some(match stop_reason? {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    })
}

/// An Anthropic Messages response as an OpenAI chat completion.
pub fn response(body: &[u8]) -> Result<(Value, Option<Usage>), ApiError> {
    let a: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::upstream(
            502,
            crate::error::ErrorKind::Upstream,
            format!("Anthropic sent a body that is not JSON: {e}"),
        )
    })?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in a
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or_default(),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {}
        }
    }
    let usage = a.get("usage").and_then(Usage::from_json);
    let mut message = obj(json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) },
    }));
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::String(reasoning));
    }
    let mut out = json!({
        "id": a.get("id").cloned().unwrap_or_default(),
        "object": "chat.completion",
        "created": now_secs(),
        "model": a.get("model").cloned().unwrap_or_default(),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(a.get("stop_reason").and_then(Value::as_str)),
        }],
    });
    if let Some(u) = usage {
        out["usage"] = openai_usage(u);
    }
    Ok((out, usage))
}

/// Usage in OpenAI's shape, as a `Value`.
pub fn openai_usage(u: Usage) -> Value {
    serde_json::to_value(super::openai_wire::OpenAiUsage::from(u)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Map<String, Value> {
        obj(v)
    }

    #[test]
    fn system_tools_and_tool_results() {
        let r = request(
            &req(json!({
                "model": "claude",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    {"role": "user", "content": "thanks"}
                ],
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
                "tool_choice": "required",
                "stop": "END",
                "stream": true
            })),
            "claude-x",
            None,
        )
        .unwrap();
        assert_eq!(r["model"], "claude-x");
        assert_eq!(r["max_tokens"], 4096);
        assert_eq!(r["system"][0]["text"], "be brief");
        assert_eq!(r["stop_sequences"], json!(["END"]));
        assert_eq!(r["tool_choice"], json!({"type": "any"}));
        assert_eq!(r["tools"][0]["input_schema"], json!({"type": "object"}));
        let msgs = r["messages"].as_array().unwrap();
        assert_eq!(
            msgs.len(),
            3,
            "tool result and next user turn merge: {msgs:?}"
        );
        assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
        assert_eq!(msgs[1]["content"][0]["input"], json!({"city": "Paris"}));
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(msgs[2]["content"][1]["text"], "thanks");
        assert_eq!(r["stream"], true);
    }

    #[test]
    fn images_and_bad_roles() {
        let r = request(
            &req(json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}], "max_tokens": 10})),
            "m",
            None,
        )
        .unwrap();
        assert_eq!(r["max_tokens"], 10);
        assert_eq!(
            r["messages"][0]["content"][1]["source"]["media_type"],
            "image/png"
        );
        let e = request(
            &req(json!({"messages": [{"role": "robot", "content": "x"}]})),
            "m",
            None,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(request(&req(json!({})), "m", None).is_err());
    }

    #[test]
    fn response_with_tool_use() {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5}
        });
        let (out, usage) = response(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            usage,
            Some(Usage {
                input_tokens: 10,
                output_tokens: 5,
                cached_input_tokens: 0,
                ..Usage::default()
            })
        );
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["message"]["content"], "Let me check.");
        let call = &out["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
            json!({"city": "Paris"})
        );
        assert_eq!(out["usage"]["total_tokens"], 15);
    }
}
