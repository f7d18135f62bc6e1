//! `POST /v1/responses`: OpenAI's Responses API (the default of the OpenAI Agents SDK and
//! Codex), through the same keys, access, limits, budgets, routing, retries, fallbacks,
//! usage and cost as chat. It is native to OpenAI, Azure OpenAI and OpenAI-compatible
//! servers that have it: the request goes up with its model renamed and the answer (the
//! typed event stream included) comes back unchanged, its usage read on the side. Other
//! providers answer a 400 until the translation through chat exists (issue 17).

use bytes::Bytes;
use pingora::proxy::Session;

use super::attempt::{self, Reply};
use super::request::RawObject;
use super::response_headers;
use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi};
use crate::providers::Operation;
use crate::respond;
use crate::state::{App, CompiledDeployment, LiveState};
use crate::translate::stream;
use crate::usage;

const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub async fn create(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: Bytes,
) -> Result<(), ApiError> {
    let super::Incoming { req, model, tags } = super::incoming(
        live,
        ctx,
        &body,
        None,
        Operation::Responses { stream: false },
    )?;
    let stream = req.flag("stream")?;
    let op = Operation::Responses { stream };
    if !(req.is_string("input") || req.is_array("input", true)) {
        return Err(ApiError::bad_request(
            "`input` must be a string or a non-empty array of items",
        )
        .with_param("input"));
    }
    let max_tokens = req.value("max_output_tokens").and_then(|v| v.as_u64());
    let (mut plan, first) = attempt::plan(
        app,
        live,
        ctx,
        attempt::Request {
            model: &model,
            body_len: body.len(),
            max_tokens,
            stream,
            tags,
            query: None,
        },
    )
    .await?;
    let served = attempt::serve(app, ctx, &mut plan, first, op, MAX_RESPONSE_BYTES, |d| {
        upstream_body(&req, d)
    })
    .await?;
    let (d, sent) = (served.deployment, served.sent);
    let mut headers = response_headers(ctx, &d);
    match served.reply {
        Reply::Full(out) => {
            ctx.upstream_latency = Some(sent.elapsed());
            ctx.usage = usage::from_body(&out);
            headers.extend(super::cost_header(ctx));
            if let Err(e) = respond::json(session, ctx, &headers, out).await {
                tracing::debug!(error = %e, "client went away");
            }
            Ok(())
        }
        Reply::Stream { mut resp, first } => {
            ctx.time_to_first_token = Some(sent.elapsed());
            super::streaming::pump(
                session,
                ctx,
                super::streaming::Stream {
                    resp: &mut resp,
                    first,
                    sent,
                    provider: d.deployment.provider,
                    client: ClientApi::OpenAi,
                    model: &model,
                },
                stream::responses_passthrough(),
                &headers,
            )
            .await
        }
    }
}

/// The client's request with the model renamed. Providers without the API refuse it with
/// a 400 (`providers::unsupported`) before anything is sent.
fn upstream_body(req: &RawObject, d: &CompiledDeployment) -> Result<Bytes, ApiError> {
    req.with("model", &d.deployment.upstream_model)
}
