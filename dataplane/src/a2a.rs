//! The A2A gateway: each agent of `agents:` at `/a2a/{agent}`, behind the gateway's keys.
//!
//! - `GET /a2a/{agent}/.well-known/agent-card.json` (and LiteLLM's `agent.json`): the
//!   agent's card (the configured one, else the agent's own, fetched and kept for
//!   [`CARD_TTL`]) with every JSON-RPC interface pointing at the gateway; interfaces of
//!   other bindings, the agent's security schemes and its signatures are left out (callers
//!   present the gateway's keys, and the rewritten card no longer matches a signature).
//! - `POST /a2a/{agent}`: a JSON-RPC request, relayed to the agent unchanged with the
//!   caller's `A2A-Version` and `A2A-Extensions`, the agent's configured headers, and a
//!   `traceparent` naming the gateway's `invoke_agent` span (in the caller's trace when it
//!   sent one, else in the request's). A streamed answer is relayed event by event as it arrives; an agent that
//!   breaks off a stream ends it with a JSON-RPC error event. Both protocol versions (1.0
//!   and 0.3) pass through as the caller and the agent speak them.
//!
//! The agent is named by the path, never by the task: `GetTask`, `CancelTask` and the rest
//! go to the agent whose URL the caller uses, so every data plane answers them alike.
//!
//! Who may call: the master key (or an open gateway) every agent; a virtual key, those its
//! object permissions allow ([`crate::permission`]). An agent is named by its name or its
//! registry id. Errors are JSON-RPC error objects with the HTTP status that fits (401, 403,
//! 404, 400, 502).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use routeiq_proto::A2aAgent;
use serde_json::{json, Value};

use crate::auth;
use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::jsonrpc::{Message, RpcError, INTERNAL_ERROR, INVALID_REQUEST};
use crate::respond;
use crate::state::{App, LiveState};
use crate::upstream::{Target, UpstreamRequest};

/// How long an agent's own card is kept before it is fetched again.
pub const CARD_TTL: Duration = Duration::from_secs(60);
/// The longest wait for an agent's answer to begin, and between two of its stream's
/// events (agents written with the A2A SDKs send a keep-alive every 15 s).
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest card, and the largest non-streamed answer, read from an agent.
const MAX_CARD: usize = 1024 * 1024;
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Caller headers relayed to the agent.
const RELAYED: [&str; 2] = ["a2a-version", "a2a-extensions"];

/// The trace an agent call joins (W3C trace context): the caller's, from its
/// `traceparent`, else the one named by the request id; and the id of the gateway's
/// `invoke_agent` span, which the agent sees as its parent.
pub struct Trace {
    pub request_id: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The caller's span (16 hex digits), if it sent one.
    pub parent: Option<String>,
    /// The gateway's span (16 hex digits).
    pub span_id: String,
    /// The caller's flags (`01` without a caller's trace).
    pub flags: String,
    /// The gateway's span, when spans are exported.
    span: Option<crate::otel::AgentSpan>,
}

impl Trace {
    /// The trace of a request whose id is `request_id`, whose caller sent `caller`.
    pub fn of(caller: Option<&crate::otel::TraceParent>, request_id: &str) -> Self {
        let span_id = format!("{:016x}", fastrand::u64(1..));
        let (trace_id, parent, flags) = match caller {
            Some(t) => (
                t.trace_id.clone(),
                Some(t.parent_id.clone()),
                t.flags.clone(),
            ),
            None => (request_id.to_owned(), None, "01".to_owned()),
        };
        Self {
            request_id: request_id.to_owned(),
            trace_id,
            parent,
            span_id,
            flags,
            span: None,
        }
    }

    /// Opens the gateway's span for a call of `agent` (its id is the agent's parent).
    fn start(&mut self, spans: Option<&crate::otel::Spans>, agent: &str) {
        if let Some(spans) = spans {
            let span = spans.agent_call(self, agent);
            self.span_id = span.span_id();
            // The sampler's decision: a new trace it dropped is not sampled downstream.
            self.flags = span.flags();
            self.span = Some(span);
        }
    }

    /// The `traceparent` the agent is sent.
    fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

/// An agent, compiled for calls.
pub struct Agent {
    pub config: A2aAgent,
    target: Target,
    /// The path of its JSON-RPC endpoint.
    path: String,
    headers: Vec<(&'static str, String)>,
    who: Arc<str>,
}

impl Agent {
    fn compile(config: A2aAgent) -> Result<Self, String> {
        let (target, path) = crate::mcp::client::endpoint(&config.url)?;
        let headers = config
            .headers
            .iter()
            .map(|(k, v)| (crate::mcp::client::intern(k), v.expose().to_owned()))
            .collect();
        let who = Arc::from(format!("agent {}", config.name));
        Ok(Self {
            config,
            target,
            path,
            headers,
            who,
        })
    }

    /// Sends a request to the agent (its address checked against the SSRF guard, its
    /// configured headers added) and waits for a 2xx answer to begin.
    async fn send(
        &self,
        app: &App,
        method: http::Method,
        path: String,
        mut headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<crate::upstream::Exchange, Unsent> {
        app.upstream
            .refuse_internal(&self.target, &self.who)
            .await
            .map_err(|e| Unsent::Refused(refusal(e)))?;
        headers.extend(self.headers.iter().cloned());
        let req = UpstreamRequest {
            method,
            path,
            headers,
            body,
        };
        let mut ex = app
            .upstream
            .send(&self.target, req, Some(READ_TIMEOUT), Arc::clone(&self.who))
            .await
            .map_err(|e| Unsent::Failed(e.message))?;
        if !(200..300).contains(&ex.status) {
            ex.read_error_body().await;
            return Err(Unsent::Failed(format!("it answered HTTP {}", ex.status)));
        }
        Ok(ex)
    }

    /// The path of its own card: `/.well-known/agent-card.json` beside its endpoint.
    fn card_path(&self) -> String {
        let base = self.path.split('?').next().unwrap_or("");
        format!("{}/.well-known/agent-card.json", base.trim_end_matches('/'))
    }
}

/// Why a request to an agent got no 2xx answer.
enum Unsent {
    /// Refused before it was sent (the SSRF guard, the egress allow-list).
    Refused(RpcError),
    /// The agent did not answer well: why, in words for the caller's message.
    Failed(String),
}

impl Unsent {
    /// The caller's error, `failed` saying it for an agent that did not answer well.
    fn or(self, failed: impl FnOnce(String) -> RpcError) -> RpcError {
        match self {
            Self::Refused(e) => e,
            Self::Failed(why) => failed(why),
        }
    }
}

/// The agents of the served state, by name.
#[derive(Default)]
pub struct Registry {
    /// The agents this data plane can use.
    agents: Vec<Arc<Agent>>,
    /// Every agent of the snapshot, as configured (those not in `agents` have a URL this
    /// data plane cannot use, logged): what a delta changes.
    configs: Vec<A2aAgent>,
}

impl Registry {
    pub fn compile(agents: &[A2aAgent]) -> Self {
        let mut out = Self {
            configs: agents.to_vec(),
            ..Self::default()
        };
        for a in agents {
            match Agent::compile(a.clone()) {
                Ok(agent) => out.agents.push(Arc::new(agent)),
                Err(e) => tracing::warn!(agent = %a.name, error = %e, "agent left out"),
            }
        }
        out
    }

    pub fn configs(&self) -> &[A2aAgent] {
        &self.configs
    }

    /// The agent named `name`, or else whose id it is.
    fn get(&self, name: &str) -> Result<&Arc<Agent>, RpcError> {
        let found = (self.agents.iter().find(|a| a.config.name == name))
            .or_else(|| self.agents.iter().find(|a| a.config.id == name));
        if let Some(a) = found {
            return Ok(a);
        }
        let left_out = self.configs.iter().any(|a| a.name == name || a.id == name);
        let message = if left_out {
            format!("agent `{name}` is not served by this data plane: its configuration could not be loaded (the data plane's log says why)")
        } else {
            format!("no agent named `{name}`")
        };
        Err(RpcError::new(404, INVALID_REQUEST, message))
    }
}

/// Agents' own cards as fetched, by agent name and URL.
#[derive(Default)]
pub struct Cards(Mutex<HashMap<(String, String), Fetched>>);

/// A card, and when it was fetched.
type Fetched = (Instant, Arc<Value>);

impl Cards {
    fn fresh(&self, agent: &Agent) -> Option<Arc<Value>> {
        let cards = self.0.lock().ok()?;
        let (at, card) = cards.get(&(agent.config.name.clone(), agent.config.url.clone()))?;
        (at.elapsed() < CARD_TTL).then(|| Arc::clone(card))
    }

    fn keep(&self, agent: &Agent, card: Arc<Value>) {
        if let Ok(mut cards) = self.0.lock() {
            cards.retain(|_, (at, _)| at.elapsed() < CARD_TTL);
            let key = (agent.config.name.clone(), agent.config.url.clone());
            cards.insert(key, (Instant::now(), card));
        }
    }
}

/// The caller (master key or virtual key), and the agent if the caller may use it.
fn admit<'a>(
    live: &'a LiveState,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    name: &str,
) -> Result<&'a Arc<Agent>, RpcError> {
    authenticate(live, req, ctx)?;
    permitted(live, ctx, name)
}

/// The caller's error the gateway answered itself (no key, a limit, a body too large), as
/// a JSON-RPC error with its HTTP status.
fn refusal(e: crate::error::ApiError) -> RpcError {
    RpcError::new(e.status, INVALID_REQUEST, e.message)
}

/// Who calls: the master key or a virtual key (`ctx.key`).
fn authenticate(
    live: &LiveState,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<(), RpcError> {
    let caller = auth::authenticate(live, req).map_err(refusal)?;
    ctx.key = caller.into_key();
    Ok(())
}

/// The agent named `name`, if the authenticated caller may call it.
fn permitted<'a>(
    live: &'a LiveState,
    ctx: &mut RequestCtx,
    name: &str,
) -> Result<&'a Arc<Agent>, RpcError> {
    let agent = live.agents.get(name)?;
    ctx.model = Some(format!("a2a/{}", agent.config.name));
    let access = crate::permission::Access::of(live, ctx.key.as_deref());
    if !access.agent(&agent.config, live.agent_access_default_deny) {
        return Err(RpcError::new(
            403,
            INVALID_REQUEST,
            format!(
                "this key may not call agent `{name}`: its object_permission (or its team's or organization's) does not grant it{}",
                if live.agent_access_default_deny {
                    ", and only public agents may be called without one (agent_access_default_deny)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(agent)
}

/// `GET /a2a/{agent}/.well-known/agent-card.json`.
pub async fn card(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    name: &str,
) -> Result<(), ApiError> {
    let answer = async {
        let agent = admit(live, session.req_header(), ctx, name)?;
        let mut card = match &agent.config.card {
            Some(c) => c.clone(),
            None => fetch_card(app, live, agent).await?.as_ref().clone(),
        };
        rewrite(&mut card, &public_url(session.req_header(), name));
        Ok::<_, RpcError>(crate::json::bytes(&card))
    };
    let (status, body) = match answer.await {
        Ok(body) => (200, body),
        Err(e) => {
            ctx.error_type = Some("a2a_error");
            (e.status, e.body(&Value::Null))
        }
    };
    let headers = [("x-litellm-call-id", ctx.request_id.clone())];
    respond::full(session, ctx, status, "application/json", &headers, body)
        .await
        .map_err(|e| ApiError::internal(format!("writing the agent card: {e}")))
}

/// The agent's own card: kept, or fetched now.
async fn fetch_card(app: &App, live: &LiveState, agent: &Agent) -> Result<Arc<Value>, RpcError> {
    let cards = &live.lasting().a2a_cards;
    if let Some(card) = cards.fresh(agent) {
        return Ok(card);
    }
    let failed = |why: String| {
        tracing::warn!(agent = %agent.config.name, error = %why, "agent card not fetched");
        RpcError::new(
            502,
            INTERNAL_ERROR,
            format!(
                "agent `{}`: its card could not be fetched: {why}",
                agent.config.name
            ),
        )
    };
    let headers = vec![("accept", "application/json".to_owned())];
    let mut ex = agent
        .send(
            app,
            http::Method::GET,
            agent.card_path(),
            headers,
            Bytes::new(),
        )
        .await
        .map_err(|e| e.or(failed))?;
    let body = ex.read_all(MAX_CARD).await.map_err(|e| failed(e.message))?;
    let card: Value = serde_json::from_slice(&body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| failed("it is not a JSON object".into()))?;
    let card = Arc::new(card);
    cards.keep(agent, Arc::clone(&card));
    Ok(card)
}

/// Where callers reach agent `name`: this gateway, as the request addressed it.
fn public_url(req: &RequestHeader, name: &str) -> String {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.parse::<http::uri::Authority>().is_ok())
        .or_else(|| req.uri.authority().map(http::uri::Authority::as_str))
        .unwrap_or("localhost");
    let scheme = match req
        .headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/a2a/{name}")
}

/// Points the card's JSON-RPC interfaces (1.0's `supportedInterfaces`, 0.3's `url` and
/// `additionalInterfaces`) at `url`, and leaves out what callers of the gateway cannot use.
fn rewrite(card: &mut Value, url: &str) {
    let Some(card) = card.as_object_mut() else {
        return;
    };
    let jsonrpc = |i: &Value, field: &str| {
        i.get(field)
            .and_then(Value::as_str)
            .is_none_or(|b| b.eq_ignore_ascii_case("JSONRPC"))
    };
    for (list, field) in [
        ("supportedInterfaces", "protocolBinding"),
        ("additionalInterfaces", "transport"),
    ] {
        if let Some(Value::Array(interfaces)) = card.get_mut(list) {
            interfaces.retain(|i| jsonrpc(i, field));
            for i in interfaces.iter_mut().filter_map(Value::as_object_mut) {
                i.insert("url".into(), json!(url));
            }
        }
    }
    if card.contains_key("url") {
        card.insert("url".into(), json!(url));
    }
    if card.contains_key("preferredTransport") {
        card.insert("preferredTransport".into(), json!("JSONRPC"));
    }
    for field in [
        "securitySchemes",
        "security",
        "securityRequirements",
        "signatures",
    ] {
        card.remove(field);
    }
}

/// `POST /a2a/{agent}`.
pub async fn call(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    name: &str,
) -> Result<(), ApiError> {
    let mut id = Value::Null;
    // Under the request's span when spans are exported, else under the caller's.
    let route = ctx.span.as_ref().map(crate::otel::RouteSpan::traceparent);
    let mut trace = Trace::of(
        route.as_ref().or(ctx.traceparent.as_deref()),
        &ctx.request_id,
    );
    let relayed = relay(app, live, session, ctx, name, &mut trace, &mut id).await;
    if let Err(e) = relayed {
        ctx.error_type = Some("a2a_error");
        if ctx.response_started {
            return Ok(());
        }
        let headers = [("x-litellm-call-id", ctx.request_id.clone())];
        respond::full(
            session,
            ctx,
            e.status,
            "application/json",
            &headers,
            e.body(&id),
        )
        .await
        .map_err(|e| ApiError::internal(format!("writing the agent's error: {e}")))?;
    }
    Ok(())
}

async fn relay(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    name: &str,
    trace: &mut Trace,
    id: &mut Value,
) -> Result<(), RpcError> {
    authenticate(live, session.req_header(), ctx)?;
    let body = respond::read_body(session, live.max_request_body_bytes)
        .await
        .map_err(refusal)?;
    let msg = Message::parse(&body)?;
    *id = msg.id.unwrap_or(Value::Null);
    let agent = Arc::clone(permitted(live, ctx, name)?);
    // Budgets and rate limits, as for a model: its price held, no tokens.
    let cost = agent.config.cost_per_query;
    ctx.hold(app, live, cost, 0).await.map_err(refusal)?;
    ctx.served_by = Some(("a2a", agent.config.id.clone()));
    // An admitted call is a span.
    trace.start(app.spans.as_ref(), name);
    let req = session.req_header();
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        (
            "accept",
            header(req, "accept")
                .unwrap_or("application/json")
                .to_owned(),
        ),
    ];
    for name in RELAYED {
        if let Some(v) = header(req, name) {
            headers.push((name, v.to_owned()));
        }
    }
    headers.push(("traceparent", trace.header()));
    if let Some(s) = &ctx.tracestate {
        headers.push(("tracestate", s.as_ref().to_owned()));
    }
    // A 1.0 caller reads a stream's error from an `error` event; 0.3's from a data frame.
    let error_event = header(req, "a2a-version").is_some_and(|v| !v.starts_with("0."));
    let unreachable = |why: String| {
        tracing::warn!(agent = %agent.config.name, error = %why, "agent call failed");
        RpcError::new(
            502,
            INTERNAL_ERROR,
            format!("agent `{}` did not answer: {why}", agent.config.name),
        )
    };
    let sent = Instant::now();
    let mut ex = agent
        .send(app, http::Method::POST, agent.path.clone(), headers, body)
        .await
        .map_err(|e| e.or(unreachable))?;
    // Charged once the agent answers.
    ctx.extra_cost += cost;
    let content_type = ex
        .header("content-type")
        .unwrap_or("application/json")
        .to_owned();
    let extra = [("x-litellm-call-id", ctx.request_id.clone())];
    if !content_type.starts_with("text/event-stream") {
        let answer = ex
            .read_all(MAX_ANSWER)
            .await
            .map_err(|e| unreachable(e.message))?;
        ctx.upstream_latency = Some(sent.elapsed());
        return respond::full(session, ctx, ex.status, &content_type, &extra, answer)
            .await
            .map_err(|_| RpcError::new(499, INTERNAL_ERROR, "the caller went away"));
    }
    if respond::start(session, ctx, ex.status, &content_type, &extra)
        .await
        .is_err()
    {
        return Ok(()); // the caller went away
    }
    let mut out = Vec::with_capacity(1);
    loop {
        match ex.next_chunk().await {
            Ok(Some(chunk)) => {
                if ctx.time_to_first_token.is_none() {
                    ctx.time_to_first_token = Some(sent.elapsed());
                }
                out.push(chunk);
                if respond::stream_write(session, &mut out).await.is_err() {
                    break; // the caller went away; dropping the exchange closes the agent's
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(agent = %agent.config.name, error = %e.message, "agent stream broke off");
                ctx.error_type = Some("a2a_error");
                let error = RpcError::new(
                    200,
                    INTERNAL_ERROR,
                    format!("agent `{}` broke off the stream", agent.config.name),
                );
                out.push(stream_error(&error, id, error_event));
                let _ = respond::stream_write(session, &mut out).await;
                break;
            }
        }
    }
    ctx.upstream_latency = Some(sent.elapsed());
    let _ = respond::stream_end(session).await;
    Ok(())
}

/// A JSON-RPC error as the last event of a stream (after a blank line, in case the agent
/// broke off inside an event).
fn stream_error(e: &RpcError, id: &Value, error_event: bool) -> Bytes {
    let body = e.body(id);
    let body = String::from_utf8_lossy(&body);
    Bytes::from(if error_event {
        format!("\r\n\r\nevent: error\r\ndata: {body}\r\n\r\n")
    } else {
        format!("\r\n\r\ndata: {body}\r\n\r\n")
    })
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_points_at_the_gateway_and_keeps_only_json_rpc() {
        let mut card = json!({
            "name": "Echo",
            "supportedInterfaces": [
                {"url": "http://10.0.0.5:9000/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
                {"url": "http://10.0.0.5:9000/", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
                {"url": "http://10.0.0.5:9001/", "protocolBinding": "GRPC", "protocolVersion": "1.0"}
            ],
            "url": "http://10.0.0.5:9000/",
            "preferredTransport": "GRPC",
            "additionalInterfaces": [
                {"url": "http://10.0.0.5:9000/", "transport": "JSONRPC"},
                {"url": "http://10.0.0.5:9000/v1", "transport": "HTTP+JSON"}
            ],
            "securitySchemes": {"oauth": {}},
            "signatures": [{"signature": "x"}],
            "skills": [{"id": "echo"}]
        });
        rewrite(&mut card, "https://gw.example/a2a/echo");
        let text = card.to_string();
        assert!(!text.contains("10.0.0.5"), "{text}");
        assert_eq!(card["supportedInterfaces"].as_array().unwrap().len(), 2);
        assert_eq!(card["additionalInterfaces"].as_array().unwrap().len(), 1);
        assert_eq!(card["url"], "https://gw.example/a2a/echo");
        assert_eq!(card["preferredTransport"], "JSONRPC");
        assert!(card.get("securitySchemes").is_none() && card.get("signatures").is_none());
        assert_eq!(card["skills"][0]["id"], "echo");
    }

    #[test]
    fn the_card_is_beside_the_endpoint() {
        let agent = |url: &str| {
            Agent::compile(A2aAgent {
                name: "a".into(),
                url: url.into(),
                ..A2aAgent::default()
            })
            .unwrap()
        };
        assert_eq!(
            agent("http://h:1/").card_path(),
            "/.well-known/agent-card.json"
        );
        assert_eq!(
            agent("http://h:1/agents/x/").card_path(),
            "/agents/x/.well-known/agent-card.json"
        );
        assert_eq!(
            agent("http://h:1/rpc?v=1").card_path(),
            "/rpc/.well-known/agent-card.json"
        );
    }

    #[test]
    fn the_agent_joins_the_callers_trace_under_the_gateways_span() {
        let caller = |tp: Option<&str>| tp.and_then(crate::otel::TraceParent::parse);
        let rid = "0123456789abcdef0123456789abcdef";
        let t = Trace::of(
            caller(Some(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ))
            .as_ref(),
            rid,
        );
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent.as_deref(), Some("00f067aa0ba902b7"));
        let sent = t.header();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"));
        assert_ne!(&sent[36..52], "00f067aa0ba902b7");
        // None, or one that is not W3C's: the request's own trace.
        for tp in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
        ] {
            let t = Trace::of(caller(tp).as_ref(), rid);
            assert_eq!((t.trace_id.as_str(), t.parent), (rid, None), "{tp:?}");
        }
        // Version 00 has four fields; a later version's extra fields are ignored.
        assert!(caller(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"
        ))
        .is_none());
        let later = caller(Some(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes",
        ));
        assert_eq!(later.unwrap().parent_id, "00f067aa0ba902b7");
    }

    #[test]
    fn a_broken_stream_ends_with_an_error_event() {
        let e = RpcError::new(200, INTERNAL_ERROR, "gone");
        let v1 = String::from_utf8(stream_error(&e, &json!("r1"), true).to_vec()).unwrap();
        assert!(v1.contains("event: error\r\ndata: {") && v1.contains("\"id\":\"r1\""));
        let v03 = String::from_utf8(stream_error(&e, &json!(3), false).to_vec()).unwrap();
        assert!(!v03.contains("event:") && v03.contains("\"code\":-32603"));
    }
}
