//! OpenAI's Responses API answered through chat, for deployments without a Responses API
//! of their own (Anthropic, Gemini, Vertex AI, Bedrock, Cohere, the mock): the request
//! becomes an OpenAI chat request, and the chat answer (in OpenAI's format, whatever the
//! provider's) becomes a `response` object, or, streamed, the Responses API's typed
//! events (`response.created`, `response.output_text.delta`,
//! `response.function_call_arguments.delta`, ..., `response.completed`).
//!
//! Function tools, `tool_choice`, `instructions`, `text.format` (JSON mode and schemas),
//! `max_output_tokens`, `reasoning.effort` and images map onto chat; built-in tools (web
//! search, file search, computer use, ...) and file inputs do not, and get a 400.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::stream::StreamConverter;
use crate::error::ApiError;
use crate::sse::{self, Event};
use crate::usage::Usage;

/// Request fields with no chat counterpart that change nothing through chat.
const IGNORED: &[&str] = &[
    "include",
    "truncation",
    "store",
    "background",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "previous_response_id",
    "instructions",
    "input",
    "max_output_tokens",
    "text",
    "reasoning",
    "tools",
    "tool_choice",
    "max_tool_calls",
    "metadata",
    "stream",
    "stream_options",
];

fn unsupported(what: String, param: &'static str) -> ApiError {
    ApiError::unsupported(format!(
        "{what} is not available where the Responses API goes through chat"
    ))
    .with_param(param)
}

/// The chat messages for a request's `input` (a string, or a list of items).
pub fn input_messages(input: &Value) -> Result<Vec<Value>, ApiError> {
    let items = match input {
        Value::String(s) => return Ok(vec![json!({"role": "user", "content": s})]),
        Value::Array(items) => items,
        _ => {
            return Err(ApiError::bad_request(
                "`input` must be a string or a non-empty array of items",
            )
            .with_param("input"))
        }
    };
    let mut messages: Vec<Value> = Vec::new();
    for item in items {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => messages.push(message(item)?),
            "function_call" => {
                let call = json!({
                    "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": item.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": item.get("arguments").cloned().unwrap_or(json!("{}")),
                    },
                });
                // Consecutive calls belong to one assistant turn.
                match messages.last_mut() {
                    Some(m) if m["role"] == "assistant" && m.get("tool_calls").is_some() => {
                        if let Some(calls) = m["tool_calls"].as_array_mut() {
                            calls.push(call);
                        }
                    }
                    Some(m) if m["role"] == "assistant" => m["tool_calls"] = json!([call]),
                    _ => messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(""),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                messages.push(json!({
                    "role": "tool",
                    "tool_call_id": item.get("call_id").cloned().unwrap_or(Value::Null),
                    "content": output,
                }));
            }
            // The provider's own reasoning is not replayed to another turn.
            "reasoning" => {}
            other => return Err(unsupported(format!("input item type `{other}`"), "input")),
        }
    }
    Ok(messages)
}

/// Responses input items for chat messages: the inverse of [`input_messages`], for a
/// conversation the gateway holds that continues on a deployment with the Responses API.
pub fn history_items(messages: &[Value]) -> Vec<Value> {
    let mut items = Vec::new();
    for m in messages {
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        match m.get("role").and_then(Value::as_str) {
            Some("tool") => items.push(json!({
                "type": "function_call_output",
                "call_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                "output": super::content_text(&content),
            })),
            Some("assistant") => {
                let text = super::content_text(&content);
                if !text.is_empty() {
                    items.push(json!({"role": "assistant", "content": text}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    items.push(json!({
                        "type": "function_call",
                        "call_id": call.get("id").cloned().unwrap_or(Value::Null),
                        "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                        "arguments": call.pointer("/function/arguments").cloned().unwrap_or(json!("{}")),
                    }));
                }
            }
            Some(role) => {
                let content = match content {
                    Value::Array(parts) => Value::Array(
                        parts
                            .iter()
                            .map(|p| match p.get("type").and_then(Value::as_str) {
                                Some("image_url") => {
                                    let mut part = json!({"type": "input_image",
                                        "image_url": p.pointer("/image_url/url").cloned().unwrap_or(Value::Null)});
                                    if let Some(d) = p.pointer("/image_url/detail") {
                                        part["detail"] = d.clone();
                                    }
                                    part
                                }
                                _ => json!({"type": "input_text",
                                    "text": p.get("text").cloned().unwrap_or(json!(""))}),
                            })
                            .collect(),
                    ),
                    other => other,
                };
                items.push(json!({"role": role, "content": content}));
            }
            None => {}
        }
    }
    items
}

/// A chat message for an input message item.
fn message(item: &Value) -> Result<Value, ApiError> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("developer" | "system") => "system",
        Some(r @ ("user" | "assistant")) => r,
        _ => {
            return Err(ApiError::bad_request(
                "an input message needs a `role`: user, assistant, system or developer",
            )
            .with_param("input"))
        }
    };
    let content = match item.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) if role == "user" => {
            let parts = parts.iter().map(part).collect::<Result<Vec<_>, _>>()?;
            Value::Array(parts)
        }
        Some(Value::Array(parts)) => Value::String(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => {
            return Err(
                ApiError::bad_request("an input message needs a `content`").with_param("input")
            )
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// A chat content part for a user message's input part.
fn part(p: &Value) -> Result<Value, ApiError> {
    match p.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(json!(""))}))
        }
        Some("input_image") => match p.get("image_url").and_then(Value::as_str) {
            Some(url) => {
                let mut image = json!({"url": url});
                if let Some(detail) = p.get("detail") {
                    image["detail"] = detail.clone();
                }
                Ok(json!({"type": "image_url", "image_url": image}))
            }
            None => Err(unsupported(
                "an `input_image` by `file_id`".to_owned(),
                "input",
            )),
        },
        Some(other) => Err(unsupported(format!("input part type `{other}`"), "input")),
        None => Err(ApiError::bad_request("an input part needs a `type`").with_param("input")),
    }
}

/// The chat request for a Responses request; `history`: the conversation so far (the
/// turns before `previous_response_id`, as chat messages).
pub fn request(
    req: &Map<String, Value>,
    history: &[Value],
) -> Result<Map<String, Value>, ApiError> {
    let mut messages = Vec::new();
    if let Some(instructions) = req.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    messages.extend(history.iter().cloned());
    messages.extend(input_messages(req.get("input").unwrap_or(&Value::Null))?);
    let mut chat = Map::new();
    for (k, v) in req {
        if !IGNORED.contains(&k.as_str()) {
            chat.insert(k.clone(), v.clone());
        }
    }
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(max) = req.get("max_output_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_tokens".into(), max.clone());
    }
    if let Some(effort) = req
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|v| !v.is_null())
    {
        chat.insert("reasoning_effort".into(), effort.clone());
    }
    if let Some(format) = req.get("text").and_then(|t| t.get("format")) {
        match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                let mut schema = Map::new();
                for f in ["name", "schema", "strict", "description"] {
                    if let Some(v) = format.get(f) {
                        schema.insert(f.into(), v.clone());
                    }
                }
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": schema}),
                );
            }
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("text") | None => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "`text.format.type` `{other}` is not one of text, json_object, json_schema"
                ))
                .with_param("text"))
            }
        }
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let tools = tools.iter().map(tool).collect::<Result<Vec<_>, _>>()?;
        if !tools.is_empty() {
            chat.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = req.get("tool_choice").filter(|v| !v.is_null()) {
        chat.insert("tool_choice".into(), tool_choice(choice)?);
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream".into(), Value::Bool(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(chat)
}

fn tool(t: &Value) -> Result<Value, ApiError> {
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {
            let mut function = Map::new();
            for f in ["name", "description", "parameters", "strict"] {
                if let Some(v) = t.get(f).filter(|v| !v.is_null()) {
                    function.insert(f.into(), v.clone());
                }
            }
            Ok(json!({"type": "function", "function": function}))
        }
        // The gateway's MCP tools: the same in chat, where `handlers::mcp_tools` replaces
        // them before the request goes up.
        Some("mcp") if crate::mcp::proxied(t) => Ok(t.clone()),
        Some("mcp") => Err(unsupported(
            format!(
                "an `mcp` tool with a remote `server_url` (a deployment with the Responses API calls those itself; the gateway's own MCP servers are `server_url: \"{}\"`)",
                crate::mcp::PROXY_URL
            ),
            "tools",
        )),
        Some(other) => Err(unsupported(format!("the `{other}` tool"), "tools")),
        None => Err(ApiError::bad_request("a tool needs a `type`").with_param("tools")),
    }
}

fn tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(_) => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => Ok(
            json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or(Value::Null)}}),
        ),
        _ => Err(unsupported(
            format!("`tool_choice` {choice}"),
            "tool_choice",
        )),
    }
}

/// What a translated answer is known by.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The response id the client sees.
    pub id: String,
    pub created_at: u64,
    /// The model group.
    pub model: String,
}

/// A `response` object: `meta`, the output, usage and status, and the request's settings
/// echoed as OpenAI echoes them.
fn response_object(
    req: &Map<String, Value>,
    meta: &Meta,
    status: &str,
    finish: Option<&str>,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let incomplete = match finish {
        Some("length") => json!({"reason": "max_output_tokens"}),
        Some("content_filter") => json!({"reason": "content_filter"}),
        _ => Value::Null,
    };
    let get = |k: &str, default: Value| req.get(k).cloned().unwrap_or(default);
    json!({
        "id": meta.id,
        "object": "response",
        "created_at": meta.created_at,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": get("instructions", Value::Null),
        "max_output_tokens": get("max_output_tokens", Value::Null),
        "model": meta.model,
        "output": output,
        "parallel_tool_calls": get("parallel_tool_calls", json!(true)),
        "previous_response_id": get("previous_response_id", Value::Null),
        "reasoning": get("reasoning", json!({"effort": null, "summary": null})),
        "store": get("store", json!(true)),
        "temperature": get("temperature", json!(1.0)),
        "text": get("text", json!({"format": {"type": "text"}})),
        "tool_choice": get("tool_choice", json!("auto")),
        "tools": get("tools", json!([])),
        "top_p": get("top_p", json!(1.0)),
        "truncation": get("truncation", json!("disabled")),
        "usage": usage,
        "user": get("user", Value::Null),
        "metadata": get("metadata", json!({})),
    })
}

/// The status for a chat finish reason.
fn status(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length" | "content_filter") => "incomplete",
        _ => "completed",
    }
}

/// A Responses `usage` from a chat one.
fn usage(chat: Option<&Value>) -> Value {
    let Some(u) = chat.filter(|u| !u.is_null()) else {
        return Value::Null;
    };
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    json!({
        "input_tokens": n("/prompt_tokens"),
        "input_tokens_details": {"cached_tokens": n("/prompt_tokens_details/cached_tokens")},
        "output_tokens": n("/completion_tokens"),
        "output_tokens_details": {"reasoning_tokens": n("/completion_tokens_details/reasoning_tokens")},
        "total_tokens": n("/prompt_tokens") + n("/completion_tokens"),
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

fn call_item(id: &str, call_id: &Value, name: &Value, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status,
    })
}

/// A `response` from a chat answer in OpenAI's format.
pub fn response(req: &Map<String, Value>, meta: &Meta, chat: &Value) -> Value {
    let choice = chat.pointer("/choices/0");
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    let mut output = Vec::new();
    if let Some(m) = choice.and_then(|c| c.get("message")) {
        let text = m
            .get("content")
            .map(super::content_text)
            .unwrap_or_default();
        if !text.is_empty() {
            output.push(message_item(
                &format!("msg_{}", meta.id),
                &text,
                "completed",
            ));
        }
        for (i, call) in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            output.push(call_item(
                &format!("fc_{}_{i}", meta.id),
                call.get("id").unwrap_or(&Value::Null),
                call.pointer("/function/name").unwrap_or(&Value::Null),
                call.pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}"),
                "completed",
            ));
        }
    }
    response_object(
        req,
        meta,
        status(finish),
        finish,
        output,
        usage(chat.get("usage")),
    )
}

/// The chat messages an answer adds to the conversation: its text and function calls, as
/// one assistant message (none for an empty answer).
pub fn output_messages(response: &Value) -> Vec<Value> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for item in response
        .get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for p in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    text.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default());
                }
            }
            Some("function_call") => calls.push(json!({
                "id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            })),
            _ => {}
        }
    }
    if text.is_empty() && calls.is_empty() {
        return Vec::new();
    }
    let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    vec![m]
}

/// An output item being streamed.
enum Open {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: Value,
        name: Value,
        arguments: String,
    },
}

/// What to do with the finished `response` before the client hears that it is complete
/// (store it, so that a follow-up can name it at once).
pub type OnDone = Box<dyn FnOnce(&Value) + Send>;

/// OpenAI `chat.completion.chunk`s → the Responses API's events.
pub struct ChunksToResponses {
    req: Map<String, Value>,
    meta: Meta,
    seq: u64,
    started: bool,
    /// Output items, finished ones first; the open ones last.
    output: Vec<Value>,
    /// Open items by output index: the message, then function calls by chat tool index.
    text: Option<(usize, Open)>,
    calls: Vec<(u64, usize, Open)>,
    finish: Option<String>,
    usage: Value,
    ended: bool,
    /// The upstream's `[DONE]` arrived.
    done: bool,
    on_done: Option<OnDone>,
}

impl ChunksToResponses {
    pub fn new(req: Map<String, Value>, meta: Meta, on_done: Option<OnDone>) -> Self {
        Self {
            req,
            meta,
            seq: 0,
            started: false,
            output: Vec::new(),
            text: None,
            calls: Vec::new(),
            finish: None,
            usage: Value::Null,
            ended: false,
            done: false,
            on_done,
        }
    }

    fn emit(&mut self, kind: &str, mut data: Value, out: &mut Vec<Bytes>) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push(sse::named_json(kind, &data));
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = response_object(
            &self.req,
            &self.meta,
            "in_progress",
            None,
            Vec::new(),
            Value::Null,
        );
        self.emit("response.created", json!({"response": r}), out);
        let r = response_object(
            &self.req,
            &self.meta,
            "in_progress",
            None,
            Vec::new(),
            Value::Null,
        );
        self.emit("response.in_progress", json!({"response": r}), out);
    }

    fn text_delta(&mut self, delta: &str, out: &mut Vec<Bytes>) {
        if self.text.is_none() {
            let index = self.output.len() + self.calls.len();
            let id = format!("msg_{}_{index}", self.meta.id);
            let mut item = message_item(&id, "", "in_progress");
            item["content"] = json!([]);
            self.emit(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
                out,
            );
            self.emit(
                "response.content_part.added",
                json!({"output_index": index, "item_id": id, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
                out,
            );
            self.text = Some((
                index,
                Open::Text {
                    id,
                    text: String::new(),
                },
            ));
        }
        let Some((index, Open::Text { id, text })) = &mut self.text else {
            return;
        };
        text.push_str(delta);
        let data = json!({"output_index": *index, "item_id": id, "content_index": 0,
                          "delta": delta, "logprobs": []});
        self.emit("response.output_text.delta", data, out);
    }

    fn call_delta(&mut self, call: &Value, out: &mut Vec<Bytes>) {
        let tool_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        if !self.calls.iter().any(|(t, _, _)| *t == tool_index) {
            // A message before the calls is finished: its text has all arrived.
            self.close_text(out);
            let index = self.output.len() + self.calls.len();
            let id = format!("fc_{}_{tool_index}", self.meta.id);
            let call_id = call.get("id").cloned().unwrap_or(Value::Null);
            let name = call
                .pointer("/function/name")
                .cloned()
                .unwrap_or(Value::Null);
            let item = call_item(&id, &call_id, &name, "", "in_progress");
            self.emit(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
                out,
            );
            self.calls.push((
                tool_index,
                index,
                Open::Call {
                    id,
                    call_id,
                    name,
                    arguments: String::new(),
                },
            ));
        }
        let Some(delta) = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        else {
            return;
        };
        let Some((_, index, Open::Call { id, arguments, .. })) =
            self.calls.iter_mut().find(|(t, _, _)| *t == tool_index)
        else {
            return;
        };
        arguments.push_str(delta);
        let data = json!({"output_index": *index, "item_id": id, "delta": delta});
        self.emit("response.function_call_arguments.delta", data, out);
    }

    fn close_text(&mut self, out: &mut Vec<Bytes>) {
        let Some((index, Open::Text { id, text })) = self.text.take() else {
            return;
        };
        self.emit(
            "response.output_text.done",
            json!({"output_index": index, "item_id": id, "content_index": 0, "text": text, "logprobs": []}),
            out,
        );
        self.emit(
            "response.content_part.done",
            json!({"output_index": index, "item_id": id, "content_index": 0,
                   "part": {"type": "output_text", "text": text, "annotations": []}}),
            out,
        );
        let item = message_item(&id, &text, "completed");
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item.clone()}),
            out,
        );
        self.output.push(item);
    }

    fn close_calls(&mut self, out: &mut Vec<Bytes>) {
        for (_, index, open) in std::mem::take(&mut self.calls) {
            let Open::Call {
                id,
                call_id,
                name,
                arguments,
            } = open
            else {
                continue;
            };
            self.emit(
                "response.function_call_arguments.done",
                json!({"output_index": index, "item_id": id, "arguments": arguments}),
                out,
            );
            let item = call_item(&id, &call_id, &name, &arguments, "completed");
            self.emit(
                "response.output_item.done",
                json!({"output_index": index, "item": item.clone()}),
                out,
            );
            self.output.push(item);
        }
    }

    fn end(&mut self, out: &mut Vec<Bytes>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.start(out);
        // Open items close in the order of their output indices.
        let text_after_calls = matches!(
            (self.text.as_ref(), self.calls.first()),
            (Some((t, _)), Some((_, c, _))) if c < t
        );
        if text_after_calls {
            self.close_calls(out);
            self.close_text(out);
        } else {
            self.close_text(out);
            self.close_calls(out);
        }
        let finish = self.finish.clone();
        // A stream that broke off (no finish reason, and no `[DONE]`: the converter is
        // finished by the end of the upstream's body) is not a complete answer.
        let status = match (&finish, self.done) {
            (None, false) => "incomplete",
            _ => status(finish.as_deref()),
        };
        let r = response_object(
            &self.req,
            &self.meta,
            status,
            finish.as_deref(),
            self.output.clone(),
            self.usage.clone(),
        );
        if let Some(f) = self.on_done.take() {
            f(&r);
        }
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(kind, json!({"response": r}), out);
    }
}

impl StreamConverter for ChunksToResponses {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        if self.ended {
            return;
        }
        if ev.data.trim() == "[DONE]" {
            self.done = true;
            self.end(out);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        if let Some(err) = chunk.get("error") {
            self.ended = true;
            let data = json!({
                "code": err.get("code").cloned().unwrap_or(Value::Null),
                "message": err.get("message").cloned().unwrap_or(json!("upstream error")),
                "param": err.get("param").cloned().unwrap_or(Value::Null),
            });
            self.emit("error", data, out);
            return;
        }
        self.start(out);
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = usage(Some(u));
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return;
        };
        if let Some(text) = choice
            .pointer("/delta/content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.text_delta(text, out);
        }
        for call in choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.call_delta(call, out);
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_owned());
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        self.end(out);
    }

    /// The chain's first converter reads the usage.
    fn usage(&self) -> Option<Usage> {
        None
    }
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
    fn request_maps_onto_chat() {
        let req = map(json!({
            "model": "g", "instructions": "be brief", "max_output_tokens": 50,
            "temperature": 0.3, "store": true, "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                              {"type": "input_image", "image_url": "data:x", "detail": "low"}]},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "reasoning", "id": "r", "summary": []},
            ],
        }));
        let history = [json!({"role": "user", "content": "before"})];
        let chat = request(&req, &history).unwrap();
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[1]["content"], "before");
        assert_eq!(
            m[2]["content"][1]["image_url"],
            json!({"url": "data:x", "detail": "low"})
        );
        assert_eq!(m[3]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            m[4],
            json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
        );
        assert_eq!(m.len(), 5);
        assert_eq!(chat["max_tokens"], 50);
        assert_eq!(chat["reasoning_effort"], "low");
        assert_eq!(chat["response_format"]["json_schema"]["name"], "w");
        assert_eq!(chat["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(chat["tool_choice"]["function"]["name"], "get_weather");
        assert!(chat.get("store").is_none() && chat.get("instructions").is_none());
        assert_eq!(chat["temperature"], 0.3);

        let web = map(json!({"model": "g", "input": "x", "tools": [{"type": "web_search"}]}));
        assert_eq!(request(&web, &[]).unwrap_err().param, Some("tools"));
        let file = map(
            json!({"model": "g", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
        );
        assert_eq!(request(&file, &[]).unwrap_err().status, 400);
    }

    #[test]
    fn chat_answer_becomes_a_response() {
        let req = map(json!({"model": "g", "input": "x", "max_output_tokens": 5}));
        let meta = Meta {
            id: "resp_1".into(),
            created_at: 7,
            model: "g".into(),
        };
        let chat = r#"{"choices":[{"index":0,"finish_reason":"length","message":{"role":"assistant","content":"Hi",
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}],
            "usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":2}}}"#;
        let r = response(&req, &meta, &serde_json::from_str(chat).unwrap());
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(r["output"][0]["content"][0]["text"], "Hi");
        assert_eq!(r["output"][1]["call_id"], "call_1");
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 2);
        assert_eq!(r["usage"]["total_tokens"], 8);
        let back = output_messages(&r);
        assert_eq!(back[0]["content"], "Hi");
        assert_eq!(back[0]["tool_calls"][0]["id"], "call_1");

        // And back to input items: a round trip gives the same chat messages.
        let mut conversation = input_messages(&json!([
            {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                          {"type": "input_image", "image_url": "data:x"}]},
        ]))
        .unwrap();
        conversation.extend(back);
        conversation.push(json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}));
        let items = history_items(&conversation);
        assert_eq!(items[2]["type"], "function_call");
        assert_eq!(input_messages(&Value::Array(items)).unwrap(), conversation);
    }

    /// Runs chat chunks (SSE `data`) through a converter to the end of the stream; returns
    /// the events it wrote and the response its `on_done` received.
    fn converted(id: &str, chunks: &[&str]) -> (Vec<bytes::Bytes>, Value) {
        let done = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = std::sync::Arc::clone(&done);
        let meta = Meta {
            id: id.into(),
            created_at: 7,
            model: "g".into(),
        };
        let on_done: OnDone = Box::new(move |r: &Value| *slot.lock().unwrap() = Some(r.clone()));
        let mut conv = ChunksToResponses::new(map(json!({"model": "g"})), meta, Some(on_done));
        let mut out = Vec::new();
        for data in chunks {
            let ev = Event {
                event: None,
                data: (*data).into(),
                raw: sse::data(data),
            };
            conv.event(&ev, &mut out);
        }
        conv.finish(&mut out);
        let r = done.lock().unwrap().clone().unwrap();
        (out, r)
    }

    #[test]
    fn a_stream_that_breaks_off_ends_incomplete() {
        let text = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}"#;
        // No finish reason but `[DONE]`: an upstream's quirk, the answer is whole.
        let (_, r) = converted("resp_1", &[text, "[DONE]"]);
        assert_eq!(r["status"], "completed");
        // Neither: the body ended mid-answer.
        let (out, r) = converted("resp_2", &[text]);
        assert_eq!(r["status"], "incomplete");
        assert!(r["incomplete_details"].is_null());
        let last = String::from_utf8(out.last().unwrap().to_vec()).unwrap();
        assert!(last.starts_with("event: response.incomplete"), "{last}");
    }

    #[test]
    fn chunks_become_events() {
        let (out, r) = converted(
            "resp_1",
            &[
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"content":"Hi "}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"content":"there"}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":""}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
                r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
                "[DONE]",
            ],
        );
        let kinds: Vec<String> = out
            .iter()
            .map(|b| {
                let s = String::from_utf8(b.to_vec()).unwrap();
                s.lines()
                    .next()
                    .unwrap()
                    .trim_start_matches("event: ")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(r["output"][0]["content"][0]["text"], "Hi there");
        assert_eq!(r["output"][1]["arguments"], "{}");
        assert_eq!(r["usage"]["output_tokens"], 2);
    }

    #[test]
    fn text_after_a_call_keeps_the_output_order() {
        let (_, r) = converted(
            "resp_2",
            &[
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":"{}"}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"content":"after"}}]}"#,
                "[DONE]",
            ],
        );
        assert_eq!(r["output"][0]["type"], "function_call");
        assert_eq!(r["output"][1]["type"], "message");
    }
}
