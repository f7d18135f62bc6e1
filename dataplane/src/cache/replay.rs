//! Cached answers in the other delivery: a stored stream as one response (a non-streamed
//! request that hits an entry a stream made), and a stored response as a stream (the other
//! way round), in the client's API (OpenAI chat chunks, Anthropic message events).
//!
//! A stored stream replayed as a stream needs none of this: its events go out as they were
//! sent the first time, with their original boundaries.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::Answer;
use crate::error::ClientApi;
use crate::sse;

/// A stored event's name and JSON data (`None` for `[DONE]` and data that is not JSON).
fn json_of(event: &Bytes) -> Option<(Option<String>, Value)> {
    let ev = sse::parse_event(event.clone())?;
    if ev.data.is_empty() || ev.data == "[DONE]" {
        return None;
    }
    Some((ev.event, serde_json::from_str(&ev.data).ok()?))
}

/// [`json_of`] of each event that has JSON data.
fn parsed(events: &[Bytes]) -> impl Iterator<Item = (Option<String>, Value)> + '_ {
    events.iter().filter_map(json_of)
}

/// A stored stream as one response body in `client`'s API; `None` if it does not read as
/// one (nothing is served from it then).
pub fn full_from_stream(client: ClientApi, events: &[Bytes]) -> Option<Bytes> {
    let v = match client {
        ClientApi::OpenAi => openai_full(events)?,
        ClientApi::Anthropic => anthropic_full(events)?,
    };
    Some(Bytes::from(v.to_string()))
}

/// A stored response as a stream in `client`'s API. `include_usage`: an OpenAI client's
/// `stream_options.include_usage` (Anthropic streams always carry usage).
pub fn stream_from_full(client: ClientApi, body: &[u8], include_usage: bool) -> Option<Vec<Bytes>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match client {
        ClientApi::OpenAi => openai_stream(&v, include_usage),
        ClientApi::Anthropic => anthropic_stream(&v),
    }
}

/// Whether an OpenAI stream event is the usage chunk (no choices, a usage object): sent
/// only to clients that asked for it.
pub fn is_usage_chunk(event: &Bytes) -> bool {
    if memchr::memmem::find(event, b"\"usage\"").is_none() {
        return false;
    }
    json_of(event).is_some_and(|(_, v)| usage_chunk(&v))
}

/// See [`is_usage_chunk`].
fn usage_chunk(v: &Value) -> bool {
    v.get("usage").is_some_and(Value::is_object)
        && v.get("choices")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
}

/// The stop reason of a response or event that means "cut short", if it has one.
type StopReason = fn(&Value) -> Option<&str>;

/// Whether a stream's events end as a finished answer does: OpenAI's `[DONE]` after a
/// chunk with a `finish_reason`, Anthropic's `message_stop`.
pub fn closed(client: ClientApi, events: &[Bytes]) -> bool {
    match client {
        ClientApi::OpenAi => {
            events
                .last()
                .and_then(|e| sse::parse_event(e.clone()))
                .is_some_and(|ev| ev.data == "[DONE]")
                && events.iter().rev().take(4).any(|e| {
                    json_of(e).is_some_and(|(_, v)| {
                        v.get("choices")
                            .and_then(Value::as_array)
                            .is_some_and(|c| c.iter().any(|c| !c["finish_reason"].is_null()))
                    })
                })
        }
        ClientApi::Anthropic => events
            .iter()
            .rev()
            .filter(|e| memchr::memmem::find(e, b"message_stop").is_some())
            .any(|e| {
                json_of(e).is_some_and(|(_, v)| {
                    v.get("type").and_then(Value::as_str) == Some("message_stop")
                })
            }),
    }
}

/// Whether an event reports an error (`event: error`, or a body with a top-level `error`).
pub fn is_error(event: &Bytes) -> bool {
    if memchr::memmem::find(event, b"error").is_none() {
        return false;
    }
    json_of(event).is_some_and(|(name, v)| {
        name.as_deref() == Some("error")
            || v.get("error").is_some_and(|e| !e.is_null())
            || v.get("type").and_then(Value::as_str) == Some("error")
    })
}

/// An OpenAI usage chunk with its `usage.cost` (what the gateway adds) set to 0: what a hit
/// costs. Other events are returned as they are.
pub fn without_cost(event: &Bytes) -> Bytes {
    if memchr::memmem::find(event, b"\"cost\"").is_none() {
        return event.clone();
    }
    let Some((_, mut v)) = json_of(event).filter(|(_, v)| usage_chunk(v)) else {
        return event.clone();
    };
    match v.get_mut("usage").and_then(Value::as_object_mut) {
        Some(u) if u.contains_key("cost") => {
            u.insert("cost".into(), json!(0.0));
            sse::data(&v.to_string())
        }
        _ => event.clone(),
    }
}

/// Whether a stored answer was cut short by the token limit (`finish_reason: length`,
/// `stop_reason: max_tokens`).
pub fn truncated(client: ClientApi, answer: &Answer) -> bool {
    // The stop reason's value is the needle: most answers are read no further.
    let (needle, reason): (&[u8], StopReason) = match client {
        ClientApi::OpenAi => (b"length", |v| {
            v.get("choices")?
                .as_array()?
                .iter()
                .find_map(|c| c.get("finish_reason")?.as_str().filter(|r| *r == "length"))
        }),
        ClientApi::Anthropic => (b"max_tokens", |v| {
            v.get("stop_reason")
                .or_else(|| v.get("delta")?.get("stop_reason"))?
                .as_str()
                .filter(|r| *r == "max_tokens")
        }),
    };
    match answer {
        Answer::Full(body) => {
            memchr::memmem::find(body, needle).is_some()
                && serde_json::from_slice::<Value>(body)
                    .ok()
                    .is_some_and(|v| reason(&v).is_some())
        }
        Answer::Stream(events) => events
            .iter()
            .filter(|e| memchr::memmem::find(e, needle).is_some())
            .any(|e| json_of(e).is_some_and(|(_, v)| reason(&v).is_some())),
    }
}

fn openai_full(events: &[Bytes]) -> Option<Value> {
    let mut head: Option<Map<String, Value>> = None;
    let mut choices: Vec<Map<String, Value>> = Vec::new();
    let mut usage = Value::Null;
    for (_, chunk) in parsed(events) {
        let Value::Object(chunk) = chunk else {
            continue;
        };
        if head.is_none() {
            head = Some(head_of(&chunk));
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            usage = u.clone();
        }
        for c in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let i = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            while choices.len() <= i {
                let mut m = Map::new();
                m.insert("index".into(), choices.len().into());
                m.insert(
                    "message".into(),
                    json!({"role": "assistant", "content": null}),
                );
                m.insert("finish_reason".into(), Value::Null);
                m.insert("logprobs".into(), Value::Null);
                choices.push(m);
            }
            let choice = &mut choices[i];
            if let Some(r) = c.get("finish_reason").filter(|r| !r.is_null()) {
                choice.insert("finish_reason".into(), r.clone());
            }
            let Some(delta) = c.get("delta").and_then(Value::as_object) else {
                continue;
            };
            let Some(Value::Object(message)) = choice.get_mut("message") else {
                continue;
            };
            for (k, v) in delta {
                match (k.as_str(), v) {
                    ("tool_calls", Value::Array(calls)) => merge_tool_calls(message, calls),
                    (_, Value::String(s)) if k != "role" => match message.get_mut(k) {
                        Some(Value::String(acc)) => acc.push_str(s),
                        _ => {
                            message.insert(k.clone(), s.as_str().into());
                        }
                    },
                    (_, Value::Null) => {}
                    _ => {
                        message.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    let mut out = head?;
    out.insert("object".into(), "chat.completion".into());
    out.insert(
        "choices".into(),
        Value::Array(choices.into_iter().map(Value::Object).collect()),
    );
    if let Some(cost) = usage.get_mut("cost") {
        // What the gateway added when the stream was made; a hit costs nothing.
        *cost = json!(0.0);
    }
    if !usage.is_null() {
        out.insert("usage".into(), usage);
    }
    Some(Value::Object(out))
}

fn merge_tool_calls(message: &mut Map<String, Value>, deltas: &[Value]) {
    let calls = message
        .entry("tool_calls")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(calls) = calls else {
        return;
    };
    for d in deltas {
        let i = d.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        while calls.len() <= i {
            calls.push(
                json!({"id": "", "type": "function", "function": {"name": "", "arguments": ""}}),
            );
        }
        let call = &mut calls[i];
        for k in ["id", "type"] {
            if let Some(v) = d.get(k).filter(|v| v.is_string()) {
                call[k] = v.clone();
            }
        }
        if let Some(f) = d.get("function") {
            for k in ["name", "arguments"] {
                if let Some(s) = f.get(k).and_then(Value::as_str) {
                    let acc = call["function"][k].as_str().unwrap_or("").to_owned() + s;
                    call["function"][k] = acc.into();
                }
            }
        }
    }
}

fn anthropic_full(events: &[Bytes]) -> Option<Value> {
    let mut message: Option<Map<String, Value>> = None;
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial_json: Vec<String> = Vec::new();
    for (_, ev) in parsed(events) {
        match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                message = ev.get("message").and_then(Value::as_object).cloned();
            }
            Some("content_block_start") => {
                let i = ev.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                while blocks.len() <= i {
                    blocks.push(Value::Null);
                    partial_json.push(String::new());
                }
                blocks[i] = ev.get("content_block").cloned().unwrap_or(Value::Null);
            }
            Some("content_block_delta") => {
                let i = ev.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                let (Some(block), Some(delta)) = (blocks.get_mut(i), ev.get("delta")) else {
                    continue;
                };
                let text = |k: &str| delta.get(k).and_then(Value::as_str).unwrap_or("");
                let append = |block: &mut Value, k: &str, s: &str| {
                    let acc = block
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                        + s;
                    block[k] = acc.into();
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => append(block, "text", text("text")),
                    Some("thinking_delta") => append(block, "thinking", text("thinking")),
                    Some("signature_delta") => append(block, "signature", text("signature")),
                    Some("input_json_delta") => partial_json[i].push_str(text("partial_json")),
                    _ => {}
                }
            }
            Some("message_delta") => {
                let m = message.as_mut()?;
                if let Some(Value::Object(d)) = ev.get("delta") {
                    for (k, v) in d {
                        m.insert(k.clone(), v.clone());
                    }
                }
                if let Some(Value::Object(u)) = ev.get("usage") {
                    let usage = m.entry("usage").or_insert_with(|| json!({}));
                    for (k, v) in u {
                        usage[k] = v.clone();
                    }
                }
            }
            _ => {}
        }
    }
    let mut m = message?;
    for (block, json) in blocks.iter_mut().zip(partial_json) {
        if block.get("type").and_then(Value::as_str) == Some("tool_use") {
            let input = if json.is_empty() {
                json!({})
            } else {
                serde_json::from_str(&json).ok()?
            };
            block["input"] = input;
        }
    }
    m.insert("content".into(), Value::Array(blocks));
    Some(Value::Object(m))
}

/// The fields an OpenAI completion and each of its chunks share.
fn head_of(v: &Map<String, Value>) -> Map<String, Value> {
    [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ]
    .into_iter()
    .filter_map(|k| Some((k.to_owned(), v.get(k)?.clone())))
    .collect()
}

fn openai_stream(v: &Value, include_usage: bool) -> Option<Vec<Bytes>> {
    let mut head = head_of(v.as_object()?);
    head.insert("object".into(), "chat.completion.chunk".into());
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = head.clone();
        c.insert("choices".into(), choices);
        if let Some(u) = usage {
            c.insert("usage".into(), u.clone());
        }
        sse::data(&Value::Object(c).to_string())
    };
    let mut out = Vec::new();
    for c in v.get("choices")?.as_array()? {
        let index = c.get("index").cloned().unwrap_or(json!(0));
        let message = c.get("message")?.as_object()?;
        let mut delta = Map::new();
        delta.insert("role".into(), "assistant".into());
        for (k, x) in message {
            if !matches!(k.as_str(), "role" | "tool_calls") && !x.is_null() {
                delta.insert(k.clone(), x.clone());
            }
        }
        out.push(chunk(
            json!([{"index": index, "delta": delta, "finish_reason": null}]),
            None,
        ));
        let calls = message.get("tool_calls").and_then(Value::as_array);
        for (i, call) in calls.into_iter().flatten().enumerate() {
            let mut call = call.clone();
            call["index"] = i.into();
            out.push(chunk(
                json!([{"index": index, "delta": {"tool_calls": [call]}, "finish_reason": null}]),
                None,
            ));
        }
        let reason = c.get("finish_reason").cloned().unwrap_or(Value::Null);
        out.push(chunk(
            json!([{"index": index, "delta": {}, "finish_reason": reason}]),
            None,
        ));
    }
    if include_usage {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            out.push(chunk(json!([]), Some(u)));
        }
    }
    out.push(Bytes::from_static(sse::DONE));
    Some(out)
}

fn anthropic_stream(v: &Value) -> Option<Vec<Bytes>> {
    let named = |name: &str, data: Value| sse::named(name, &data.to_string());
    let mut start = v.as_object()?.clone();
    let blocks = start.insert("content".into(), json!([]))?;
    let stop_reason = start.insert("stop_reason".into(), Value::Null);
    let stop_sequence = start.insert("stop_sequence".into(), Value::Null);
    let usage = start.get("usage").cloned().unwrap_or_else(|| json!({}));
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(0);
    start.insert("usage".into(), start_usage);
    let mut out = vec![named(
        "message_start",
        json!({"type": "message_start", "message": start}),
    )];
    for (i, block) in blocks.as_array()?.iter().enumerate() {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        let (empty, deltas): (Value, Vec<Value>) = match kind {
            "text" => (
                json!({"type": "text", "text": ""}),
                vec![
                    json!({"type": "text_delta", "text": block.get("text").cloned().unwrap_or(json!(""))}),
                ],
            ),
            "thinking" => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                vec![
                    json!({"type": "thinking_delta", "thinking": block.get("thinking").cloned().unwrap_or(json!(""))}),
                    json!({"type": "signature_delta", "signature": block.get("signature").cloned().unwrap_or(json!(""))}),
                ],
            ),
            "tool_use" | "server_tool_use" => {
                let mut b = block.clone();
                b["input"] = json!({});
                let input = block.get("input").cloned().unwrap_or(json!({}));
                (
                    b,
                    vec![json!({"type": "input_json_delta", "partial_json": input.to_string()})],
                )
            }
            _ => (block.clone(), Vec::new()),
        };
        out.push(named(
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": empty}),
        ));
        for d in deltas {
            out.push(named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i, "delta": d}),
            ));
        }
        out.push(named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    out.push(named(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": {"output_tokens": usage.get("output_tokens").cloned().unwrap_or(json!(0))},
        }),
    ));
    out.push(named("message_stop", json!({"type": "message_stop"})));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: &Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn openai_answers_survive_both_ways() {
        let full = json!({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null,
                "message": {"role": "assistant", "content": "Hi", "reasoning_content": "think",
                    "tool_calls": [
                        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                        {"id": "t2", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                    ]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        });
        let events = stream_from_full(ClientApi::OpenAi, &body(&full), true).unwrap();
        assert!(is_usage_chunk(&events[events.len() - 2]));
        assert_eq!(events.last().unwrap().as_ref(), sse::DONE);
        let back: Value =
            serde_json::from_slice(&full_from_stream(ClientApi::OpenAi, &events).unwrap()).unwrap();
        assert_eq!(back, full);
        let without = stream_from_full(ClientApi::OpenAi, &body(&full), false).unwrap();
        assert!(!without.iter().any(is_usage_chunk));
        let priced = sse::data(r#"{"choices":[],"usage":{"total_tokens":3,"cost":0.5}}"#);
        let free: Value = json_of(&without_cost(&priced)).unwrap().1;
        assert_eq!(free["usage"], json!({"total_tokens": 3, "cost": 0.0}));
        assert_eq!(without_cost(&events[0]), events[0]);
    }

    #[test]
    fn openai_deltas_merge_into_one_message() {
        let chunks: Vec<Bytes> = [
            json!({"id": "c", "created": 2, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"}, "finish_reason": null}]}),
            json!({"id": "c", "created": 2, "model": "m", "choices": [{"index": 0, "delta": {"content": "llo", "tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": "{\"x\""}}]}, "finish_reason": null}]}),
            json!({"id": "c", "created": 2, "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":2}"}}]}, "finish_reason": "tool_calls"}]}),
        ]
        .iter()
        .map(|v| sse::data(&v.to_string()))
        .chain([Bytes::from_static(sse::DONE)])
        .collect();
        let v: Value =
            serde_json::from_slice(&full_from_stream(ClientApi::OpenAi, &chunks).unwrap()).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], "Hello");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"x\":2}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert!(!truncated(
            ClientApi::OpenAi,
            &Answer::Stream(chunks.clone())
        ));
        let cut = [sse::data(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
        )];
        assert!(truncated(ClientApi::OpenAi, &Answer::Stream(cut.to_vec())));
    }

    #[test]
    fn only_closed_streams_without_errors_count_as_answers() {
        let chunk = |v: Value| sse::data(&v.to_string());
        let done = Bytes::from_static(sse::DONE);
        let finished = vec![
            chunk(
                json!({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}),
            ),
            chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
            chunk(json!({"choices": [], "usage": {"total_tokens": 2}})),
            done.clone(),
        ];
        assert!(closed(ClientApi::OpenAi, &finished));
        assert!(!closed(ClientApi::OpenAi, &finished[..3]), "no [DONE]");
        assert!(
            !closed(ClientApi::OpenAi, &[finished[0].clone(), done.clone()]),
            "no finish"
        );
        let failed = chunk(json!({"error": {"message": "overloaded", "type": "server_error"}}));
        assert!(is_error(&failed) && !is_error(&finished[0]));
        let named = sse::named(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error"}}"#,
        );
        assert!(is_error(&named));
        let anthropic = stream_from_full(
            ClientApi::Anthropic,
            br#"{"id":"m","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}"#,
            true,
        )
        .unwrap();
        assert!(closed(ClientApi::Anthropic, &anthropic));
        assert!(!closed(
            ClientApi::Anthropic,
            &anthropic[..anthropic.len() - 1]
        ));
    }

    #[test]
    fn anthropic_answers_survive_both_ways() {
        let full = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Hello"},
                {"type": "tool_use", "id": "tu1", "name": "f", "input": {"a": [1, 2]}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 6}
        });
        let events = stream_from_full(ClientApi::Anthropic, &body(&full), true).unwrap();
        assert!(std::str::from_utf8(&events[0])
            .unwrap()
            .starts_with("event: message_start\n"));
        let back: Value =
            serde_json::from_slice(&full_from_stream(ClientApi::Anthropic, &events).unwrap())
                .unwrap();
        assert_eq!(back, full);
        assert!(!truncated(
            ClientApi::Anthropic,
            &Answer::Full(body(&full).into())
        ));
        let mut cut = full.clone();
        cut["stop_reason"] = "max_tokens".into();
        assert!(truncated(
            ClientApi::Anthropic,
            &Answer::Full(body(&cut).into())
        ));
        let events = stream_from_full(ClientApi::Anthropic, &body(&cut), true).unwrap();
        assert!(truncated(ClientApi::Anthropic, &Answer::Stream(events)));
    }
}
