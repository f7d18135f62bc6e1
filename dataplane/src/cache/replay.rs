//! Cached answers in the other delivery: a stored stream as one response (a non-streamed
//! request that hits an entry a stream made), and a stored response as a stream (the other
//! way round), in the client's API (OpenAI chat chunks, Anthropic message events, OpenAI
//! Responses events).
//!
//! A stored stream replayed as a stream needs none of this: its events go out as they were
//! sent the first time, with their original boundaries.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{Answer, Api};
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

/// A stored stream as one response body in `api`; `None` if it does not read as one
/// (nothing is served from it then).
pub fn full_from_stream(api: Api, events: &[Bytes]) -> Option<Bytes> {
    let v = match api {
        Api::Chat => openai_full(events)?,
        Api::Messages => anthropic_full(events)?,
        Api::Responses => responses_full(events)?,
    };
    Some(crate::json::bytes(&v))
}

/// A stored response as a stream in `api`. `include_usage`: an OpenAI chat client's
/// `stream_options.include_usage` (the other APIs' streams always carry usage).
pub fn stream_from_full(api: Api, body: &[u8], include_usage: bool) -> Option<Vec<Bytes>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match api {
        Api::Chat => openai_stream(&v, include_usage),
        Api::Messages => anthropic_stream(&v),
        Api::Responses => responses_stream(&v),
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
/// chunk with a `finish_reason`, Anthropic's `message_stop`, the Responses API's
/// `response.completed` (or `response.incomplete`: cut short, see [`truncated`]).
pub fn closed(api: Api, events: &[Bytes]) -> bool {
    match api {
        Api::Chat => {
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
        Api::Messages => events
            .iter()
            .rev()
            .filter(|e| memchr::memmem::find(e, b"message_stop").is_some())
            .any(|e| {
                json_of(e).is_some_and(|(_, v)| {
                    v.get("type").and_then(Value::as_str) == Some("message_stop")
                })
            }),
        Api::Responses => events
            .iter()
            .rev()
            .find_map(json_of)
            .is_some_and(|(_, v)| response_end(&v).is_some()),
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
            sse::data_json(&v)
        }
        _ => event.clone(),
    }
}

/// Whether a stored answer was cut short (`finish_reason: length`, `stop_reason:
/// max_tokens`, a response's `status: incomplete`).
pub fn truncated(api: Api, answer: &Answer) -> bool {
    // The stop reason's value is the needle: most answers are read no further.
    let (needle, reason): (&[u8], StopReason) = match api {
        Api::Chat => (b"length", |v| {
            v.get("choices")?
                .as_array()?
                .iter()
                .find_map(|c| c.get("finish_reason")?.as_str().filter(|r| *r == "length"))
        }),
        Api::Messages => (b"max_tokens", |v| {
            v.get("stop_reason")
                .or_else(|| v.get("delta")?.get("stop_reason"))?
                .as_str()
                .filter(|r| *r == "max_tokens")
        }),
        // A response, or an event that carries one.
        Api::Responses => (b"\"incomplete\"", |v| {
            v.get("response")
                .unwrap_or(v)
                .get("status")?
                .as_str()
                .filter(|s| *s == "incomplete")
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
        sse::data_json(&Value::Object(c))
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
    let named = |name: &str, data: Value| sse::named_json(name, &data);
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

/// The response a Responses event carries when it ends the stream (`response.completed`,
/// `response.incomplete`).
fn response_end(event: &Value) -> Option<&Value> {
    match event.get("type").and_then(Value::as_str) {
        Some("response.completed" | "response.incomplete") => event.get("response"),
        _ => None,
    }
}

/// A stored Responses stream as one response: the one its last event carries. Where that
/// one has no output (some servers send it without), the output is the items the stream
/// finished (`response.output_item.done`), in order.
fn responses_full(events: &[Bytes]) -> Option<Value> {
    let mut response = events
        .iter()
        .rev()
        .filter(|e| memchr::memmem::find(e, b"response.").is_some())
        .find_map(|e| json_of(e).and_then(|(_, v)| response_end(&v).cloned()))
        .filter(Value::is_object)?;
    let empty = response
        .get("output")
        .is_none_or(|o| o.as_array().is_none_or(Vec::is_empty));
    if empty {
        let mut items: Vec<(u64, Value)> = parsed(events)
            .filter(|(_, v)| v["type"] == "response.output_item.done")
            .filter_map(|(_, v)| Some((v.get("output_index")?.as_u64()?, v.get("item")?.clone())))
            .collect();
        items.sort_by_key(|(i, _)| *i);
        response["output"] = Value::Array(items.into_iter().map(|(_, item)| item).collect());
    }
    Some(response)
}

/// The stored response's own id: a full body's, or a stream's first response event's.
fn stored_response_id(first: &[u8]) -> Option<String> {
    let v: Value = match sse::parse_event(Bytes::copy_from_slice(first)) {
        Some(ev) if !ev.data.is_empty() => serde_json::from_str(&ev.data).ok()?,
        _ => serde_json::from_slice(first).ok()?,
    };
    let id = v.get("response").unwrap_or(&v).get("id")?.as_str()?;
    (!id.is_empty()).then(|| id.to_owned())
}

/// `bytes` with every occurrence of `old` replaced by `new` (response ids: item ids of
/// responses made through chat are built from them).
fn replaced(bytes: &Bytes, old: &str, new: &str) -> Bytes {
    if memchr::memmem::find(bytes, old.as_bytes()).is_none() {
        return bytes.clone();
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Bytes::from(text.replace(old, new)),
        Err(_) => bytes.clone(),
    }
}

/// The fields a response echoes from its request that are not in the cache key (who
/// asked, how it is kept), and what each is when the request does not set it.
pub const ECHOED: [&str; 5] = [
    "user",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
    "store",
];

fn echoed_default(field: &str) -> Value {
    match field {
        "metadata" => json!({}),
        "store" => json!(true),
        _ => Value::Null,
    }
}

/// A response object re-issued: made now, with the [`ECHOED`] fields as `echo` (the
/// request's own) has them, or their defaults, in place of the first requester's.
fn reissue(response: &mut Value, echo: &Map<String, Value>) {
    let Some(r) = response.as_object_mut() else {
        return;
    };
    r.insert("created_at".into(), crate::clock::now_secs().into());
    for field in ECHOED {
        match echo.get(field) {
            Some(v) => {
                r.insert(field.to_owned(), v.clone());
            }
            None if r.contains_key(field) => {
                r.insert(field.to_owned(), echoed_default(field));
            }
            None => {}
        }
    }
}

/// A stored Responses body re-issued under response id `id` (see [`reissue`]).
pub fn reissue_full(body: Bytes, id: &str, echo: &Map<String, Value>) -> Bytes {
    let body = match stored_response_id(&body) {
        Some(old) => replaced(&body, &old, id),
        None => body,
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let Some(r) = v.as_object_mut() else {
        return body;
    };
    r.insert("id".into(), id.into());
    reissue(&mut v, echo);
    crate::json::bytes(&v)
}

/// A stored Responses stream re-issued under response id `id`: the id replaced in every
/// event, and each event that carries the response re-issued (see [`reissue`]).
pub fn reissue_stream(events: Vec<Bytes>, id: &str, echo: &Map<String, Value>) -> Vec<Bytes> {
    let old = events.first().and_then(|e| stored_response_id(e));
    events
        .into_iter()
        .map(|e| {
            let e = match &old {
                Some(old) => replaced(&e, old, id),
                None => e,
            };
            if memchr::memmem::find(&e, b"\"response\":").is_none() {
                return e;
            }
            let Some((name, mut v)) = json_of(&e) else {
                return e;
            };
            let Some(response) = v.get_mut("response").filter(|r| r.is_object()) else {
                return e;
            };
            response["id"] = id.into();
            reissue(response, echo);
            match name {
                Some(name) => sse::named_json(&name, &v),
                None => sse::data_json(&v),
            }
        })
        .collect()
}

/// Whether a stored Responses answer is a finished one: its response completed (or ended
/// incomplete for a reason: cut short, see [`truncated`]) with no error. A response that
/// failed, was cancelled, broke off or is still queued or in progress is never kept.
pub fn response_finished(answer: &Answer) -> bool {
    let response = match answer {
        Answer::Full(body) => serde_json::from_slice::<Value>(body).ok(),
        Answer::Stream(events) => responses_full(events),
    };
    response.is_some_and(|r| {
        let status = r.get("status").and_then(Value::as_str);
        // Cut short for a reason (`max_output_tokens`, `content_filter`): a stream that
        // broke off ends incomplete with none, and is never kept.
        let reasoned = r
            .pointer("/incomplete_details/reason")
            .is_some_and(|v| !v.is_null());
        (status == Some("completed") || (status == Some("incomplete") && reasoned))
            && r.get("error").is_none_or(Value::is_null)
    })
}

/// A stored response as the Responses API's typed events: the response created and in
/// progress, then each output item added, its content in one delta each, and done, then
/// the response as it ended.
fn responses_stream(v: &Value) -> Option<Vec<Bytes>> {
    let end = match v.get("status").and_then(Value::as_str) {
        Some("incomplete") => "response.incomplete",
        Some("completed") => "response.completed",
        _ => return None,
    };
    let items = v.get("output")?.as_array()?;
    let mut start = v.as_object()?.clone();
    start.insert("status".into(), "in_progress".into());
    start.insert("output".into(), json!([]));
    start.insert("usage".into(), Value::Null);
    start.insert("incomplete_details".into(), Value::Null);
    let start = Value::Object(start);
    let mut out = Vec::new();
    let mut push = |kind: &str, mut data: Value| {
        data["type"] = kind.into();
        data["sequence_number"] = out.len().into();
        out.push(sse::named_json(kind, &data));
    };
    push("response.created", json!({"response": start}));
    push("response.in_progress", json!({"response": start}));
    for (i, item) in items.iter().enumerate() {
        let item_id = item.get("id").cloned().unwrap_or(Value::Null);
        let at = |mut data: Value| {
            data["item_id"] = item_id.clone();
            data["output_index"] = i.into();
            data
        };
        let mut added = item.clone();
        if added.is_object() {
            added["status"] = "in_progress".into();
        }
        match item.get("type").and_then(Value::as_str) {
            Some("message") => added["content"] = json!([]),
            Some("function_call") => added["arguments"] = json!(""),
            Some("reasoning") => added["summary"] = json!([]),
            _ => {}
        }
        push(
            "response.output_item.added",
            json!({"output_index": i, "item": added}),
        );
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                let parts = item.get("content").and_then(Value::as_array);
                // Parts of other types are not replayed: indices count those that are.
                let replayed = parts.into_iter().flatten().filter_map(|part| {
                    match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => {
                            Some((part, "text", "output_text.delta", "output_text.done"))
                        }
                        Some("refusal") => Some((part, "refusal", "refusal.delta", "refusal.done")),
                        _ => None,
                    }
                });
                for (j, (part, field, delta, done)) in replayed.enumerate() {
                    let whole = part.get(field).cloned().unwrap_or(json!(""));
                    let mut empty = part.clone();
                    empty[field] = json!("");
                    if field == "text" {
                        empty["annotations"] = json!([]);
                    }
                    let mut on = |kind: &str, mut data: Value| {
                        data["content_index"] = j.into();
                        push(kind, at(data));
                    };
                    on("response.content_part.added", json!({"part": empty}));
                    let logprobs = || part.get("logprobs").cloned().unwrap_or(json!([]));
                    let mut d = json!({"delta": whole.clone()});
                    let mut w = json!({ field: whole });
                    if field == "text" {
                        d["logprobs"] = logprobs();
                        w["logprobs"] = logprobs();
                    }
                    on(&format!("response.{delta}"), d);
                    on(&format!("response.{done}"), w);
                    on("response.content_part.done", json!({"part": part}));
                }
            }
            Some("function_call") => {
                let args = item.get("arguments").cloned().unwrap_or(json!(""));
                push(
                    "response.function_call_arguments.delta",
                    at(json!({"delta": args.clone()})),
                );
                push(
                    "response.function_call_arguments.done",
                    at(json!({"arguments": args})),
                );
            }
            Some("reasoning") => {
                let summary = item.get("summary").and_then(Value::as_array);
                for (j, s) in summary.into_iter().flatten().enumerate() {
                    let text = s.get("text").cloned().unwrap_or(json!(""));
                    let mut on = |kind: &str, mut data: Value| {
                        data["summary_index"] = j.into();
                        push(kind, at(data));
                    };
                    on(
                        "response.reasoning_summary_part.added",
                        json!({"part": {"type": "summary_text", "text": ""}}),
                    );
                    on(
                        "response.reasoning_summary_text.delta",
                        json!({"delta": text.clone()}),
                    );
                    on(
                        "response.reasoning_summary_text.done",
                        json!({"text": text.clone()}),
                    );
                    on(
                        "response.reasoning_summary_part.done",
                        json!({"part": {"type": "summary_text", "text": text}}),
                    );
                }
            }
            _ => {}
        }
        push(
            "response.output_item.done",
            json!({"output_index": i, "item": item}),
        );
    }
    push(end, json!({"response": v}));
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
        let events = stream_from_full(Api::Chat, &body(&full), true).unwrap();
        assert!(is_usage_chunk(&events[events.len() - 2]));
        assert_eq!(events.last().unwrap().as_ref(), sse::DONE);
        let back: Value =
            serde_json::from_slice(&full_from_stream(Api::Chat, &events).unwrap()).unwrap();
        assert_eq!(back, full);
        let without = stream_from_full(Api::Chat, &body(&full), false).unwrap();
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
        .map(sse::data_json)
        .chain([Bytes::from_static(sse::DONE)])
        .collect();
        let v: Value =
            serde_json::from_slice(&full_from_stream(Api::Chat, &chunks).unwrap()).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], "Hello");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"x\":2}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert!(!truncated(Api::Chat, &Answer::Stream(chunks.clone())));
        let cut = [sse::data(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
        )];
        assert!(truncated(Api::Chat, &Answer::Stream(cut.to_vec())));
    }

    #[test]
    fn only_closed_streams_without_errors_count_as_answers() {
        let chunk = |v: Value| sse::data_json(&v);
        let done = Bytes::from_static(sse::DONE);
        let finished = vec![
            chunk(
                json!({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}),
            ),
            chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
            chunk(json!({"choices": [], "usage": {"total_tokens": 2}})),
            done.clone(),
        ];
        assert!(closed(Api::Chat, &finished));
        assert!(!closed(Api::Chat, &finished[..3]), "no [DONE]");
        assert!(
            !closed(Api::Chat, &[finished[0].clone(), done.clone()]),
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
            Api::Messages,
            br#"{"id":"m","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}"#,
            true,
        )
        .unwrap();
        assert!(closed(Api::Messages, &anthropic));
        assert!(!closed(Api::Messages, &anthropic[..anthropic.len() - 1]));
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
        let events = stream_from_full(Api::Messages, &body(&full), true).unwrap();
        assert!(std::str::from_utf8(&events[0])
            .unwrap()
            .starts_with("event: message_start\n"));
        let back: Value =
            serde_json::from_slice(&full_from_stream(Api::Messages, &events).unwrap()).unwrap();
        assert_eq!(back, full);
        assert!(!truncated(Api::Messages, &Answer::Full(body(&full).into())));
        let mut cut = full.clone();
        cut["stop_reason"] = "max_tokens".into();
        assert!(truncated(Api::Messages, &Answer::Full(body(&cut).into())));
        let events = stream_from_full(Api::Messages, &body(&cut), true).unwrap();
        assert!(truncated(Api::Messages, &Answer::Stream(events)));
    }

    #[test]
    fn responses_answers_survive_both_ways_under_a_new_id() {
        let full = json!({
            "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
            "model": "m", "max_output_tokens": 100, "incomplete_details": null,
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [
                    {"type": "summary_text", "text": "think"}]},
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Hi", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f",
                 "arguments": "{\"a\":1}", "status": "completed"}
            ],
            "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
        });
        let events = stream_from_full(Api::Responses, &body(&full), true).unwrap();
        let kinds: Vec<(String, Value)> = events
            .iter()
            .map(|e| json_of(e).map(|(n, v)| (n.unwrap(), v)).unwrap())
            .collect();
        for (i, (name, v)) in kinds.iter().enumerate() {
            assert_eq!(v["type"], name.as_str());
            assert_eq!(v["sequence_number"], i);
        }
        let names: Vec<&str> = kinds.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"response.created"));
        assert_eq!(names.last(), Some(&"response.completed"));
        for kind in [
            "response.reasoning_summary_text.delta",
            "response.output_text.delta",
            "response.function_call_arguments.delta",
        ] {
            assert_eq!(names.iter().filter(|n| **n == kind).count(), 1, "{kind}");
        }
        assert_eq!(kinds[0].1["response"]["status"], "in_progress");
        assert!(closed(Api::Responses, &events));
        assert!(!closed(Api::Responses, &events[..events.len() - 1]));
        let back: Value =
            serde_json::from_slice(&full_from_stream(Api::Responses, &events).unwrap()).unwrap();
        assert_eq!(back, full);
        // Re-issued: another id wherever the stored one is (item ids built from it too),
        // made now, and the request's own echoed fields.
        let mut echo = Map::new();
        echo.insert("user".into(), "u2".into());
        let mut stored = full.clone();
        stored["user"] = "first-requester".into();
        stored["metadata"] = json!({"first": "requester"});
        stored["output"][1]["id"] = "msg_resp_1_0".into();
        let events = stream_from_full(Api::Responses, &body(&stored), true).unwrap();
        let renamed = reissue_stream(events.clone(), "resp_2", &echo);
        let back: Value =
            serde_json::from_slice(&full_from_stream(Api::Responses, &renamed).unwrap()).unwrap();
        assert_eq!(back["id"], "resp_2");
        assert_eq!(back["user"], "u2");
        assert_eq!(back["metadata"], json!({}));
        assert!(back.get("safety_identifier").is_none(), "not added as null");
        assert_eq!(back["output"][1]["id"], "msg_resp_2_0");
        assert!(back["created_at"].as_u64().unwrap() > 1);
        assert_eq!(json_of(&renamed[0]).unwrap().1["response"]["id"], "resp_2");
        assert!(!renamed
            .iter()
            .any(|e| memchr::memmem::find(e, b"resp_1").is_some()));
        let v: Value =
            serde_json::from_slice(&reissue_full(body(&stored).into(), "resp_3", &echo)).unwrap();
        assert_eq!((&v["id"], &v["user"]), (&json!("resp_3"), &json!("u2")));
        assert_eq!(v["output"][1]["id"], "msg_resp_3_0");
        // Only finished responses are kept.
        assert!(response_finished(&Answer::Full(body(&full).into())));
        assert!(response_finished(&Answer::Stream(events)));
        for (k, bad) in [
            ("status", json!("failed")),
            ("status", json!("in_progress")),
            ("error", json!({"code": "server_error"})),
        ] {
            let mut f = full.clone();
            f[k] = bad;
            assert!(!response_finished(&Answer::Full(body(&f).into())), "{k}");
            assert!(stream_from_full(Api::Responses, &body(&f), true).is_none() || k == "error");
        }
        // A stream whose last event carries no output: its finished items are the output.
        let mut bare = full.clone();
        bare["output"] = Value::Null;
        let mut events = stream_from_full(Api::Responses, &body(&full), true).unwrap();
        let last = events.len() - 1;
        events[last] = sse::named(
            "response.completed",
            &json!({"type": "response.completed", "response": bare}).to_string(),
        );
        let back: Value =
            serde_json::from_slice(&full_from_stream(Api::Responses, &events).unwrap()).unwrap();
        assert_eq!(back["output"], full["output"]);
        // Cut short (`max_output_tokens` in the request echo is no sign of it).
        assert!(!truncated(
            Api::Responses,
            &Answer::Full(body(&full).into())
        ));
        assert!(!truncated(Api::Responses, &Answer::Stream(events)));
        let mut cut = full.clone();
        cut["status"] = "incomplete".into();
        cut["incomplete_details"] = json!({"reason": "max_output_tokens"});
        assert!(truncated(Api::Responses, &Answer::Full(body(&cut).into())));
        assert!(response_finished(&Answer::Full(body(&cut).into())));
        let mut broken = cut.clone();
        broken["incomplete_details"] = Value::Null;
        assert!(
            !response_finished(&Answer::Full(body(&broken).into())),
            "broke off"
        );
        let events = stream_from_full(Api::Responses, &body(&cut), true).unwrap();
        assert!(
            json_of(events.last().unwrap()).unwrap().0.as_deref() == Some("response.incomplete")
        );
        assert!(closed(Api::Responses, &events));
        assert!(truncated(Api::Responses, &Answer::Stream(events)));
    }
}
