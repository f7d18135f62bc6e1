//! HTTP calls to upstream providers through pingora's pooled connector. Each request
//! leaves in one write (its head and body together); pingora's HTTP/1 session reads the
//! response.
//!
//! Connections are kept alive and reused per (address, TLS, SNI). Host names are resolved
//! asynchronously and cached, so no DNS lookup blocks the reactor.
//!
//! Client-facing errors name the deployment (its id and model group, as the caller labels
//! it), never the upstream's address: addresses go to the logs only.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::TransportConnector;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::protocols::Stream;
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{ErrorType, OrErr};
use tokio::io::AsyncWriteExt;

use routeiq_proto::EgressVerdict;

use crate::egress::Egress;
use crate::error::{ApiError, ErrorKind};

const DNS_TTL: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Upstream error bodies are read up to this size for the client's error message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Where a deployment's requests go: parsed once from `api_base` when the snapshot loads.
pub use routeiq_proto::ApiBase as Target;

/// One upstream request, ready to send.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub method: http::Method,
    /// Path and query, appended to nothing: already includes `base_path`.
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// The pooled client shared by all requests of the process.
pub struct Upstream {
    connector: TransportConnector,
    dns: Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>,
    /// `general_settings.allowed_egress`: every connection is checked against it before it
    /// is made (the AWS SDK's clients share it).
    pub egress: Arc<Egress>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            connector: TransportConnector::new(None),
            dns: Mutex::new(HashMap::new()),
            egress: Arc::default(),
        }
    }
}

impl Upstream {
    /// The refusal of a destination outside the allow-list, counted and logged.
    fn refuse_egress(&self, host: &str, who: &str) -> ApiError {
        self.egress.refuse(host, who);
        ApiError::forbidden(format!(
            "{who}: its host is not in general_settings.allowed_egress; no connection was made"
        ))
    }

    /// Refuses `target` when it resolves to a loopback, link-local or metadata address the
    /// operator did not list in `allowed_egress` (for servers registered by URL: MCP).
    pub async fn refuse_internal(&self, target: &Target, who: &str) -> Result<(), ApiError> {
        let addr = self.resolve(&target.host, target.port, who).await?;
        if crate::egress::is_internal(addr.ip()) && !self.egress.lists(&target.host, addr.ip()) {
            self.egress.refuse(&target.host, who);
            return Err(ApiError::forbidden(format!(
                "{who}: its host is a loopback, link-local or metadata address; list it in general_settings.allowed_egress to allow it"
            )));
        }
        Ok(())
    }

    /// The address to connect to for `target`, checked against the allow-list (when there
    /// is one): a name it refuses is not even looked up.
    async fn destination(&self, target: &Target, who: &str) -> Result<SocketAddr, ApiError> {
        let policy = self.egress.policy();
        let verdict = policy.as_ref().map(|p| p.by_name(&target.host));
        if verdict == Some(EgressVerdict::Refused) {
            return Err(self.refuse_egress(&target.host, who));
        }
        let addr = self.resolve(&target.host, target.port, who).await?;
        if let (Some(p), Some(EgressVerdict::ByAddress)) = (&policy, verdict) {
            if !p.allows_addr(addr.ip()) {
                return Err(self.refuse_egress(&target.host, who));
            }
        }
        Ok(addr)
    }

    async fn resolve(&self, host: &str, port: u16, who: &str) -> Result<SocketAddr, ApiError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_owned(), port);
        if let Ok(cache) = self.dns.lock() {
            if let Some((addr, at)) = cache.get(&key) {
                if at.elapsed() < DNS_TTL {
                    return Ok(*addr);
                }
            }
        }
        let addr = tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                tracing::warn!(host, who, "cannot resolve the upstream host");
                ApiError::upstream(
                    502,
                    ErrorKind::Upstream,
                    format!("{who}: cannot resolve its api_base host"),
                )
            })?;
        if let Ok(mut cache) = self.dns.lock() {
            cache.insert(key, (addr, Instant::now()));
        }
        Ok(addr)
    }

    /// Sends `req` and waits for the response header. `reads`, when given, bounds the wait
    /// for the header and every later body read (streams); without it the caller bounds the
    /// whole exchange with one timer of its own. `who` names the deployment in errors.
    pub async fn send(
        self: &Arc<Self>,
        target: &Target,
        req: UpstreamRequest,
        reads: Option<Duration>,
        who: Arc<str>,
    ) -> Result<Exchange, ApiError> {
        let mut head = head(target, &req, req.body.len() as u64, &who)?;
        // A body of common size leaves in the same write as the head (one system call and
        // one wake-up of the upstream, where pingora's client flushes the two apart); a
        // larger one is not copied.
        let joined = req.body.len() <= JOINED_BODY;
        if joined {
            head.extend_from_slice(&req.body);
        }
        let (mut stream, peer) = self.connect(target, reads, &who).await?;
        let io = async {
            stream
                .write_all(&head)
                .await
                .or_err(ErrorType::WriteError, "writing the request")?;
            if !joined {
                stream
                    .write_all(&req.body)
                    .await
                    .or_err(ErrorType::WriteError, "writing the request body")?;
            }
            flush(&mut stream).await?;
            let mut session = HttpSession::new_with_options(stream, &peer);
            session.read_response().await?;
            Ok::<_, Box<pingora::Error>>(session)
        };
        let io = match reads {
            Some(t) => tokio::time::timeout(t, io)
                .await
                .map_err(|_| silent(&target.authority, &who, t))?,
            None => io.await,
        };
        match io {
            Err(e) => Err(io_error(target, &who, &e, reads)),
            Ok(session) => Ok(self.exchange(session, peer, target, &req.method, reads, who)),
        }
    }

    /// [`Self::send`] for an upload: `req.body` first, then what `rest` gives as it
    /// arrives (the client's body, never held whole). `req.headers` must hold its
    /// `content-length`, which the body must fill exactly. The caller bounds the whole
    /// exchange.
    pub async fn send_upload(
        self: &Arc<Self>,
        target: &Target,
        req: UpstreamRequest,
        rest: &mut dyn BodySource,
        who: Arc<str>,
    ) -> Result<Exchange, ApiError> {
        let length = req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .ok_or_else(|| ApiError::internal(format!("{who}: an upload without its length")))?;
        let head = head(target, &req, length, &who)?;
        let mismatch = |written: u64| {
            ApiError::internal(format!(
                "{who}: the upload's body ({written} bytes or more) does not match its length ({length})"
            ))
        };
        let mut written = req.body.len() as u64;
        if written > length {
            return Err(mismatch(written));
        }
        let (mut stream, peer) = self.connect(target, None, &who).await?;
        let failed = |e: Box<pingora::Error>| io_error(target, &who, &e, None);
        for part in [&head[..], &req.body[..]] {
            stream
                .write_all(part)
                .await
                .or_err(ErrorType::WriteError, "writing the upload")
                .map_err(failed)?;
        }
        while let Some(chunk) = rest.next().await? {
            written += chunk.len() as u64;
            if written > length {
                break;
            }
            stream
                .write_all(&chunk)
                .await
                .or_err(ErrorType::WriteError, "writing the upload")
                .map_err(failed)?;
        }
        // A body that does not fill its length exactly would leave the upstream reading
        // the next request from it: the connection is dropped (closed), never pooled.
        if written != length {
            return Err(mismatch(written));
        }
        flush(&mut stream).await.map_err(failed)?;
        let mut session = HttpSession::new_with_options(stream, &peer);
        session.read_response().await.map_err(failed)?;
        Ok(self.exchange(session, peer, target, &req.method, None, who))
    }

    /// A pooled connection to `target`, or a new one.
    async fn connect(
        &self,
        target: &Target,
        reads: Option<Duration>,
        who: &str,
    ) -> Result<(Stream, HttpPeer), ApiError> {
        let addr = self.destination(target, who).await?;
        let mut peer = HttpPeer::new(addr, target.tls, target.host.clone());
        peer.options.connection_timeout =
            Some(reads.map_or(CONNECT_TIMEOUT, |t| CONNECT_TIMEOUT.min(t)));
        peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);

        // A pooled connection first. Opening a new one (TCP, maybe TLS) is a large future, so
        // it is boxed: that keeps this future, and every future holding it, small, which
        // matters because pingora and async-trait box (copy) them on every request.
        let stream = match self.connector.reused_stream(&peer).await {
            Some(s) => s,
            None => Box::pin(self.connector.new_stream(&peer))
                .await
                .map_err(|e| connect_error(target, who, &e))?,
        };
        Ok((stream, peer))
    }

    /// Returns `session`'s connection to the pool when it can carry another request.
    async fn release(&self, mut session: HttpSession, peer: &HttpPeer) {
        session.respect_keepalive();
        if let Some(stream) = session.reuse().await {
            self.connector
                .release_stream(stream, peer.reuse_hash(), Some(POOL_IDLE_TIMEOUT));
        }
    }

    /// The exchange whose response header has arrived.
    fn exchange(
        self: &Arc<Self>,
        session: HttpSession,
        peer: HttpPeer,
        target: &Target,
        method: &http::Method,
        reads: Option<Duration>,
        who: Arc<str>,
    ) -> Exchange {
        let status = session
            .resp_header()
            .map(|h| h.status.as_u16())
            .unwrap_or(502);
        let retry_after = session
            .resp_header()
            .and_then(|h| h.headers.get("retry-after"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        Exchange {
            status,
            retry_after,
            session: Some(session),
            peer,
            upstream: Arc::clone(self),
            target_label: target.authority.clone(),
            who,
            reads,
            bodiless: method == http::Method::HEAD,
        }
    }
}

/// The rest of an upload's body, chunk by chunk.
#[async_trait::async_trait]
pub trait BodySource: Send {
    async fn next(&mut self) -> Result<Option<Bytes>, ApiError>;
}

/// Bodies up to this size leave in the same write as the request head, copied after it.
const JOINED_BODY: usize = 64 * 1024;

/// Headers a caller's request never carries: the gateway frames each request itself (with
/// `content-length`) and manages its connections. Hop-by-hop headers (RFC 9110, 7.6.1)
/// and framing would otherwise let a header value make the upstream read part of the body
/// as another request.
const FRAMING: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `req`'s request line and headers, ready for a body of `length` bytes. The host,
/// `content-type` (`application/json`) and `user-agent` are set unless `req.headers` sets
/// them, and a name given twice keeps its last value; `content-length` is `length`, and
/// the caller's framing and hop-by-hop headers ([`FRAMING`]) are left out.
fn head(
    target: &Target,
    req: &UpstreamRequest,
    length: u64,
    who: &str,
) -> Result<Vec<u8>, ApiError> {
    let refuse = |what: &str| {
        ApiError::internal(format!("{who}: cannot build the upstream request: {what}"))
    };
    // As the `http` crate takes a request target: no space or control character (bytes
    // past ASCII go as they are).
    if !req.path.starts_with('/') || any_byte(&req.path, |b| b <= b' ' || b == 0x7f) {
        return Err(refuse("its path is not a valid request target"));
    }
    let length = length.to_string();
    let defaults = [
        ("host", target.authority.as_str()),
        ("content-type", "application/json"),
        ("user-agent", concat!("routeiq/", env!("CARGO_PKG_VERSION"))),
    ];
    let given = &req.headers;
    let later = |i: usize, name: &str| given[i..].iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut out = Vec::with_capacity(256 + req.path.len() + req.body.len().min(JOINED_BODY));
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let defaults = defaults.iter().filter(|(name, _)| !later(0, name));
    let own = given
        .iter()
        .enumerate()
        .filter(|(i, (name, _))| {
            !later(i + 1, name) && !FRAMING.iter().any(|f| name.eq_ignore_ascii_case(f))
        })
        .map(|(_, (name, value))| (*name, value.as_str()));
    let length = [("content-length", length.as_str())];
    for (name, value) in defaults.copied().chain(own).chain(length) {
        if name.is_empty() || !name.bytes().all(token) {
            return Err(refuse(&format!("{name:?} is not a header name")));
        }
        // A control character (CR or LF above all) would end the header early and let the
        // value write headers of its own.
        if any_byte(value, |b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(refuse(&format!("header {name} holds a control character")));
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// Whether any byte of `s` is one `bad` finds. Every byte is looked at (no early return),
/// so the loop compiles to vector instructions: a few times fewer instructions than
/// `any` over the ~200-byte values of a signed request's headers.
fn any_byte(s: &str, bad: impl Fn(u8) -> bool) -> bool {
    s.bytes().fold(false, |found, b| found | bad(b))
}

/// Whether `b` may be part of a header name (RFC 9110's `tchar`).
fn token(b: u8) -> bool {
    const TCHAR: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            let b = i as u8;
            t[i] = b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                );
            i += 1;
        }
        t
    };
    TCHAR[usize::from(b)]
}

/// Sends what the stream holds.
async fn flush(stream: &mut Stream) -> pingora::Result<()> {
    stream
        .flush()
        .await
        .or_err(ErrorType::WriteError, "flushing the request")
}

fn connect_error(target: &Target, who: &str, e: &pingora::Error) -> ApiError {
    tracing::warn!(upstream = %target.authority, who, error = %e, "cannot connect upstream");
    if e.etype() == &pingora::ErrorType::ConnectTimedout {
        return ApiError::timeout(format!(
            "{who}: no connection within {:.1}s",
            CONNECT_TIMEOUT.as_secs_f64()
        ));
    }
    ApiError::upstream(
        502,
        ErrorKind::Upstream,
        format!("{who}: cannot connect ({})", e.etype().as_str()),
    )
}

/// A stream sent nothing (its header, or its next chunk) within its `stream_timeout`.
fn silent(upstream: &str, who: &str, t: Duration) -> ApiError {
    tracing::warn!(upstream, who, "upstream sent nothing in time");
    ApiError::timeout(format!(
        "{who} sent nothing for {:.1}s (litellm_params.stream_timeout / router_settings.stream_timeout)",
        t.as_secs_f64()
    ))
}

fn io_error(target: &Target, who: &str, e: &pingora::Error, reads: Option<Duration>) -> ApiError {
    use pingora::ErrorType;
    match (e.etype(), reads) {
        (ErrorType::ReadTimedout | ErrorType::WriteTimedout, Some(t)) => {
            silent(&target.authority, who, t)
        }
        (other, _) => {
            tracing::warn!(upstream = %target.authority, who, error = %e, "upstream request failed");
            ApiError::upstream(
                502,
                ErrorKind::Upstream,
                format!("{who} failed: {}", other.as_str()),
            )
        }
    }
}

/// An upstream response in progress. Read its body to the end to return the connection to
/// the pool; dropped early, the connection is closed.
pub struct Exchange {
    pub status: u16,
    pub retry_after: Option<u64>,
    session: Option<HttpSession>,
    peer: HttpPeer,
    upstream: Arc<Upstream>,
    /// The upstream's address, for logs.
    target_label: String,
    /// The deployment, for the client's errors.
    who: Arc<str>,
    /// Bounds each body read (streams).
    reads: Option<Duration>,
    /// The answer to a HEAD request: no body, whatever its headers say (the session
    /// reading it did not write the request, so it does not know).
    bodiless: bool,
}

impl Exchange {
    /// A response header's value.
    /// The response's headers, as they came.
    pub fn headers(&self) -> impl Iterator<Item = (&http::HeaderName, &http::HeaderValue)> {
        self.session
            .as_ref()
            .and_then(|s| s.resp_header())
            .into_iter()
            .flat_map(|h| h.headers.iter())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.session
            .as_ref()?
            .resp_header()?
            .headers
            .get(name)?
            .to_str()
            .ok()
    }

    /// The next body chunk, or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(None);
        };
        if self.bodiless {
            // Its body reader was never told the response has none: the connection is
            // closed rather than pooled.
            self.session = None;
            return Ok(None);
        }
        // pingora's read timeout covers the response header, not body reads: a stream's
        // reads are bounded here (its `stream_timeout` between chunks); a whole body is
        // bounded by its caller, once.
        let read = match self.reads {
            Some(t) => match tokio::time::timeout(t, session.read_body_bytes()).await {
                Ok(r) => r,
                Err(_) => {
                    self.session = None;
                    return Err(silent(&self.target_label, &self.who, t));
                }
            },
            None => session.read_body_bytes().await,
        };
        match read {
            Ok(Some(chunk)) => Ok(Some(chunk)),
            Ok(None) => {
                if let Some(session) = self.session.take() {
                    self.upstream.release(session, &self.peer).await;
                }
                Ok(None)
            }
            Err(e) => {
                self.session = None;
                Err(match (e.etype(), self.reads) {
                    (pingora::ErrorType::ReadTimedout, Some(t)) => {
                        silent(&self.target_label, &self.who, t)
                    }
                    (other, _) => {
                        tracing::warn!(upstream = %self.target_label, who = %self.who, error = %e, "upstream broke off the response");
                        ApiError::upstream(
                            502,
                            ErrorKind::Upstream,
                            format!("{} broke off the response: {}", self.who, other.as_str()),
                        )
                    }
                })
            }
        }
    }

    /// The whole body, failing once it exceeds `limit` bytes.
    pub async fn read_all(&mut self, limit: usize) -> Result<Bytes, ApiError> {
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = self.next_chunk().await? {
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::upstream(
                    502,
                    ErrorKind::Upstream,
                    format!("{} sent a body over {limit} bytes", self.who),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// The body of an error response, truncated to a size fit for a message.
    pub async fn read_error_body(&mut self) -> Bytes {
        let mut buf = bytes::BytesMut::new();
        while let Ok(Some(chunk)) = self.next_chunk().await {
            let room = MAX_ERROR_BODY.saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room == 0 {
                break;
            }
        }
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!((t.tls, t.port, t.base_path.as_str()), (true, 443, "/v1"));
        assert_eq!(t.authority, "api.openai.com");
        let t = Target::parse("http://127.0.0.1:9100").unwrap();
        assert_eq!((t.tls, t.port, t.base_path.as_str()), (false, 9100, ""));
        assert_eq!(t.authority, "127.0.0.1:9100");
        let t = Target::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(t.host, "::1");
        assert!(Target::parse("ftp://x").is_err());
    }

    fn request(
        method: http::Method,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> UpstreamRequest {
        UpstreamRequest {
            method,
            path: path.into(),
            headers: headers.iter().map(|(n, v)| (*n, v.to_string())).collect(),
            body: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn writes_the_request_head_once() {
        let t = Target::parse("http://127.0.0.1:9100/v1").unwrap();
        let req = request(
            http::Method::POST,
            "/v1/chat",
            &[("authorization", "Bearer k")],
        );
        let wire = String::from_utf8(head(&t, &req, 2, "d").unwrap()).unwrap();
        assert_eq!(
            wire,
            format!(
                "POST /v1/chat HTTP/1.1\r\nhost: 127.0.0.1:9100\r\ncontent-type: application/json\r\n\
                 user-agent: routeiq/{}\r\nauthorization: Bearer k\r\ncontent-length: 2\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
        );
        // A header the caller sets replaces the default; a name given twice keeps its last
        // value; bytes past ASCII in the path go as they are.
        let req = request(
            http::Method::GET,
            "/x/caf\u{e9}?a=1",
            &[("content-type", "text/plain"), ("x-a", "1"), ("X-A", "2")],
        );
        let wire = String::from_utf8(head(&t, &req, 0, "d").unwrap()).unwrap();
        assert!(
            wire.starts_with("GET /x/caf\u{e9}?a=1 HTTP/1.1\r\n"),
            "{wire}"
        );
        assert_eq!(wire.matches("content-type").count(), 1, "{wire}");
        assert!(wire.contains("content-type: text/plain\r\n"), "{wire}");
        assert!(
            !wire.contains("x-a: 1") && wire.contains("X-A: 2\r\n"),
            "{wire}"
        );
        assert!(head(&t, &request(http::Method::HEAD, "/a", &[]), 0, "d").is_ok());
    }

    #[test]
    fn the_gateway_frames_the_request_itself() {
        let t = Target::parse("http://127.0.0.1:9100").unwrap();
        let req = request(
            http::Method::POST,
            "/a",
            &[
                ("Content-Length", "1"),
                ("transfer-encoding", "chunked"),
                ("Connection", "upgrade"),
                ("upgrade", "websocket"),
                ("te", "trailers"),
                ("x-kept", "yes"),
            ],
        );
        let wire = String::from_utf8(head(&t, &req, 2, "d").unwrap())
            .unwrap()
            .to_lowercase();
        assert!(
            wire.ends_with("x-kept: yes\r\ncontent-length: 2\r\n\r\n"),
            "{wire}"
        );
        for gone in [
            "content-length: 1",
            "transfer-encoding",
            "connection",
            "upgrade",
            "te:",
        ] {
            assert!(!wire.contains(gone), "{gone}: {wire}");
        }
    }

    #[test]
    fn refuses_what_would_split_the_request() {
        let t = Target::parse("http://127.0.0.1:9100").unwrap();
        let bad = [
            request(http::Method::POST, "/a", &[("x-a", "1\r\nx-b: 2")]),
            request(http::Method::POST, "/a", &[("x-a", "1\n")]),
            request(http::Method::POST, "/a", &[("x-a\r\nx-b", "1")]),
            request(http::Method::POST, "/a", &[("x a", "1")]),
            request(http::Method::POST, "/a", &[("x:a", "1")]),
            request(http::Method::POST, "/a", &[("", "1")]),
            request(http::Method::POST, "/a b", &[]),
            request(http::Method::POST, "/a\r\nb", &[]),
            request(http::Method::POST, "a", &[]),
        ];
        for req in bad {
            let e = head(&t, &req, 2, "dep-1").unwrap_err();
            assert!(
                e.message.starts_with("dep-1: cannot build"),
                "{}",
                e.message
            );
        }
        assert!(head(
            &t,
            &request(http::Method::POST, "/a", &[("x-a", "a\tb")]),
            2,
            "d"
        )
        .is_ok());
    }
}
