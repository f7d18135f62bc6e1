//! The gateway as an MCP client of the servers it fronts, with the session-based handshake
//! (`initialize` offering 2025-11-25, whatever version the server answers), one session per
//! server and data plane, opened on first use and reopened when the server forgets it:
//! - streamable HTTP on the pooled upstream client (so the egress allow-list applies);
//!   replies come as JSON or as server-sent events, the one answering the request is taken;
//! - `sse` and `stdio` as [`channel`](super::channel)s, reopened (a process restarted)
//!   when they end, after a backoff that grows while they keep failing;
//! - an HTTP API described by OpenAPI (`spec_path`, [`openapi`](super::openapi)): no MCP
//!   on the wire, each tool call one HTTP request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::channel::{self, Channel};
use super::forwarded::Forwarded;
use super::openapi::Api;
use crate::jsonrpc::{RpcError, INTERNAL_ERROR, METHOD_NOT_FOUND};
use crate::sse;
use crate::upstream::{Target, Upstream, UpstreamRequest};
use routeiq_proto::{McpServer, McpTransport};

/// What the gateway offers in `initialize`.
pub(crate) const HANDSHAKE_VERSION: &str = "2025-11-25";
/// Replies larger than this are refused.
pub(crate) const MAX_REPLY: usize = 16 * 1024 * 1024;
/// A channel that ends sooner than this after opening counts as a failure to open.
const STABLE: Duration = Duration::from_secs(10);
/// The longest wait before reopening a failing channel.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Pages of `tools/list` followed per server.
const MAX_PAGES: usize = 20;

/// A server, compiled for calls.
pub struct Server {
    pub config: McpServer,
    /// Where an `http` or `sse` server is (`None`: `stdio`).
    http: Option<(Target, String)>,
    headers: Vec<(&'static str, String)>,
    /// A hash of the headers: sessions opened under other credentials are not reused.
    credentials: u64,
    /// `spec_path`: the API's operations, read when the server is compiled.
    api: Option<Api>,
}

impl Server {
    pub fn compile(config: McpServer) -> Result<Self, String> {
        let http = match config.transport {
            McpTransport::Stdio => None,
            McpTransport::Http | McpTransport::Sse => Some(endpoint(&config.url)?),
        };
        let api = config.spec_path.as_deref().map(Api::load).transpose()?;
        let mut headers = vec![("accept", "application/json, text/event-stream".to_owned())];
        headers.extend(config.auth.header());
        for (name, value) in &config.static_headers {
            headers.push((intern(name), value.expose().to_owned()));
        }
        let credentials = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            headers.hash(&mut h);
            (&config.command, &config.args).hash(&mut h);
            for (k, v) in &config.env {
                (k, v.expose()).hash(&mut h);
            }
            h.finish()
        };
        Ok(Self {
            config,
            http,
            headers,
            credentials,
            api,
        })
    }

    /// Where an `http` or `sse` server is: its target and path.
    pub(crate) fn http_target(&self) -> Option<(&Target, &str)> {
        self.http.as_ref().map(|(t, p)| (t, p.as_str()))
    }

    /// The headers sent with every request (credential and static headers included).
    pub(crate) fn headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    /// Its session slot's key.
    pub fn session_key(&self) -> SessionKey {
        (
            self.config.name.clone(),
            self.config.url.clone(),
            self.credentials,
        )
    }

    pub(crate) fn who(&self) -> Arc<str> {
        Arc::from(format!("MCP server {}", self.config.name))
    }
}

/// Where an `http(s)` URL points: its target, and the path and query to request.
pub(crate) fn endpoint(url: &str) -> Result<(Target, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok((Target::parse(url)?, path))
}

/// What the gateway sends in `initialize`.
pub(crate) fn initialize_params() -> Value {
    json!({
        "protocolVersion": HANDSHAKE_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "routeiq", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// Header names from configuration, kept for the life of the process: one copy per
/// distinct name, however often the configuration is reloaded.
pub(crate) fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<std::collections::HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(Mutex::default);
    let Ok(mut names) = names.lock() else {
        return "x-routeiq-unnamed";
    };
    if let Some(n) = names.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// An open session with a server.
#[derive(Debug, Clone)]
struct Session {
    id: Option<String>,
    version: String,
}

/// What is open with a server, and how its channels have fared.
#[derive(Default)]
struct Open {
    session: Option<Session>,
    channel: Option<Arc<Channel>>,
    /// Channels in a row that failed to open or ended before [`STABLE`].
    failures: u32,
    last_attempt: Option<std::time::Instant>,
}

/// A server's slot: at most one session or channel is opened at a time (the lock is held
/// while opening), and the one open is shared by every request.
type Slot = Arc<tokio::sync::Mutex<Open>>;

/// Sessions by server (name, URL and credentials: a changed credential opens a new one)
/// and by the caller's forwarded headers (0: none; see [`Forwarded`]), shared by every
/// state version of this data plane.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<(SessionKey, u64), Slot>>);

/// A server's name, URL and credentials hash ([`Server::session_key`]).
pub type SessionKey = (String, String, u64);

/// Callers' own sessions and processes kept (beyond those, idle ones are closed first).
const MAX_CALLER_SESSIONS: usize = 256;

impl Sessions {
    fn slot(&self, s: &Server, caller: u64) -> Slot {
        let Ok(mut m) = self.0.lock() else {
            return Slot::default();
        };
        let key = (s.session_key(), caller);
        if caller != 0 && !m.contains_key(&key) {
            let callers = m.keys().filter(|(_, c)| *c != 0).count();
            if callers >= MAX_CALLER_SESSIONS {
                // Slots no request holds: their sessions are dropped.
                m.retain(|(_, c), slot| *c == 0 || Arc::strong_count(slot) > 1);
            }
        }
        Arc::clone(m.entry(key).or_default())
    }

    /// Drops the slots of servers no longer served (`keep` names what is).
    pub fn retain(&self, keep: &[SessionKey]) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|(k, _), _| keep.contains(k));
        }
    }
}

/// A failure to get an answer from a server; its JSON-RPC errors are passed through.
pub(crate) fn unreachable(s: &Server, why: impl std::fmt::Display) -> RpcError {
    RpcError::new(
        200,
        INTERNAL_ERROR,
        format!("MCP server {}: {why}", s.config.name),
    )
}

pub struct Client<'a> {
    pub upstream: &'a Arc<Upstream>,
    pub sessions: &'a Sessions,
    pub tokens: &'a super::oauth::Tokens,
    /// The caller's own headers for the servers.
    forwarded: Forwarded,
}

impl<'a> Client<'a> {
    /// The process's pooled client, and the sessions and OAuth tokens kept across state
    /// versions.
    pub fn new(app: &'a crate::state::App, live: &'a crate::state::LiveState) -> Self {
        Self {
            upstream: &app.upstream,
            sessions: &live.lasting().mcp_sessions,
            tokens: &live.lasting().mcp_tokens,
            forwarded: Forwarded::default(),
        }
    }

    /// The client for a caller who sent `forwarded` headers.
    pub fn forwarding(self, forwarded: Forwarded) -> Self {
        Self { forwarded, ..self }
    }

    /// Whether the request can use `s` (it has the headers a stdio server's env needs).
    pub fn usable(&self, s: &Server) -> bool {
        self.forwarded.env(&s.config.name).is_ok()
    }

    fn slot(&self, s: &Server) -> Slot {
        self.sessions.slot(s, self.forwarded.key(&s.config.name))
    }

    /// Sends `method` and returns its result, opening (or reopening) the session first.
    pub async fn request(
        &self,
        s: &Server,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        if let Some(api) = &s.api {
            return self.api_request(s, api, method, &params, timeout).await;
        }
        let env = self.forwarded.env(&s.config.name).map_err(|header| {
            RpcError::incomplete(format!(
                "MCP server {} needs the request header `{header}`",
                s.config.name
            ))
        })?;
        let slot = self.slot(s);
        if s.config.transport != McpTransport::Http {
            let channel = self.channel(s, &slot, env).await?;
            let reply = channel.call(s, method, params).await?;
            return answer(s, reply);
        }
        let session = self.session(s, &slot, None, timeout).await?;
        match self
            .send(s, Some(&session), method, &params, timeout)
            .await?
        {
            Reply::Gone if session.id.is_some() => {
                // The server no longer knows the session (restarted, expired): once more,
                // with a new one (unless another request has opened it already).
                let session = self
                    .session(s, &slot, session.id.as_deref(), timeout)
                    .await?;
                match self
                    .send(s, Some(&session), method, &params, timeout)
                    .await?
                {
                    Reply::Message(v) => answer(s, v),
                    Reply::Gone | Reply::Accepted => {
                        Err(unreachable(s, "the session was refused twice"))
                    }
                }
            }
            Reply::Message(v) => answer(s, v),
            Reply::Gone | Reply::Accepted => Err(unreachable(s, "no answer to the request")),
        }
    }

    /// `method` on an OpenAPI server: its tools listed, or one called over HTTP.
    async fn api_request(
        &self,
        s: &Server,
        api: &Api,
        method: &str,
        params: &Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        match method {
            "tools/list" => return Ok(json!({"tools": api.tools()})),
            "ping" => return Ok(json!({})),
            "tools/call" => {}
            other => {
                return Err(RpcError::new(
                    200,
                    METHOD_NOT_FOUND,
                    format!(
                        "MCP server {} (OpenAPI) has no method `{other}`",
                        s.config.name
                    ),
                ))
            }
        }
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let none = serde_json::Map::new();
        let args = params
            .get("arguments")
            .and_then(Value::as_object)
            .unwrap_or(&none);
        let call = match api.call(name, args) {
            None => return Err(RpcError::invalid_params(format!("Unknown tool: {name}"))),
            Some(Err(e)) => return Err(RpcError::invalid_params(format!("{name}: {e}"))),
            Some(Ok(c)) => c,
        };
        let Some((target, base)) = s.http_target() else {
            return Err(unreachable(s, "no URL"));
        };
        let io = async {
            let mut headers: Vec<(&'static str, String)> = s
                .headers
                .iter()
                .filter(|(k, _)| *k != "accept")
                .cloned()
                .collect();
            headers.push(("accept", "application/json".to_owned()));
            headers.extend(call.headers.iter().map(|(k, v)| (intern(k), v.clone())));
            if call.body.is_some() {
                headers.push(("content-type", "application/json".to_owned()));
            }
            let path = format!("{}{}", base.trim_end_matches('/'), call.path);
            let body = Bytes::from(call.body.unwrap_or_default());
            let mut ex = self
                .send_http(s, target, call.method, path, headers, body)
                .await?;
            let status = ex.status;
            let body = ex
                .read_all(MAX_REPLY)
                .await
                .map_err(|e| unreachable(s, e.message))?;
            let body = String::from_utf8_lossy(&body);
            let failed = status >= 400;
            let text = if failed {
                format!("HTTP {status}: {body}")
            } else {
                body.into_owned()
            };
            Ok(json!({"content": [{"type": "text", "text": text}], "isError": failed}))
        };
        tokio::time::timeout(timeout, io)
            .await
            .unwrap_or_else(|_| Err(unreachable(s, "no answer in time")))
    }

    /// One HTTP request to the server, once the egress policy allows it, with its OAuth
    /// token (a refused token is replaced once) besides `headers`.
    async fn send_http(
        &self,
        s: &Server,
        target: &Target,
        method: http::Method,
        path: String,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<crate::upstream::Exchange, RpcError> {
        let who = s.who();
        self.upstream
            .refuse_internal(target, &who)
            .await
            .map_err(|e| unreachable(s, e.message))?;
        let mut fresh = false;
        loop {
            let mut all = headers.clone();
            all.extend(self.tokens.header(self.upstream, s).await?);
            self.forwarded.apply(&s.config.name, &mut all);
            let req = UpstreamRequest {
                method: method.clone(),
                path: path.clone(),
                headers: all,
                body: body.clone(),
            };
            let mut ex = self
                .upstream
                .send(target, req, None, Arc::clone(&who))
                .await
                .map_err(|e| unreachable(s, e.message))?;
            if ex.status == 401 && s.config.oauth2.is_some() && !fresh {
                ex.read_error_body().await;
                self.tokens.forget(s).await;
                fresh = true;
                continue;
            }
            return Ok(ex);
        }
    }

    /// Every tool the server lists, following its pages.
    pub async fn list_tools(&self, s: &Server, timeout: Duration) -> Result<Vec<Value>, RpcError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let mut page = self.request(s, "tools/list", params, timeout).await?;
            if let Some(Value::Array(list)) = page.get_mut("tools").map(Value::take) {
                tools.extend(list);
            }
            cursor = page
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        Ok(tools)
    }

    /// The slot's session, opened when there is none or when it is `stale`.
    async fn session(
        &self,
        s: &Server,
        slot: &Slot,
        stale: Option<&str>,
        timeout: Duration,
    ) -> Result<Session, RpcError> {
        let mut held = slot.lock().await;
        if let Some(session) = held.session.as_ref() {
            if stale.is_none() || session.id.as_deref() != stale {
                return Ok(session.clone());
            }
        }
        held.session = None;
        let session = self.open(s, timeout).await?;
        held.session = Some(session.clone());
        Ok(session)
    }

    /// The slot's channel (`sse`, `stdio` with the env it takes from the request), opened
    /// when there is none or it ended: at once
    /// after a channel that ran for a while, else after a backoff that doubles from 250 ms
    /// to 30 s with each failure in a row. (The caller's deadline bounds the wait.)
    async fn channel(
        &self,
        s: &Server,
        slot: &Slot,
        env: &[(String, String)],
    ) -> Result<Arc<Channel>, RpcError> {
        let mut held = slot.lock().await;
        if let Some(c) = &held.channel {
            if c.alive() {
                return Ok(Arc::clone(c));
            }
            let lasted = c.opened.elapsed();
            held.failures = if lasted < STABLE {
                held.failures + 1
            } else {
                0
            };
            tracing::warn!(server = %s.config.name, transport = s.config.transport.as_str(), lasted_s = lasted.as_secs(), "MCP server connection ended; reopening it");
            held.channel = None;
        }
        if held.failures > 0 {
            let backoff = Duration::from_millis(250)
                .saturating_mul(1 << held.failures.min(8).saturating_sub(1))
                .min(MAX_BACKOFF);
            let since = held.last_attempt.map_or(backoff, |at| at.elapsed());
            tokio::time::sleep(backoff.saturating_sub(since)).await;
        }
        held.last_attempt = Some(std::time::Instant::now());
        let opened = match s.config.transport {
            McpTransport::Stdio => channel::spawn(s, env).await,
            McpTransport::Sse | McpTransport::Http => {
                let mut headers = s.headers().to_vec();
                headers.extend(self.tokens.header(self.upstream, s).await?);
                self.forwarded.apply(&s.config.name, &mut headers);
                channel::connect_sse(s, self.upstream, headers).await
            }
        };
        match opened {
            Ok(c) => {
                let c = Arc::new(c);
                held.channel = Some(Arc::clone(&c));
                Ok(c)
            }
            Err(e) => {
                held.failures += 1;
                Err(e)
            }
        }
    }

    async fn open(&self, s: &Server, timeout: Duration) -> Result<Session, RpcError> {
        let params = initialize_params();
        let (reply, id) = self
            .exchange(s, None, "initialize", Some(&params), timeout)
            .await?;
        let Reply::Message(v) = reply else {
            return Err(unreachable(s, "no answer to initialize"));
        };
        let result = answer(s, v)?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(HANDSHAKE_VERSION)
            .to_owned();
        let session = Session { id, version };
        // Its answer (202) carries nothing.
        self.exchange(
            s,
            Some(&session),
            "notifications/initialized",
            None,
            timeout,
        )
        .await?;
        Ok(session)
    }

    async fn send(
        &self,
        s: &Server,
        session: Option<&Session>,
        method: &str,
        params: &Value,
        timeout: Duration,
    ) -> Result<Reply, RpcError> {
        Ok(self
            .exchange(s, session, method, Some(params), timeout)
            .await?
            .0)
    }

    /// One POST: a request when `params` is given, else a notification. Returns the reply
    /// and the session id the server set.
    async fn exchange(
        &self,
        s: &Server,
        session: Option<&Session>,
        method: &str,
        params: Option<&Value>,
        timeout: Duration,
    ) -> Result<(Reply, Option<String>), RpcError> {
        // Unique per process: requests share a server's session, which tells concurrent
        // requests apart by id.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = match params {
            Some(p) => json!({"jsonrpc": "2.0", "id": id, "method": method, "params": p}),
            None => json!({"jsonrpc": "2.0", "method": method}),
        };
        let Some((target, path)) = s.http_target() else {
            return Err(unreachable(s, "no URL"));
        };
        let mut headers = s.headers.clone();
        if let Some(session) = session {
            headers.push(("mcp-protocol-version", session.version.clone()));
            if let Some(id) = &session.id {
                headers.push(("mcp-session-id", id.clone()));
            }
        }
        let body = crate::json::bytes(&body);
        let io = async {
            let mut ex = self
                .send_http(
                    s,
                    target,
                    http::Method::POST,
                    path.to_owned(),
                    headers,
                    body,
                )
                .await?;
            let set_id = ex.header("mcp-session-id").map(str::to_owned);
            let event_stream = ex
                .header("content-type")
                .is_some_and(|c| c.starts_with("text/event-stream"));
            let status = ex.status;
            if status == 404 && session.is_some_and(|x| x.id.is_some()) {
                ex.read_error_body().await;
                return Ok((Reply::Gone, set_id));
            }
            if status == 202 {
                ex.read_error_body().await;
                return Ok((Reply::Accepted, set_id));
            }
            let message = if event_stream {
                // Read until the answer: a server may keep the stream open after it.
                let mut parser = sse::Parser::default();
                let mut found = None;
                while let Some(chunk) = ex
                    .next_chunk()
                    .await
                    .map_err(|e| unreachable(s, e.message))?
                {
                    let events = parser.feed(&chunk).map_err(|e| unreachable(s, e))?;
                    found = answer_among(&events, id);
                    if found.is_some() {
                        break;
                    }
                }
                found.or_else(|| answer_among(&parser.finish().into_iter().collect::<Vec<_>>(), id))
            } else {
                let body = ex
                    .read_all(MAX_REPLY)
                    .await
                    .map_err(|e| unreachable(s, e.message))?;
                serde_json::from_slice::<Value>(&body).ok()
            };
            match message {
                Some(m)
                    if (m.get("result").is_some() || m.get("error").is_some())
                        && m.get("id").and_then(Value::as_u64) == Some(id) =>
                {
                    Ok((Reply::Message(m), set_id))
                }
                _ => Err(unreachable(
                    s,
                    format!("HTTP {status} without a JSON-RPC answer"),
                )),
            }
        };
        tokio::time::timeout(timeout, io).await.unwrap_or_else(|_| {
            Err(unreachable(
                s,
                format!("no answer within {:.0}s", timeout.as_secs_f64()),
            ))
        })
    }
}

enum Reply {
    Message(Value),
    /// 202: a notification was taken.
    Accepted,
    /// 404 on a session: the server no longer has it.
    Gone,
}

/// The answer to request `id` among events (notifications, the server's own requests and
/// answers to other requests are skipped).
fn answer_among(events: &[sse::Event], id: u64) -> Option<Value> {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .find(|m| {
            (m.get("result").is_some() || m.get("error").is_some())
                && m.get("id").and_then(Value::as_u64) == Some(id)
        })
}

/// The result of a reply, or its error: logged whole, and told to the client as the
/// server's message under the gateway's code (invalid params stay the caller's; anything
/// else is the server's), without the server's `data`.
pub(crate) fn answer(s: &Server, mut v: Value) -> Result<Value, RpcError> {
    if let Some(e) = v.get("error") {
        tracing::warn!(server = %s.config.name, error = %e, "MCP server answered with an error");
        let code = e.get("code").and_then(Value::as_i64);
        let message = e.get("message").and_then(Value::as_str).unwrap_or("error");
        let code = if code == Some(crate::jsonrpc::INVALID_PARAMS) {
            crate::jsonrpc::INVALID_PARAMS
        } else {
            INTERNAL_ERROR
        };
        return Err(RpcError::new(
            200,
            code,
            format!("MCP server {}: {message}", s.config.name),
        ));
    }
    match v.get_mut("result").map(Value::take) {
        Some(r) => Ok(r),
        None => Err(unreachable(s, "an answer without a result")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_found_among_events() {
        let body = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\n\
                     event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}\r\n\r\n";
        let events = sse::Parser::default().feed(body).unwrap();
        assert_eq!(
            answer_among(&events, 1).unwrap()["result"],
            json!({"tools": []})
        );
        assert!(
            answer_among(&events, 2).is_none(),
            "another request's answer"
        );
        let pings = sse::Parser::default().feed(b": ping\n\n").unwrap();
        assert!(answer_among(&pings, 1).is_none());
    }

    #[test]
    fn a_servers_error_reaches_the_client_without_its_data() {
        let s = Server::compile(McpServer {
            name: "gh".into(),
            url: "http://127.0.0.1:1/mcp".into(),
            ..McpServer::default()
        })
        .unwrap();
        let e = answer(
            &s,
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32022, "message": "boom", "data": {"trace": "internals"}}}),
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str(), e.data),
            (INTERNAL_ERROR, "MCP server gh: boom", None)
        );
        let e = answer(&s, json!({"error": {"code": -32602, "message": "bad a"}})).unwrap_err();
        assert_eq!(e.code, crate::jsonrpc::INVALID_PARAMS);
        assert_eq!(
            answer(&s, json!({"result": {"x": 1}})).unwrap(),
            json!({"x": 1})
        );
    }

    #[test]
    fn header_names_are_interned_once() {
        let a = intern("x-team");
        let b = intern(&String::from("x-team"));
        assert!(std::ptr::eq(a, b));
    }
}
