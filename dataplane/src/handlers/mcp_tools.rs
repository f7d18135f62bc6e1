//! MCP tools in chat (`/v1/chat/completions`, and `/v1/responses` through chat). A tool `{"type": "mcp", "server_url":
//! "litellm_proxy", ...}` (LiteLLM's form) stands for the MCP tools the caller may use:
//! the gateway lists them and offers them to the model as functions named
//! `<server>-<tool>`. `server_url: "litellm_proxy/mcp/<server>[,<server>...]"` narrows
//! them to those servers, and `allowed_tools` to those tools.
//!
//! With `require_approval: "never"` (for all its tools, or `{"never": {"tool_names":
//! [...]}}` for some), the gateway runs the calls the model makes on them, gives the model
//! the results and asks again, until the model answers: at most [`MAX_ROUNDS`] rounds of
//! tool calls, and the round after those may not call tools. A round whose calls are not
//! all the gateway's to run is the answer, and its calls are the client's (which may run
//! MCP ones through `/mcp-rest/tools/call`).
//!
//! Every round is an attempt of the request, with its retries and fallbacks, on the
//! deployment that served the round before. The request's usage is the sum of its rounds;
//! its cost is each round's at the prices of the deployment that served it. The answer's
//! text is every round's (a model may say something before it calls a tool), rounds
//! separated by a blank line. A stream carries that text as it arrives; a round's tool
//! calls and its end are held back, and go out only when that round is the answer.
//!
//! The rounds speak chat; a [`Shape`] turns the answer into another API's (the Responses
//! API's), whole or as a stream.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde_json::{json, Value};

use super::attempt::{self, Reply};
use super::request::RawObject;
use crate::context::RequestCtx;
use crate::cost::Prices;
use crate::error::{ApiError, ClientApi, ErrorKind};
use crate::mcp::client::Client;
use crate::mcp::forwarded::Forwarded;
use crate::mcp::{call_tool, granted, list_tools, Charge, Scope, PROXY_URL};
use crate::permission::Access;
use crate::providers::{Operation, ProviderResponse};
use crate::respond;
use crate::routing::failover::Failover;
use crate::sse;
use crate::state::{App, CompiledDeployment, LiveState};
use crate::translate::stream::{self, StreamConverter};
use crate::usage::Usage;

/// Rounds of tool calls the gateway runs for one request.
pub const MAX_ROUNDS: usize = 8;
/// Largest non-streaming round read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The MCP tools a request offers the model.
pub struct Offer {
    /// The offered tools the gateway runs itself (`require_approval: "never"`).
    run: HashSet<String>,
    /// The caller's `x-mcp-{server}-{header}` headers.
    forwarded: Forwarded,
}

impl Offer {
    pub fn runs_tools(&self) -> bool {
        !self.run.is_empty()
    }
}

/// One `{"type": "mcp"}` tool of the request.
struct Spec {
    /// `None`: every server the caller may use.
    servers: Option<Vec<String>>,
    allowed: Option<Vec<String>>,
    approval: Approval,
}

enum Approval {
    Never,
    /// `{"never": {"tool_names": [...]}}`: these run without approval.
    NeverFor(Vec<String>),
    Always,
}

fn names(v: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    let list = match v {
        Value::Array(_) => v,
        Value::Object(o) => o.get("tool_names").unwrap_or(&Value::Null),
        _ => &Value::Null,
    };
    list.as_array()
        .and_then(|a| {
            a.iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "an MCP tool's `{field}` must be a list of tool names or {{\"tool_names\": [...]}}"
            ))
        })
}

impl Spec {
    fn parse(t: &Value) -> Result<Self, ApiError> {
        let url = t.get("server_url").and_then(Value::as_str).unwrap_or("");
        let servers = if url == PROXY_URL {
            None
        } else if let Some(list) = url
            .strip_prefix(PROXY_URL)
            .and_then(|r| r.strip_prefix("/mcp/"))
            .filter(|l| !l.is_empty())
        {
            Some(list.split(',').map(str::to_owned).collect())
        } else {
            return Err(ApiError::bad_request(format!(
                "an MCP tool's `server_url` must be `{PROXY_URL}` (every MCP server the key may use) or `{PROXY_URL}/mcp/<server>`: the gateway calls only the MCP servers registered with it (got `{url}`)"
            )));
        };
        let allowed = match t.get("allowed_tools") {
            None | Some(Value::Null) => None,
            Some(v) => Some(names(v, "allowed_tools")?),
        };
        let approval = match t.get("require_approval") {
            Some(Value::String(s)) if s == "never" => Approval::Never,
            Some(Value::Object(o)) if o.contains_key("never") => {
                Approval::NeverFor(names(&o["never"], "require_approval.never")?)
            }
            _ => Approval::Always,
        };
        Ok(Self {
            servers,
            allowed,
            approval,
        })
    }

    fn scope<'a>(&self, live: &'a LiveState, access: &Access) -> Result<Scope<'a>, ApiError> {
        let Some(wanted) = &self.servers else {
            return Ok(Scope::All(live.mcp.granted(access)));
        };
        let mut servers = Vec::new();
        for name in wanted {
            let s = live.mcp.get(name).map_err(ApiError::not_found)?;
            servers.push(granted(access, s).map_err(|e| ApiError::forbidden(e.message))?);
        }
        Ok(Scope::All(servers))
    }

    /// Whether `list` names the tool `public` (`<server>-<tool>`, or the server's own
    /// name for it).
    fn names_tool(list: &[String], public: &str, scope: &Scope<'_>) -> bool {
        list.iter().any(|n| {
            n == public
                || scope.servers().iter().any(|s| {
                    public
                        .strip_prefix(s.config.name.as_str())
                        .and_then(|r| r.strip_prefix('-'))
                        == Some(n.as_str())
                })
        })
    }
}

/// Whether the request may name MCP tools (a cheap look at its raw `tools`).
pub fn named(req: &RawObject) -> bool {
    req.raw("tools").is_some_and(|t| t.contains("\"mcp\""))
}

/// Replaces the request's MCP tools with the functions they stand for (call when
/// [`named`]). `None`: it has none.
pub async fn offer(
    app: &App,
    live: &LiveState,
    ctx: &RequestCtx,
    headers: &RequestHeader,
    req: &mut RawObject,
) -> Result<Option<Offer>, ApiError> {
    let Some(Value::Array(tools)) = req.value("tools") else {
        return Ok(None);
    };
    if !tools
        .iter()
        .any(|t| t.get("type").and_then(Value::as_str) == Some("mcp"))
    {
        return Ok(None);
    }
    let access = Access::of(live, ctx.key.as_deref());
    let forwarded = Forwarded::of(headers, &live.mcp).map_err(ApiError::bad_request)?;
    let client = Client::new(app, live).forwarding(forwarded.clone());
    let mut offered = Vec::new();
    let mut seen = HashSet::new();
    let mut run = HashSet::new();
    for t in tools {
        if t.get("type").and_then(Value::as_str) != Some("mcp") {
            offered.push(t);
            continue;
        }
        let spec = Spec::parse(&t)?;
        let scope = spec.scope(live, &access)?;
        let listed = list_tools(&client, &scope, &access)
            .await
            .map_err(|e| ApiError::upstream(502, ErrorKind::Upstream, e.message))?;
        for tool in listed {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let allowed = spec
                .allowed
                .as_deref()
                .is_none_or(|a| Spec::names_tool(a, name, &scope));
            if !allowed || !seen.insert(name.to_owned()) {
                continue;
            }
            let runs = match &spec.approval {
                Approval::Never => true,
                Approval::NeverFor(list) => Spec::names_tool(list, name, &scope),
                Approval::Always => false,
            };
            if runs {
                run.insert(name.to_owned());
            }
            offered.push(function(&tool));
        }
    }
    if offered.is_empty() {
        req.remove("tools");
        req.remove("tool_choice");
    } else {
        req.set("tools", &offered)?;
    }
    Ok(Some(Offer { run, forwarded }))
}

/// An MCP tool as a chat function.
fn function(tool: &Value) -> Value {
    let mut f = json!({
        "name": tool["name"],
        "parameters": tool.get("inputSchema").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
    if let Some(d) = tool.get("description").and_then(Value::as_str) {
        f["description"] = json!(d);
    }
    json!({"type": "function", "function": f})
}

/// A tool call the model made.
struct Call {
    id: String,
    name: String,
    arguments: String,
}

impl Call {
    fn of_message(message: &Value) -> Vec<Call> {
        message
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| calls.iter().map(Self::of).collect())
            .unwrap_or_default()
    }

    fn of(c: &Value) -> Call {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
        let f = c.get("function");
        Call {
            id: text(c.get("id")),
            name: text(f.and_then(|f| f.get("name"))),
            arguments: text(f.and_then(|f| f.get("arguments"))),
        }
    }
}

/// What the request asked for, besides its body.
pub struct Turn {
    pub stream: bool,
    pub client_wants_usage: bool,
    /// The model group, as the client named it.
    pub model: String,
    pub drop_params: bool,
    pub shape: Shape,
}

/// The format the client gets the answer in.
pub enum Shape {
    /// Chat's, as the rounds give it.
    Chat,
    /// Another API's answer, made from chat's whole answer (usage summed).
    Full(Box<dyn FnOnce(Value) -> Value + Send>),
    /// Another API's stream: the chat chunks the client would get go through this.
    Stream(Box<dyn StreamConverter>),
}

/// The rounds before the answer: their usage, and their cost at the prices of the
/// deployments that served them.
#[derive(Default)]
struct Spent {
    usage: Usage,
    cost: f64,
}

fn add(a: Usage, b: Usage) -> Usage {
    Usage {
        input_tokens: a.input_tokens + b.input_tokens,
        output_tokens: a.output_tokens + b.output_tokens,
        cached_input_tokens: a.cached_input_tokens + b.cached_input_tokens,
        cache_write_input_tokens: a.cache_write_input_tokens + b.cache_write_input_tokens,
        reasoning_tokens: a.reasoning_tokens + b.reasoning_tokens,
    }
}

impl Spent {
    fn add(&mut self, d: &CompiledDeployment, u: Option<Usage>) {
        if let Some(u) = u {
            self.usage = add(self.usage, u);
            self.cost += d.prices.of(&u);
        }
    }

    /// The request's usage becomes every round's; its extra cost makes its cost the
    /// earlier rounds' plus the last's at `prices` (those of the deployment that served it,
    /// at which the request is priced).
    fn settle(&self, ctx: &mut RequestCtx, prices: &Prices, last: Option<Usage>) -> Usage {
        let last = last.unwrap_or_default();
        let total = add(self.usage, last);
        ctx.usage = Some(total);
        ctx.extra_cost += self.cost + prices.of(&last) - prices.of(&total);
        total
    }
}

/// Serves the request, running the model's calls of the tools `offer` runs. `plan` has
/// admitted it, on `first`; `req` is the body with the tools offered.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut plan: Failover<'_>,
    first: Arc<CompiledDeployment>,
    mut req: RawObject,
    offer: Offer,
    turn: Turn,
) -> Result<(), ApiError> {
    let mut messages = match req.value("messages") {
        Some(Value::Array(m)) => m,
        _ => Vec::new(),
    };
    let mut spent = Spent::default();
    let (mut out, mut full) = match turn.shape {
        Shape::Chat => (Out::default(), None),
        Shape::Full(f) => (Out::default(), Some(f)),
        Shape::Stream(c) => (
            Out {
                convert: Some((c, sse::Parser::default())),
                ..Out::default()
            },
            None,
        ),
    };
    // The text of the rounds before, for a non-streaming answer.
    let mut said = String::new();
    let mut d = first;
    let op = Operation::Chat {
        stream: turn.stream,
        skills: false,
    };
    for round in 0..=MAX_ROUNDS {
        if round == MAX_ROUNDS {
            req.set("tool_choice", &"none")?;
        }
        let served = attempt::serve(app, ctx, &mut plan, d, op, MAX_RESPONSE_BYTES, |d| {
            super::chat::upstream_body(&req, ClientApi::OpenAi, d, turn.drop_params)
        })
        .await;
        let served = match served {
            Ok(s) => s,
            Err(e) => {
                // The rounds before were served and are paid for.
                if round > 0 {
                    let prices = ctx
                        .deployment
                        .as_ref()
                        .map(|d| d.prices)
                        .unwrap_or_default();
                    spent.settle(ctx, &prices, None);
                }
                if !out.started {
                    return Err(e);
                }
                out.fail(session, ctx, &e).await;
                return Ok(());
            }
        };
        let sent = served.sent;
        d = served.deployment;
        let answered = match served.reply {
            Reply::Full(body) => Answered::full(&d, &body, &turn.model)?,
            Reply::Stream { mut resp, first } => {
                out.round(session, ctx, &mut resp, first, &d, &turn.model)
                    .await
            }
        };
        let runs = round < MAX_ROUNDS
            && !answered.failed
            && !out.gone
            && !answered.calls.is_empty()
            && answered.calls.iter().all(|c| offer.run.contains(&c.name));
        if !runs {
            let mut answered = answered;
            if let Some(body) = answered.body.as_mut().filter(|_| !said.is_empty()) {
                let last = body
                    .pointer("/choices/0/message/content")
                    .and_then(Value::as_str);
                body["choices"][0]["message"]["content"] = json!(joined(&said, last.unwrap_or("")));
            }
            let turn = Turn {
                shape: full.take().map_or(Shape::Chat, Shape::Full),
                ..turn
            };
            return finish(session, ctx, &mut out, &spent, &d, sent, answered, turn).await;
        }
        let text = answered.message.get("content").and_then(Value::as_str);
        said = joined(&said, text.unwrap_or(""));
        spent.add(&d, answered.usage);
        if let Some(lease) = ctx.lease.take() {
            lease.settle(
                answered.usage.as_ref().map(Usage::total),
                Some(sent.elapsed()),
                None,
            );
        }
        let (results, charges) = results(app, live, ctx, &offer, &answered.calls).await;
        for c in charges {
            ctx.extra_cost += c.cost;
            ctx.charge_holds.extend(c.holds);
        }
        messages.push(answered.message);
        messages.extend(results);
        req.set("messages", &messages)?;
    }
    Err(ApiError::internal(
        "the tool rounds ended without an answer",
    ))
}

/// `before` and `then`, a blank line between them when both have text.
fn joined(before: &str, then: &str) -> String {
    match (before.is_empty(), then.is_empty()) {
        (true, _) => then.to_owned(),
        (false, true) => before.to_owned(),
        (false, false) => format!("{before}{SEPARATOR}{then}"),
    }
}

/// Between the texts of two rounds.
const SEPARATOR: &str = "\n\n";

/// Sends the answer: the last round, with every round's usage.
#[allow(clippy::too_many_arguments)]
async fn finish(
    session: &mut Session,
    ctx: &mut RequestCtx,
    out: &mut Out,
    spent: &Spent,
    d: &CompiledDeployment,
    sent: Instant,
    answered: Answered,
    turn: Turn,
) -> Result<(), ApiError> {
    ctx.upstream_latency = Some(sent.elapsed());
    if let Some(lease) = ctx.lease.take() {
        lease.settle(
            answered.usage.as_ref().map(Usage::total),
            Some(sent.elapsed()).filter(|_| !answered.failed),
            None,
        );
    }
    let total = spent.settle(ctx, &d.prices, answered.usage);
    let usage = |mut u: Value| {
        if !u.is_object() {
            u = json!({});
        }
        u["prompt_tokens"] = json!(total.input_tokens);
        u["completion_tokens"] = json!(total.output_tokens);
        u["total_tokens"] = json!(total.total());
        u
    };
    match answered.body {
        Some(mut v) => {
            v["usage"] = usage(v["usage"].take());
            if let Shape::Full(shape) = turn.shape {
                v = shape(v);
            }
            let mut headers = super::response_headers(ctx, d);
            headers.extend(super::cost_header(ctx));
            if let Err(e) = respond::json(session, ctx, &headers, crate::json::bytes(&v)).await {
                tracing::debug!(error = %e, "client went away");
            }
        }
        None if answered.failed || out.gone => {}
        None => {
            let mut events = answered.held;
            if turn.client_wants_usage {
                let mut u = usage(json!({}));
                if let Some(cost) = ctx.cost() {
                    u["cost"] = json!(cost);
                }
                let mut chunk = answered.last_chunk;
                chunk["choices"] = json!([]);
                chunk["usage"] = u;
                events.push(sse::data_json(&chunk));
            }
            events.push(sse::data("[DONE]"));
            out.write(session, ctx, d, &mut events).await;
            let _ = respond::stream_end(session).await;
        }
    }
    Ok(())
}

/// The tool messages for `calls`, run concurrently, and the charges of those that ran. A
/// call that fails answers with its error, so the model can take it into account.
async fn results(
    app: &App,
    live: &LiveState,
    ctx: &RequestCtx,
    offer: &Offer,
    calls: &[Call],
) -> (Vec<Value>, Vec<Charge>) {
    let access = Access::of(live, ctx.key.as_deref());
    let scope = Scope::All(live.mcp.granted(&access));
    let client = Client::new(app, live).forwarding(offer.forwarded.clone());
    futures_util::future::join_all(calls.iter().map(|c| {
        let (access, scope, client) = (&access, &scope, &client);
        async move {
            let args = if c.arguments.trim().is_empty() {
                "{}"
            } else {
                c.arguments.as_str()
            };
            let (content, charge) = match serde_json::from_str::<Value>(args) {
                Err(e) => (format!("error: the arguments are not JSON: {e}"), None),
                Ok(arguments) => {
                    let params = json!({"name": c.name, "arguments": arguments});
                    let call = call_tool(app, live, client, (scope, access), ctx, &params);
                    match call.await {
                        Ok((result, charge)) => (result_text(&result), Some(charge)),
                        Err(e) => (format!("error: {}", e.message), None),
                    }
                }
            };
            let message = json!({"role": "tool", "tool_call_id": c.id, "content": content});
            (message, charge)
        }
    }))
    .await
    .into_iter()
    .fold(
        (Vec::new(), Vec::new()),
        |(mut messages, mut charges), (m, c)| {
            messages.push(m);
            charges.extend(c);
            (messages, charges)
        },
    )
}

/// A `tools/call` result as a tool message's text: its text parts, other parts as JSON.
fn result_text(result: &Value) -> String {
    let parts: Vec<String> = result
        .get("content")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .map(|p| match p.get("text").and_then(Value::as_str) {
                    Some(t) if p.get("type").and_then(Value::as_str) == Some("text") => {
                        t.to_owned()
                    }
                    _ => p.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let text = if parts.is_empty() {
        result
            .get("structuredContent")
            .map(Value::to_string)
            .unwrap_or_default()
    } else {
        parts.join("\n")
    };
    if result.get("isError") == Some(&Value::Bool(true)) {
        format!("error: {text}")
    } else {
        text
    }
}

/// One round's answer.
#[derive(Default)]
struct Answered {
    /// The assistant message (text and tool calls), for the next round.
    message: Value,
    calls: Vec<Call>,
    usage: Option<Usage>,
    /// Non-streaming: the whole answer, in OpenAI's format.
    body: Option<Value>,
    /// Streaming: the events held back (tool calls, the end), in order.
    held: Vec<Bytes>,
    /// Streaming: the last chunk seen (its id, model and creation time).
    last_chunk: Value,
    /// Streaming: the round ended with an error event, already sent.
    failed: bool,
}

impl Answered {
    fn full(d: &CompiledDeployment, body: &[u8], model: &str) -> Result<Self, ApiError> {
        let (v, usage) = super::chat::openai_answer(d.format, body, model)?;
        let message = v.pointer("/choices/0/message").cloned().unwrap_or_default();
        Ok(Self {
            calls: Call::of_message(&message),
            message,
            usage,
            body: Some(v),
            ..Self::default()
        })
    }
}

/// A round's stream, as it is read: text, tool calls by index, held events.
#[derive(Default)]
struct Reading {
    /// Earlier rounds' text has gone out: this round's starts with [`SEPARATOR`].
    separate: bool,
    text: String,
    calls: BTreeMap<u64, (String, String, String)>,
    held: Vec<Bytes>,
    last: Value,
}

impl Reading {
    /// Takes one OpenAI chunk event; returns it when it goes to the client now.
    fn take(&mut self, ev: sse::Event) -> Option<Bytes> {
        if ev.data.trim() == "[DONE]" {
            return None;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) else {
            return Some(ev.raw);
        };
        let Some(choice) = v
            .get_mut("choices")
            .and_then(Value::as_array_mut)
            .and_then(|c| c.first_mut())
        else {
            // The usage chunk: the converter has read it; the answer's goes out at the end.
            self.last = v;
            return None;
        };
        let mut raw = ev.raw;
        if let Some(t) = choice.pointer("/delta/content").and_then(Value::as_str) {
            self.text.push_str(t);
            if self.separate && !t.is_empty() {
                self.separate = false;
                choice["delta"]["content"] = json!(format!("{SEPARATOR}{t}"));
                raw = sse::data_json(&v);
                return self.take_parsed(v, raw);
            }
        }
        self.take_parsed(v, raw)
    }

    fn take_parsed(&mut self, v: Value, raw: Bytes) -> Option<Bytes> {
        let choice = v.pointer("/choices/0").unwrap_or(&Value::Null);
        let delta = choice.get("delta");
        let calls = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array);
        for c in calls.into_iter().flatten() {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let entry = self.calls.entry(index).or_default();
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
            if let Some(id) = c.get("id").and_then(Value::as_str) {
                entry.0 = id.to_owned();
            }
            let f = c.get("function");
            entry.1.push_str(&text(f.and_then(|f| f.get("name"))));
            entry.2.push_str(&text(f.and_then(|f| f.get("arguments"))));
        }
        let ends = choice.get("finish_reason").is_some_and(|f| !f.is_null());
        let hold = calls.is_some() || ends;
        self.last = v;
        if hold {
            self.held.push(raw);
            None
        } else {
            Some(raw)
        }
    }

    fn answered(self, usage: Option<Usage>, failed: bool) -> Answered {
        let calls: Vec<Call> = self
            .calls
            .into_values()
            .map(|(id, name, arguments)| Call {
                id,
                name,
                arguments,
            })
            .collect();
        let mut message = json!({"role": "assistant", "content": self.text});
        if !calls.is_empty() {
            message["tool_calls"] = calls
                .iter()
                .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                .collect();
        }
        Answered {
            message,
            calls,
            usage,
            body: None,
            held: self.held,
            last_chunk: self.last,
            failed,
        }
    }
}

/// The client's stream, started with the first text of any round.
#[derive(Default)]
struct Out {
    started: bool,
    /// Some round's text has gone out.
    said: bool,
    /// The client went away.
    gone: bool,
    /// [`Shape::Stream`]'s converter, and the parser of the chat events it reads.
    convert: Option<(Box<dyn StreamConverter>, sse::Parser)>,
}

impl Out {
    /// Chat events become the client's format.
    fn convert(&mut self, events: &mut Vec<Bytes>) {
        let Some((c, parser)) = &mut self.convert else {
            return;
        };
        let mut out = Vec::new();
        for b in events.drain(..) {
            // Whole events, each written by the chat converter or this module.
            for ev in parser.feed(&b).unwrap_or_default() {
                c.event(&ev, &mut out);
            }
        }
        *events = out;
    }

    async fn write(
        &mut self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        d: &CompiledDeployment,
        events: &mut Vec<Bytes>,
    ) {
        self.convert(events);
        if self.gone || events.is_empty() {
            return;
        }
        self.start(session, ctx, d).await;
        if !self.gone && respond::stream_write(session, events).await.is_err() {
            self.gone = true;
        }
    }

    /// Starts the stream, once: the client's time to first token.
    async fn start(&mut self, session: &mut Session, ctx: &mut RequestCtx, d: &CompiledDeployment) {
        if self.started || self.gone {
            return;
        }
        self.started = true;
        ctx.time_to_first_token = Some(ctx.start.elapsed());
        let headers = super::response_headers(ctx, d);
        if respond::stream_start(session, ctx, &headers).await.is_err() {
            self.gone = true;
        }
    }

    /// Ends a started stream with `e`.
    async fn fail(&mut self, session: &mut Session, ctx: &mut RequestCtx, e: &ApiError) {
        ctx.error_type = Some(e.kind.type_str());
        if self.gone {
            return;
        }
        let mut events = vec![stream::error_event(ClientApi::OpenAi, e)];
        self.convert(&mut events);
        let _ = respond::stream_write(session, &mut events).await;
        let _ = respond::stream_end(session).await;
    }

    /// Reads one streamed round: its text goes to the client as it arrives.
    async fn round(
        &mut self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        resp: &mut ProviderResponse,
        first: Bytes,
        d: &CompiledDeployment,
        model: &str,
    ) -> Answered {
        let mut conv = stream::converter(d.format, ClientApi::OpenAi, true, model, d.prices);
        let mut decoder = crate::eventstream::Decoder::for_provider(d.deployment.provider);
        let mut events = sse::Parser::default();
        let mut reading = Reading {
            separate: self.said,
            ..Reading::default()
        };
        let mut converted = Vec::new();
        let mut now = Vec::new();
        let mut pending = Some(first);
        let mut failed = None;
        loop {
            let next = match pending.take() {
                Some(chunk) => Ok(Some(chunk)),
                None => resp.body.next_chunk().await,
            };
            let ended = match next {
                Ok(Some(chunk)) => match decoder.feed(&chunk) {
                    Ok(evs) => {
                        evs.iter().for_each(|ev| conv.event(ev, &mut converted));
                        false
                    }
                    Err(e) => {
                        failed = Some(ApiError::upstream(502, ErrorKind::Upstream, e.to_string()));
                        true
                    }
                },
                Ok(None) => {
                    if let Some(ev) = decoder.finish() {
                        conv.event(&ev, &mut converted);
                    }
                    conv.finish(&mut converted);
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, model, "upstream stream failed mid-way");
                    failed = Some(e);
                    true
                }
            };
            for b in converted.drain(..) {
                for ev in events.feed(&b).unwrap_or_default() {
                    now.extend(reading.take(ev));
                }
            }
            self.write(session, ctx, d, &mut now).await;
            if ended || self.gone {
                break;
            }
        }
        if let Some(e) = &failed {
            self.start(session, ctx, d).await;
            self.fail(session, ctx, e).await;
        }
        self.said |= !reading.text.is_empty();
        reading.answered(conv.usage(), failed.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> sse::Event {
        sse::Event {
            event: None,
            data: data.to_owned(),
            raw: Bytes::from(format!("data: {data}\n\n")),
        }
    }

    #[test]
    fn text_goes_out_and_tool_calls_are_held_and_assembled() {
        let mut r = Reading::default();
        let role = r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"Let me "}}]}"#;
        let text = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"look."}}]}"#;
        let call = r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"docs-search","arguments":"{\"q\":"}}]}}]}"#;
        let more = r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"x\"}"}}]}}]}"#;
        let end = r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#;
        let usage = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        assert!(r.take(event(role)).is_some());
        assert!(r.take(event(text)).is_some());
        assert!(r.take(event(call)).is_none());
        assert!(r.take(event(more)).is_none());
        assert!(r.take(event(end)).is_none());
        assert!(r.take(event(usage)).is_none());
        assert!(r.take(event("[DONE]")).is_none());
        let a = r.answered(None, false);
        assert_eq!(a.held.len(), 3, "the two tool-call chunks and the end");
        assert_eq!(a.calls.len(), 1);
        assert_eq!(a.calls[0].id, "call_1");
        assert_eq!(a.calls[0].name, "docs-search");
        assert_eq!(a.calls[0].arguments, r#"{"q":"x"}"#);
        assert_eq!(a.message["content"], "Let me look.");
        assert_eq!(
            a.message["tool_calls"][0]["function"]["arguments"],
            r#"{"q":"x"}"#
        );
        assert_eq!(a.last_chunk["id"], "c");
    }

    #[test]
    fn a_later_rounds_text_is_set_apart_once() {
        let mut r = Reading {
            separate: true,
            ..Reading::default()
        };
        let role =
            r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        let a = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"It is"}}]}"#;
        let b = r#"{"id":"c","choices":[{"index":0,"delta":{"content":" sunny."}}]}"#;
        assert_eq!(r.take(event(role)).unwrap(), event(role).raw);
        let first = r.take(event(a)).unwrap();
        assert!(std::str::from_utf8(&first)
            .unwrap()
            .contains(r#""content":"\n\nIt is""#));
        assert_eq!(r.take(event(b)).unwrap(), event(b).raw);
        assert_eq!(
            r.text, "It is sunny.",
            "the model's own text, for its next round"
        );
        assert_eq!(joined("", "x"), "x");
        assert_eq!(joined("a", ""), "a");
        assert_eq!(joined("a", "b"), "a\n\nb");
    }

    #[test]
    fn specs_name_servers_tools_and_approval() {
        let s = Spec::parse(
            &json!({"type": "mcp", "server_url": "litellm_proxy", "require_approval": "never"}),
        )
        .unwrap();
        assert!(s.servers.is_none() && s.allowed.is_none());
        assert!(matches!(s.approval, Approval::Never));
        let s = Spec::parse(
            &json!({"type": "mcp", "server_url": "litellm_proxy/mcp/a,b",
            "allowed_tools": {"tool_names": ["search"]},
            "require_approval": {"never": {"tool_names": ["a-search"]}}}),
        )
        .unwrap();
        assert_eq!(
            s.servers.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert_eq!(s.allowed.as_deref(), Some(&["search".to_owned()][..]));
        assert!(matches!(s.approval, Approval::NeverFor(ref l) if l == &["a-search"]));
        let s = Spec::parse(&json!({"type": "mcp", "server_url": "litellm_proxy/mcp/a"})).unwrap();
        assert!(matches!(s.approval, Approval::Always));
        for bad in [
            json!({"type": "mcp", "server_url": "https://example.com/mcp"}),
            json!({"type": "mcp"}),
            json!({"type": "mcp", "server_url": "litellm_proxy/mcp/"}),
            json!({"type": "mcp", "server_url": "litellm_proxy", "allowed_tools": "search"}),
        ] {
            let e = Spec::parse(&bad).err().expect("refused");
            assert_eq!(e.status, 400, "{bad}");
        }
    }

    #[test]
    fn results_become_text() {
        let r = json!({"content": [{"type": "text", "text": "a"}, {"type": "image", "data": "x"}]});
        assert_eq!(result_text(&r), "a\n{\"data\":\"x\",\"type\":\"image\"}");
        let r = json!({"content": [], "structuredContent": {"n": 1}});
        assert_eq!(result_text(&r), "{\"n\":1}");
        let r = json!({"content": [{"type": "text", "text": "boom"}], "isError": true});
        assert_eq!(result_text(&r), "error: boom");
    }

    #[test]
    fn spent_prices_each_round_at_its_deployment() {
        let mut ctx = RequestCtx::new();
        let spent = Spent {
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                cached_input_tokens: 0,
                ..Usage::default()
            },
            cost: 1.0,
        };
        let prices = Prices {
            input: 0.001,
            output: 0.002,
            ..Prices::default()
        };
        let last = Usage {
            input_tokens: 20,
            output_tokens: 2,
            cached_input_tokens: 0,
            ..Usage::default()
        };
        let total = spent.settle(&mut ctx, &prices, Some(last));
        assert_eq!(total.input_tokens, 30);
        assert_eq!(total.output_tokens, 7);
        assert_eq!(ctx.usage, Some(total));
        // What the request is charged: its usage at the last round's prices, plus extra.
        let charged = prices.of(&total) + ctx.extra_cost;
        assert!((charged - (1.0 + 0.024)).abs() < 1e-12, "{charged}");
    }
}
