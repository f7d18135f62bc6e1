//! Streaming responses: one converter per (provider format → client format) pair. Each
//! takes upstream SSE events and produces the bytes the client receives, and keeps track of
//! token usage on the way.

use bytes::Bytes;
use serde_json::{json, Value};

use super::anthropic_to_openai::{message_id, stop_reason};
use super::openai_to_anthropic::{finish_reason, openai_usage};
use super::openai_to_bedrock as bedrock;
use super::openai_to_cohere as cohere;
use super::openai_to_gemini as gemini;
use super::ChatFormat;
use crate::clock::now_secs;
use crate::cost::Prices;
use crate::error::{ApiError, ClientApi};
use crate::sse::{self, Event};
use crate::usage::Usage;

pub trait StreamConverter: Send {
    /// Handles one upstream event, appending what the client should get to `out`.
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>);
    /// The upstream stream ended; append any closing events.
    fn finish(&mut self, out: &mut Vec<Bytes>);
    fn usage(&self) -> Option<Usage>;
}

/// Picks the converter for a provider format and a client format. OpenAI clients that
/// get the usage chunk find the request's cost in it (`usage.cost`, USD at `prices`), as
/// LiteLLM adds it: a stream's headers go out before its cost is known.
pub fn converter(
    provider: ChatFormat,
    client: ClientApi,
    client_wants_usage: bool,
    model: &str,
    prices: Prices,
) -> Box<dyn StreamConverter> {
    match (provider, client) {
        (ChatFormat::OpenAi, ClientApi::OpenAi) => Box::new(OpenAiPassthrough {
            drop_usage_chunk: !client_wants_usage,
            usage: None,
            prices,
        }),
        (ChatFormat::Anthropic, ClientApi::Anthropic) => Box::new(AnthropicPassthrough::default()),
        (ChatFormat::Anthropic, ClientApi::OpenAi) => Box::new(AnthropicToOpenAi {
            include_usage: client_wants_usage,
            model: model.to_owned(),
            prices,
            ..Default::default()
        }),
        (ChatFormat::OpenAi, ClientApi::Anthropic) => Box::new(OpenAiToAnthropic {
            model: model.to_owned(),
            ..Default::default()
        }),
        (ChatFormat::Gemini, ClientApi::OpenAi) => Box::new(GeminiToOpenAi {
            include_usage: client_wants_usage,
            model: model.to_owned(),
            prices,
            ..Default::default()
        }),
        (ChatFormat::Bedrock, ClientApi::OpenAi) => Box::new(BedrockToOpenAi {
            include_usage: client_wants_usage,
            model: model.to_owned(),
            prices,
            ..Default::default()
        }),
        (ChatFormat::Cohere, ClientApi::OpenAi) => Box::new(CohereToOpenAi {
            include_usage: client_wants_usage,
            model: model.to_owned(),
            prices,
            ..Default::default()
        }),
        // Through the OpenAI format: provider → OpenAI chunks → Anthropic events.
        (ChatFormat::Gemini | ChatFormat::Bedrock | ChatFormat::Cohere, ClientApi::Anthropic) => {
            Box::new(Chain {
                first: converter(provider, ClientApi::OpenAi, true, model, prices),
                second: Box::new(OpenAiToAnthropic {
                    model: model.to_owned(),
                    ..Default::default()
                }),
                parser: sse::Parser::default(),
                between: Vec::new(),
            })
        }
    }
}

/// A legacy text-completions stream from a deployment answering in chat: its chunks in
/// OpenAI's chat format first, then as `text_completion` chunks.
pub fn completions_through_chat(
    provider: ChatFormat,
    client_wants_usage: bool,
    model: &str,
    prices: Prices,
) -> Box<dyn StreamConverter> {
    Box::new(Chain {
        first: converter(
            provider,
            ClientApi::OpenAi,
            client_wants_usage,
            model,
            prices,
        ),
        second: Box::new(super::chat_to_completions::ChunksToCompletions),
        parser: sse::Parser::default(),
        between: Vec::new(),
    })
}

/// A Responses API stream from a deployment answering in chat: its chunks in OpenAI's
/// chat format first, then as the Responses API's events.
pub fn responses_through_chat(
    provider: ChatFormat,
    model: &str,
    prices: Prices,
    second: super::responses_via_chat::ChunksToResponses,
) -> Box<dyn StreamConverter> {
    Box::new(Chain {
        first: converter(provider, ClientApi::OpenAi, true, model, prices),
        second: Box::new(second),
        parser: sse::Parser::default(),
        between: Vec::new(),
    })
}

/// Two converters in a row, through the format between them.
struct Chain {
    first: Box<dyn StreamConverter>,
    second: Box<dyn StreamConverter>,
    parser: sse::Parser,
    between: Vec<Bytes>,
}

impl Chain {
    fn pass(&mut self, out: &mut Vec<Bytes>) {
        for chunk in self.between.drain(..) {
            // The first converter writes whole events, well under the parser's limit.
            if let Ok(events) = self.parser.feed(&chunk) {
                events.iter().for_each(|ev| self.second.event(ev, out));
            }
        }
    }
}

impl StreamConverter for Chain {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        self.first.event(ev, &mut self.between);
        self.pass(out);
    }
    fn finish(&mut self, out: &mut Vec<Bytes>) {
        self.first.finish(&mut self.between);
        self.pass(out);
        self.second.finish(out);
    }
    fn usage(&self) -> Option<Usage> {
        self.first.usage()
    }
}

/// Gemini `streamGenerateContent?alt=sse` chunks → OpenAI `chat.completion.chunk`s. Each
/// Gemini chunk is a whole `GenerateContentResponse`; function calls arrive whole.
#[derive(Default)]
struct GeminiToOpenAi {
    prices: Prices,
    include_usage: bool,
    model: String,
    id: String,
    created: u64,
    started: bool,
    usage: Option<Usage>,
    tools: usize,
    finished: bool,
}

impl GeminiToOpenAi {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        sse::data_json(&c)
    }
}

impl StreamConverter for GeminiToOpenAi {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        let Some(v) = parse(&ev.data) else { return };
        if let Some(e) = v.get("error") {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream stream error");
            let err = ApiError::upstream(
                502,
                crate::error::ErrorKind::Upstream,
                format!("Gemini: {msg}"),
            );
            out.push(error_event(ClientApi::OpenAi, &err));
            return;
        }
        if !self.started {
            self.started = true;
            self.id = format!("chatcmpl-{}", gemini::response_id(&v));
            self.created = now_secs();
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        if let Some(u) = gemini::usage(&v) {
            self.usage = Some(u);
        }
        if let Some(err) = gemini::blocked(&v) {
            out.push(error_event(ClientApi::OpenAi, &err));
            return;
        }
        let Some(candidate) = v.get("candidates").and_then(|c| c.get(0)) else {
            return;
        };
        let p = gemini::parts(candidate, &self.id, self.tools);
        if !p.reasoning.is_empty() {
            out.push(self.chunk(json!({"reasoning_content": p.reasoning}), None));
        }
        if !p.text.is_empty() {
            out.push(self.chunk(json!({"content": p.text}), None));
        }
        if !p.tool_calls.is_empty() {
            self.tools += p.tool_calls.len();
            out.push(self.chunk(json!({"tool_calls": p.tool_calls}), None));
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            out.push(self.chunk(
                json!({}),
                Some(gemini::finish_reason(reason, self.tools > 0)),
            ));
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let (true, Some(u)) = (self.include_usage, self.usage) {
            let c = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [],
                "usage": with_cost(openai_usage(u), &u, &self.prices),
            });
            out.push(sse::data_json(&c));
        }
        out.push(Bytes::from_static(sse::DONE));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The event a client gets when the stream breaks after it started.
pub fn error_event(client: ClientApi, err: &ApiError) -> Bytes {
    let body = err.body(client);
    let text = String::from_utf8_lossy(&body);
    match client {
        ClientApi::OpenAi => sse::data(&text),
        ClientApi::Anthropic => sse::named("error", &text),
    }
}

fn parse(data: &str) -> Option<Value> {
    serde_json::from_str(data).ok()
}

/// OpenAI → OpenAI. Events pass byte for byte. The gateway always asks the upstream for
/// usage; the usage-only chunk is dropped when the client did not ask for it.
struct OpenAiPassthrough {
    drop_usage_chunk: bool,
    usage: Option<Usage>,
    prices: Prices,
}

/// A usage object with the request's cost added.
fn with_cost(mut usage: Value, u: &Usage, prices: &Prices) -> Value {
    if let Value::Object(m) = &mut usage {
        m.insert("cost".into(), prices.of(u).into());
    }
    usage
}

impl StreamConverter for OpenAiPassthrough {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        if memchr::memmem::find(ev.data.as_bytes(), b"\"usage\"").is_some() {
            if let Some(mut v) = parse(&ev.data) {
                if let Some(u) = v.get("usage").and_then(Usage::from_json) {
                    self.usage = Some(u);
                    let no_choices = v
                        .get("choices")
                        .and_then(Value::as_array)
                        .is_none_or(Vec::is_empty);
                    if self.drop_usage_chunk && no_choices {
                        return;
                    }
                    let usage = v["usage"].take();
                    v["usage"] = with_cost(usage, &u, &self.prices);
                    out.push(sse::data_json(&v));
                    return;
                }
            }
        }
        out.push(ev.raw.clone());
    }
    fn finish(&mut self, _out: &mut Vec<Bytes>) {}
    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The client's id for a provider's response id.
pub type ResponseIds = Box<dyn Fn(&str) -> String + Send>;

/// The Responses API's typed events, passed through, but for the response's id in the
/// events that carry the whole response (`response.created` ... `response.completed`),
/// which becomes the client's (`ids`); the usage read from the final
/// `response.completed` (or `response.incomplete` / `response.failed`).
pub fn responses_passthrough(ids: ResponseIds) -> Box<dyn StreamConverter> {
    Box::new(ResponsesPassthrough { usage: None, ids })
}

struct ResponsesPassthrough {
    usage: Option<Usage>,
    ids: ResponseIds,
}

impl StreamConverter for ResponsesPassthrough {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        let kind = ev.event.as_deref().unwrap_or_default();
        let whole = matches!(
            kind,
            "response.created"
                | "response.queued"
                | "response.in_progress"
                | "response.completed"
                | "response.incomplete"
                | "response.failed"
        );
        let Some(mut v) = whole.then(|| parse(&ev.data)).flatten() else {
            out.push(ev.raw.clone());
            return;
        };
        if matches!(
            kind,
            "response.completed" | "response.incomplete" | "response.failed"
        ) {
            if let Some(u) = v
                .get("response")
                .and_then(|r| r.get("usage"))
                .and_then(Usage::from_json)
            {
                self.usage = Some(u);
            }
        }
        if let Some(Value::String(id)) = v.pointer_mut("/response/id") {
            *id = (self.ids)(id);
        }
        out.push(sse::named_json(kind, &v));
    }
    fn finish(&mut self, _out: &mut Vec<Bytes>) {}
    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[derive(Default)]
struct AnthropicPassthrough {
    usage: Usage,
    seen: bool,
}

impl StreamConverter for AnthropicPassthrough {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        match ev.event.as_deref() {
            Some("message_start") => {
                if let Some(u) = parse(&ev.data)
                    .as_ref()
                    .and_then(|v| v.get("message")?.get("usage"))
                    .and_then(Usage::from_json)
                {
                    self.usage = u;
                    self.seen = true;
                }
            }
            Some("message_delta") => {
                if let Some(u) = parse(&ev.data).as_ref().and_then(|v| v.get("usage")) {
                    self.seen |= anthropic_delta_usage(&mut self.usage, u);
                }
            }
            _ => {}
        }
        out.push(ev.raw.clone());
    }
    fn finish(&mut self, _out: &mut Vec<Bytes>) {}
    fn usage(&self) -> Option<Usage> {
        self.seen.then_some(self.usage)
    }
}

/// Folds a `message_delta`'s cumulative `usage` into what `message_start` said: its
/// output tokens, and, when it restates them, its prompt tokens (Anthropic's
/// `input_tokens` leaves out the cache reads and writes, which `usage` counts as input).
/// Whether it carried output tokens.
fn anthropic_delta_usage(usage: &mut Usage, u: &Value) -> bool {
    let get = |k: &str| u.get(k).and_then(Value::as_u64);
    if let Some(i) = get("input_tokens") {
        let cached = get("cache_read_input_tokens").unwrap_or(usage.cached_input_tokens);
        let written = get("cache_creation_input_tokens").unwrap_or(usage.cache_write_input_tokens);
        usage.input_tokens = i + cached + written;
        usage.cached_input_tokens = cached;
        usage.cache_write_input_tokens = written;
    }
    let Some(o) = get("output_tokens") else {
        return false;
    };
    usage.output_tokens = o;
    true
}

/// Anthropic events → OpenAI `chat.completion.chunk`s.
#[derive(Default)]
struct AnthropicToOpenAi {
    prices: Prices,
    include_usage: bool,
    model: String,
    id: String,
    created: u64,
    usage: Usage,
    seen_usage: bool,
    /// Content block index → tool call index, for tool_use blocks.
    tool_blocks: Vec<(u64, usize)>,
    tools: usize,
    finished: bool,
}

impl AnthropicToOpenAi {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        sse::data_json(&c)
    }
}

impl StreamConverter for AnthropicToOpenAi {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        let Some(v) = parse(&ev.data) else { return };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref());
        match kind {
            Some("message_start") => {
                let m = v.get("message").unwrap_or(&Value::Null);
                self.id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                self.created = now_secs();
                if let Some(u) = m.get("usage").and_then(Usage::from_json) {
                    self.usage = u;
                    self.seen_usage = true;
                }
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            Some("content_block_start") => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let tool = self.tools;
                        self.tools += 1;
                        self.tool_blocks.push((index, tool));
                        out.push(self.chunk(
                            json!({"tool_calls": [{
                                "index": tool,
                                "id": block.get("id").cloned().unwrap_or_default(),
                                "type": "function",
                                "function": {"name": block.get("name").cloned().unwrap_or_default(), "arguments": ""},
                            }]}),
                            None,
                        ));
                    }
                    Some("text") => {
                        if let Some(t) = block
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            out.push(self.chunk(json!({"content": t}), None));
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let d = v.get("delta").unwrap_or(&Value::Null);
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        out.push(self.chunk(json!({"content": d.get("text").cloned().unwrap_or_default()}), None))
                    }
                    Some("thinking_delta") => out.push(self.chunk(
                        json!({"reasoning_content": d.get("thinking").cloned().unwrap_or_default()}),
                        None,
                    )),
                    Some("input_json_delta") => {
                        let tool = self
                            .tool_blocks
                            .iter()
                            .find(|(b, _)| *b == index)
                            .map(|(_, t)| *t)
                            .unwrap_or(0);
                        out.push(self.chunk(
                            json!({"tool_calls": [{"index": tool, "function": {"arguments": d.get("partial_json").cloned().unwrap_or_default()}}]}),
                            None,
                        ));
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(u) = v.get("usage") {
                    self.seen_usage |= anthropic_delta_usage(&mut self.usage, u);
                }
                let reason = finish_reason(
                    v.get("delta")
                        .and_then(|d| d.get("stop_reason"))
                        .and_then(Value::as_str),
                );
                out.push(self.chunk(json!({}), reason.or(Some("stop"))));
            }
            Some("message_stop") => self.finish(out),
            Some("error") => {
                let msg = v
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("upstream stream error");
                let err = ApiError::upstream(
                    502,
                    crate::error::ErrorKind::Upstream,
                    format!("Anthropic: {msg}"),
                );
                out.push(error_event(ClientApi::OpenAi, &err));
            }
            _ => {} // ping, content_block_stop
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.include_usage && self.seen_usage {
            let c = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [],
                "usage": with_cost(openai_usage(self.usage), &self.usage, &self.prices),
            });
            out.push(sse::data_json(&c));
        }
        out.push(Bytes::from_static(sse::DONE));
    }

    fn usage(&self) -> Option<Usage> {
        self.seen_usage.then_some(self.usage)
    }
}

/// Bedrock ConverseStream events → OpenAI `chat.completion.chunk`s.
#[derive(Default)]
struct BedrockToOpenAi {
    prices: Prices,
    include_usage: bool,
    model: String,
    id: String,
    created: u64,
    started: bool,
    usage: Option<Usage>,
    /// Content block index → tool call index, for toolUse blocks.
    tool_blocks: Vec<(u64, usize)>,
    finished: bool,
}

impl BedrockToOpenAi {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        sse::data_json(&c)
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if !self.started {
            self.started = true;
            self.id = super::chat_id();
            self.created = now_secs();
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }
}

impl StreamConverter for BedrockToOpenAi {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        let Some(v) = parse(&ev.data) else { return };
        let block = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match ev.event.as_deref() {
            Some("messageStart") => self.start(out),
            Some("contentBlockStart") => {
                self.start(out);
                if let Some(tool) = v.pointer("/start/toolUse") {
                    let index = self.tool_blocks.len();
                    self.tool_blocks.push((block, index));
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": index,
                            "id": tool.get("toolUseId").cloned().unwrap_or_default(),
                            "type": "function",
                            "function": {"name": tool.get("name").cloned().unwrap_or_default(), "arguments": ""},
                        }]}),
                        None,
                    ));
                }
            }
            Some("contentBlockDelta") => {
                self.start(out);
                let d = v.get("delta").unwrap_or(&Value::Null);
                if let Some(t) = d.get("text").and_then(Value::as_str) {
                    out.push(self.chunk(json!({"content": t}), None));
                } else if let Some(t) = d.pointer("/reasoningContent/text").and_then(Value::as_str)
                {
                    out.push(self.chunk(json!({"reasoning_content": t}), None));
                } else if let Some(input) = d.pointer("/toolUse/input").and_then(Value::as_str) {
                    let index = self
                        .tool_blocks
                        .iter()
                        .find(|(b, _)| *b == block)
                        .map_or(0, |(_, t)| *t);
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": input}}]}),
                        None,
                    ));
                }
            }
            Some("messageStop") => {
                self.start(out);
                let stop = v
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                out.push(self.chunk(json!({}), Some(bedrock::finish_reason(stop))));
            }
            Some("metadata") => {
                if let Some(u) = v.get("usage").and_then(bedrock::usage) {
                    self.usage = Some(u);
                }
            }
            Some("error") => {
                let e = v.get("error").unwrap_or(&Value::Null);
                let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
                let msg = e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream stream error");
                let err = ApiError::upstream(
                    502,
                    crate::error::ErrorKind::Upstream,
                    format!("Bedrock: {kind}: {msg}"),
                );
                out.push(error_event(ClientApi::OpenAi, &err));
            }
            _ => {} // contentBlockStop
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let (true, Some(u)) = (self.include_usage, self.usage) {
            let c = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [],
                "usage": with_cost(openai_usage(u), &u, &self.prices),
            });
            out.push(sse::data_json(&c));
        }
        out.push(Bytes::from_static(sse::DONE));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// Cohere v2 chat stream events → OpenAI `chat.completion.chunk`s.
#[derive(Default)]
struct CohereToOpenAi {
    prices: Prices,
    include_usage: bool,
    model: String,
    id: String,
    created: u64,
    started: bool,
    usage: Option<Usage>,
    /// Tool calls started so far (Cohere numbers them with `index`).
    tools: usize,
    finished: bool,
}

impl CohereToOpenAi {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        sse::data_json(&c)
    }
}

impl StreamConverter for CohereToOpenAi {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        let Some(v) = parse(&ev.data) else { return };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or("");
        if !self.started {
            self.started = true;
            self.id = v
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(super::chat_id, str::to_owned);
            self.created = now_secs();
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        let message = v.pointer("/delta/message").unwrap_or(&Value::Null);
        match kind {
            "content-delta" => {
                if let Some(t) = message.pointer("/content/text").and_then(Value::as_str) {
                    out.push(self.chunk(json!({"content": t}), None));
                }
            }
            "tool-call-start" => {
                let call = message.get("tool_calls").unwrap_or(&Value::Null);
                let index = v
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(self.tools, |i| i as usize);
                self.tools = self.tools.max(index + 1);
                out.push(self.chunk(
                    json!({"tool_calls": [{
                        "index": index,
                        "id": call.get("id").cloned().unwrap_or_default(),
                        "type": "function",
                        "function": {
                            "name": call.pointer("/function/name").cloned().unwrap_or_default(),
                            "arguments": call.pointer("/function/arguments").cloned().unwrap_or_else(|| json!("")),
                        },
                    }]}),
                    None,
                ));
            }
            "tool-call-delta" => {
                let index = v
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(self.tools.saturating_sub(1), |i| i as usize);
                if let Some(a) = message
                    .pointer("/tool_calls/function/arguments")
                    .and_then(Value::as_str)
                {
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": a}}]}),
                        None,
                    ));
                }
            }
            "message-end" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                if let Some(u) = delta.get("usage").and_then(cohere::usage) {
                    self.usage = Some(u);
                }
                let reason = delta
                    .get("finish_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("COMPLETE");
                if reason == "ERROR" {
                    let msg = delta
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("upstream stream error");
                    let err = ApiError::upstream(
                        502,
                        crate::error::ErrorKind::Upstream,
                        format!("Cohere: {msg}"),
                    );
                    out.push(error_event(ClientApi::OpenAi, &err));
                } else {
                    out.push(self.chunk(json!({}), Some(cohere::finish_reason(reason))));
                }
            }
            _ => {} // message-start, content-start/end, tool-plan-delta, tool-call-end
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let (true, Some(u)) = (self.include_usage, self.usage) {
            let c = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [],
                "usage": with_cost(openai_usage(u), &u, &self.prices),
            });
            out.push(sse::data_json(&c));
        }
        out.push(Bytes::from_static(sse::DONE));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[derive(Debug, Default, PartialEq)]
enum Block {
    #[default]
    None,
    Text,
    Tool,
}

/// OpenAI chunks → Anthropic Messages events.
#[derive(Default)]
struct OpenAiToAnthropic {
    model: String,
    started: bool,
    finished: bool,
    block: Block,
    /// Index of the current content block; the next one gets `next_index`.
    next_index: u64,
    /// OpenAI tool call index → Anthropic content block index.
    tool_blocks: Vec<(u64, u64)>,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl OpenAiToAnthropic {
    fn start(&mut self, id: Option<&str>, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let msg = json!({"type": "message_start", "message": {
            "id": message_id(id), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }});
        out.push(sse::named_json("message_start", &msg));
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if self.block != Block::None {
            let idx = self.next_index - 1;
            out.push(sse::named_json(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": idx}),
            ));
            self.block = Block::None;
        }
    }

    fn open_block(&mut self, kind: Block, block: Value, out: &mut Vec<Bytes>) -> u64 {
        self.close_block(out);
        let idx = self.next_index;
        self.next_index += 1;
        self.block = kind;
        out.push(sse::named_json(
            "content_block_start",
            &json!({"type": "content_block_start", "index": idx, "content_block": block}),
        ));
        idx
    }

    fn delta(idx: u64, delta: Value) -> Bytes {
        sse::named_json(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": idx, "delta": delta}),
        )
    }
}

impl StreamConverter for OpenAiToAnthropic {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        if ev.data == "[DONE]" {
            self.finish(out);
            return;
        }
        let Some(v) = parse(&ev.data) else { return };
        if let Some(err) = v.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream stream error");
            let e = ApiError::upstream(502, crate::error::ErrorKind::Upstream, msg.to_owned());
            out.push(error_event(ClientApi::Anthropic, &e));
            return;
        }
        self.start(v.get("id").and_then(Value::as_str), out);
        if let Some(u) = v.get("usage").and_then(Usage::from_json) {
            self.usage = Some(u);
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            if self.block != Block::Text {
                self.open_block(Block::Text, json!({"type": "text", "text": ""}), out);
            }
            out.push(Self::delta(
                self.next_index - 1,
                json!({"type": "text_delta", "text": text}),
            ));
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let tool_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = call.get("function").unwrap_or(&Value::Null);
            let known = self
                .tool_blocks
                .iter()
                .find(|(t, _)| *t == tool_index)
                .map(|(_, b)| *b);
            let block_index = match known {
                Some(b) => b,
                None => {
                    let b = self.open_block(
                        Block::Tool,
                        json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or_default(),
                               "name": f.get("name").cloned().unwrap_or_default(), "input": {}}),
                        out,
                    );
                    self.tool_blocks.push((tool_index, b));
                    b
                }
            };
            if let Some(args) = f
                .get("arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                out.push(Self::delta(
                    block_index,
                    json!({"type": "input_json_delta", "partial_json": args}),
                ));
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_owned());
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.start(None, out);
        self.close_block(out);
        let u = self.usage.unwrap_or_default();
        let delta = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null},
            "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}});
        out.push(sse::named_json("message_delta", &delta));
        out.push(sse::named("message_stop", r#"{"type":"message_stop"}"#));
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICES: Prices = Prices {
        input: 1e-6,
        output: 2e-6,
        cached_input: 1e-6,
        cache_write_input: 1.5e-6,
        per_query: 0.0,
        per_image: 0.0,
        per_second: 0.0,
        per_character: 0.0,
    };

    fn run(conv: &mut dyn StreamConverter, input: &str) -> Vec<Event> {
        let mut p = sse::Parser::default();
        let mut out = Vec::new();
        for ev in p.feed(input.as_bytes()).unwrap() {
            conv.event(&ev, &mut out);
        }
        conv.finish(&mut out);
        let joined: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
        sse::Parser::default().feed(&joined).unwrap()
    }

    #[test]
    fn anthropic_cache_reads_and_writes_are_kept_when_the_delta_restates_the_prompt() {
        let input = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":10,\"cache_creation_input_tokens\":20,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":5,\"output_tokens\":7}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let want = Usage {
            input_tokens: 35,
            output_tokens: 7,
            cached_input_tokens: 10,
            cache_write_input_tokens: 20,
            reasoning_tokens: 0,
        };
        for client in [ClientApi::OpenAi, ClientApi::Anthropic] {
            let mut c = converter(ChatFormat::Anthropic, client, true, "alias", PRICES);
            let evs = run(c.as_mut(), input);
            assert_eq!(c.usage(), Some(want), "{client:?}");
            if client == ClientApi::OpenAi {
                let last = evs
                    .iter()
                    .filter(|e| e.data != "[DONE]")
                    .map(|e| parse(&e.data).unwrap())
                    .last()
                    .unwrap();
                let u = &last["usage"];
                assert_eq!(
                    (u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64()),
                    (Some(35), Some(7))
                );
                assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 10);
                assert_eq!(u["cache_creation_input_tokens"], 20);
                // 5 × 1 + 10 × 1 + 20 × 1.5 + 7 × 2 micro-dollars.
                let cost = u["cost"].as_f64().unwrap();
                assert!((cost - 59e-6).abs() < 1e-12, "{cost}");
            }
        }
    }

    #[test]
    fn anthropic_stream_to_openai_chunks() {
        let input = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let mut c = converter(
            ChatFormat::Anthropic,
            ClientApi::OpenAi,
            true,
            "alias",
            PRICES,
        );
        let evs = run(c.as_mut(), input);
        let chunks: Vec<Value> = evs
            .iter()
            .filter(|e| e.data != "[DONE]")
            .map(|e| parse(&e.data).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "toolu_1"
        );
        let args: String = chunks[3..5]
            .iter()
            .map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(args, "{\"a\":1}");
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[6]["usage"]["total_tokens"], 16);
        assert!(chunks[6]["usage"]["cost"].as_f64().unwrap() > 0.0);
        assert_eq!(evs.last().unwrap().data, "[DONE]");
        assert_eq!(
            c.usage(),
            Some(Usage {
                input_tokens: 7,
                output_tokens: 9,
                cached_input_tokens: 0,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn openai_stream_to_anthropic_events() {
        let input = concat!(
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6,\"total_tokens\":10}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut c = converter(
            ChatFormat::OpenAi,
            ClientApi::Anthropic,
            true,
            "claude-alias",
            PRICES,
        );
        let evs = run(c.as_mut(), input);
        let names: Vec<&str> = evs.iter().map(|e| e.event.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let delta = parse(&evs[8].data).unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["output_tokens"], 6);
        assert_eq!(parse(&evs[5].data).unwrap()["index"], 1);
        assert_eq!(
            c.usage(),
            Some(Usage {
                input_tokens: 4,
                output_tokens: 6,
                cached_input_tokens: 0,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn passthrough_drops_usage_chunk_only_when_not_asked() {
        let input = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut c = converter(ChatFormat::OpenAi, ClientApi::OpenAi, false, "m", PRICES);
        assert_eq!(run(c.as_mut(), input).len(), 2);
        assert_eq!(
            c.usage(),
            Some(Usage {
                input_tokens: 1,
                output_tokens: 2,
                cached_input_tokens: 0,
                ..Usage::default()
            })
        );
        let mut c = converter(ChatFormat::OpenAi, ClientApi::OpenAi, true, "m", PRICES);
        let evs = run(c.as_mut(), input);
        assert_eq!(evs.len(), 3);
        // The usage chunk carries the cost: 1 × 1 µ$ + 2 × 2 µ$.
        let usage = &parse(&evs[1].data).unwrap()["usage"];
        assert!(
            (usage["cost"].as_f64().unwrap() - 5e-6).abs() < 1e-15,
            "{usage}"
        );
    }
}
