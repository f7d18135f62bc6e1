//! `POST /v1/embeddings`.

use bytes::Bytes;
use pingora::proxy::Session;

use super::attempt::{self, Reply};
use super::request::RawObject;
use super::response_headers;
use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::providers::Operation;
use crate::respond;
use crate::state::{App, LiveState};
use crate::translate::{openai_to_gemini, ChatFormat};
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
    // Embeddings produce no completion tokens: the input is the whole reservation.
    let (mut plan, first) = attempt::plan(
        app,
        live,
        ctx,
        attempt::Request {
            model: &model,
            body_len: body.len(),
            max_tokens: Some(0),
            stream: false,
            tags,
            query: None,
        },
    )
    .await?;
    let served = attempt::serve(
        app,
        ctx,
        &mut plan,
        first,
        Operation::Embeddings,
        MAX_RESPONSE_BYTES,
        |d| match d.format {
            ChatFormat::Gemini => Ok(Bytes::from(
                openai_to_gemini::embeddings_request(&req.to_map()?, &d.deployment.upstream_model)?
                    .to_string(),
            )),
            _ => req.with("model", &d.deployment.upstream_model),
        },
    )
    .await?;
    let (d, sent) = (served.deployment, served.sent);
    let Reply::Full(out) = served.reply else {
        return Err(ApiError::internal("embeddings answered with a stream"));
    };
    ctx.upstream_latency = Some(sent.elapsed());
    let out = match d.format {
        ChatFormat::Gemini => {
            let (v, u) = openai_to_gemini::embeddings_response(&out, &req.to_map()?, &model)?;
            ctx.usage = Some(u);
            Bytes::from(v.to_string())
        }
        _ => {
            ctx.usage = usage::from_body(&out);
            out
        }
    };
    let mut headers = response_headers(ctx, &d);
    headers.extend(super::cost_header(ctx));
    if let Err(e) = respond::json(session, ctx, &headers, out).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}
