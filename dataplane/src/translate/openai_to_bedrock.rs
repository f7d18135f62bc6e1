//! OpenAI-format requests to Bedrock's Converse API, and Converse responses back to OpenAI
//! format. Used when a client reaches a Bedrock deployment; Anthropic clients go through
//! the OpenAI format first. (`bedrock/invoke/anthropic.*` deployments speak Anthropic's
//! format instead, see `providers::bedrock`.)

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::openai_wire::{
    CalledTool, Completion, Content, Message, OpenAiUsage, Part, Str, Text, Tool, ToolCall,
};
use crate::clock::now_secs;
use crate::error::ApiError;
use crate::handlers::request::RawObject;
use crate::json::{Array, Object};
use crate::usage::Usage;

/// A Converse request. Fields borrow from the client's body.
struct Converse<'a> {
    messages: Vec<Turn<'a>>,
    system: Vec<Block<'a>>,
    inference: Inference<'a>,
    /// `additionalModelRequestFields.top_k`.
    top_k: Option<&'a RawValue>,
    tool_config: Option<ToolConfig<'a>>,
}

struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

/// A content block: `{"text": ...}`, `{"image": ...}`, `{"toolUse": ...}`,
/// `{"toolResult": ...}`.
enum Block<'a> {
    Text(Text<'a>),
    Image {
        format: String,
        bytes: String,
    },
    ToolUse {
        id: Option<Str<'a>>,
        name: Option<Str<'a>>,
        /// The object the call's arguments hold; `None` is written as `{}`.
        input: Option<Box<RawValue>>,
    },
    ToolResult {
        id: Str<'a>,
        text: Text<'a>,
    },
}

struct Inference<'a> {
    max_tokens: Option<u64>,
    temperature: Option<&'a RawValue>,
    top_p: Option<&'a RawValue>,
    stop: Option<Stop<'a>>,
}

/// `stop` as Converse's list: one string, or the client's non-empty array as it sent it.
enum Stop<'a> {
    One(&'a RawValue),
    List(&'a RawValue),
}

struct ToolConfig<'a> {
    tools: Vec<ToolSpec<'a>>,
    tool_choice: Option<Value>,
}

struct ToolSpec<'a> {
    name: Option<Str<'a>>,
    description: Option<Str<'a>>,
    /// The client's JSON schema (an object); `None` is written as any object.
    schema: Option<&'a RawValue>,
}

impl Converse<'_> {
    /// The request as JSON, written field by field: client text goes in as it came.
    fn to_vec(&self, capacity: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(capacity);
        let mut o = Object::new(&mut out);
        let mut messages = o.array("messages");
        for turn in &self.messages {
            let mut t = messages.object();
            t.plain("role", turn.role);
            write_blocks(t.array("content"), &turn.content);
        }
        drop(messages);
        if !self.system.is_empty() {
            write_blocks(o.array("system"), &self.system);
        }
        self.inference.write(&mut o);
        if let Some(top_k) = self.top_k {
            o.object("additionalModelRequestFields")
                .raw("top_k", top_k.get());
        }
        if let Some(config) = &self.tool_config {
            config.write(o.object("toolConfig"));
        }
        drop(o);
        out
    }
}

fn write_blocks(mut list: Array, blocks: &[Block]) {
    for block in blocks {
        let mut o = list.object();
        match block {
            Block::Text(text) => o.raw("text", text.json()),
            Block::Image { format, bytes } => {
                let mut image = o.object("image");
                image.value("format", format);
                image.object("source").value("bytes", bytes);
            }
            Block::ToolUse { id, name, input } => {
                let mut tool_use = o.object("toolUse");
                tool_use.value("toolUseId", id);
                tool_use.value("name", name);
                tool_use.raw("input", input.as_deref().map_or("{}", RawValue::get));
            }
            Block::ToolResult { id, text } => {
                let mut result = o.object("toolResult");
                result.value("toolUseId", id);
                result.array("content").object().raw("text", text.json());
            }
        }
    }
}

impl Inference<'_> {
    /// `inferenceConfig`, left out when it has nothing in it.
    fn write(&self, o: &mut Object) {
        if self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop.is_none()
        {
            return;
        }
        let mut config = o.object("inferenceConfig");
        if let Some(n) = self.max_tokens {
            config.value("maxTokens", &n);
        }
        if let Some(t) = self.temperature {
            config.raw("temperature", t.get());
        }
        if let Some(p) = self.top_p {
            config.raw("topP", p.get());
        }
        match self.stop {
            Some(Stop::One(one)) => config
                .array("stopSequences")
                .item()
                .extend_from_slice(one.get().as_bytes()),
            Some(Stop::List(list)) => config.raw("stopSequences", list.get()),
            None => {}
        }
    }
}

impl ToolConfig<'_> {
    fn write(&self, mut o: Object) {
        let mut tools = o.array("tools");
        for tool in &self.tools {
            let mut item = tools.object();
            let mut spec = item.object("toolSpec");
            spec.value("name", &tool.name);
            if let Some(description) = &tool.description {
                spec.value("description", description);
            }
            spec.object("inputSchema").raw(
                "json",
                tool.schema.map_or(r#"{"type":"object"}"#, RawValue::get),
            );
        }
        drop(tools);
        if let Some(choice) = &self.tool_choice {
            o.value("toolChoice", choice);
        }
    }
}

/// JSON text parsed as `T`, borrowing from it; an error names where in `name` it is.
fn parse<'a, T: Deserialize<'a>>(
    json: &'a str,
    name: &str,
    param: &'static str,
) -> Result<T, ApiError> {
    // Parsed again to find the path only when it fails: tracking it costs about 2,000
    // instructions a request.
    if let Ok(v) = serde_json::from_str(json) {
        return Ok(v);
    }
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json)).map_err(|e| {
        let inner = e.inner().to_string();
        // serde_json's position is within the field's text, which the client did not send
        // as such.
        let reason = inner
            .rsplit_once(" at line ")
            .map_or(inner.as_str(), |(r, _)| r);
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else if path.starts_with('[') {
            path
        } else {
            format!(".{path}")
        };
        ApiError::bad_request(format!("`{name}{at}`: {reason}")).with_param(param)
    })
}

/// Builds a Converse request from an OpenAI chat request. The model and whether it
/// streams go in the URL.
pub fn request(req: &RawObject) -> Result<Bytes, ApiError> {
    let messages_json = req
        .raw("messages")
        .ok_or_else(|| ApiError::missing_field("messages"))?;
    let messages: Vec<Message> = parse(messages_json, "messages", "messages")?;

    let mut system: Vec<Block> = Vec::new();
    let mut out: Vec<Turn> = Vec::new();
    let mut tool_blocks = false;
    for (i, m) in messages.into_iter().enumerate() {
        let content = Content::of(m.content).map_err(|e| {
            ApiError::bad_request(format!("messages[{i}].content: {e}")).with_param("messages")
        })?;
        let (role, blocks) = match m.role.as_ref().map_or("", Str::as_str) {
            "system" | "developer" => {
                let text = content.text();
                if !text.is_empty() {
                    system.push(Block::Text(text));
                }
                continue;
            }
            "user" => ("user", user_blocks(i, content)?),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = content.text();
                if !text.is_empty() {
                    blocks.push(Block::Text(text));
                }
                let calls: Vec<ToolCall> = match m.tool_calls {
                    Some(raw) if raw.get().starts_with('[') => {
                        parse(raw.get(), &format!("messages[{i}].tool_calls"), "messages")?
                    }
                    _ => Vec::new(),
                };
                tool_blocks |= !calls.is_empty();
                for call in calls {
                    let (name, arguments) = match call.function {
                        Some(f) => (f.name, f.arguments),
                        None => (None, None),
                    };
                    blocks.push(Block::ToolUse {
                        id: call.id,
                        name,
                        input: tool_input(arguments),
                    });
                }
                ("assistant", blocks)
            }
            "tool" | "function" => {
                tool_blocks = true;
                let id = m.tool_call_id.or(m.name).unwrap_or_default();
                (
                    "user",
                    vec![Block::ToolResult {
                        id,
                        text: content.text(),
                    }],
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
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => out.push(Turn {
                role,
                content: blocks,
            }),
        }
    }
    if out.is_empty() {
        return Err(
            ApiError::bad_request("`messages` has no user or assistant content to send")
                .with_param("messages"),
        );
    }

    let max_tokens = req
        .raw("max_completion_tokens")
        .or_else(|| req.raw("max_tokens"))
        .and_then(|r| r.parse::<u64>().ok());
    let stop = match req.json("stop") {
        Some(s) if req.is_string("stop") => Some(Stop::One(s)),
        Some(s) if req.is_array("stop", true) => Some(Stop::List(s)),
        _ => None,
    };
    let converse = Converse {
        messages: out,
        system,
        inference: Inference {
            max_tokens,
            temperature: req.json("temperature"),
            top_p: req.json("top_p"),
            stop,
        },
        top_k: req.json("top_k"),
        tool_config: tool_config(req, tool_blocks)?,
    };
    // The Converse request is about as long as the messages it is made of.
    Ok(Bytes::from(converse.to_vec(messages_json.len() + 128)))
}

/// A tool call's arguments as Converse's `input`: the JSON object their string holds (or
/// the object itself, as some clients send it), else `{}`.
fn tool_input(arguments: Option<&RawValue>) -> Option<Box<RawValue>> {
    let object = match arguments {
        Some(a) if a.get().starts_with('"') => serde_json::from_str::<Str>(a.get())
            .ok()
            .and_then(|text| serde_json::from_str::<Box<RawValue>>(text.as_str()).ok()),
        Some(a) => Some(a.to_owned()),
        None => None,
    };
    object.filter(|v| v.get().starts_with('{'))
}

/// The request's tools as Converse's `toolConfig`. With `tool_choice: none` there is
/// none, unless the conversation already holds tool calls or results (`tool_blocks`):
/// Converse refuses those without one, so the tools are sent without a choice.
fn tool_config(req: &RawObject, tool_blocks: bool) -> Result<Option<ToolConfig<'_>>, ApiError> {
    let tool_choice = req.value("tool_choice");
    let none = matches!(&tool_choice, Some(Value::String(s)) if s == "none");
    if (none && !tool_blocks) || !req.is_array("tools", true) {
        return Ok(None);
    }
    let tools: Vec<Tool> = parse(req.raw("tools").unwrap_or("[]"), "tools", "tools")?;
    let tools = tools
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| t.function.map(|f| (i, f)))
        .map(|(i, f)| {
            let schema = match f.parameters {
                None => None,
                Some(p) if p.get().starts_with('{') => Some(p),
                Some(_) => {
                    return Err(ApiError::bad_request(format!(
                        "`tools[{i}].function.parameters` must be a JSON schema (an object)"
                    ))
                    .with_param("tools"))
                }
            };
            Ok(ToolSpec {
                name: f.name,
                description: f.description,
                schema,
            })
        })
        .collect::<Result<_, _>>()?;
    let tool_choice = match tool_choice {
        Some(Value::String(s)) if s == "required" => Some(json!({"any": {}})),
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .cloned()
                .unwrap_or_default();
            Some(json!({"tool": {"name": name}}))
        }
        _ => None,
    };
    Ok(Some(ToolConfig { tools, tool_choice }))
}

/// A user message's content as Converse blocks: text, and images from data URLs (Converse
/// takes image bytes, not URLs).
fn user_blocks(i: usize, content: Content<'_>) -> Result<Vec<Block<'_>>, ApiError> {
    let parts = match content {
        Content::Text(s) => return Ok(vec![Block::Text(Text::Json(s))]),
        Content::Parts(parts) => parts,
        Content::None => return Ok(Vec::new()),
        Content::Other => {
            return Err(ApiError::bad_request(format!(
                "messages[{i}].content must be a string or an array of parts"
            ))
            .with_param("messages"))
        }
    };
    parts
        .into_iter()
        .enumerate()
        .map(|(j, p)| match p.kind.as_ref().map(Str::as_str) {
            Some("text") => match p.text {
                None => Ok(Block::Text(Text::Empty)),
                Some(t) if t.get().starts_with('"') => Ok(Block::Text(Text::Json(t))),
                Some(_) => Err(ApiError::bad_request(format!(
                    "messages[{i}].content[{j}].text must be a string"
                ))
                .with_param("messages")),
            },
            Some("image_url") => image_block(i, &p),
            other => Err(ApiError::bad_request(format!(
                "messages[{i}].content has a part of type `{}` that Bedrock deployments do not take",
                other.unwrap_or("(missing)")
            ))
            .with_param("messages")),
        })
        .collect()
}

/// An `image_url` part as an image block; only data URLs carry the bytes Converse takes.
fn image_block<'a>(i: usize, p: &Part<'_>) -> Result<Block<'a>, ApiError> {
    let url: Option<Value> = p.image_url.and_then(|u| serde_json::from_str(u.get()).ok());
    let url = url
        .as_ref()
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
    Ok(Block::Image {
        format: mime.strip_prefix("image/").unwrap_or(mime).to_owned(),
        bytes: data.to_owned(),
    })
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

/// A Converse `usage` object.
#[derive(Deserialize)]
struct ConverseUsage {
    #[serde(rename = "inputTokens")]
    input: Option<u64>,
    #[serde(rename = "outputTokens", default)]
    output: Option<u64>,
    #[serde(rename = "cacheReadInputTokens", default)]
    cache_read: Option<u64>,
    #[serde(rename = "cacheWriteInputTokens", default)]
    cache_write: Option<u64>,
}

impl ConverseUsage {
    fn usage(&self) -> Option<Usage> {
        let cached = self.cache_read.unwrap_or(0);
        let written = self.cache_write.unwrap_or(0);
        Some(Usage {
            input_tokens: self.input? + cached + written,
            output_tokens: self.output.unwrap_or(0),
            cached_input_tokens: cached,
            cache_write_input_tokens: written,
            ..Usage::default()
        })
    }
}

/// Token usage from a Converse `usage` object.
pub fn usage(u: &Value) -> Option<Usage> {
    ConverseUsage::deserialize(u).ok()?.usage()
}

/// The parts of a Converse response the answer is made of.
#[derive(Deserialize)]
struct ConverseResponse<'a> {
    #[serde(borrow, default)]
    output: Option<Output<'a>>,
    #[serde(rename = "stopReason", borrow, default)]
    stop_reason: Option<Str<'a>>,
    #[serde(default)]
    usage: Option<ConverseUsage>,
}

#[derive(Deserialize)]
struct Output<'a> {
    #[serde(borrow, default)]
    message: Option<OutputMessage<'a>>,
}

#[derive(Deserialize)]
struct OutputMessage<'a> {
    #[serde(borrow, default)]
    content: Vec<OutputBlock<'a>>,
}

#[derive(Deserialize)]
struct OutputBlock<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(rename = "reasoningContent", borrow, default)]
    reasoning: Option<Reasoning<'a>>,
    #[serde(rename = "toolUse", borrow, default)]
    tool_use: Option<ToolUse<'a>>,
}

#[derive(Deserialize)]
struct Reasoning<'a> {
    #[serde(rename = "reasoningText", borrow, default)]
    text: Option<ReasoningText<'a>>,
}

#[derive(Deserialize)]
struct ReasoningText<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ToolUse<'a> {
    #[serde(rename = "toolUseId", borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

/// Converts a Converse response to an OpenAI chat completion for `model`, borrowing
/// from `body`, and its usage.
pub fn completion<'a>(
    body: &'a [u8],
    model: &'a str,
) -> Result<(Completion<'a>, Option<Usage>), ApiError> {
    // Checked as UTF-8 once, in one pass, rather than string by string as it is read.
    let v: ConverseResponse = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        // serde_json says where the bytes stop being UTF-8.
        Err(_) => serde_json::from_slice(body),
    }
    .map_err(|e| super::not_json("Bedrock", e))?;
    let mut texts = Vec::new();
    let mut reasonings = Vec::new();
    let mut tool_calls = Vec::new();
    let blocks = v.output.and_then(|o| o.message).map(|m| m.content);
    for block in blocks.into_iter().flatten() {
        if let Some(t) = block.text {
            texts.push(t);
        } else if let Some(t) = block.reasoning.and_then(|r| r.text).and_then(|t| t.text) {
            reasonings.push(t);
        } else if let Some(tool) = block.tool_use {
            tool_calls.push(CalledTool {
                id: tool.id,
                name: tool.name,
                arguments: tool.input.map_or("{}", RawValue::get),
            });
        }
    }
    let stop = v.stop_reason.as_ref().map_or("end_turn", Str::as_str);
    let usage = v.usage.as_ref().and_then(ConverseUsage::usage);
    let text = Text::join(texts);
    let content = (!text.is_empty() || tool_calls.is_empty()).then_some(text);
    let reasoning = Text::join(reasonings);
    let completion = Completion {
        id: super::chat_id(),
        created: now_secs(),
        model,
        content,
        reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
        tool_calls,
        finish_reason: finish_reason(stop),
        usage: usage.map(OpenAiUsage::from),
    };
    Ok((completion, usage))
}

/// [`completion`] as a `Value`, for callers that go on to another format.
pub fn response(body: &[u8], model: &str) -> Result<(Value, Option<Usage>), ApiError> {
    let (c, u) = completion(body, model)?;
    // Text passes through unread, so this is where a malformed escape shows.
    let v = serde_json::from_slice(&c.to_vec()).map_err(|e| super::not_json("Bedrock", e))?;
    Ok((v, u))
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

    /// The Converse request for an OpenAI request, parsed back.
    fn converse(v: Value) -> Result<Value, ApiError> {
        let body = request(&RawObject::parse(v.to_string().as_bytes())?)?;
        Ok(serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn request_maps_roles_tools_and_inference_config() {
        let c = converse(json!({
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
        }))
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
        let e = converse(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}))
        .unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn request_of_a_plain_chat_in_full() {
        // Every field of the benchmarks' realistic request, escapes included; `n`, `user`
        // and `stream` are the gateway's or the URL's business.
        let c = converse(json!({
            "model": "bench",
            "messages": [
                {"role": "system", "content": "Be \"brief\".\n"},
                {"role": "developer", "content": [{"type": "text", "text": "No "}, {"type": "text", "text": "prices."}]},
                {"role": "user", "content": "Which book? é"},
            ],
            "temperature": 0.7, "top_p": 0.95, "max_tokens": 256, "n": 1, "stream": false,
            "user": "u-1", "stop": ["a", "b"],
        }))
        .unwrap();
        assert_eq!(
            c,
            json!({
                "messages": [{"role": "user", "content": [{"text": "Which book? é"}]}],
                "system": [{"text": "Be \"brief\".\n"}, {"text": "No prices."}],
                "inferenceConfig": {"maxTokens": 256, "temperature": 0.7, "topP": 0.95,
                                    "stopSequences": ["a", "b"]},
            })
        );
        // `max_completion_tokens` wins over `max_tokens`; nulls and an empty stop list are
        // left out, as is a config with nothing in it.
        let c = converse(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 5, "max_tokens": 9, "temperature": null, "stop": [],
        }))
        .unwrap();
        assert_eq!(c["inferenceConfig"], json!({"maxTokens": 5}));
        let c = converse(json!({"messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert_eq!(
            c,
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
        );
    }

    #[test]
    fn request_tools_and_their_defaults() {
        let tools = json!([
            {"type": "function", "function": {"name": "a", "description": "does a"}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object", "properties": {}}}},
            {"type": "other"},
        ]);
        let c = converse(json!({
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "1", "function": {"name": "a", "arguments": "not json"}},
                    {"id": "2", "function": {"name": "b", "arguments": "[1]"}},
                    {"id": "3", "function": {"name": "b", "arguments": "{\"x\": [1, {}]}"}}]},
                {"role": "function", "name": "a", "content": [{"type": "text", "text": "ok"}]},
            ],
            "tools": tools, "tool_choice": "required",
        }))
        .unwrap();
        let uses = &c["messages"][1]["content"];
        assert_eq!(
            uses.as_array().unwrap().len(),
            3,
            "no text block for empty text"
        );
        assert_eq!(uses[0]["toolUse"]["input"], json!({}));
        assert_eq!(uses[1]["toolUse"]["input"], json!({}));
        assert_eq!(uses[2]["toolUse"]["input"], json!({"x": [1, {}]}));
        assert_eq!(
            c["messages"][2]["content"][0]["toolResult"],
            json!({"toolUseId": "a", "content": [{"text": "ok"}]})
        );
        assert_eq!(
            c["toolConfig"],
            json!({
                "tools": [
                    {"toolSpec": {"name": "a", "description": "does a", "inputSchema": {"json": {"type": "object"}}}},
                    {"toolSpec": {"name": "b", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
                ],
                "toolChoice": {"any": {}},
            })
        );
        let c = converse(json!({
            "messages": [{"role": "user", "content": "go"}],
            "tools": tools, "tool_choice": "none",
        }))
        .unwrap();
        assert_eq!(c.get("toolConfig"), None);
    }

    #[test]
    fn request_as_a_value_reader_read_it() {
        let req = json!({
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "one"},
                {"role": "assistant", "content": [5, {"type": "text", "text": "two"}], "tool_calls": [
                    {"id": 5, "function": {"name": "f", "arguments": {"x": 1}}},
                    {"id": "c", "function": {"name": ["f"], "arguments": " {\"y\" : 2} "}}]},
                {"role": "tool", "tool_call_id": "c", "content": "done"},
            ],
            "tool_choice": "none", "max_completion_tokens": null, "max_tokens": 7,
            "tools": [{"type": "function", "function": {"name": "f", "description": 3}}],
        });
        let c = converse(req.clone()).unwrap();
        // Whitespace in the client's JSON changes nothing.
        let pretty = serde_json::to_string_pretty(&req).unwrap();
        let body = request(&RawObject::parse(pretty.as_bytes()).unwrap()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), c);
        assert_eq!(
            c["messages"],
            json!([
                {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
                {"role": "assistant", "content": [
                    {"text": "one"}, {"text": "two"},
                    {"toolUse": {"toolUseId": null, "name": "f", "input": {"x": 1}}},
                    {"toolUse": {"toolUseId": "c", "name": null, "input": {"y": 2}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "c", "content": [{"text": "done"}]}}]},
            ])
        );
        assert_eq!(c["inferenceConfig"], json!({"maxTokens": 7}));
        // `tool_choice: none` with tool calls in the conversation: Converse needs the
        // tools to read them, so they go without a choice.
        assert_eq!(
            c["toolConfig"],
            json!({"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}]})
        );
    }

    #[test]
    fn usage_of_converse_and_stream_metadata() {
        let u = usage(
            &json!({"inputTokens": 10, "outputTokens": 3, "cacheReadInputTokens": 2,
                               "cacheWriteInputTokens": 1, "totalTokens": 16}),
        )
        .unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cached_input_tokens,
                u.cache_write_input_tokens
            ),
            (13, 3, 2, 1)
        );
        assert_eq!(usage(&json!({"outputTokens": 3})), None);
        assert_eq!(usage(&json!("x")), None);
    }

    #[test]
    fn request_refusals_are_clear() {
        let refused = |v: Value| {
            let e = converse(v).unwrap_err();
            assert_eq!(e.status, 400);
            e.message
        };
        assert!(
            refused(json!({"messages": [{"role": "robot", "content": "x"}]}))
                .contains("messages[0].role `robot`")
        );
        assert!(
            refused(json!({"messages": [{"role": "user", "content": {"text": "x"}}]}))
                .contains("messages[0].content must be a string or an array")
        );
        assert!(
            refused(json!({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}))
                .contains("part of type `audio`")
        );
        assert!(
            refused(json!({"messages": [{"role": "system", "content": "x"}]}))
                .contains("no user or assistant content")
        );
        assert!(refused(json!({"messages": [{"role": 5}]})).contains("role ``"));
        let e = refused(json!({"messages": [{"role": "user", "content": "x"}, 5]}));
        assert!(
            e.starts_with("`messages[1]`: invalid type: integer `5`"),
            "{e}"
        );
        assert!(!e.contains("line"), "{e}");
        let e = refused(json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "1", "function": {"name": "f", "arguments": "{}"}},
            {"id": "2", "function": "f"}]}]}));
        assert!(
            e.starts_with("`messages[0].tool_calls[1].function`: invalid type: string"),
            "{e}"
        );
        assert_eq!(
            refused(
                json!({"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]})
            ),
            "messages[0].content[0].text must be a string"
        );
        assert!(
            refused(json!({"messages": [{"role": "user", "content": "x"}],
                               "tools": [{"function": {"name": "f", "parameters": "object"}}]}))
            .starts_with("`tools[0].function.parameters` must be a JSON schema")
        );
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
        // The bytes the client gets.
        let text = body.to_string();
        let (c, _) = completion(text.as_bytes(), "m").unwrap();
        let written = String::from_utf8(c.to_vec()).unwrap();
        let (_, tail) = written.split_once(r#","created":"#).unwrap();
        assert!(written.starts_with(r#"{"id":"chatcmpl-"#), "{written}");
        assert_eq!(
            tail.split_once(',').unwrap().1,
            r#""model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Let me check.","tool_calls":[{"id":"tooluse_1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":16,"completion_tokens":7,"total_tokens":23,"prompt_tokens_details":{"cached_tokens":4}}}"#
        );
        // Text passes through unread; a malformed escape is found when a `Value` is made.
        let lone = br#"{"output":{"message":{"content":[{"text":"a\ud800"}]}}}"#;
        assert!(completion(lone, "m").is_ok());
        assert_eq!(response(lone, "m").unwrap_err().status, 502);
        // Bytes that are not UTF-8 are refused, with where they are.
        let latin1 = b"{\"output\":{\"message\":{\"content\":[{\"text\":\"caf\xe9\"}]}}}";
        let e = completion(latin1, "m").unwrap_err();
        assert_eq!(e.status, 502);
        assert!(e.message.contains("line 1 column"), "{}", e.message);
        assert_eq!(finish_reason("guardrail_intervened"), "content_filter");
        assert_eq!(finish_reason("max_tokens"), "length");
    }

    #[test]
    fn response_of_text_reasoning_and_tool_calls() {
        let (v, u) = response(
            br#"{"output":{"message":{"role":"assistant","content":[
                {"reasoningContent":{"reasoningText":{"text":"think","signature":"s"}}},
                {"text":"Hello"},{"text":", \"you\""}]}},
                "stopReason":"max_tokens","usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5,
                "cacheWriteInputTokens":1},"metrics":{"latencyMs":1}}"#,
            "m",
        )
        .unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "m");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(
            v["choices"],
            json!([{"index": 0, "finish_reason": "length", "message": {
                "role": "assistant", "content": "Hello, \"you\"", "reasoning_content": "think"}}])
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6,
                   "cache_creation_input_tokens": 1})
        );
        assert_eq!(u.unwrap().cache_write_input_tokens, 1);
        // Tool calls only: `content` is null; no usage, none reported.
        let (v, u) = response(
            br#"{"output":{"message":{"content":[{"text":""},{"toolUse":{"toolUseId":"t","name":"f"}}]}},"stopReason":"tool_use"}"#,
            "m",
        )
        .unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"],
            json!([{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}])
        );
        assert_eq!((v.get("usage"), u), (None, None));
        // An empty answer has empty content; a body that is not an answer is a 502.
        let (v, _) = response(br#"{}"#, "m").unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(response(b"<html>", "m").unwrap_err().status, 502);
        assert_eq!(response(br#"{"output": 5}"#, "m").unwrap_err().status, 502);
    }
}
