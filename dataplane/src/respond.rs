//! Reading the client's request body and writing responses to the client.

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi};

/// Reads the whole request body, refusing more than `limit` bytes.
pub async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, ApiError> {
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        // The body stays unread, so the connection cannot be reused.
        session.set_keepalive(None);
        return Err(ApiError::too_large(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    session.set_keepalive(None);
                    return Err(ApiError::too_large(limit));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => {
                session.set_keepalive(None);
                return Err(ApiError::bad_request(format!(
                    "could not read the request body: {}",
                    e.etype().as_str()
                )));
            }
        }
    }
}

fn header(
    status: u16,
    content_type: &str,
    extra: &[(&'static str, String)],
) -> pingora::Result<ResponseHeader> {
    let mut h = ResponseHeader::build(status, Some(extra.len() + 3))?;
    h.insert_header("content-type", content_type)?;
    for (k, v) in extra {
        h.insert_header(*k, v.as_str())?;
    }
    Ok(h)
}

/// Writes a complete response.
pub async fn full(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &str,
    extra: &[(&'static str, String)],
    body: Bytes,
) -> pingora::Result<()> {
    let mut h = header(status, content_type, extra)?;
    h.insert_header("content-length", body.len().to_string())?;
    ctx.status = status;
    ctx.response_started = true;
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

pub async fn json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    extra: &[(&'static str, String)],
    body: Bytes,
) -> pingora::Result<()> {
    full(session, ctx, 200, "application/json", extra, body).await
}

/// Writes an error in the client API's shape. Write failures mean the client is gone.
pub async fn error(session: &mut Session, ctx: &mut RequestCtx, api: ClientApi, err: &ApiError) {
    ctx.error_type = Some(err.kind.type_str());
    let mut extra = vec![("x-litellm-call-id", ctx.request_id.clone())];
    extra.extend(ctx.rate_headers.iter().cloned());
    if let Some(s) = err.retry_after {
        extra.push(("retry-after", s.to_string()));
    }
    if let Err(e) = full(
        session,
        ctx,
        err.status,
        "application/json",
        &extra,
        err.body(api),
    )
    .await
    {
        tracing::debug!(error = %e, "client went away before the error response");
    }
}

/// Starts a server-sent-events response.
pub async fn stream_start(
    session: &mut Session,
    ctx: &mut RequestCtx,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    start(session, ctx, 200, "text/event-stream", extra).await
}

/// Starts a response whose body follows in chunks (`stream_write`, `stream_end`).
pub async fn start(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &str,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    let mut h = header(status, content_type, extra)?;
    h.insert_header("cache-control", "no-cache")?;
    if session.req_header().version < http::Version::HTTP_2 {
        h.insert_header("transfer-encoding", "chunked")?;
    }
    ctx.status = status;
    ctx.response_started = true;
    session.write_response_header(Box::new(h), false).await
}

pub async fn stream_write(session: &mut Session, chunks: &mut Vec<Bytes>) -> pingora::Result<()> {
    let data = match chunks.len() {
        0 => return Ok(()),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut b = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks.drain(..) {
                b.extend_from_slice(&c);
            }
            b.freeze()
        }
    };
    chunks.clear();
    session.write_response_body(Some(data), false).await
}

pub async fn stream_end(session: &mut Session) -> pingora::Result<()> {
    session.write_response_body(None, true).await
}
