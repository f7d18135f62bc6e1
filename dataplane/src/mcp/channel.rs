//! MCP connections whose answers arrive on one stream and are matched to requests by id:
//! a local process spoken to over stdin and stdout (`stdio`), or the legacy HTTP+SSE
//! transport (`sse`: an event stream from a GET, whose first `endpoint` event names where
//! messages are POSTed).
//!
//! A channel is opened with the session handshake (`initialize`, then
//! `notifications/initialized`) and lives until its process exits or its stream ends; its
//! in-flight requests then fail at once and the next request opens a new one
//! (`client::Client`, with backoff). At most [`MAX_IN_FLIGHT`] requests are in flight on one
//! channel; the rest wait for a turn within their deadline.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use super::client::{endpoint, initialize_params, unreachable, Server, MAX_REPLY};
use crate::jsonrpc::RpcError;
use crate::sse;
use crate::upstream::{Target, Upstream, UpstreamRequest};

/// Requests in flight on one channel at most.
pub const MAX_IN_FLIGHT: usize = 32;
/// A stderr line is logged up to this many bytes.
const MAX_LOG_LINE: usize = 2048;

/// Where messages to the server go.
enum Outbound {
    /// A process's stdin: one JSON message per line.
    Stdin(tokio::sync::Mutex<tokio::process::ChildStdin>),
    /// POSTs to the endpoint the event stream named.
    Post {
        upstream: Arc<Upstream>,
        target: Target,
        path: String,
        headers: Vec<(&'static str, String)>,
        who: Arc<str>,
    },
}

impl Outbound {
    async fn send(&self, message: &Value) -> Result<(), String> {
        match self {
            Self::Stdin(stdin) => {
                let mut line = message.to_string().into_bytes();
                line.push(b'\n');
                let mut stdin = stdin.lock().await;
                stdin
                    .write_all(&line)
                    .await
                    .map_err(|e| format!("writing to the process: {e}"))?;
                stdin
                    .flush()
                    .await
                    .map_err(|e| format!("writing to the process: {e}"))
            }
            Self::Post {
                upstream,
                target,
                path,
                headers,
                who,
            } => {
                let mut headers = headers.clone();
                headers.push(("content-type", "application/json".to_owned()));
                let req = UpstreamRequest {
                    method: http::Method::POST,
                    path: path.clone(),
                    headers,
                    body: crate::json::bytes(message),
                };
                let mut ex = upstream
                    .send(target, req, None, Arc::clone(who))
                    .await
                    .map_err(|e| e.message)?;
                let status = ex.status;
                ex.read_error_body().await;
                if (200..300).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("HTTP {status} to a message"))
                }
            }
        }
    }
}

/// Answers by request id, and whether the stream still runs.
#[derive(Default)]
struct Pending {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    closed: AtomicBool,
}

impl Pending {
    fn register(&self, id: u64) -> Option<oneshot::Receiver<Value>> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiting.lock().ok()?;
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        w.insert(id, tx);
        Some(rx)
    }

    fn forget(&self, id: u64) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&id);
        }
    }

    /// Delivers an answer; other messages are the caller's to handle.
    fn deliver(&self, m: Value) -> Option<Value> {
        let answer = m.get("result").is_some() || m.get("error").is_some();
        let id = m.get("id").and_then(Value::as_u64);
        match (answer, id) {
            (true, Some(id)) => {
                let tx = self.waiting.lock().ok().and_then(|mut w| w.remove(&id));
                if let Some(tx) = tx {
                    tx.send(m).ok();
                }
                None
            }
            _ => Some(m),
        }
    }

    /// The stream ended: every waiting request fails now.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut w) = self.waiting.lock() {
            w.clear();
        }
    }
}

/// An open channel to one server.
pub struct Channel {
    out: Arc<Outbound>,
    pending: Arc<Pending>,
    next: AtomicU64,
    turns: tokio::sync::Semaphore,
    pub opened: Instant,
    /// The reader (and for a process, its stderr logger); aborted on drop.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The process, killed on drop.
    _child: Option<tokio::process::Child>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.pending.close();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Channel {
    pub fn alive(&self) -> bool {
        !self.pending.closed.load(Ordering::Acquire)
    }

    /// Sends a request and waits for its answer (the whole JSON-RPC response).
    pub async fn call(&self, s: &Server, method: &str, params: Value) -> Result<Value, RpcError> {
        let _turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| unreachable(s, "the connection is closed"))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let rx = self
            .pending
            .register(id)
            .ok_or_else(|| unreachable(s, "the connection is closed"))?;
        // The registration goes however this ends: answered, failed, or dropped at the
        // caller's deadline.
        let _registered = Forget(&self.pending, id);
        self.out
            .send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
            .map_err(|e| unreachable(s, e))?;
        // Dropped without an answer: the stream ended.
        rx.await.map_err(|_| unreachable(s, ended(s)))
    }

    pub async fn notify(&self, s: &Server, method: &str) -> Result<(), RpcError> {
        self.out
            .send(&json!({"jsonrpc": "2.0", "method": method}))
            .await
            .map_err(|e| unreachable(s, e))
    }

    /// Runs the handshake on a freshly opened channel (the version the server answers
    /// needs no header here, unlike streamable HTTP's).
    async fn handshake(self, s: &Server) -> Result<Self, RpcError> {
        let reply = self.call(s, "initialize", initialize_params()).await?;
        super::client::answer(s, reply)?;
        self.notify(s, "notifications/initialized").await?;
        Ok(self)
    }

    fn new(
        out: Arc<Outbound>,
        pending: Arc<Pending>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
        child: Option<tokio::process::Child>,
    ) -> Self {
        Self {
            out,
            pending,
            next: AtomicU64::new(1),
            turns: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            opened: Instant::now(),
            tasks,
            _child: child,
        }
    }
}

/// Forgets a request's registration when its caller stops waiting.
struct Forget<'a>(&'a Pending, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

fn ended(s: &Server) -> &'static str {
    match s.config.transport {
        routeiq_proto::McpTransport::Stdio => "the process exited before answering",
        _ => "the event stream ended before the answer",
    }
}

/// A message the server sent on its own: its requests are answered (`ping`; anything
/// else is not supported), notifications ignored.
async fn from_server(out: &Outbound, m: Value) {
    let (Some(id), Some(method)) = (m.get("id"), m.get("method").and_then(Value::as_str)) else {
        return;
    };
    let reply = if method == "ping" {
        json!({"jsonrpc": "2.0", "id": id, "result": {}})
    } else {
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": crate::jsonrpc::METHOD_NOT_FOUND,
            "message": format!("the gateway does not support {method}")}})
    };
    out.send(&reply).await.ok();
}

/// Spawns the server's process and opens a channel on its stdin and stdout. Its stderr
/// goes to the log, line by line. The process gets a minimal environment (`PATH`, `HOME`,
/// `LANG`, `TMPDIR`) plus the server's `env`, its `${X-HEADER}`s filled `from_request`:
/// nothing else of the gateway's.
pub async fn spawn(s: &Server, from_request: &[(String, String)]) -> Result<Channel, RpcError> {
    let c = &s.config;
    let mut cmd = tokio::process::Command::new(&c.command);
    cmd.args(&c.args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in ["PATH", "HOME", "LANG", "TMPDIR"] {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.envs(c.env.iter().map(|(k, v)| (k, v.expose())));
    // Values filled from the request replace their `${X-HEADER}` forms.
    cmd.envs(from_request.iter().map(|(k, v)| (k, v)));
    let mut child = cmd
        .spawn()
        .map_err(|e| unreachable(s, format!("starting `{}`: {e}", c.command)))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(unreachable(s, "the process has no stdio"));
    };
    tracing::info!(server = %c.name, command = %c.command, pid = child.id().unwrap_or(0), "MCP server process started");
    let out = Arc::new(Outbound::Stdin(tokio::sync::Mutex::new(stdin)));
    let pending = Arc::new(Pending::default());
    let name: Arc<str> = Arc::from(c.name.as_str());
    let reader = {
        let (out, pending, name) = (Arc::clone(&out), Arc::clone(&pending), Arc::clone(&name));
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match (&mut lines)
                    .take(MAX_REPLY as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .await
                {
                    Ok(0) => break,
                    Ok(_) if line.len() > MAX_REPLY => {
                        tracing::warn!(server = %name, "MCP server wrote a message over the size limit; closing");
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(server = %name, error = %e, "reading the MCP server's stdout");
                        break;
                    }
                }
                match serde_json::from_slice::<Value>(&line) {
                    Ok(m) => {
                        if let Some(own) = pending.deliver(m) {
                            from_server(&out, own).await;
                        }
                    }
                    Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
                    Err(_) => {
                        tracing::warn!(server = %name, "MCP server wrote a line that is not JSON-RPC")
                    }
                }
            }
            pending.close();
            tracing::warn!(server = %name, "MCP server process closed its stdout");
        })
    };
    let logger = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let l = crate::routing::learned::cut(&l, MAX_LOG_LINE);
            tracing::info!(server = %name, stderr = %l, "MCP server");
        }
    });
    Channel::new(out, pending, vec![reader, logger], Some(child))
        .handshake(s)
        .await
}

/// Opens the server's event stream, waits for its `endpoint` event, and opens a channel
/// that POSTs to that endpoint and reads answers from the stream; `headers` go with every
/// request (the server's, its token, the caller's).
pub async fn connect_sse(
    s: &Server,
    upstream: &Arc<Upstream>,
    mut headers: Vec<(&'static str, String)>,
) -> Result<Channel, RpcError> {
    let who = s.who();
    let Some((target, path)) = s.http_target() else {
        return Err(unreachable(s, "no URL"));
    };
    upstream
        .refuse_internal(target, &who)
        .await
        .map_err(|e| unreachable(s, e.message))?;
    headers.retain(|(k, _)| *k != "accept");
    headers.push(("accept", "text/event-stream".to_owned()));
    let req = UpstreamRequest {
        method: http::Method::GET,
        path: path.to_owned(),
        headers: headers.clone(),
        body: Bytes::new(),
    };
    let mut ex = upstream
        .send(target, req, None, Arc::clone(&who))
        .await
        .map_err(|e| unreachable(s, e.message))?;
    let streaming = ex
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if ex.status != 200 || !streaming {
        let status = ex.status;
        ex.read_error_body().await;
        return Err(unreachable(
            s,
            format!("HTTP {status} to the event stream's GET (expected 200 text/event-stream)"),
        ));
    }
    let mut parser = sse::Parser::default();
    let mut early = Vec::new();
    let endpoint = loop {
        let Some(chunk) = ex
            .next_chunk()
            .await
            .map_err(|e| unreachable(s, e.message))?
        else {
            return Err(unreachable(
                s,
                "the event stream ended before its endpoint event",
            ));
        };
        let mut events = parser
            .feed(&chunk)
            .map_err(|e| unreachable(s, e))?
            .into_iter();
        if let Some(e) = events
            .by_ref()
            .find(|e| e.event.as_deref() == Some("endpoint"))
        {
            early.extend(events);
            break e.data;
        }
    };
    let post_path = same_origin(s, target, &endpoint)?;
    headers.retain(|(k, _)| *k != "accept");
    let out = Arc::new(Outbound::Post {
        upstream: Arc::clone(upstream),
        target: target.clone(),
        path: post_path,
        headers,
        who,
    });
    let pending = Arc::new(Pending::default());
    let name: Arc<str> = Arc::from(s.config.name.as_str());
    let reader = {
        let (out, pending) = (Arc::clone(&out), Arc::clone(&pending));
        tokio::spawn(async move {
            let deliver = |events: Vec<sse::Event>| {
                let (out, pending) = (&out, &pending);
                async move {
                    for e in events {
                        if !matches!(e.event.as_deref(), None | Some("message")) {
                            continue;
                        }
                        if let Ok(m) = serde_json::from_str::<Value>(&e.data) {
                            if let Some(own) = pending.deliver(m) {
                                from_server(out, own).await;
                            }
                        }
                    }
                }
            };
            deliver(early).await;
            loop {
                match ex.next_chunk().await {
                    Ok(Some(chunk)) => match parser.feed(&chunk) {
                        Ok(events) => deliver(events).await,
                        Err(e) => {
                            tracing::warn!(server = %name, error = %e, "MCP server's event stream");
                            break;
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(server = %name, error = %e.message, "MCP server's event stream broke");
                        break;
                    }
                }
            }
            pending.close();
            tracing::warn!(server = %name, "MCP server's event stream ended");
        })
    };
    Channel::new(out, pending, vec![reader], None)
        .handshake(s)
        .await
}

/// The path messages are POSTed to: the endpoint event's URI, relative to the server's, on
/// the same origin (another origin is refused: it would receive the server's credential).
fn same_origin(s: &Server, target: &Target, named: &str) -> Result<String, RpcError> {
    let named = named.trim();
    if named.starts_with('/') && !named.starts_with("//") {
        return Ok(named.to_owned());
    }
    match endpoint(named) {
        Ok((t, path)) if (t.tls, &t.host, t.port) == (target.tls, &target.host, target.port) => {
            Ok(path)
        }
        _ => Err(unreachable(
            s,
            format!("its endpoint event names another origin (`{named}`); refused"),
        )),
    }
}
