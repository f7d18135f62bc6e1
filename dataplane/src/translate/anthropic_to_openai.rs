//! Anthropic-format requests to OpenAI, and OpenAI responses back to Anthropic format.
//! Used when an Anthropic client (`/v1/messages`) reaches an OpenAI-format deployment.

use serde_json::{json, Map, Value};

use super::{content_text, obj};
use crate::error::{ApiError, ErrorKind};
use crate::usage::Usage;

/// Builds an OpenAI chat request from an Anthropic Messages request.
pub fn request(req: &Map<String, Value>, upstream_model: &str) -> Result<Value, ApiError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::missing_field("messages"))?;
    let max_tokens = req
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::missing_field("max_tokens"))?;

    let mut out = Vec::with_capacity(messages.len() + 1);
    match req.get("system") {
        None | Some(Value::Null) => {}
        Some(system) => {
            let text = content_text(system);
            if !text.is_empty() {
                out.push(json!({"role": "system", "content": text}));
            }
        }
    }
    for (i, m) in messages.iter().enumerate() {
        let content = m.get("content").unwrap_or(&Value::Null);
        match m.get("role").and_then(Value::as_str) {
            Some("user") => user_message(content, &mut out)?,
            Some("assistant") => out.push(assistant_message(content)),
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role must be `user` or `assistant`, got `{}`",
                    other.unwrap_or("(missing)")
                ))
                .with_param("messages"))
            }
        }
    }

    let mut o = Map::new();
    o.insert("model".into(), Value::String(upstream_model.to_owned()));
    o.insert("messages".into(), Value::Array(out));
    o.insert("max_tokens".into(), json!(max_tokens));
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key) {
            o.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = req.get("stop_sequences").and_then(Value::as_array) {
        if !stop.is_empty() {
            o.insert("stop".into(), Value::Array(stop.clone()));
        }
    }
    if let Some(user) = req
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        o.insert("user".into(), Value::String(user.to_owned()));
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        o.insert("stream".into(), Value::Bool(true));
        o.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), t.get("name").cloned().unwrap_or_default());
                if let Some(d) = t.get("description") {
                    f.insert("description".into(), d.clone());
                }
                f.insert(
                    "parameters".into(),
                    t.get("input_schema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                );
                json!({"type": "function", "function": f})
            })
            .collect();
        if !tools.is_empty() {
            o.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = req.get("tool_choice") {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => Some(json!("auto")),
            Some("any") => Some(json!("required")),
            Some("none") => Some(json!("none")),
            Some("tool") => choice
                .get("name")
                .map(|n| json!({"type": "function", "function": {"name": n}})),
            _ => None,
        };
        if let Some(m) = mapped {
            o.insert("tool_choice".into(), m);
        }
        if choice
            .get("disable_parallel_tool_use")
            .and_then(Value::as_bool)
            == Some(true)
        {
            o.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(Value::Object(o))
}

fn user_message(content: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(ApiError::bad_request(
                "message content must be a string or an array of blocks",
            )
            .with_param("messages"))
        }
    };
    let mut parts = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("tool_result") => out.push(json!({
                "role": "tool",
                "tool_call_id": b.get("tool_use_id").cloned().unwrap_or_default(),
                "content": content_text(b.get("content").unwrap_or(&Value::Null)),
            })),
            Some("text") => parts
                .push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or_default()})),
            Some("image") => {
                let src = b.get("source").unwrap_or(&Value::Null);
                let url = match src.get("type").and_then(Value::as_str) {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        src.get("media_type")
                            .and_then(Value::as_str)
                            .unwrap_or("image/png"),
                        src.get("data").and_then(Value::as_str).unwrap_or("")
                    ),
                    _ => src
                        .get("url")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                };
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            other => {
                return Err(ApiError::unsupported(format!(
                    "content block type `{}` cannot be sent to an OpenAI-format model",
                    other.unwrap_or("(missing)")
                ))
                .with_param("messages"))
            }
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn assistant_message(content: &Value) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    match content {
        Value::String(s) => text.push_str(s),
        Value::Array(blocks) => {
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some("tool_use") => calls.push(json!({
                        "id": b.get("id").cloned().unwrap_or_default(),
                        "type": "function",
                        "function": {
                            "name": b.get("name").cloned().unwrap_or_default(),
                            "arguments": b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                        },
                    })),
                    _ => {} // thinking blocks have no OpenAI equivalent
                }
            }
        }
        _ => {}
    }
    let mut m = obj(
        json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }}),
    );
    if !calls.is_empty() {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(m)
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        _ => "end_turn",
    }
}

/// An OpenAI chat completion as an Anthropic Messages response.
pub fn response(body: &[u8], model: &str) -> Result<(Value, Option<Usage>), ApiError> {
    let o: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::upstream(
            502,
            ErrorKind::Upstream,
            format!("provider sent a body that is not JSON: {e}"),
        )
    })?;
    let choice = o
        .get("choices")
        .and_then(|c| c.get(0))
        .unwrap_or(&Value::Null);
    let msg = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text = content_text(msg.get("content").unwrap_or(&Value::Null));
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for c in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = c.get("function").unwrap_or(&Value::Null);
        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
        content.push(json!({
            "type": "tool_use",
            "id": c.get("id").cloned().unwrap_or_default(),
            "name": f.get("name").cloned().unwrap_or_default(),
            "input": serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!({})),
        }));
    }
    let usage = o.get("usage").and_then(Usage::from_json);
    let u = usage.unwrap_or_default();
    let out = json!({
        "id": message_id(o.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        // Anthropic's input_tokens leave out the tokens read from the cache.
        "usage": {"input_tokens": u.input_tokens - u.cached_input_tokens.min(u.input_tokens),
                  "cache_read_input_tokens": u.cached_input_tokens,
                  "output_tokens": u.output_tokens},
    });
    Ok((out, usage))
}

/// Anthropic message ids start with `msg_`.
pub fn message_id(openai_id: Option<&str>) -> String {
    match openai_id {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => format!("msg_{:016x}", fastrand::u64(..)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_with_tools_and_results() {
        let r = request(
            &obj(json!({
                "model": "x", "max_tokens": 100, "system": [{"type": "text", "text": "sys"}],
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "ok"}]}, {"type": "text", "text": "go on"}]}
                ],
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "tool", "name": "f"},
                "stream": true,
                "stop_sequences": ["X"]
            })),
            "gpt",
        )
        .unwrap();
        let m = r["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "sys"}));
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "ok"})
        );
        assert_eq!(m[4]["content"][0]["text"], "go on");
        assert_eq!(r["tools"][0]["function"]["name"], "f");
        assert_eq!(r["tool_choice"]["function"]["name"], "f");
        assert_eq!(r["stream_options"]["include_usage"], true);
        assert_eq!(r["stop"], json!(["X"]));
    }

    #[test]
    fn max_tokens_is_required() {
        let e = request(&obj(json!({"messages": []})), "gpt").unwrap_err();
        assert_eq!(e.param, Some("max_tokens"));
    }

    #[test]
    fn response_maps_tool_calls() {
        let body = json!({"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        let (a, u) = response(body.to_string().as_bytes(), "claude-alias").unwrap();
        assert_eq!(a["stop_reason"], "tool_use");
        assert_eq!(a["content"][0]["input"], json!({"a": 1}));
        assert_eq!(a["usage"]["output_tokens"], 2);
        assert_eq!(a["id"], "msg_chatcmpl-1");
        assert_eq!(u.unwrap().input_tokens, 3);
    }
}
