//! Sending a provider's stream to the client: each upstream chunk decoded (SSE or AWS's
//! event stream), converted to the client's events, and written as it arrives; an upstream
//! failure mid-way ends the stream with an error event in the client's format. The usage
//! the converter read is the request's.

use std::time::Instant;

use bytes::Bytes;
use pingora::proxy::Session;
use routeiq_proto::ProviderKind;

use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi, ErrorKind};
use crate::providers::ProviderResponse;
use crate::respond;
use crate::state::CompiledDeployment;
use crate::translate::stream::{self, StreamConverter};

/// A stream whose first chunk has arrived.
pub struct Stream<'a> {
    pub resp: &'a mut ProviderResponse,
    pub first: Bytes,
    /// When the request was sent upstream.
    pub sent: Instant,
    pub provider: ProviderKind,
    /// The error events' format.
    pub client: ClientApi,
    pub model: &'a str,
}

impl<'a> Stream<'a> {
    /// The stream of deployment `d`'s answer, sent at `sent`.
    pub fn of(
        resp: &'a mut ProviderResponse,
        first: Bytes,
        sent: Instant,
        d: &CompiledDeployment,
        client: ClientApi,
        model: &'a str,
    ) -> Self {
        Self {
            resp,
            first,
            sent,
            provider: d.deployment.provider,
            client,
            model,
        }
    }
}

/// Sends the stream to the client through `conv` (the first chunk has arrived: that is
/// the time to first token). `recording`: what the client gets is recorded there, for the
/// response cache.
pub async fn pump(
    session: &mut Session,
    ctx: &mut RequestCtx,
    s: Stream<'_>,
    mut conv: Box<dyn StreamConverter>,
    headers: &[(&'static str, String)],
    mut recording: Option<&mut crate::cache::Recording>,
) -> Result<(), ApiError> {
    ctx.time_to_first_token = Some(s.sent.elapsed());
    ctx.first_chunk = Some(ctx.start.elapsed());
    let mut parser = crate::eventstream::Decoder::for_provider(s.provider);
    let mut out = Vec::new();
    if respond::stream_start(session, ctx, headers).await.is_err() {
        return Ok(()); // client gone
    }
    let mut pending = Some(s.first);
    loop {
        let next = match pending.take() {
            Some(chunk) => Ok(Some(chunk)),
            None => s.resp.body.next_chunk().await,
        };
        match next {
            Ok(Some(chunk)) => match parser.feed(&chunk) {
                Ok(events) => events.iter().for_each(|ev| conv.event(ev, &mut out)),
                Err(e) => {
                    let err = ApiError::upstream(502, ErrorKind::Upstream, e.to_string());
                    out.push(stream::error_event(s.client, &err));
                    ctx.error_type = Some(err.kind.type_str());
                    break;
                }
            },
            Ok(None) => {
                if let Some(ev) = parser.finish() {
                    conv.event(&ev, &mut out);
                }
                conv.finish(&mut out);
                if let Some(r) = recording.as_deref_mut() {
                    r.complete = true;
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, model = %s.model, "upstream stream failed mid-way");
                out.push(stream::error_event(s.client, &e));
                ctx.error_type = Some(e.kind.type_str());
                break;
            }
        }
        if let Some(a) = &mut ctx.attempt_span {
            a.read_events(&out);
        }
        if let Some(r) = recording.as_deref_mut() {
            r.pass(&mut out);
        }
        if respond::stream_write(session, &mut out).await.is_err() {
            // Client gone (the recording is not complete: the end was never read); dropping
            // the upstream body closes it.
            ctx.usage = conv.usage();
            return Ok(());
        }
    }
    ctx.upstream_latency = Some(s.sent.elapsed());
    ctx.usage = conv.usage();
    if let Some(a) = &mut ctx.attempt_span {
        a.read_events(&out);
    }
    if let Some(r) = recording {
        r.pass(&mut out);
    }
    let _ = respond::stream_write(session, &mut out).await;
    let _ = respond::stream_end(session).await;
    Ok(())
}
