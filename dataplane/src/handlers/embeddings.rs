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
use crate::state::{App, CompiledDeployment, LiveState};
use crate::translate::{openai_to_bedrock, openai_to_cohere, openai_to_gemini};
use crate::usage;
use routeiq_proto::ProviderKind;

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
        |d| upstream_body(&req, d),
    )
    .await?;
    let (d, sent) = (served.deployment, served.sent);
    let Reply::Full(out) = served.reply else {
        return Err(ApiError::internal("embeddings answered with a stream"));
    };
    ctx.upstream_latency = Some(sent.elapsed());
    let translated = match d.deployment.provider {
        ProviderKind::Gemini => Some(openai_to_gemini::embeddings_response(
            &out,
            &req.to_map()?,
            &model,
        )?),
        ProviderKind::Bedrock => Some(openai_to_bedrock::embeddings_response(
            &out,
            &req.to_map()?,
            &model,
        )?),
        ProviderKind::Cohere => Some(openai_to_cohere::embeddings_response(&out, &model)?),
        _ => None,
    };
    let out = match translated {
        Some((v, u)) => {
            ctx.usage = Some(u);
            Bytes::from(v.to_string())
        }
        None => {
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

/// The request body for deployment `d`: the client's with the model renamed (OpenAI's
/// format), or translated to the provider's embeddings API.
fn upstream_body(req: &RawObject, d: &CompiledDeployment) -> Result<Bytes, ApiError> {
    let model = d.deployment.upstream_model.as_str();
    let translated = match d.deployment.provider {
        ProviderKind::Gemini | ProviderKind::VertexAi => {
            openai_to_gemini::embeddings_request(&req.to_map()?, model)?
        }
        ProviderKind::Bedrock => openai_to_bedrock::embeddings_request(
            &req.to_map()?,
            crate::providers::bedrock::embedding_model(&d.deployment),
        )?,
        ProviderKind::Cohere => openai_to_cohere::embeddings_request(&req.to_map()?, model)?,
        _ => return req.with("model", &model),
    };
    Ok(Bytes::from(translated.to_string()))
}
