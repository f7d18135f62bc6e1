//! The GenAI attributes a provider attempt's span takes from the bodies it carries, as
//! OpenTelemetry's GenAI conventions name them (`open-telemetry/semantic-conventions-genai`
//! at `002c8a6`, `docs/gen-ai/gen-ai-spans.md`): the request's `gen_ai.request.*`
//! parameters, and the answer's `gen_ai.response.id` and `.finish_reasons`, read from a
//! whole body or from a stream's events in the client's format (OpenAI's chat, legacy
//! completions and Responses shapes, Anthropic's messages). With content capture on, the
//! opt-in `gen_ai.input.messages`, `gen_ai.system_instructions` and
//! `gen_ai.output.messages` too, as JSON in the conventions' parts format.
//!
//! Only sampled requests come here: nothing of this runs for a request whose span is
//! dropped.

use std::borrow::Cow;

use routeiq_service::telemetry::Attributes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ClientApi;
use crate::handlers::request::RawObject;
use crate::usage::{Lenient, RawUsage, Usage};

/// `gen_ai.request.*` of a chat request in `client`'s shape; with `capture`, its messages
/// (`gen_ai.input.messages`) and Anthropic's `system` (`gen_ai.system_instructions`).
pub fn request_attributes(req: &RawObject, client: ClientApi, capture: bool) -> Attributes {
    let mut attrs = Attributes::with_capacity(192);
    // One pass over the body's fields: a lookup for each would search them a dozen times.
    let number = |raw: &str| raw.parse::<f64>().ok().filter(|x| x.is_finite());
    let int = |raw: &str| raw.parse::<i64>().ok();
    let stop_field = match client {
        ClientApi::OpenAi => "stop",
        ClientApi::Anthropic => "stop_sequences",
    };
    let (mut max_completion_tokens, mut max_tokens, mut seed, mut n) = (None, None, None, None);
    let (mut stop, mut format) = (None, None);
    let (mut temperature, mut top_p, mut top_k) = (None, None, None);
    let (mut frequency_penalty, mut presence_penalty) = (None, None);
    for (field, raw) in req.fields() {
        // Matched by name (lengths compared first), not searched for in a table.
        match field {
            "max_completion_tokens" => max_completion_tokens = int(raw),
            "max_tokens" => max_tokens = int(raw),
            "seed" => seed = int(raw),
            "n" => n = int(raw),
            "response_format" => format = Some(raw),
            "temperature" => temperature = number(raw),
            "top_p" => top_p = number(raw),
            "top_k" => top_k = number(raw),
            "frequency_penalty" => frequency_penalty = number(raw),
            "presence_penalty" => presence_penalty = number(raw),
            f if f == stop_field => stop = Some(raw),
            _ => {}
        }
    }
    if let Some(n) = max_completion_tokens.or(max_tokens) {
        attrs.int("gen_ai.request.max_tokens", n);
    }
    for (name, x) in [
        ("gen_ai.request.temperature", temperature),
        ("gen_ai.request.top_p", top_p),
        ("gen_ai.request.top_k", top_k),
        ("gen_ai.request.frequency_penalty", frequency_penalty),
        ("gen_ai.request.presence_penalty", presence_penalty),
    ] {
        if let Some(x) = x {
            attrs.float(name, x);
        }
    }
    if let Some(seed) = seed {
        attrs.int("gen_ai.request.seed", seed);
    }
    // Required only when it is not 1.
    if let Some(n) = n.filter(|n| *n != 1) {
        attrs.int("gen_ai.request.choice.count", n);
    }
    let stops: Vec<String> = match stop.and_then(|r| serde_json::from_str(r).ok()) {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !stops.is_empty() {
        attrs.strs(
            "gen_ai.request.stop_sequences",
            stops.iter().map(String::as_str),
        );
    }
    let format = format
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .and_then(|f| f.get("type").and_then(Value::as_str).map(str::to_owned));
    if let Some(t) = format {
        let output = if t == "text" { "text" } else { "json" };
        attrs.str("gen_ai.output.type", output);
    }
    if capture {
        let messages = req.value("messages").unwrap_or(Value::Null);
        let (system, input) = match client {
            ClientApi::OpenAi => (None, openai_messages(&messages)),
            ClientApi::Anthropic => (
                req.value("system").map(|s| parts_of_anthropic(&s)),
                anthropic_messages(&messages),
            ),
        };
        attrs.str("gen_ai.input.messages", &input.to_string());
        if let Some(system) = system {
            attrs.str("gen_ai.system_instructions", &system.to_string());
        }
    }
    attrs
}

/// OpenAI chat messages in the conventions' parts format.
fn openai_messages(messages: &Value) -> Value {
    let Some(list) = messages.as_array() else {
        return json!([]);
    };
    let out: Vec<Value> = list
        .iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            let mut parts = Vec::new();
            if role == "tool" {
                parts.push(json!({
                    "type": "tool_call_response",
                    "id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "result": text_of(m.get("content")),
                }));
            } else {
                parts.extend(content_parts(m.get("content")));
            }
            for call in m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                parts.push(openai_tool_call(call));
            }
            json!({ "role": role, "parts": parts })
        })
        .collect();
    Value::Array(out)
}

/// An OpenAI message's `content`: a string, or an array of typed parts (text as text,
/// anything else by its type alone).
fn content_parts(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![json!({ "type": "text", "content": s })],
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| match p.get("text").and_then(Value::as_str) {
                Some(t) => json!({ "type": "text", "content": t }),
                None => json!({ "type": p.get("type").cloned().unwrap_or(Value::Null) }),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The text of a string content or of an array of text parts.
fn text_of(content: Option<&Value>) -> String {
    content.map_or_else(String::new, crate::translate::content_lines)
}

/// An OpenAI tool call (`tool_calls[]`) as a `tool_call` part.
fn openai_tool_call(call: &Value) -> Value {
    let f = call.get("function");
    json!({
        "type": "tool_call",
        "id": call.get("id").cloned().unwrap_or(Value::Null),
        "name": f.and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null),
        "arguments": f.and_then(|f| f.get("arguments")).cloned().unwrap_or(Value::Null),
    })
}

/// An Anthropic `tool_use` block as a `tool_call` part.
fn anthropic_tool_call(block: &Value) -> Value {
    json!({
        "type": "tool_call",
        "id": block.get("id").cloned().unwrap_or(Value::Null),
        "name": block.get("name").cloned().unwrap_or(Value::Null),
        "arguments": block.get("input").cloned().unwrap_or(Value::Null),
    })
}

/// Anthropic messages in the conventions' parts format.
fn anthropic_messages(messages: &Value) -> Value {
    let Some(list) = messages.as_array() else {
        return json!([]);
    };
    let out: Vec<Value> = list
        .iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            let parts = match m.get("content") {
                Some(c) => parts_of_anthropic(c),
                None => json!([]),
            };
            json!({ "role": role, "parts": parts })
        })
        .collect();
    Value::Array(out)
}

/// Anthropic content (a string or blocks) as parts.
fn parts_of_anthropic(content: &Value) -> Value {
    let blocks = match content {
        Value::String(s) => return json!([{ "type": "text", "content": s }]),
        Value::Array(b) => b,
        _ => return json!([]),
    };
    let parts: Vec<Value> = blocks
        .iter()
        .map(|b| match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                json!({ "type": "text", "content": b.get("text").cloned().unwrap_or(Value::Null) })
            }
            Some("tool_use") => anthropic_tool_call(b),
            Some("tool_result") => json!({
                "type": "tool_call_response",
                "id": b.get("tool_use_id").cloned().unwrap_or(Value::Null),
                "result": text_of(b.get("content")),
            }),
            other => json!({ "type": other }),
        })
        .collect();
    Value::Array(parts)
}

/// What an answer says of itself, gathered from its body or its stream.
#[derive(Debug, Default)]
pub struct Answer {
    capture: bool,
    id: Option<String>,
    /// Per choice, in index order: its finish reason and, with capture, its text and tool
    /// calls. Only the choices the answer names.
    choices: Vec<(usize, Choice)>,
}

/// The fields of a whole answer read without content capture, borrowed from the body
/// where they need no unescaping: OpenAI's chat and completions (`id`, each choice's
/// `finish_reason`), Anthropic's message (`type`, `id`, `stop_reason`) and the Responses
/// API's response (`object`, `id`, `status`). Any other field is skipped unread; a body in
/// which one of these has another type falls back to the JSON tree.
#[derive(Debug, Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<HeadChoice<'a>>>,
    /// Read here so that a caller that needs the usage too reads the body once.
    #[serde(default)]
    usage: Lenient<RawUsage>,
}

#[derive(Debug, Deserialize)]
struct HeadChoice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

/// The most choices read of one answer (OpenAI's bound on `n`); a higher index is ignored.
const MAX_CHOICES: usize = 128;

#[derive(Debug, Default)]
struct Choice {
    finish_reason: Option<String>,
    text: String,
    tool_calls: Vec<Value>,
}

impl Answer {
    pub fn new(capture: bool) -> Self {
        Self {
            capture,
            ..Self::default()
        }
    }

    /// The choice at `index` (below [`MAX_CHOICES`]), made on its first mention.
    fn choice(&mut self, index: usize) -> &mut Choice {
        let at = match self.choices.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => at,
            Err(at) => {
                self.choices.insert(at, (index, Choice::default()));
                at
            }
        };
        &mut self.choices[at].1
    }

    /// A whole answer in the client's format, and its usage (read in the same pass). Without
    /// content capture only its id, finish reasons and usage are read, borrowed from the
    /// body ([`Head`]): a span then costs no JSON tree of the answer.
    pub fn read_body(&mut self, body: &[u8]) -> Option<Usage> {
        if !self.capture {
            if let Ok(mut head) = serde_json::from_slice::<Head<'_>>(body) {
                let usage = std::mem::take(&mut head.usage);
                if self.read_head(head) {
                    return usage.0.and_then(|u| u.usage());
                }
            }
        }
        let v = serde_json::from_slice::<Value>(body).ok()?;
        self.read_object(&v, false);
        v.get("usage").and_then(Usage::from_json)
    }

    /// What [`Self::read_object`] takes from a whole answer without capture; `false` for a
    /// shape it does not cover (a stream's event), left to [`Self::read_object`].
    fn read_head(&mut self, h: Head<'_>) -> bool {
        if h.object.as_deref() == Some("response") {
            self.read_status(h.id.as_deref(), h.status.as_deref());
            return true;
        }
        match h.kind.as_deref() {
            Some("message") => {
                self.set_id(h.id.as_deref());
                self.choice(0).finish_reason = h.stop_reason.map(Cow::into_owned);
            }
            Some(
                "message_start"
                | "content_block_delta"
                | "message_delta"
                | "response.created"
                | "response.completed"
                | "response.incomplete"
                | "response.failed"
                | "response.output_text.delta",
            ) => return false,
            _ => {
                self.set_id(h.id.as_deref());
                for (i, choice) in h.choices.unwrap_or_default().into_iter().enumerate() {
                    let index = choice
                        .index
                        .map_or(i, |n| usize::try_from(n).unwrap_or(usize::MAX));
                    if index >= MAX_CHOICES {
                        continue;
                    }
                    let c = self.choice(index);
                    if let Some(r) = choice.finish_reason {
                        c.finish_reason = Some(r.into_owned());
                    }
                }
            }
        }
        true
    }

    fn set_id(&mut self, id: Option<&str>) {
        if self.id.is_none() {
            self.id = id.map(str::to_owned);
        }
    }

    /// A whole answer already parsed.
    pub fn read_value(&mut self, v: &Value) {
        self.read_object(v, false);
    }

    /// The events a stream sent the client (`data:` lines of server-sent events).
    pub fn read_events(&mut self, events: &[bytes::Bytes]) {
        for e in events {
            for line in e.split(|b| *b == b'\n') {
                let Some(data) = line.strip_prefix(b"data:") else {
                    continue;
                };
                if let Ok(v) = serde_json::from_slice::<Value>(data.trim_ascii()) {
                    self.read_object(&v, true);
                }
            }
        }
    }

    /// One answer object or stream event, of whichever shape it is.
    fn read_object(&mut self, v: &Value, delta: bool) {
        let set_id = |a: &mut Self, id: Option<&Value>| a.set_id(id.and_then(Value::as_str));
        if v.get("object").and_then(Value::as_str) == Some("response") {
            // OpenAI's Responses API, whole.
            return self.read_response(v);
        }
        match v.get("type").and_then(Value::as_str) {
            // Anthropic's stream.
            Some("message_start") => set_id(self, v.get("message").and_then(|m| m.get("id"))),
            Some("content_block_delta") => {
                if self.capture {
                    if let Some(t) = v
                        .get("delta")
                        .and_then(|d| d.get("text"))
                        .and_then(Value::as_str)
                    {
                        self.choice(0).text.push_str(t);
                    }
                }
            }
            Some("message_delta") => {
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.choice(0).finish_reason = Some(r.to_owned());
                }
            }
            // Anthropic's whole message.
            Some("message") => {
                set_id(self, v.get("id"));
                let capture = self.capture;
                let c = self.choice(0);
                c.finish_reason = v
                    .get("stop_reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if capture {
                    for b in v
                        .get("content")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        match b.get("type").and_then(Value::as_str) {
                            Some("text") => c
                                .text
                                .push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                            Some("tool_use") => c.tool_calls.push(anthropic_tool_call(b)),
                            _ => {}
                        }
                    }
                }
            }
            // OpenAI's Responses API stream.
            Some(
                "response.created"
                | "response.completed"
                | "response.incomplete"
                | "response.failed",
            ) => {
                if let Some(r) = v.get("response") {
                    self.read_response_status(r);
                }
            }
            Some("response.output_text.delta") => {
                if self.capture {
                    if let Some(t) = v.get("delta").and_then(Value::as_str) {
                        self.choice(0).text.push_str(t);
                    }
                }
            }
            // OpenAI chat (or legacy completions), whole or a chunk.
            _ => {
                set_id(self, v.get("id"));
                let capture = self.capture;
                for (i, choice) in v
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let index = choice
                        .get("index")
                        .and_then(Value::as_u64)
                        .map_or(i, |n| usize::try_from(n).unwrap_or(usize::MAX));
                    if index >= MAX_CHOICES {
                        continue;
                    }
                    let c = self.choice(index);
                    if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                        c.finish_reason = Some(r.to_owned());
                    }
                    if !capture {
                        continue;
                    }
                    let message = choice.get(if delta { "delta" } else { "message" });
                    let text = message
                        .and_then(|m| m.get("content"))
                        .or_else(|| choice.get("text"))
                        .and_then(Value::as_str);
                    if let Some(t) = text {
                        c.text.push_str(t);
                    }
                    // A stream's tool calls come in pieces: only a whole answer's are kept.
                    if !delta {
                        for call in message
                            .and_then(|m| m.get("tool_calls"))
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            c.tool_calls.push(openai_tool_call(call));
                        }
                    }
                }
            }
        }
    }

    /// A whole Responses API response.
    fn read_response(&mut self, r: &Value) {
        self.read_response_status(r);
        if !self.capture {
            return;
        }
        let text: String = r
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|o| {
                o.get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect();
        self.choice(0).text.push_str(&text);
    }

    fn read_response_status(&mut self, r: &Value) {
        self.read_status(
            r.get("id").and_then(Value::as_str),
            r.get("status").and_then(Value::as_str),
        );
    }

    /// A Responses API response's id and status (its finish reason once it is final).
    fn read_status(&mut self, id: Option<&str>, status: Option<&str>) {
        self.set_id(id);
        match status {
            None | Some("in_progress" | "queued") => {}
            Some(s) => self.choice(0).finish_reason = Some(s.to_owned()),
        }
    }

    /// `gen_ai.response.id`, `.finish_reasons`, and with capture `gen_ai.output.messages`.
    pub fn write_attributes(self, attrs: &mut Attributes) {
        if let Some(id) = &self.id {
            attrs.str("gen_ai.response.id", id);
        }
        let mut reasons = self
            .choices
            .iter()
            .filter_map(|(_, c)| c.finish_reason.as_deref())
            .peekable();
        if reasons.peek().is_some() {
            attrs.strs("gen_ai.response.finish_reasons", reasons);
        }
        if self.capture && !self.choices.is_empty() {
            let messages: Vec<Value> = self
                .choices
                .into_iter()
                .map(|(_, c)| {
                    let mut parts = Vec::new();
                    if !c.text.is_empty() {
                        parts.push(json!({ "type": "text", "content": c.text }));
                    }
                    parts.extend(c.tool_calls);
                    let mut m = Map::new();
                    m.insert("role".into(), "assistant".into());
                    m.insert("parts".into(), Value::Array(parts));
                    m.insert(
                        "finish_reason".into(),
                        c.finish_reason.map_or(Value::Null, Value::String),
                    );
                    Value::Object(m)
                })
                .collect();
            attrs.str(
                "gen_ai.output.messages",
                &Value::Array(messages).to_string(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::{Array, KeyValue, Value as OtelValue};

    use super::*;

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a OtelValue> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn request_parameters_of_another_type_are_left_out() {
        let odd = RawObject::parse(
            br#"{"model":"m","messages":[],"temperature":"0.7","top_p":null,"seed":1.5,"n":null,
                "max_tokens":1e3,"presence_penalty":1e400,"stop_sequences":["x"],"stop":7,
                "response_format":"json"}"#,
        )
        .unwrap();
        let a = request_attributes(&odd, ClientApi::OpenAi, false).to_key_values();
        assert!(a.is_empty(), "{a:?}");
        // An integer written as one where a number is asked for.
        let whole = RawObject::parse(br#"{"temperature":1,"max_tokens":-1}"#).unwrap();
        let a = request_attributes(&whole, ClientApi::Anthropic, false).to_key_values();
        assert_eq!(
            attr(&a, "gen_ai.request.temperature"),
            Some(&OtelValue::F64(1.0))
        );
        assert_eq!(
            attr(&a, "gen_ai.request.max_tokens"),
            Some(&OtelValue::I64(-1))
        );
    }

    #[test]
    fn request_parameters_of_both_shapes() {
        let openai = RawObject::parse(
            br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"42"}],
                "max_completion_tokens":50,"temperature":0.2,"top_p":0.9,"seed":7,"n":2,"stop":"END","frequency_penalty":0.5,"presence_penalty":-0.5,"response_format":{"type":"json_object"}}"#,
        )
        .unwrap();
        let a = request_attributes(&openai, ClientApi::OpenAi, false).to_key_values();
        assert_eq!(
            attr(&a, "gen_ai.request.max_tokens"),
            Some(&OtelValue::I64(50))
        );
        assert_eq!(
            attr(&a, "gen_ai.request.temperature"),
            Some(&OtelValue::F64(0.2))
        );
        assert_eq!(attr(&a, "gen_ai.request.top_p"), Some(&OtelValue::F64(0.9)));
        assert_eq!(attr(&a, "gen_ai.request.seed"), Some(&OtelValue::I64(7)));
        assert_eq!(
            attr(&a, "gen_ai.request.choice.count"),
            Some(&OtelValue::I64(2))
        );
        assert_eq!(
            attr(&a, "gen_ai.request.frequency_penalty"),
            Some(&OtelValue::F64(0.5))
        );
        assert_eq!(
            attr(&a, "gen_ai.request.presence_penalty"),
            Some(&OtelValue::F64(-0.5))
        );
        assert_eq!(
            attr(&a, "gen_ai.request.stop_sequences"),
            Some(&OtelValue::Array(Array::String(vec!["END".into()])))
        );
        assert_eq!(
            attr(&a, "gen_ai.output.type"),
            Some(&OtelValue::from("json"))
        );
        // No content without capture.
        assert!(attr(&a, "gen_ai.input.messages").is_none());

        let captured = request_attributes(&openai, ClientApi::OpenAi, true).to_key_values();
        let input: Value = serde_json::from_str(
            &attr(&captured, "gen_ai.input.messages")
                .unwrap()
                .to_string(),
        )
        .unwrap();
        assert_eq!(
            input,
            json!([
                {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                {"role": "user", "parts": [{"type": "text", "content": "hi"}, {"type": "image_url"}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "result": "42"}]},
            ])
        );

        let anthropic = RawObject::parse(
            br#"{"model":"m","max_tokens":20,"top_k":5,"stop_sequences":["a","b"],"system":"sys","messages":[{"role":"user","content":"hello"}],"n":1}"#,
        )
        .unwrap();
        let a = request_attributes(&anthropic, ClientApi::Anthropic, true).to_key_values();
        assert_eq!(
            attr(&a, "gen_ai.request.max_tokens"),
            Some(&OtelValue::I64(20))
        );
        assert_eq!(attr(&a, "gen_ai.request.top_k"), Some(&OtelValue::F64(5.0)));
        assert!(
            attr(&a, "gen_ai.request.choice.count").is_none(),
            "n = 1 is not recorded"
        );
        assert_eq!(
            attr(&a, "gen_ai.request.stop_sequences"),
            Some(&OtelValue::Array(Array::String(vec![
                "a".into(),
                "b".into()
            ])))
        );
        assert_eq!(
            attr(&a, "gen_ai.system_instructions").unwrap().to_string(),
            r#"[{"content":"sys","type":"text"}]"#
        );
    }

    fn events(lines: &[&'static str]) -> Vec<bytes::Bytes> {
        lines.iter().copied().map(bytes::Bytes::from).collect()
    }

    fn answer_of<T>(capture: bool, read: impl FnOnce(&mut Answer) -> T) -> Vec<KeyValue> {
        let mut a = Answer::new(capture);
        read(&mut a);
        let mut attrs = Attributes::default();
        a.write_attributes(&mut attrs);
        attrs.to_key_values()
    }

    #[test]
    fn a_body_read_without_capture_gives_what_its_json_tree_gives() {
        let bodies: [&[u8]; 9] = [
            br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"yes"},"finish_reason":"stop"},{"index":1,"message":{"content":null,"tool_calls":[]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3}}"#,
            br#"{"id":"x","choices":[{"index":40,"finish_reason":"stop"},{"index":1000,"finish_reason":"length"},{"finish_reason":null}]}"#,
            br#"{"id":"cmpl-\u00e9\"q","object":"text_completion","choices":[{"text":"a","index":0,"finish_reason":"length"}]}"#,
            br#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":1}}"#,
            br#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"ok"}]}]}"#,
            br#"{"id":"resp_2","object":"response","status":"in_progress"}"#,
            // Shapes the borrowed read does not take: left to the tree.
            br#"{"id":7,"choices":null,"status":{"a":1}}"#,
            br#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"}}"#,
            br#"{"id":"y","choices":[{"index":-1,"finish_reason":"stop"}]}"#,
        ];
        for body in bodies {
            let borrowed = answer_of(false, |a| a.read_body(body));
            let tree: Value = serde_json::from_slice(body).unwrap();
            let whole = answer_of(false, |a| a.read_value(&tree));
            assert_eq!(borrowed, whole, "{}", String::from_utf8_lossy(body));
            // The usage read in the same pass is the one read alone, with capture or not.
            for capture in [false, true] {
                assert_eq!(
                    Answer::new(capture).read_body(body),
                    crate::usage::from_body(body),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        assert!(Answer::new(false).read_body(bodies[0]).is_some());
        let a = answer_of(false, |a| a.read_body(bodies[2]));
        assert_eq!(
            attr(&a, "gen_ai.response.id"),
            Some(&OtelValue::from("cmpl-\u{e9}\"q"))
        );
        assert!(answer_of(false, |a| a.read_body(bodies[3])).len() == 2);
    }

    #[test]
    fn answers_whole_and_streamed() {
        let body = br#"{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant","content":"yes"},"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"no"},"finish_reason":"length"}]}"#;
        let a = answer_of(true, |a| a.read_body(body));
        assert_eq!(
            attr(&a, "gen_ai.response.id"),
            Some(&OtelValue::from("chatcmpl-1"))
        );
        assert_eq!(
            attr(&a, "gen_ai.response.finish_reasons"),
            Some(&OtelValue::Array(Array::String(vec![
                "stop".into(),
                "length".into()
            ])))
        );
        let out: Value =
            serde_json::from_str(&attr(&a, "gen_ai.output.messages").unwrap().to_string()).unwrap();
        assert_eq!(
            out[1],
            json!({"role": "assistant", "parts": [{"type": "text", "content": "no"}], "finish_reason": "length"})
        );
        // A high index is a choice of its own; past OpenAI's bound on `n` it is ignored.
        let sparse = br#"{"id":"x","choices":[{"index":40,"message":{"content":"a"},"finish_reason":"stop"},{"index":1000,"message":{"content":"b"},"finish_reason":"length"}]}"#;
        let a = answer_of(true, |a| a.read_body(sparse));
        assert_eq!(
            attr(&a, "gen_ai.response.finish_reasons"),
            Some(&OtelValue::Array(Array::String(vec!["stop".into()])))
        );
        let out: Value =
            serde_json::from_str(&attr(&a, "gen_ai.output.messages").unwrap().to_string()).unwrap();
        assert_eq!(out.as_array().unwrap().len(), 1);
        // Without capture: no content.
        let a = answer_of(false, |a| a.read_body(body));
        assert!(attr(&a, "gen_ai.output.messages").is_none());
        assert!(attr(&a, "gen_ai.response.finish_reasons").is_some());

        let chunks = events(&[
            "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"he\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        ]);
        let a = answer_of(true, |a| a.read_events(&chunks));
        assert_eq!(attr(&a, "gen_ai.response.id"), Some(&OtelValue::from("c2")));
        assert!(attr(&a, "gen_ai.output.messages")
            .unwrap()
            .to_string()
            .contains("\"hello\""));

        let anthropic = events(&[
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n",
        ]);
        let a = answer_of(false, |a| a.read_events(&anthropic));
        assert_eq!(
            attr(&a, "gen_ai.response.id"),
            Some(&OtelValue::from("msg_1"))
        );
        assert_eq!(
            attr(&a, "gen_ai.response.finish_reasons"),
            Some(&OtelValue::Array(Array::String(vec!["end_turn".into()])))
        );
    }
}
