//! OpenAI-format requests to Bedrock's Converse API, and Converse responses back to OpenAI
//! format. Used when a client reaches a Bedrock deployment; Anthropic clients go through
//! the OpenAI format first. (`bedrock/invoke/anthropic.*` deployments speak Anthropic's
//! format instead, see `providers::bedrock`.)

use serde_json::{json, Map, Value};

use super::content_text;
use crate::clock::now_secs;
use crate::error::ApiError;
use crate::usage::Usage;

/// Builds a Converse request from an OpenAI chat request. The model and whether it
/// streams go in the URL.
pub fn request(req: &Map<String, Value>) -> Result<Value, ApiError> {
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::missing_field("messages"))?;

    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match m.get("role").and_then(Value::as_str).unwrap_or("") {
            "system" | "developer" => {
                let text = content_text(content);
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
                continue;
            }
            "user" => ("user", user_blocks(i, content)?),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = content_text(content);
                if !text.is_empty() {
                    blocks.push(json!({"text": text}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = call.get("function").unwrap_or(&Value::Null);
                    let input = f
                        .get("arguments")
                        .and_then(Value::as_str)
                        .and_then(|a| serde_json::from_str::<Value>(a).ok())
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(json!({"toolUse": {
                        "toolUseId": call.get("id").cloned().unwrap_or_default(),
                        "name": f.get("name").cloned().unwrap_or_default(),
                        "input": input,
                    }}));
                }
                ("assistant", blocks)
            }
            "tool" | "function" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .or_else(|| m.get("name").and_then(Value::as_str))
                    .unwrap_or_default();
                (
                    "user",
                    vec![json!({"toolResult": {
                        "toolUseId": id,
                        "content": [{"text": content_text(content)}],
                    }})],
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
        // Converse wants alternating roles: merge consecutive messages of one role.
        match out.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => out.push((role, blocks)),
        }
    }
    if out.is_empty() {
        return Err(
            ApiError::bad_request("`messages` has no user or assistant content to send")
                .with_param("messages"),
        );
    }

    let mut c = Map::new();
    c.insert(
        "messages".into(),
        Value::Array(
            out.into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        c.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(max) = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64)
    {
        inference.insert("maxTokens".into(), json!(max));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            inference.insert(to.into(), v.clone());
        }
    }
    match req.get("stop") {
        Some(Value::String(s)) => {
            inference.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(s)) if !s.is_empty() => {
            inference.insert("stopSequences".into(), Value::Array(s.clone()));
        }
        _ => {}
    }
    if !inference.is_empty() {
        c.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(k) = req.get("top_k").filter(|v| !v.is_null()) {
        c.insert("additionalModelRequestFields".into(), json!({"top_k": k}));
    }
    let tool_choice = req.get("tool_choice");
    let no_tools = matches!(tool_choice, Some(Value::String(s)) if s == "none");
    if let Some(tools) = req
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty() && !no_tools)
    {
        let specs: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut spec = Map::new();
                spec.insert("name".into(), f.get("name").cloned().unwrap_or_default());
                if let Some(d) = f.get("description") {
                    spec.insert("description".into(), d.clone());
                }
                spec.insert(
                    "inputSchema".into(),
                    json!({"json": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"}))}),
                );
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = Map::new();
        config.insert("tools".into(), Value::Array(specs));
        match tool_choice {
            Some(Value::String(s)) if s == "required" => {
                config.insert("toolChoice".into(), json!({"any": {}}));
            }
            Some(Value::Object(o)) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .cloned()
                    .unwrap_or_default();
                config.insert("toolChoice".into(), json!({"tool": {"name": name}}));
            }
            _ => {}
        }
        c.insert("toolConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(c))
}

/// A user message's content as Converse blocks: text, and images from data URLs (Converse
/// takes image bytes, not URLs).
fn user_blocks(i: usize, content: &Value) -> Result<Vec<Value>, ApiError> {
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
                let (mime, data) = url
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "messages[{i}]: Bedrock deployments take images as data URLs (data:image/png;base64,...), not links"
                        ))
                        .with_param("messages")
                    })?;
                let format = mime.strip_prefix("image/").unwrap_or(mime);
                Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
            }
            other => Err(ApiError::bad_request(format!(
                "messages[{i}].content has a part of type `{}` that Bedrock deployments do not take",
                other.unwrap_or("(missing)")
            ))
            .with_param("messages")),
        })
        .collect()
}

/// OpenAI's `finish_reason` for a Converse `stopReason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// Token usage from a Converse `usage` object.
pub fn usage(u: &Value) -> Option<Usage> {
    let get = |k: &str| u.get(k).and_then(Value::as_u64);
    let cached = get("cacheReadInputTokens").unwrap_or(0);
    let written = get("cacheWriteInputTokens").unwrap_or(0);
    let input = get("inputTokens")? + cached + written;
    Some(Usage {
        input_tokens: input,
        output_tokens: get("outputTokens").unwrap_or(0),
        cached_input_tokens: cached,
        cache_write_input_tokens: written,
        ..Usage::default()
    })
}

/// Converts a Converse response to an OpenAI chat completion for `model`.
pub fn response(body: &[u8], model: &str) -> Result<(Value, Option<Usage>), ApiError> {
    let v = super::upstream_json(body, "Bedrock")?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(t) = block
            .pointer("/reasoningContent/reasoningText/text")
            .and_then(Value::as_str)
        {
            reasoning.push_str(t);
        } else if let Some(tool) = block.get("toolUse") {
            calls.push(json!({
                "id": tool.get("toolUseId").cloned().unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": tool.get("name").cloned().unwrap_or_default(),
                    "arguments": tool.get("input").unwrap_or(&json!({})).to_string(),
                },
            }));
        }
    }
    let stop = v
        .get("stopReason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::String(reasoning));
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let u = v.get("usage").and_then(usage);
    let mut out = json!({
        "id": format!("chatcmpl-{:016x}", fastrand::u64(..)),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(stop)}],
    });
    if let Some(u) = u {
        out["usage"] = super::openai_to_anthropic::openai_usage(u);
    }
    Ok((out, u))
}

/// The texts of an OpenAI embeddings `input`.
fn embedding_texts(req: &Map<String, Value>) -> Result<Vec<&str>, ApiError> {
    match req.get("input") {
        Some(Value::String(s)) => Some(vec![s.as_str()]),
        Some(Value::Array(items)) => items.iter().map(Value::as_str).collect::<Option<_>>(),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::bad_request(
            "Bedrock deployments embed text: `input` must be a string or an array of strings",
        )
        .with_param("input")
    })
}

/// The Bedrock Agent Runtime's Rerank body for a rerank request in Cohere's shape
/// (`query`, `documents` as strings or `{"text": ...}`, `top_n`).
pub fn rerank_request(req: &Map<String, Value>, model_arn: &str) -> Value {
    let query = req.get("query").and_then(Value::as_str).unwrap_or_default();
    let sources: Vec<Value> = req
        .get("documents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| {
            let text = d
                .as_str()
                .or_else(|| d.get("text").and_then(Value::as_str))
                .unwrap_or_default();
            json!({"type": "INLINE",
                   "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": text}}})
        })
        .collect();
    let n = req
        .get("top_n")
        .and_then(Value::as_u64)
        .unwrap_or(sources.len() as u64);
    json!({
        "queries": [{"type": "TEXT", "textQuery": {"text": query}}],
        "sources": sources,
        "rerankingConfiguration": {
            "type": "BEDROCK_RERANKING_MODEL",
            "bedrockRerankingConfiguration": {
                "numberOfResults": n,
                "modelConfiguration": {"modelArn": model_arn},
            },
        },
    })
}

/// A rerank answer in Cohere's shape from Bedrock's (`results` of `index` and
/// `relevanceScore`); the documents are added back when `return_documents` asks.
pub fn rerank_response(body: &[u8], req: &Map<String, Value>) -> Result<Value, ApiError> {
    let v = super::upstream_json(body, "Bedrock")?;
    let documents = req.get("documents").and_then(Value::as_array);
    let with_documents = req.get("return_documents").and_then(Value::as_bool) == Some(true);
    let results: Vec<Value> = v
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            let index = r.get("index").and_then(Value::as_u64).unwrap_or(0);
            let mut out = json!({
                "index": index,
                "relevance_score": r.get("relevanceScore").cloned().unwrap_or(json!(0.0)),
            });
            if with_documents {
                if let Some(d) = documents.and_then(|d| d.get(index as usize)) {
                    let text = d.as_str().or_else(|| d.get("text").and_then(Value::as_str));
                    out["document"] = json!({"text": text});
                }
            }
            out
        })
        .collect();
    Ok(json!({"results": results, "meta": {"billed_units": {"search_units": 1}}}))
}

/// The InvokeModel body for an embeddings request: Titan's (`inputText`, one text a
/// request) or Cohere's (`texts`).
pub fn embeddings_request(req: &Map<String, Value>, model_id: &str) -> Result<Value, ApiError> {
    let texts = embedding_texts(req)?;
    if model_id.contains("titan-embed") {
        let [text] = texts[..] else {
            return Err(ApiError::bad_request(format!(
                "Titan embeddings take one input per request; `input` has {}",
                texts.len()
            ))
            .with_param("input"));
        };
        let mut body = json!({"inputText": text});
        if let Some(d) = req.get("dimensions").and_then(Value::as_u64) {
            body["dimensions"] = json!(d);
        }
        return Ok(body);
    }
    if model_id.contains("cohere.embed") {
        let input_type = req
            .get("input_type")
            .and_then(Value::as_str)
            .unwrap_or("search_document");
        return Ok(json!({"texts": texts, "input_type": input_type}));
    }
    Err(ApiError::unsupported(format!(
        "Bedrock model `{model_id}` is not a Titan or Cohere embedding model"
    ))
    .with_param("model"))
}

/// Converts a Titan or Cohere InvokeModel embeddings response to OpenAI's list.
pub fn embeddings_response(
    body: &[u8],
    req: &Map<String, Value>,
    model: &str,
) -> Result<(Value, Usage), ApiError> {
    let v = super::upstream_json(body, "Bedrock")?;
    let vectors: Vec<Value> = match (v.get("embedding"), v.get("embeddings")) {
        (Some(e), _) => vec![e.clone()],
        (None, Some(Value::Array(es))) => es.clone(),
        (None, Some(Value::Object(by_type))) => by_type
            .get("float")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
        .collect();
    // Titan counts the input's tokens; Cohere on Bedrock does not (estimated from the
    // text, 4 characters a token, so spend and budgets still see the call).
    let tokens = v
        .get("inputTextTokenCount")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| {
            let chars: usize = embedding_texts(req)
                .unwrap_or_default()
                .iter()
                .map(|t| t.chars().count())
                .sum();
            (chars as u64).div_ceil(4).max(1)
        });
    Ok((
        json!({
            "object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
        Usage {
            input_tokens: tokens,
            ..Usage::default()
        },
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
    fn request_maps_roles_tools_and_inference_config() {
        let c = request(&map(json!({
            "model": "x",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "user", "content": "thanks"},
            ],
            "max_tokens": 10, "temperature": 0.5, "stop": "END", "top_k": 3,
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        })))
        .unwrap();
        assert_eq!(c["system"], json!([{"text": "be brief"}]));
        assert_eq!(
            c["messages"][0]["content"][1],
            json!({"image": {"format": "png", "source": {"bytes": "AAAA"}}})
        );
        assert_eq!(
            c["messages"][1]["content"][0]["toolUse"],
            json!({"toolUseId": "t1", "name": "get_weather", "input": {"location": "Paris"}})
        );
        // The tool result and the next user turn merge into one user message.
        assert_eq!(
            c["messages"][2]["content"][0]["toolResult"]["toolUseId"],
            "t1"
        );
        assert_eq!(c["messages"][2]["content"][1], json!({"text": "thanks"}));
        assert_eq!(
            c["inferenceConfig"],
            json!({"maxTokens": 10, "temperature": 0.5, "stopSequences": ["END"]})
        );
        assert_eq!(c["additionalModelRequestFields"], json!({"top_k": 3}));
        assert_eq!(
            c["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"],
            json!({"json": {"type": "object"}})
        );
        assert_eq!(
            c["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "get_weather"}})
        );
        let e = request(&map(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]})))
        .unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn embeddings_for_titan_and_cohere() {
        let one = map(json!({"input": "hello", "dimensions": 256}));
        assert_eq!(
            embeddings_request(&one, "amazon.titan-embed-text-v2:0").unwrap(),
            json!({"inputText": "hello", "dimensions": 256})
        );
        let two = map(json!({"input": ["a", "b"]}));
        assert!(embeddings_request(&two, "amazon.titan-embed-text-v2:0").is_err());
        assert_eq!(
            embeddings_request(&two, "cohere.embed-english-v3").unwrap()["texts"],
            json!(["a", "b"])
        );
        assert!(embeddings_request(&two, "anthropic.claude").is_err());
        let (v, u) = embeddings_response(
            br#"{"embedding": [0.1, 0.2], "inputTextTokenCount": 3}"#,
            &one,
            "m",
        )
        .unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.1, 0.2]));
        assert_eq!(u.input_tokens, 3);
        let (v, _) = embeddings_response(br#"{"embeddings": [[1.0], [2.0]]}"#, &two, "m").unwrap();
        assert_eq!(v["data"][1]["index"], 1);
    }

    #[test]
    fn response_maps_text_tools_usage_and_stop() {
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"location": "Paris"}}},
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19, "cacheReadInputTokens": 4},
        });
        let (v, u) = response(body.to_string().as_bytes(), "m").unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["id"],
            "tooluse_1"
        );
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"location\":\"Paris\"}"
        );
        let u = u.unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (16, 7, 4)
        );
        assert_eq!(finish_reason("guardrail_intervened"), "content_filter");
        assert_eq!(finish_reason("max_tokens"), "length");
    }
}
