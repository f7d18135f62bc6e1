//! OpenAI-format requests to Cohere's v2 chat and embed APIs, and their responses back
//! to OpenAI format. Cohere v2 is close to OpenAI's shape (roles, tools, tool calls); the
//! sampling parameters and the response differ.

use serde_json::{json, Map, Value};

use crate::clock::now_secs;
use crate::error::ApiError;
use crate::usage::Usage;

/// Builds a `/v2/chat` request from an OpenAI chat request.
pub fn request(req: &Map<String, Value>, upstream_model: &str) -> Result<Value, ApiError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::missing_field("messages"))?;
    let messages: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut m = m.clone();
            match m.get("role").and_then(Value::as_str) {
                Some("developer") => m["role"] = json!("system"),
                Some("system" | "user" | "assistant" | "tool") => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "messages[{i}].role `{}` is not one of system, developer, user, assistant, tool",
                        other.unwrap_or("(missing)")
                    ))
                    .with_param("messages"))
                }
            }
            // Cohere refuses a null content on an assistant turn with tool calls.
            if let Value::Object(o) = &mut m {
                if o.get("content").is_some_and(Value::is_null) {
                    o.remove("content");
                }
                o.remove("name");
            }
            Ok(m)
        })
        .collect::<Result<_, _>>()?;
    let mut c = Map::new();
    c.insert("model".into(), json!(upstream_model));
    c.insert("messages".into(), Value::Array(messages));
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "p"),
        ("top_k", "k"),
        ("seed", "seed"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
        ("tools", "tools"),
        ("response_format", "response_format"),
        ("stream", "stream"),
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
        c.insert("max_tokens".into(), json!(max));
    }
    match req.get("stop") {
        Some(Value::String(s)) => {
            c.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(s)) if !s.is_empty() => {
            c.insert("stop_sequences".into(), Value::Array(s.clone()));
        }
        _ => {}
    }
    match req.get("tool_choice").and_then(Value::as_str) {
        Some("required") => {
            c.insert("tool_choice".into(), json!("REQUIRED"));
        }
        Some("none") => {
            c.insert("tool_choice".into(), json!("NONE"));
        }
        _ => {}
    }
    Ok(Value::Object(c))
}

/// OpenAI's `finish_reason` for a Cohere `finish_reason`.
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "TOOL_CALL" => "tool_calls",
        _ => "stop",
    }
}

/// Token usage from a Cohere `usage` object (the tokens the model saw, else the billed).
pub fn usage(u: &Value) -> Option<Usage> {
    let t = u.get("tokens").or_else(|| u.get("billed_units"))?;
    let get = |k: &str| t.get(k).and_then(Value::as_f64).map(|v| v as u64);
    Some(Usage {
        input_tokens: get("input_tokens")?,
        output_tokens: get("output_tokens").unwrap_or(0),
        cached_input_tokens: 0,
        ..Usage::default()
    })
}

/// Converts a `/v2/chat` response to an OpenAI chat completion for `model`.
pub fn response(body: &[u8], model: &str) -> Result<(Value, Option<Usage>), ApiError> {
    let v = super::upstream_json(body, "Cohere")?;
    let m = v.get("message").unwrap_or(&Value::Null);
    let text: String = m
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .collect();
    let calls = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty());
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && calls.is_some() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if let Some(calls) = calls {
        message.insert("tool_calls".into(), Value::Array(calls.clone()));
    }
    let reason = v
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("COMPLETE");
    let u = v.get("usage").and_then(usage);
    let mut out = json!({
        "id": v.get("id").and_then(Value::as_str).map_or_else(super::chat_id, str::to_owned),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(reason)}],
    });
    if let Some(u) = u {
        out["usage"] = super::openai_to_anthropic::openai_usage(u);
    }
    Ok((out, u))
}

/// Builds a `/v2/embed` request from an OpenAI embeddings request (Cohere's own
/// `input_type` passes through; documents by default).
pub fn embeddings_request(
    req: &Map<String, Value>,
    upstream_model: &str,
) -> Result<Value, ApiError> {
    let texts =
        match req.get("input") {
            Some(Value::String(s)) => vec![json!(s)],
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.clone(),
            _ => return Err(ApiError::bad_request(
                "Cohere deployments embed text: `input` must be a string or an array of strings",
            )
            .with_param("input")),
        };
    let input_type = req
        .get("input_type")
        .and_then(Value::as_str)
        .unwrap_or("search_document");
    Ok(json!({
        "model": upstream_model,
        "texts": texts,
        "input_type": input_type,
        "embedding_types": ["float"],
    }))
}

/// Converts a `/v2/embed` response to OpenAI's list of embeddings.
pub fn embeddings_response(body: &[u8], model: &str) -> Result<(Value, Usage), ApiError> {
    let v = super::upstream_json(body, "Cohere")?;
    let data: Vec<Value> = v
        .pointer("/embeddings/float")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    let tokens = v
        .pointer("/meta/billed_units/input_tokens")
        .and_then(Value::as_f64)
        .map_or(0, |t| t as u64);
    let usage = Usage {
        input_tokens: tokens,
        ..Usage::default()
    };
    Ok((
        json!({
            "object": "list", "data": data, "model": model,
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
    fn request_renames_sampling_and_keeps_tools() {
        let c = request(
            &map(json!({
                "model": "x",
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                ],
                "top_p": 0.9, "top_k": 5, "stop": "END", "max_tokens": 9, "user": "u1",
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "tool_choice": "required",
            })),
            "command-r-plus",
        )
        .unwrap();
        assert_eq!(c["model"], "command-r-plus");
        assert_eq!(c["messages"][0]["role"], "system");
        assert!(c["messages"][2].get("content").is_none());
        assert_eq!(c["p"], 0.9);
        assert_eq!(c["k"], 5);
        assert_eq!(c["stop_sequences"], json!(["END"]));
        assert_eq!(c["max_tokens"], 9);
        assert_eq!(c["tool_choice"], "REQUIRED");
        assert!(c.get("user").is_none());
        assert_eq!(c["tools"][0]["function"]["name"], "f");
    }

    #[test]
    fn response_and_embeddings_map_back() {
        let body = json!({
            "id": "r1", "finish_reason": "TOOL_CALL",
            "message": {"role": "assistant", "tool_plan": "I will call f",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            "usage": {"billed_units": {"input_tokens": 3, "output_tokens": 2}, "tokens": {"input_tokens": 10, "output_tokens": 4}},
        });
        let (v, u) = response(body.to_string().as_bytes(), "m").unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert!(v["choices"][0]["message"]["content"].is_null());
        let u = u.unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (10, 4));

        let req = map(json!({"input": ["a", "b"]}));
        let e = embeddings_request(&req, "embed-v4.0").unwrap();
        assert_eq!(e["texts"], json!(["a", "b"]));
        assert_eq!(e["input_type"], "search_document");
        let body = json!({"embeddings": {"float": [[0.1], [0.2]]}, "meta": {"billed_units": {"input_tokens": 2}}});
        let (v, u) = embeddings_response(body.to_string().as_bytes(), "m").unwrap();
        assert_eq!(v["data"][1]["embedding"], json!([0.2]));
        assert_eq!(u.input_tokens, 2);
    }
}
