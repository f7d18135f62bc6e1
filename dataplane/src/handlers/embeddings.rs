//! `POST /v1/embeddings`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pingora::proxy::Session;

use super::request::RawObject;
use super::response_headers;
use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::providers::{self, Operation};
use crate::respond;
use crate::state::{App, LiveState};
use crate::usage;

const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

pub async fn create(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: Bytes,
) -> Result<(), ApiError> {
    let mut req = RawObject::parse(&body)?;
    let model = req.model()?;
    crate::access::check(live, ctx.key.as_deref(), &model)?;
    super::end_user_from_body(ctx, &req);
    if !(req.is_string("input") || req.is_array("input", true)) {
        return Err(
            ApiError::bad_request("`input` must be a string or a non-empty array")
                .with_param("input"),
        );
    }
    let d = live.route(&model)?;
    ctx.model = Some(model);
    ctx.deployment = Some(Arc::clone(&d));
    // Embeddings produce no completion tokens: the input is the whole reservation.
    ctx.admit(
        app,
        live.version,
        &d,
        crate::limits::WorstCase::of(body.len(), Some(0), None),
    )
    .await?;
    req.set("model", &d.deployment.upstream_model)?;
    let sent = Instant::now();
    let mut resp = providers::get(d.deployment.provider)
        .send(&app.upstream, &d, Operation::Embeddings, req.to_bytes())
        .await?;
    let out = resp.body.read_all(MAX_RESPONSE_BYTES).await?;
    ctx.upstream_latency = Some(sent.elapsed());
    ctx.usage = usage::from_body(&out);
    let mut headers = response_headers(ctx, &d);
    headers.extend(super::cost_header(ctx));
    if let Err(e) = respond::json(session, ctx, &headers, out).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}
