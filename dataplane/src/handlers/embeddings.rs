//! `POST /v1/embeddings`.

use std::sync::Arc;

use bytes::Bytes;
use pingora::proxy::Session;

use super::attempt::{self, Reply};
use super::request::RawObject;
use super::response_headers;
use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::providers::Operation;
use crate::respond;
use crate::routing::failover::Failover;
use crate::routing::RouteRequest;
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
    let tags = super::take_tags(&mut req)?;
    let worst = crate::limits::WorstCase::of(body.len(), Some(0), None);
    ctx.model = Some(model.clone());
    let mut plan = Failover::new(
        app,
        live,
        &model,
        RouteRequest {
            stream: false,
            prompt_tokens: worst.prompt,
            tokens: worst.tokens(),
            tags,
        },
    )?;
    let first = plan.first()?;
    ctx.deployment = Some(Arc::clone(&first));
    // Embeddings produce no completion tokens: the input is the whole reservation.
    if let Err(e) = ctx.admit(app, live, &first, worst).await {
        plan.abandon(&first);
        return Err(e);
    }
    let served = attempt::serve(
        app,
        ctx,
        &mut plan,
        first,
        Operation::Embeddings,
        MAX_RESPONSE_BYTES,
        |d| req.with("model", &d.deployment.upstream_model),
    )
    .await?;
    let (d, sent) = (served.deployment, served.sent);
    let Reply::Full(out) = served.reply else {
        return Err(ApiError::internal("embeddings answered with a stream"));
    };
    ctx.upstream_latency = Some(sent.elapsed());
    ctx.usage = usage::from_body(&out);
    let mut headers = response_headers(ctx, &d);
    headers.extend(super::cost_header(ctx));
    if let Err(e) = respond::json(session, ctx, &headers, out).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}
