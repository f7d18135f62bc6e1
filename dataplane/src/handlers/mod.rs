//! Request handlers: one per endpoint, each a few steps over the modules that do the work.

mod attempt;
mod cascade;
mod chat;
mod embeddings;
mod info;
mod internal;
mod multiround;
mod passthrough;
mod request;

use bytes::Bytes;
use pingora::proxy::Session;

use crate::auth;
use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi};
use crate::respond;
use crate::state::{App, LiveState};

/// Answers one request. Every outcome, errors included, is written to the client here.
pub async fn handle(app: &App, session: &mut Session, ctx: &mut RequestCtx) {
    let live = app.load();
    let method = session.req_header().method.as_str().to_owned();
    let path = session.req_header().uri.path().to_owned();
    let (api, result) = match (method.as_str(), path.as_str()) {
        ("POST", "/v1/chat/completions" | "/chat/completions" | "/openai/v1/chat/completions") => {
            ctx.route = "chat";
            let r = authed_body(&live, session, ctx).await;
            let r = match r {
                Ok(body) => {
                    chat::completion(app, &live, session, ctx, ClientApi::OpenAi, body).await
                }
                Err(e) => Err(e),
            };
            (ClientApi::OpenAi, r)
        }
        ("POST", "/v1/messages" | "/anthropic/v1/messages") => {
            ctx.route = "messages";
            let r = match authed_body(&live, session, ctx).await {
                Ok(body) => {
                    chat::completion(app, &live, session, ctx, ClientApi::Anthropic, body).await
                }
                Err(e) => Err(e),
            };
            (ClientApi::Anthropic, r)
        }
        ("POST", "/v1/embeddings" | "/embeddings") => {
            ctx.route = "embeddings";
            let r = match authed_body(&live, session, ctx).await {
                Ok(body) => embeddings::create(app, &live, session, ctx, body).await,
                Err(e) => Err(e),
            };
            (ClientApi::OpenAi, r)
        }
        ("GET", "/v1/models" | "/models") => {
            ctx.route = "models";
            let r = match auth::authenticate(&live, session.req_header()) {
                Ok(caller) => {
                    ctx.key = caller.into_key();
                    info::models(app, &live, session, ctx).await
                }
                Err(e) => Err(e),
            };
            (ClientApi::OpenAi, r)
        }
        ("GET", "/health/liveliness" | "/health/liveness") => {
            ctx.route = "health";
            (ClientApi::OpenAi, info::liveliness(session, ctx).await)
        }
        ("GET", "/health/readiness") => {
            ctx.route = "health";
            (
                ClientApi::OpenAi,
                info::readiness(app, &live, session, ctx).await,
            )
        }
        ("GET", "/metrics") => {
            ctx.route = "metrics";
            (ClientApi::OpenAi, info::metrics(app, session, ctx).await)
        }
        ("GET", "/hot-reload/status") => {
            ctx.route = "health";
            (
                ClientApi::OpenAi,
                info::hot_reload(&live, session, ctx).await,
            )
        }
        ("POST", p) if passthrough::route(p).is_some() => {
            ctx.route = "passthrough";
            let api = match passthrough::route(p) {
                Some((routeiq_proto::ProviderKind::Anthropic, _)) => ClientApi::Anthropic,
                _ => ClientApi::OpenAi,
            };
            let r = match (
                passthrough::route(p),
                authed_body(&live, session, ctx).await,
            ) {
                (_, Err(e)) => Err(e),
                (Some((kind, rest)), Ok(body)) => {
                    passthrough::forward(app, &live, session, ctx, kind, rest, body).await
                }
                (None, Ok(_)) => Err(ApiError::not_found_route(&method, p)),
            };
            (api, r)
        }
        (_, p) if known_path(p) => (
            ClientApi::OpenAi,
            Err(ApiError::method_not_allowed(&method, p)),
        ),
        (_, p) => (
            ClientApi::OpenAi,
            Err(ApiError::not_found_route(&method, p)),
        ),
    };
    if let Err(e) = result {
        if ctx.response_started {
            tracing::debug!(error = %e, "error after the response started");
        } else {
            respond::error(session, ctx, api, &e).await;
        }
    }
}

fn known_path(p: &str) -> bool {
    matches!(
        p,
        "/v1/chat/completions"
            | "/chat/completions"
            | "/openai/v1/chat/completions"
            | "/v1/messages"
            | "/anthropic/v1/messages"
            | "/v1/embeddings"
            | "/embeddings"
            | "/v1/models"
            | "/models"
            | "/health/liveliness"
            | "/health/liveness"
            | "/health/readiness"
            | "/metrics"
            | "/hot-reload/status"
    )
}

/// Authenticates, then reads the body (so that an unauthenticated client cannot make the
/// gateway buffer a large body).
async fn authed_body(
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Bytes, ApiError> {
    ctx.key = auth::authenticate(live, session.req_header())?.into_key();
    if let Some(name) = live.user_header_name.as_deref() {
        ctx.end_user = session
            .req_header()
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
    }
    respond::read_body(session, live.max_request_body_bytes).await
}

/// The end user from the body's `user` field (OpenAI's), unless a header named it.
fn end_user_from_body(ctx: &mut RequestCtx, req: &request::RawObject) {
    if ctx.end_user.is_none() {
        ctx.end_user = req
            .value("user")
            .and_then(|v| v.as_str().map(str::to_owned))
            .filter(|u| !u.is_empty());
    }
}

/// Removes the body's `tags` (a list of strings, for tag routing; providers do not know
/// the field) and returns them.
fn take_tags(req: &mut request::RawObject) -> Result<Vec<String>, ApiError> {
    match req.remove("tags") {
        None => Ok(Vec::new()),
        Some(raw) if raw.get() == "null" => Ok(Vec::new()),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
            ApiError::bad_request("`tags` must be a list of strings").with_param("tags")
        }),
    }
}

/// `x-litellm-response-cost`: the request's cost in USD, once its usage is known (not on
/// streams, whose headers go out first).
fn cost_header(ctx: &RequestCtx) -> Option<(&'static str, String)> {
    ctx.cost()
        .map(|c| ("x-litellm-response-cost", c.to_string()))
}

/// Headers every model response carries (LiteLLM's names).
fn response_headers(
    ctx: &RequestCtx,
    d: &crate::state::CompiledDeployment,
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-litellm-call-id", ctx.request_id.clone()),
        ("x-litellm-model-id", d.deployment.id.0.clone()),
        ("x-litellm-model-group", d.deployment.model_name.clone()),
        ("x-litellm-attempted-retries", ctx.retries.to_string()),
        ("x-litellm-attempted-fallbacks", ctx.fallbacks.to_string()),
    ];
    h.extend(ctx.rate_headers.iter().cloned());
    if !d.deployment.api_base.is_empty() {
        h.push(("x-litellm-model-api-base", d.deployment.api_base.clone()));
    }
    if let Some(r) = &ctx.routed {
        h.push(("x-routeiq-router", r.strategy.clone()));
        h.push((
            "x-routeiq-router-version",
            r.version.clone().unwrap_or_else(|| "fallback".into()),
        ));
        if let Some(c) = &r.candidate {
            h.push(("x-routeiq-router-candidate", c.clone()));
        }
    }
    if let Some((confidence, escalated)) = ctx.automix {
        h.push(("x-routeiq-automix-confidence", format!("{confidence:.3}")));
        h.push(("x-routeiq-automix-escalated", escalated.to_string()));
    }
    h
}
