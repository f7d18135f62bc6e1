//! Chat: OpenAI `/v1/chat/completions` and Anthropic `/v1/messages`, to any provider.

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::{Map, Value};

use super::attempt::{self, Reply};
use super::request::RawObject;
use super::response_headers;
use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi};
use crate::providers::Operation;
use crate::respond;
use crate::routing::failover::Failover;
use crate::routing::learned::Decision;
use crate::routing::{Compound, RouteRequest};
use crate::state::{App, CompiledDeployment, LiveState};
use crate::translate::{
    anthropic_to_openai, openai_to_anthropic, openai_to_bedrock, openai_to_cohere,
    openai_to_gemini, stream, ChatFormat,
};
use crate::usage;
use std::sync::Arc;

/// The text learned strategies route on: the last user message's text (a string, or its
/// text parts joined by newlines), else empty.
fn query_text(req: &RawObject) -> String {
    let Some(Value::Array(messages)) = req.value("messages") else {
        return String::new();
    };
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map_or_else(String::new, crate::translate::content_lines)
}

/// Largest non-streaming upstream response accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub async fn completion(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    client: ClientApi,
    body: Bytes,
) -> Result<(), ApiError> {
    let super::Incoming {
        mut req,
        model,
        tags,
    } = super::incoming(
        live,
        ctx,
        &body,
        None,
        Operation::Chat {
            stream: false,
            skills: false,
        },
    )?;
    if !req.is_array("messages", false) {
        return Err(ApiError::missing_field("messages"));
    }
    let stream = req.flag("stream")?;
    if let Some(spans) = &app.spans {
        spans.note_request(ctx, &req, client);
    }
    let client_wants_usage = match client {
        ClientApi::Anthropic => true,
        ClientApi::OpenAi => {
            req.value("stream_options")
                .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
                == Some(true)
        }
    };

    // LiteLLM's per-request switch; never sent upstream.
    let drop_params = req.flag("drop_params")?;
    req.remove("drop_params");
    let ask = super::cached::Ask {
        api: crate::cache::Api::chat(client),
        model: &model,
        stream,
        include_usage: client_wants_usage,
        // MCP tools: which ones a key gets, and whether it may use them at all, is decided
        // afresh for each request; their answers are not shared.
        bypass: client == ClientApi::OpenAi && super::mcp_tools::named(&req),
    };
    let cache = match super::cached::lookup(app, live, session, ctx, ask, &mut req).await? {
        super::cached::Lookup::Hit(hit) => {
            return super::cached::answer(app, live, session, ctx, &model, hit).await
        }
        super::cached::Lookup::Miss(plan) => plan,
    };
    let max_tokens = ["max_tokens", "max_completion_tokens"]
        .into_iter()
        .find_map(|f| req.value(f).and_then(|v| v.as_u64()));
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
            query: live.learned_routing().then(|| query_text(&req)),
            pinned: None,
        },
    )
    .await?;
    if stream && client == ClientApi::OpenAi {
        // Always ask for usage, so every stream is accounted for; the converter drops the
        // usage chunk again when the client did not ask for it.
        let mut opts = match req.value("stream_options") {
            Some(Value::Object(o)) => o,
            _ => Map::new(),
        };
        opts.insert("include_usage".into(), Value::Bool(true));
        req.set("stream_options", &opts)?;
    }
    // Skills the request loads: a registry skill becomes the serving deployment's copy.
    let skills = match crate::skills::Loads::of(req.value("container"), client, &live.skills) {
        Ok(s) => s,
        Err(e) => {
            plan.abandon(&first);
            return Err(e);
        }
    };
    if let Some(loads) = &skills {
        ctx.skills = loads.registry_ids().map(str::to_owned).collect();
    }
    // MCP tools become the functions they stand for; those the gateway runs need rounds
    // (OpenAI-format requests only, which load no skills).
    // Boxed: the MCP futures stay out of every chat request's own.
    let offer = if client == ClientApi::OpenAi && super::mcp_tools::named(&req) {
        Box::pin(super::mcp_tools::offer(
            app,
            live,
            ctx,
            session.req_header(),
            &mut req,
        ))
        .await
    } else {
        Ok(None)
    };
    let offer = match offer {
        Ok(o) => o,
        Err(e) => {
            plan.abandon(&first);
            return Err(e);
        }
    };
    if let Some(offer) = offer.filter(super::mcp_tools::Offer::runs_tools) {
        let turn = super::mcp_tools::Turn {
            stream,
            client_wants_usage,
            model: model.clone(),
            drop_params,
            shape: super::mcp_tools::Shape::Chat,
        };
        let run = super::mcp_tools::run(app, live, session, ctx, plan, first, req, offer, turn);
        return Box::pin(run).await;
    }
    let build =
        |d: &CompiledDeployment| body_loading(&req, skills.as_ref(), client, d, drop_params);
    let op = Operation::Chat {
        stream,
        skills: skills.is_some(),
    };
    let compound = plan.compound();
    let query = plan.request().query.clone();
    let mut served = match (&compound, &query) {
        (Some(Compound::MultiRound(mr)), Some(query)) => {
            // The rounds replace the first pick; the router model gives the final answer.
            plan.abandon(&first);
            let (messages, consulted) =
                super::multiround::rounds(app, live, ctx, mr, &model, &query.text).await;
            let mut last = req.clone();
            last.set("messages", &messages)?;
            let mut last_plan = Failover::new(
                app,
                live,
                &mr.router_model,
                RouteRequest {
                    stream,
                    key: ctx.key.clone(),
                    ..RouteRequest::default()
                },
            )?;
            let d = last_plan.first()?;
            let served = attempt::serve(app, ctx, &mut last_plan, d, op, MAX_RESPONSE_BYTES, |d| {
                body_loading(&last, skills.as_ref(), client, d, drop_params)
            })
            .await?;
            ctx.routed = Some(Decision::plain(
                mr.strategy.clone(),
                Some(mr.router_model.clone()),
                Some(consulted.join(",")).filter(|c| !c.is_empty()),
                Arc::clone(&query.text),
            ));
            served
        }
        _ => attempt::serve(app, ctx, &mut plan, first, op, MAX_RESPONSE_BYTES, build).await?,
    };
    if let (Some(Compound::AutoMix(cascade)), Some(query)) = (&compound, &query) {
        served = super::cascade::run(
            app,
            live,
            ctx,
            &mut plan,
            cascade,
            served,
            &query.text,
            op,
            MAX_RESPONSE_BYTES,
            build,
        )
        .await?;
    }
    let d = served.deployment;
    let sent = served.sent;
    let native = d.format;
    let mut headers = response_headers(ctx, &d);

    let (mut resp, first_chunk) = match served.reply {
        Reply::Stream { resp, first } => (resp, first),
        Reply::Full(body) => {
            ctx.upstream_latency = Some(sent.elapsed());
            let out = match (native, client) {
                (ChatFormat::OpenAi, ClientApi::OpenAi)
                | (ChatFormat::Anthropic, ClientApi::Anthropic) => {
                    super::read_answer(ctx, &body);
                    body
                }
                (native, client) => {
                    let (openai, usage) = openai_response(native, body, &model)?;
                    let out = match client {
                        ClientApi::OpenAi => openai,
                        ClientApi::Anthropic => {
                            to_bytes(&anthropic_to_openai::response(&openai, &model)?.0)
                        }
                    };
                    ctx.usage = usage;
                    if let Some(a) = &mut ctx.attempt_span {
                        a.read_body(&out);
                    }
                    out
                }
            };
            headers.extend(super::cost_header(ctx));
            super::cached::keep_full(app, ctx, cache.as_ref(), &out);
            if let Err(e) = respond::json(session, ctx, &headers, out).await {
                tracing::debug!(error = %e, "client went away");
            }
            return Ok(());
        }
    };
    // A stream the cache keeps is recorded with OpenAI's usage chunk, which the client
    // gets only if it asked.
    let mut recording = super::cached::recorder(cache.as_ref(), !client_wants_usage);
    let wants_usage = client_wants_usage || recording.is_some();
    let conv = stream::converter(native, client, wants_usage, &model, d.prices);
    super::streaming::pump(
        session,
        ctx,
        super::streaming::Stream::of(&mut resp, first_chunk, sent, &d, client, &model),
        conv,
        &headers,
        recording.as_mut(),
    )
    .await?;
    super::cached::keep_stream(app, ctx, cache.as_ref(), recording);
    Ok(())
}

/// [`upstream_body`] with the skills the request loads named as deployment `d` has them.
fn body_loading(
    req: &RawObject,
    skills: Option<&crate::skills::Loads>,
    client: ClientApi,
    d: &CompiledDeployment,
    drop_params: bool,
) -> Result<Bytes, ApiError> {
    match skills {
        None => upstream_body(req, client, d, drop_params),
        Some(loads) => {
            let mut on_d = req.clone();
            on_d.set("container", &loads.container_on(d)?)?;
            upstream_body(&on_d, client, d, drop_params)
        }
    }
}

/// The request body for deployment `d`: the client's, with the model renamed, when both
/// speak the same wire format; translated otherwise.
/// `drop_params`: the request's own (see `params`).
pub(super) fn upstream_body(
    req: &RawObject,
    client: ClientApi,
    d: &CompiledDeployment,
    drop_params: bool,
) -> Result<Bytes, ApiError> {
    let upstream_model = d.deployment.upstream_model.as_str();
    match (client, d.format) {
        (ClientApi::OpenAi, ChatFormat::OpenAi) => {
            let edit = d
                .params
                .edit(req.keys(), &d.deployment.model_name, drop_params)?;
            req.with_edit("model", &upstream_model, &edit)
        }
        (ClientApi::Anthropic, ChatFormat::Anthropic) => req.with("model", &upstream_model),
        (ClientApi::OpenAi, ChatFormat::Bedrock) => openai_to_bedrock::request(req),
        (ClientApi::OpenAi, _) => from_openai(&req.to_map()?, d, drop_params),
        (ClientApi::Anthropic, _) => {
            let openai = anthropic_to_openai::request(&req.to_map()?, upstream_model)?;
            let Value::Object(openai) = openai else {
                return Err(ApiError::internal("translated request is not an object"));
            };
            from_openai(&openai, d, drop_params)
        }
    }
}

/// The request body for deployment `d` from an OpenAI chat request's fields: edited as
/// an OpenAI client's would be (see `params`), or translated to the provider's format.
pub(super) fn from_openai(
    req: &Map<String, Value>,
    d: &CompiledDeployment,
    drop_params: bool,
) -> Result<Bytes, ApiError> {
    let upstream_model = d.deployment.upstream_model.as_str();
    let translated = match d.format {
        ChatFormat::OpenAi => {
            let req = RawObject::parse(&crate::json::to_vec(req))?;
            return upstream_body(&req, ClientApi::OpenAi, d, drop_params);
        }
        // It reads the request's fields from their JSON text.
        ChatFormat::Bedrock => {
            return openai_to_bedrock::request(&RawObject::parse(&crate::json::to_vec(req))?)
        }
        ChatFormat::Anthropic => openai_to_anthropic::request(
            req,
            upstream_model,
            d.deployment.model_info.max_output_tokens,
        )?,
        ChatFormat::Gemini => openai_to_gemini::request(req)?,
        ChatFormat::Cohere => openai_to_cohere::request(req, upstream_model)?,
    };
    Ok(to_bytes(&translated))
}

/// A deployment's chat answer in OpenAI's format, and its usage.
pub(super) fn openai_response(
    native: ChatFormat,
    body: Bytes,
    model: &str,
) -> Result<(Bytes, Option<usage::Usage>), ApiError> {
    match native {
        ChatFormat::OpenAi => {
            let usage = usage::from_body(&body);
            return Ok((body, usage));
        }
        ChatFormat::Bedrock => {
            let (c, u) = openai_to_bedrock::completion(&body, model)?;
            return Ok((Bytes::from(c.to_vec()), u));
        }
        _ => {}
    }
    let (v, u) = openai_answer(native, &body, model)?;
    Ok((to_bytes(&v), u))
}

/// A deployment's chat answer as OpenAI's, parsed, and its usage.
pub(super) fn openai_answer(
    native: ChatFormat,
    body: &[u8],
    model: &str,
) -> Result<(Value, Option<usage::Usage>), ApiError> {
    match native {
        ChatFormat::OpenAi => {
            let v = serde_json::from_slice(body).map_err(|e| {
                ApiError::upstream(
                    502,
                    crate::error::ErrorKind::Upstream,
                    format!("provider sent a body that is not JSON: {e}"),
                )
            })?;
            Ok((v, usage::from_body(body)))
        }
        ChatFormat::Anthropic => openai_to_anthropic::response(body),
        ChatFormat::Gemini => openai_to_gemini::response(body, model),
        ChatFormat::Bedrock => openai_to_bedrock::response(body, model),
        ChatFormat::Cohere => openai_to_cohere::response(body, model),
    }
}

fn to_bytes(v: &Value) -> Bytes {
    crate::json::bytes(v)
}
