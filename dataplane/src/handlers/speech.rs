//! `POST /v1/audio/speech`: OpenAI's text to speech, to OpenAI and Azure deployments,
//! through the same keys, access, limits, budgets, routing, retries, fallbacks and cost as
//! chat; the audio is relayed to the client as it arrives.

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::Value;

use super::attempt::{self, Reply};
use super::response_headers;
use crate::context::RequestCtx;
use crate::error::{ApiError, ErrorKind};
use crate::providers::{Body, Operation};
use crate::respond;
use crate::state::{App, LiveState};

/// `POST /v1/audio/speech`: the audio relayed as it arrives, priced per character of
/// `input` (`input_cost_per_character`).
pub async fn create(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: Bytes,
) -> Result<(), ApiError> {
    let super::Incoming { req, model, tags } =
        super::incoming(live, ctx, &body, Some("audio_speech"), Operation::Speech)?;
    let input = match req.value("input") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => {
            return Err(
                ApiError::bad_request("`input` must be a non-empty string").with_param("input")
            )
        }
    };
    if !req.is_string("voice") && req.raw("voice").is_none_or(|v| !v.starts_with('{')) {
        return Err(ApiError::missing_field("voice"));
    }
    let (mut plan, first) = attempt::plan(
        app,
        live,
        ctx,
        attempt::Request {
            model: &model,
            body_len: body.len(),
            max_tokens: Some(0),
            stream: true,
            tags,
            query: None,
            pinned: None,
        },
    )
    .await?;
    let served = attempt::serve(app, ctx, &mut plan, first, Operation::Speech, 0, |d| {
        req.with("model", &d.deployment.upstream_model)
    })
    .await?;
    let (d, sent) = (served.deployment, served.sent);
    let Reply::Stream { mut resp, first } = served.reply else {
        return Err(ApiError::internal("speech answered without a stream"));
    };
    ctx.time_to_first_token = Some(sent.elapsed());
    ctx.extra_cost += input.chars().count() as f64 * d.prices.per_character;
    ctx.usage = Some(crate::usage::Usage::default());
    let content_type = match &resp.body {
        Body::Http(ex) => ex.header("content-type").unwrap_or("audio/mpeg").to_owned(),
        Body::Local(_) => "audio/mpeg".to_owned(),
    };
    let mut headers = response_headers(ctx, &d);
    headers.extend(super::cost_header(ctx));
    if respond::start(session, ctx, 200, &content_type, &headers)
        .await
        .is_err()
    {
        return Ok(()); // client gone
    }
    let mut out = vec![first];
    loop {
        if respond::stream_write(session, &mut out).await.is_err() {
            return Ok(()); // client gone; dropping the upstream body closes it
        }
        match resp.body.next_chunk().await {
            Ok(Some(chunk)) => out.push(chunk),
            Ok(None) => break,
            Err(e) => {
                // The status is out: the connection is dropped rather than the body ended
                // as if complete, so the client sees the audio fail.
                tracing::warn!(error = %e, model = %model, "speech broke off");
                ctx.error_type = Some(ErrorKind::Upstream.type_str());
                ctx.upstream_latency = Some(sent.elapsed());
                session.set_keepalive(None);
                return Ok(());
            }
        }
    }
    ctx.upstream_latency = Some(sent.elapsed());
    let _ = respond::stream_end(session).await;
    Ok(())
}
