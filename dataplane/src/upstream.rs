//! HTTP calls to upstream providers through pingora's pooled connector.
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
use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

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
    connector: Connector,
    dns: Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>,
    /// `general_settings.allowed_egress`: every connection is checked against it before it
    /// is made (the AWS SDK's clients share it).
    pub egress: Arc<Egress>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            connector: Connector::new(None),
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
        let (mut session, peer) = self.connect(target, reads, &who).await?;
        let header = build_header(target, &req).map_err(|e| {
            ApiError::internal(format!("cannot build upstream request header: {e}"))
        })?;
        let io = async {
            session.write_request_header(Box::new(header)).await?;
            session.write_body(&req.body).await?;
            session.finish_body().await?;
            session.read_response().await
        };
        let io = match reads {
            Some(t) => tokio::time::timeout(t, io)
                .await
                .map_err(|_| silent(&target.authority, &who, t))?,
            None => io.await,
        };
        match io {
            Err(e) => Err(io_error(target, &who, &e, reads)),
            Ok(_) => Ok(self.exchange(session, peer, target, reads, who)),
        }
    }

    /// [`Self::send`] for an upload: `req.body` first, then what `rest` gives as it
    /// arrives (the client's body, never held whole). `req.headers` must hold its
    /// `content-length`. The caller bounds the whole exchange.
    pub async fn send_upload(
        self: &Arc<Self>,
        target: &Target,
        req: UpstreamRequest,
        rest: &mut dyn BodySource,
        who: Arc<str>,
    ) -> Result<Exchange, ApiError> {
        let (mut session, peer) = self.connect(target, None, &who).await?;
        let header = build_header(target, &req).map_err(|e| {
            ApiError::internal(format!("cannot build upstream request header: {e}"))
        })?;
        let failed = |e: Box<pingora::Error>| io_error(target, &who, &e, None);
        session
            .write_request_header(Box::new(header))
            .await
            .map_err(failed)?;
        session.write_body(&req.body).await.map_err(failed)?;
        while let Some(chunk) = rest.next().await? {
            session.write_body(&chunk).await.map_err(failed)?;
        }
        session.finish_body().await.map_err(failed)?;
        session.read_response().await.map_err(failed)?;
        Ok(self.exchange(session, peer, target, None, who))
    }

    /// A pooled connection to `target`, or a new one.
    async fn connect(
        &self,
        target: &Target,
        reads: Option<Duration>,
        who: &str,
    ) -> Result<(HttpSession, HttpPeer), ApiError> {
        let addr = self.destination(target, who).await?;
        let mut peer = HttpPeer::new(addr, target.tls, target.host.clone());
        peer.options.connection_timeout =
            Some(reads.map_or(CONNECT_TIMEOUT, |t| CONNECT_TIMEOUT.min(t)));
        peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);

        // A pooled connection first. Opening a new one (TCP, maybe TLS) is a large future, so
        // it is boxed: that keeps this future, and every future holding it, small, which
        // matters because pingora and async-trait box (copy) them on every request.
        let session = match self.connector.reused_http_session(&peer).await {
            Some(s) => s,
            None => {
                Box::pin(self.connector.get_http_session(&peer))
                    .await
                    .map_err(|e| connect_error(target, who, &e))?
                    .0
            }
        };
        Ok((session, peer))
    }

    /// The exchange whose response header has arrived.
    fn exchange(
        self: &Arc<Self>,
        session: HttpSession,
        peer: HttpPeer,
        target: &Target,
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
        }
    }
}

/// The rest of an upload's body, chunk by chunk.
#[async_trait::async_trait]
pub trait BodySource: Send {
    async fn next(&mut self) -> Result<Option<Bytes>, ApiError>;
}

fn build_header(target: &Target, req: &UpstreamRequest) -> pingora::Result<RequestHeader> {
    let mut h = RequestHeader::build(
        req.method.as_str(),
        req.path.as_bytes(),
        Some(req.headers.len() + 4),
    )?;
    h.insert_header("host", target.authority.as_str())?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", req.body.len().to_string())?;
    h.insert_header("user-agent", concat!("routeiq/", env!("CARGO_PKG_VERSION")))?;
    for (name, value) in &req.headers {
        h.insert_header(*name, value.as_str())?;
    }
    Ok(h)
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
}

impl Exchange {
    /// A response header's value.
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
                    self.upstream
                        .connector
                        .release_http_session(session, &self.peer, Some(POOL_IDLE_TIMEOUT))
                        .await;
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
}
