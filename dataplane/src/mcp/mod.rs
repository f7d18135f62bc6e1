//! The MCP gateway: one streamable-HTTP endpoint per scope (`/mcp`, all servers, tools
//! named `<server>-<tool>`; `/mcp/{server}` and `/{server}/mcp`, one server, its own tool
//! names) in front of the MCP servers of `mcp_servers:`.
//!
//! Both protocol eras are served on each endpoint, chosen by `MCP-Protocol-Version`:
//! - absent or a handshake version (2024-11-05 to 2025-11-25): `initialize` mints an
//!   `Mcp-Session-Id`. The gateway keeps nothing per session (each request carries its key
//!   and its scope), so a session id is honoured by every data plane;
//! - 2026-07-28: stateless; `server/discover`, and the `Mcp-Method` / `Mcp-Name` headers
//!   checked against the body.
//!
//! What a caller may use is its object permissions' ([`crate::permission`]): a server it may not use is absent
//! from the aggregate, and refused by path or in `x-mcp-servers`; a tool it may not call,
//! or that the server's `allowed_tools` / `disallowed_tools` hide, is absent from every
//! list and refused on call without being forwarded.

pub mod channel;
pub mod client;
pub mod forwarded;
pub mod oauth;
pub mod openapi;
pub mod rest;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::{json, Map, Value};

use crate::auth;
use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::jsonrpc::{self, Message, RpcError};
use crate::permission::Access;
use crate::respond;
use crate::state::{App, LiveState};
use client::{Client, Server};

/// The `server_url` of an `mcp` tool in chat or responses that means the gateway's own
/// MCP servers (LiteLLM's name for it), alone or followed by `/mcp/<server>[,...]`.
pub const PROXY_URL: &str = "litellm_proxy";

/// Whether `tool` is an `mcp` tool naming the gateway's own servers.
pub fn proxied(tool: &serde_json::Value) -> bool {
    tool.get("type").and_then(serde_json::Value::as_str) == Some("mcp")
        && tool
            .get("server_url")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|u| u.starts_with(PROXY_URL))
}

/// The session-based revisions (reached through `initialize`), oldest first.
const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The stateless revision.
const STATELESS_VERSION: &str = "2026-07-28";
const LIST_TIMEOUT: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The servers of the served state, by name.
#[derive(Default)]
pub struct Registry {
    pub(crate) servers: Vec<Arc<Server>>,
    /// The servers of the snapshot this data plane does not serve, and why (said to
    /// callers who name them).
    left_out: Vec<(String, &'static str)>,
}

impl Registry {
    /// Compiles the snapshot's servers; one whose URL cannot be used is left out, logged,
    /// and so are `stdio` servers unless `stdio` allows spawning them.
    pub fn compile(servers: &[routeiq_proto::McpServer], stdio: bool) -> Self {
        let mut out: Vec<Arc<Server>> = Vec::new();
        let mut left_out = Vec::new();
        for s in servers {
            if !stdio && s.transport == routeiq_proto::McpTransport::Stdio {
                tracing::warn!(server = %s.name, "MCP server left out: this data plane spawns stdio servers only with --mcp-stdio");
                left_out.push((
                    s.name.clone(),
                    "it is a stdio server, and this data plane runs those only when started with --mcp-stdio",
                ));
                continue;
            }
            match Server::compile(s.clone()) {
                Ok(c) => out.push(Arc::new(c)),
                Err(e) => {
                    tracing::warn!(server = %s.name, error = %e, "MCP server left out");
                    // The reason stays in the log: it may name files and addresses.
                    left_out.push((
                        s.name.clone(),
                        "its configuration could not be loaded (the data plane's log says why)",
                    ));
                }
            }
        }
        out.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        Self {
            servers: out,
            left_out,
        }
    }

    /// The session keys of its servers (sessions of others are dropped).
    pub fn session_keys(&self) -> Vec<(String, String, u64)> {
        self.servers.iter().map(|s| s.session_key()).collect()
    }

    /// How many servers this data plane serves.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The servers' configurations (a delta edits them, then they are compiled again).
    pub fn configs(&self) -> Vec<routeiq_proto::McpServer> {
        self.servers.iter().map(|s| s.config.clone()).collect()
    }

    /// The server named `name`; else why there is none, for the caller.
    pub(crate) fn get(&self, name: &str) -> Result<&Arc<Server>, String> {
        if let Some(s) = self.servers.iter().find(|s| s.config.name == name) {
            return Ok(s);
        }
        Err(match self.left_out.iter().find(|(n, _)| n == name) {
            Some((_, why)) => {
                format!("MCP server `{name}` is not served by this data plane: {why}")
            }
            None => format!("no MCP server named `{name}`"),
        })
    }

    /// The servers the caller may use.
    pub(crate) fn granted(&self, access: &Access) -> Vec<&Arc<Server>> {
        self.servers.iter().filter(|s| access.server(s)).collect()
    }
}

/// Which servers a request reaches.
pub(crate) enum Scope<'a> {
    /// `/mcp`: these servers, tools prefixed with their names.
    All(Vec<&'a Arc<Server>>),
    /// `/mcp/{server}`: one server, its own names.
    One(&'a Arc<Server>),
}

impl Scope<'_> {
    pub(crate) fn servers(&self) -> Vec<&Arc<Server>> {
        match self {
            Self::All(list) => list.clone(),
            Self::One(s) => vec![s],
        }
    }

    /// The server and the server's own name of the tool the client calls `name`.
    fn resolve<'n>(&self, name: &'n str) -> Option<(&Arc<Server>, &'n str)> {
        match self {
            Self::One(s) => Some((s, name)),
            // The longest server name that prefixes it (names may hold `-`).
            Self::All(list) => list
                .iter()
                .filter_map(|s| {
                    let tool = name
                        .strip_prefix(s.config.name.as_str())?
                        .strip_prefix('-')?;
                    Some((*s, tool))
                })
                .max_by_key(|(s, _)| s.config.name.len()),
        }
    }

    fn public_name(&self, server: &Server, tool: &str) -> String {
        match self {
            Self::One(_) => tool.to_owned(),
            Self::All(_) => format!("{}-{tool}", server.config.name),
        }
    }
}

/// Which revision the request speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Era {
    Session,
    Stateless,
}

/// Serves one request on an MCP endpoint; `server` is the path's server, if any. Every
/// answer, errors included, is JSON-RPC; nothing here fails the request otherwise.
pub async fn serve(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: Option<&str>,
) -> Result<(), ApiError> {
    let (status, mut headers, body) = match answer(app, live, session, ctx, server).await {
        Ok(a) => a,
        Err((id, e)) => {
            ctx.error_type = Some("mcp_error");
            (e.status, Vec::new(), Some(e.body(&id)))
        }
    };
    headers.push(("x-litellm-call-id", ctx.request_id.clone()));
    let written = match body {
        Some(b) => respond::full(session, ctx, status, "application/json", &headers, b).await,
        None => respond::full(session, ctx, status, "text/plain", &headers, Bytes::new()).await,
    };
    written.map_err(|e| ApiError::internal(format!("writing the MCP answer: {e}")))
}

type Answer = (u16, Vec<(&'static str, String)>, Option<Bytes>);

async fn answer(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: Option<&str>,
) -> Result<Answer, (Value, RpcError)> {
    let null = || Value::Null;
    let req = session.req_header();
    let caller = auth::authenticate(live, req).map_err(|e| {
        (
            null(),
            RpcError::new(e.status, jsonrpc::INVALID_REQUEST, e.message),
        )
    })?;
    let key = caller.into_key();
    let access = Access::of(live, key.as_deref());
    let scope = scope(live, &access, req, server).map_err(|e| (null(), e))?;
    let era = era(req).map_err(|e| (null(), e))?;
    let method = req.method.clone();
    let has_session = req.headers.contains_key("mcp-session-id");
    if method == http::Method::GET {
        return Ok((405, vec![("allow", "POST".to_owned())], None));
    }
    if method == http::Method::DELETE {
        return Ok(if era == Era::Session && has_session {
            (204, Vec::new(), None)
        } else {
            (405, vec![("allow", "POST".to_owned())], None)
        });
    }
    let limit = live.max_request_body_bytes;
    let body = respond::read_body(session, limit).await.map_err(|e| {
        (
            null(),
            RpcError::new(e.status, jsonrpc::INVALID_REQUEST, e.message),
        )
    })?;
    let msg = Message::parse(&body).map_err(|e| (null(), e))?;
    let Some(id) = msg.id.clone() else {
        return Ok((202, Vec::new(), None));
    };
    if era == Era::Stateless {
        check_stateless(session.req_header(), &msg).map_err(|e| (id.clone(), e))?;
    }
    let client = client_for(app, live, session.req_header())
        .map_err(|e| (id.clone(), RpcError::new(400, jsonrpc::INVALID_REQUEST, e)))?;
    let mut headers = Vec::new();
    let result = match (era, msg.method.as_str()) {
        (Era::Session, "initialize") => {
            let asked = msg.params.get("protocolVersion").and_then(Value::as_str);
            let version = asked
                .filter(|v| HANDSHAKE_VERSIONS.contains(v))
                .unwrap_or(HANDSHAKE_VERSIONS[3]);
            // It grants nothing (every request presents its key), so it need not be secret.
            let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            headers.push(("mcp-session-id", id));
            json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": server_info(),
            })
        }
        (Era::Session, "ping") => json!({}),
        (Era::Stateless, "server/discover") => json!({
            "resultType": "complete",
            "supportedVersions": [STATELESS_VERSION],
            "capabilities": {"tools": {}},
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": {"io.modelcontextprotocol/serverInfo": server_info()},
        }),
        (_, "tools/list") => {
            let tools = list_tools(&client, &scope, &access)
                .await
                .map_err(|e| (id.clone(), e))?;
            let mut r = json!({"tools": tools});
            if era == Era::Stateless {
                r["ttlMs"] = json!(0);
                r["cacheScope"] = json!("private");
            }
            r
        }
        (_, "tools/call") => {
            ctx.key = key.clone();
            let (result, charge) =
                call_tool(app, live, &client, (&scope, &access), ctx, &msg.params)
                    .await
                    .map_err(|e| (id.clone(), e))?;
            charge.bill(ctx);
            result
        }
        (_, other) => {
            let status = if era == Era::Stateless { 404 } else { 200 };
            return Err((
                id,
                RpcError::new(
                    status,
                    jsonrpc::METHOD_NOT_FOUND,
                    format!("Method not found: {other}"),
                ),
            ));
        }
    };
    let result = match (era, result) {
        (Era::Stateless, Value::Object(mut o)) => {
            o.entry("resultType").or_insert(json!("complete"));
            Value::Object(o)
        }
        (_, r) => r,
    };
    Ok((200, headers, Some(jsonrpc::result(&id, result))))
}

fn server_info() -> Value {
    json!({"name": "routeiq", "version": env!("CARGO_PKG_VERSION")})
}

/// The servers of the request that the caller may use: the path's, or all narrowed by
/// `x-mcp-servers`.
fn scope<'a>(
    live: &'a LiveState,
    access: &Access,
    req: &pingora::http::RequestHeader,
    server: Option<&str>,
) -> Result<Scope<'a>, RpcError> {
    let registry = &live.mcp;
    if let Some(name) = server {
        let s = registry
            .get(name)
            .map_err(|why| RpcError::new(404, jsonrpc::INVALID_REQUEST, why))?;
        return granted(access, s).map(Scope::One);
    }
    let Some(narrowed) = req.headers.get("x-mcp-servers") else {
        return Ok(Scope::All(registry.granted(access)));
    };
    let list = narrowed.to_str().map_err(|_| {
        RpcError::new(
            400,
            jsonrpc::INVALID_REQUEST,
            "x-mcp-servers: not a comma-separated list of server names",
        )
    })?;
    let mut servers = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let s = registry.get(name).map_err(|why| {
            RpcError::new(
                400,
                jsonrpc::INVALID_REQUEST,
                format!("x-mcp-servers: {why}"),
            )
        })?;
        let s = granted(access, s)?;
        if !servers.iter().any(|x: &&Arc<Server>| Arc::ptr_eq(x, s)) {
            servers.push(s);
        }
    }
    Ok(Scope::All(servers))
}

/// `server` if the caller may use it; else a 403.
pub(crate) fn granted<'a>(
    access: &Access,
    server: &'a Arc<Server>,
) -> Result<&'a Arc<Server>, RpcError> {
    if access.server(server) {
        Ok(server)
    } else {
        Err(RpcError::new(
            403,
            jsonrpc::INVALID_REQUEST,
            format!(
                "this key may not use MCP server `{}`: grant it in the key's, team's or organization's object_permission",
                server.config.name
            ),
        ))
    }
}

fn era(req: &pingora::http::RequestHeader) -> Result<Era, RpcError> {
    let Some(v) = req.headers.get("mcp-protocol-version") else {
        return Ok(Era::Session);
    };
    let v = v.to_str().unwrap_or("");
    if HANDSHAKE_VERSIONS.contains(&v) {
        Ok(Era::Session)
    } else if v == STATELESS_VERSION {
        Ok(Era::Stateless)
    } else {
        let mut supported: Vec<&str> = HANDSHAKE_VERSIONS.to_vec();
        supported.push(STATELESS_VERSION);
        Err(RpcError::new(
            400,
            jsonrpc::UNSUPPORTED_VERSION,
            format!("unsupported protocol version `{v}`"),
        )
        .with_data(json!({"supported": supported, "requested": v})))
    }
}

/// 2026-07-28: the routing headers must repeat the body, and `_meta` must say who asks.
fn check_stateless(req: &pingora::http::RequestHeader, msg: &Message) -> Result<(), RpcError> {
    let header = |name: &str| -> Result<Option<String>, RpcError> {
        let mut values = req.headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(RpcError::new(
                400,
                jsonrpc::HEADER_MISMATCH,
                format!("{name} is given more than once"),
            ));
        }
        Ok(first.and_then(|v| v.to_str().ok()).map(decode_header))
    };
    let mismatch = |what: &str| RpcError::new(400, jsonrpc::HEADER_MISMATCH, what.to_owned());
    if header("mcp-method")?.as_deref() != Some(msg.method.as_str()) {
        return Err(mismatch(
            "Mcp-Method is missing or differs from the body's method",
        ));
    }
    if msg.method == "tools/call" {
        let name = msg.params.get("name").and_then(Value::as_str);
        if header("mcp-name")?.as_deref() != name {
            return Err(mismatch(
                "Mcp-Name is missing or differs from the tool's name",
            ));
        }
    }
    let meta = msg.params.get("_meta");
    let has = |k: &str| meta.and_then(|m| m.get(k)).is_some();
    if !has("io.modelcontextprotocol/protocolVersion")
        || !has("io.modelcontextprotocol/clientCapabilities")
    {
        return Err(RpcError::new(
            400,
            jsonrpc::INVALID_PARAMS,
            "params._meta needs io.modelcontextprotocol/protocolVersion and io.modelcontextprotocol/clientCapabilities",
        ));
    }
    Ok(())
}

fn timed_out(s: &Server, after: Duration) -> RpcError {
    RpcError::new(
        200,
        jsonrpc::INTERNAL_ERROR,
        format!(
            "MCP server {}: no answer within {:.0}s",
            s.config.name,
            after.as_secs_f64()
        ),
    )
}

/// `=?base64?...?=` header values, decoded; others as they are.
fn decode_header(v: &str) -> String {
    v.strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| v.to_owned())
}

/// The tools of every server in scope, concurrently. With several servers, one that
/// cannot be listed is left out (logged); with one, its error is the answer.
pub(crate) async fn list_tools(
    client: &Client<'_>,
    scope: &Scope<'_>,
    access: &Access<'_>,
) -> Result<Vec<Value>, RpcError> {
    // On the aggregate, a server the request cannot use (a stdio server whose env needs a
    // header it lacks) is left out quietly.
    let servers: Vec<&Arc<Server>> = scope
        .servers()
        .into_iter()
        .filter(|s| matches!(scope, Scope::One(_)) || client.usable(s))
        .collect();
    // One deadline for all of a server's requests (a session to open, pages to follow).
    let lists = futures_util::future::join_all(servers.iter().map(|s| async move {
        tokio::time::timeout(LIST_TIMEOUT, client.list_tools(s, LIST_TIMEOUT))
            .await
            .unwrap_or_else(|_| Err(timed_out(s, LIST_TIMEOUT)))
    }))
    .await;
    let mut tools = Vec::new();
    for (s, listed) in servers.iter().zip(lists) {
        let listed = match (listed, scope) {
            (Ok(l), _) => l,
            (Err(e), Scope::One(_)) => return Err(e),
            (Err(e), Scope::All(_)) => {
                tracing::warn!(server = %s.config.name, error = %e.message, "MCP server left out of tools/list");
                continue;
            }
        };
        for mut tool in listed {
            let Some(name) = tool.get("name").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            if !access.tool(s, &name) {
                continue;
            }
            let public = scope.public_name(s, &name);
            // `a` + `b-x` and `a-b` + `x` would both be `a-b-x`: a name that does not call
            // back the tool it lists is left out.
            let calls_back = scope
                .resolve(&public)
                .is_some_and(|(to, t)| Arc::ptr_eq(to, s) && t == name);
            if !calls_back {
                tracing::warn!(server = %s.config.name, tool = %name, "MCP tool left out: its name collides with another server's prefix");
                continue;
            }
            tool["name"] = json!(public);
            tools.push(tool);
        }
    }
    Ok(tools)
}

/// Forwards a call to a tool the scope exposes: counted, timed and logged.
/// What a tool call charged: its price (the server's `mcp_info`), and the holds on the
/// caller's budgets that reserved it.
pub(crate) struct Charge {
    pub cost: f64,
    pub holds: Vec<crate::budgets::Hold>,
    server: String,
}

/// The MCP client for a request: with the caller's `x-mcp-{server}-{header}` headers.
pub(crate) fn client_for<'a>(
    app: &'a App,
    live: &'a LiveState,
    req: &pingora::http::RequestHeader,
) -> Result<Client<'a>, String> {
    Ok(Client::new(app, live).forwarding(forwarded::Forwarded::of(req, &live.mcp)?))
}

impl Charge {
    /// Charges a call made on its own (`/mcp`, `/mcp-rest`): the request's cost, logged
    /// and reported as a usage event (model `mcp/<server>`, provider `mcp`) when priced.
    pub fn bill(self, ctx: &mut RequestCtx) {
        if self.cost > 0.0 {
            ctx.model = Some(format!("mcp/{}", self.server));
        }
        ctx.extra_cost += self.cost;
        ctx.budget_holds.extend(self.holds);
    }
}

/// Calls a tool the caller may use: its price is held against the caller's budgets (a
/// spent budget refuses the call) and charged when the server answers.
pub(crate) async fn call_tool(
    app: &App,
    live: &LiveState,
    client: &Client<'_>,
    (scope, access): (&Scope<'_>, &Access<'_>),
    ctx: &RequestCtx,
    params: &Value,
) -> Result<(Value, Charge), RpcError> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(RpcError::invalid_params("tools/call needs params.name"));
    };
    let unknown = || RpcError::invalid_params(format!("Unknown tool: {name}"));
    let (server, tool) = scope.resolve(name).ok_or_else(unknown)?;
    if !server.config.exposes(tool) {
        return Err(unknown());
    }
    if !access.tool(server, tool) {
        return Err(RpcError::refused(format!(
            "this key may not call tool `{name}`: the key's, team's or organization's mcp_tool_permissions leave it out"
        )));
    }
    let cost = server.config.cost.of(tool);
    let holds = match ctx.key.as_deref() {
        Some(key) if cost > 0.0 => {
            crate::context::hold_charge(app, live, key, cost).map_err(RpcError::over_budget)?
        }
        _ => Vec::new(),
    };
    let mut forwarded = Map::new();
    forwarded.insert("name".into(), json!(tool));
    forwarded.insert(
        "arguments".into(),
        params
            .get("arguments")
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    // The request's trace goes on in the call's `_meta` (MCP's place for it, whatever the
    // transport): the tool call's span, else the caller's trace as it came.
    let span = app
        .spans
        .as_ref()
        .map(|spans| spans.tool_call(ctx, &server.config.name, tool));
    if let Some(t) = ctx.outgoing_trace(span.as_ref().map(|s| s.traceparent())) {
        let mut meta = json!({ "traceparent": t.traceparent });
        if let Some(s) = t.tracestate {
            meta["tracestate"] = json!(s.as_ref());
        }
        forwarded.insert("_meta".into(), meta);
    }
    let started = Instant::now();
    let call = client.request(server, "tools/call", Value::Object(forwarded), CALL_TIMEOUT);
    let result = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(timed_out(server, CALL_TIMEOUT)));
    let seconds = started.elapsed().as_secs_f64();
    let error = match &result {
        Err(e) => Some(e.code.to_string()),
        Ok(r) if r.get("isError") == Some(&Value::Bool(true)) => Some("tool_error".to_owned()),
        Ok(_) => None,
    };
    let ok = error.is_none();
    app.metrics
        .mcp_tool_call(&server.config.name, tool, ok, seconds);
    if let Some(span) = span {
        span.end(ok, error);
    }
    tracing::info!(
        request_id = %ctx.request_id,
        server = %server.config.name,
        tool,
        ok,
        ms = (seconds * 1000.0) as u64,
        cost,
        "MCP tool call"
    );
    let server = server.config.name.clone();
    result.map(|r| {
        (
            r,
            Charge {
                cost,
                holds,
                server,
            },
        )
    })
}
