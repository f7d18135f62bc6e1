//! `POST /v1/embeddings`.

use std::time::Instant;

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::Value;

use super::{model_field, parse_object, response_headers};
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
    let mut req = parse_object(&body)?;
    let model = model_field(&req)?;
    match req.get("input") {
        Some(Value::String(_)) => {}
        Some(Value::Array(a)) if !a.is_empty() => {}
        _ => {
            return Err(
                ApiError::bad_request("`input` must be a string or a non-empty array")
                    .with_param("input"),
            )
        }
    }
    let d = live.route(&model)?;
    ctx.model = Some(model);
    ctx.provider = Some(d.deployment.provider);
    req.insert(
        "model".into(),
        Value::String(d.deployment.upstream_model.clone()),
    );
    let sent = Instant::now();
    let mut resp = providers::get(d.deployment.provider)
        .send(
            &app.upstream,
            &d,
            Operation::Embeddings,
            Bytes::from(Value::Object(req).to_string()),
        )
        .await?;
    let out = resp.body.read_all(MAX_RESPONSE_BYTES).await?;
    ctx.upstream_latency = Some(sent.elapsed());
    ctx.usage = usage::from_body(&out);
    let headers = response_headers(ctx, &d);
    if let Err(e) = respond::json(session, ctx, &headers, out).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}
