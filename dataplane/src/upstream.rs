//! HTTP calls to upstream providers through pingora's pooled connector.
//!
//! Connections are kept alive and reused per (address, TLS, SNI). Host names are resolved
//! asynchronously and cached, so no DNS lookup blocks the reactor.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

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
    /// Path and query, appended to nothing: already includes `base_path`.
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// The pooled client shared by all requests of the process.
pub struct Upstream {
    connector: Connector,
    dns: Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            connector: Connector::new(None),
            dns: Mutex::new(HashMap::new()),
        }
    }
}

impl Upstream {
    async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, ApiError> {
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
                ApiError::upstream(
                    502,
                    ErrorKind::Upstream,
                    format!("cannot resolve upstream host `{host}`"),
                )
            })?;
        if let Ok(mut cache) = self.dns.lock() {
            cache.insert(key, (addr, Instant::now()));
        }
        Ok(addr)
    }

    /// Sends `req` and waits for the response header. `timeout` bounds the wait for the
    /// header and every later read.
    pub async fn send(
        self: &Arc<Self>,
        target: &Target,
        req: UpstreamRequest,
        timeout: Duration,
    ) -> Result<Exchange, ApiError> {
        let addr = self.resolve(&target.host, target.port).await?;
        let mut peer = HttpPeer::new(addr, target.tls, target.host.clone());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT.min(timeout));
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);

        // A pooled connection first. Opening a new one (TCP, maybe TLS) is a large future, so
        // it is boxed: that keeps this future, and every future holding it, small, which
        // matters because pingora and async-trait box (copy) them on every request.
        let mut session = match self.connector.reused_http_session(&peer).await {
            Some(s) => s,
            None => {
                Box::pin(self.connector.get_http_session(&peer))
                    .await
                    .map_err(|e| connect_error(target, &e))?
                    .0
            }
        };

        let header = build_header(target, &req).map_err(|e| {
            ApiError::internal(format!("cannot build upstream request header: {e}"))
        })?;
        let io = async {
            session.write_request_header(Box::new(header)).await?;
            session.write_body(&req.body).await?;
            session.finish_body().await?;
            session.read_response().await
        };
        match tokio::time::timeout(timeout, io).await {
            Err(_) => Err(timeout_error(target, timeout)),
            Ok(Err(e)) => Err(io_error(target, &e, timeout)),
            Ok(Ok(_)) => {
                let status = session
                    .resp_header()
                    .map(|h| h.status.as_u16())
                    .unwrap_or(502);
                let retry_after = session
                    .resp_header()
                    .and_then(|h| h.headers.get("retry-after"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                Ok(Exchange {
                    status,
                    retry_after,
                    session: Some(session),
                    peer,
                    upstream: Arc::clone(self),
                    target_label: target.authority.clone(),
                    timeout,
                    bound_reads: false,
                })
            }
        }
    }
}

fn build_header(target: &Target, req: &UpstreamRequest) -> pingora::Result<RequestHeader> {
    let mut h = RequestHeader::build("POST", req.path.as_bytes(), Some(req.headers.len() + 4))?;
    h.insert_header("host", target.authority.as_str())?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", req.body.len().to_string())?;
    h.insert_header("user-agent", concat!("routeiq/", env!("CARGO_PKG_VERSION")))?;
    for (name, value) in &req.headers {
        h.insert_header(*name, value.as_str())?;
    }
    Ok(h)
}

fn connect_error(target: &Target, e: &pingora::Error) -> ApiError {
    ApiError::upstream(
        502,
        ErrorKind::Upstream,
        format!(
            "cannot connect to upstream {}: {}",
            target.authority,
            e.etype().as_str()
        ),
    )
}

fn timeout_error(target: &Target, timeout: Duration) -> ApiError {
    ApiError::timeout(format!(
        "upstream {} did not answer within {:.1}s (litellm_params.timeout / router_settings.timeout)",
        target.authority,
        timeout.as_secs_f64()
    ))
}

fn io_error(target: &Target, e: &pingora::Error, timeout: Duration) -> ApiError {
    use pingora::ErrorType;
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout => {
            timeout_error(target, timeout)
        }
        other => ApiError::upstream(
            502,
            ErrorKind::Upstream,
            format!("upstream {} failed: {}", target.authority, other.as_str()),
        ),
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
    target_label: String,
    timeout: Duration,
    /// Each body read is bounded by `timeout` (streams).
    pub bound_reads: bool,
}

impl Exchange {
    /// The next body chunk, or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(None);
        };
        // pingora's read timeout covers the response header, not body reads: a stream's
        // reads are bounded here (its `stream_timeout` between chunks); a whole body is
        // bounded by its caller, once.
        let read = if self.bound_reads {
            match tokio::time::timeout(self.timeout, session.read_body_bytes()).await {
                Ok(r) => r,
                Err(_) => {
                    self.session = None;
                    return Err(ApiError::timeout(format!(
                        "upstream {} sent nothing for {:.1}s",
                        self.target_label,
                        self.timeout.as_secs_f64()
                    )));
                }
            }
        } else {
            session.read_body_bytes().await
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
                Err(match e.etype() {
                    pingora::ErrorType::ReadTimedout => ApiError::timeout(format!(
                        "upstream {} sent nothing for {:.1}s",
                        self.target_label,
                        self.timeout.as_secs_f64()
                    )),
                    other => ApiError::upstream(
                        502,
                        ErrorKind::Upstream,
                        format!(
                            "upstream {} broke off the response: {}",
                            self.target_label,
                            other.as_str()
                        ),
                    ),
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
                    format!(
                        "upstream {} sent a body over {limit} bytes",
                        self.target_label
                    ),
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
