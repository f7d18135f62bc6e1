//! Request handlers: one per endpoint, each a few steps over the modules that do the work.

mod attempt;
mod cached;
mod cascade;
mod chat;
mod completions;
mod held;
mod info;
mod internal;
mod mcp_tools;
mod multiround;
mod objects;
mod oneshot;
mod passthrough;
pub mod request;
mod responses;
pub mod routes;
mod speech;
mod streaming;
mod uploads;

use bytes::Bytes;
use pingora::proxy::Session;

use crate::auth;
use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi};
use crate::providers::Operation;
use crate::respond;
use crate::state::{App, LiveState};
use routes::{Endpoint, Found, Needs, Route, ROUTES};

/// Answers one request. Every outcome, errors included, is written to the client here.
pub async fn handle(app: &App, session: &mut Session, ctx: &mut RequestCtx) {
    let live = app.load();
    ctx.traceparent = session
        .req_header()
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::otel::TraceParent::parse)
        .map(Box::new);
    if ctx.traceparent.is_some() {
        ctx.tracestate = crate::otel::tracestate(
            session
                .req_header()
                .headers
                .get_all("tracestate")
                .iter()
                .map(|v| v.as_bytes()),
        );
    }
    // Probes and metrics have no span.
    let method = session.req_header().method.clone();
    let path = session.req_header().uri.path().to_owned();
    let (api, result) = match ROUTES.find(&method, &path) {
        Found::Route(route, param) => {
            ctx.route = route.name;
            if !matches!(
                route.endpoint,
                Endpoint::Liveliness | Endpoint::Readiness | Endpoint::Metrics
            ) {
                ctx.span = app
                    .spans
                    .as_ref()
                    .map(|s| s.start(ctx, method.as_str(), !live.turn_off_message_logging));
            }
            let param = param.map(str::to_owned);
            let logged = ctx
                .span
                .as_ref()
                .and_then(crate::otel::RouteSpan::log_context);
            let serving = serve(app, &live, session, ctx, route, param.as_deref());
            let r = crate::otel::InContext::new(serving, logged).await;
            (route.api, r)
        }
        Found::MethodNotAllowed => (
            ClientApi::OpenAi,
            Err(ApiError::method_not_allowed(method.as_str(), &path)),
        ),
        Found::NotFound => (
            ClientApi::OpenAi,
            Err(ApiError::not_found_route(method.as_str(), &path)),
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

/// Answers one request on the separate metrics listener: `GET /metrics`, else 404 or 405.
pub async fn metrics_listener(app: &App, session: &mut Session, ctx: &mut RequestCtx) {
    ctx.route = "metrics";
    let req = session.req_header();
    let method = req.method.clone();
    let path = req.uri.path().to_owned();
    let result = match path.as_str() {
        "/metrics" | "/metrics/" if method == http::Method::GET => {
            info::metrics(app, session, ctx).await
        }
        "/metrics" | "/metrics/" => Err(ApiError::method_not_allowed(method.as_str(), &path)),
        _ => Err(ApiError::not_found_route(method.as_str(), &path)),
    };
    if let Err(e) = result {
        respond::error(session, ctx, ClientApi::OpenAi, &e).await;
    }
}

/// Checks what the route needs, then runs its handler. `param`: the path's parameter
/// (a response id, a pass-through's provider path).
async fn serve(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    param: Option<&str>,
) -> Result<(), ApiError> {
    let body = match route.needs {
        Needs::Nothing => Bytes::new(),
        Needs::Key => {
            authenticate(app, live, session, ctx)?;
            Bytes::new()
        }
        Needs::KeyAndBody => authed_body(app, live, session, ctx).await?,
    };
    match route.endpoint {
        Endpoint::Chat => chat::completion(app, live, session, ctx, ClientApi::OpenAi, body).await,
        Endpoint::Messages => {
            chat::completion(app, live, session, ctx, ClientApi::Anthropic, body).await
        }
        Endpoint::Embeddings => {
            oneshot::create(app, live, session, ctx, oneshot::Kind::Embeddings, body).await
        }
        Endpoint::Rerank => {
            oneshot::create(app, live, session, ctx, oneshot::Kind::Rerank, body).await
        }
        Endpoint::Moderations => {
            oneshot::create(app, live, session, ctx, oneshot::Kind::Moderations, body).await
        }
        Endpoint::Responses => responses::create(app, live, session, ctx, body).await,
        Endpoint::Completions => completions::create(app, live, session, ctx, body).await,
        Endpoint::ImageGenerations => {
            oneshot::create(app, live, session, ctx, oneshot::Kind::Images, body).await
        }
        Endpoint::Models => info::models(app, live, session, ctx).await,
        Endpoint::Mcp => crate::mcp::serve(app, live, session, ctx, param).await,
        Endpoint::McpRestList => crate::mcp::rest::list(app, live, session, ctx).await,
        Endpoint::McpHealth => crate::mcp::rest::health(app, live, session, ctx).await,
        Endpoint::McpRestCall => crate::mcp::rest::call(app, live, session, ctx, body).await,
        Endpoint::A2aCard => crate::a2a::card(app, live, session, ctx, param.unwrap_or("")).await,
        Endpoint::A2aCall => crate::a2a::call(app, live, session, ctx, param.unwrap_or("")).await,
        Endpoint::Liveliness => info::liveliness(session, ctx).await,
        Endpoint::Readiness => info::readiness(app, live, session, ctx).await,
        Endpoint::Metrics => info::metrics(app, session, ctx).await,
        Endpoint::HotReload => info::hot_reload(live, session, ctx).await,
        Endpoint::AudioTranscriptions => {
            uploads::upload(app, live, session, ctx, uploads::Upload::Transcriptions).await
        }
        Endpoint::AudioTranslations => {
            uploads::upload(app, live, session, ctx, uploads::Upload::Translations).await
        }
        Endpoint::AudioSpeech => speech::create(app, live, session, ctx, body).await,
        Endpoint::FileUpload => {
            uploads::upload(app, live, session, ctx, uploads::Upload::Files).await
        }
        Endpoint::FileList => objects::list(app, live, session, ctx, objects::Kind::Files).await,
        Endpoint::BatchList => objects::list(app, live, session, ctx, objects::Kind::Batches).await,
        Endpoint::FileGet | Endpoint::FileDelete | Endpoint::FileContent => {
            let ask = match route.endpoint {
                Endpoint::FileDelete => objects::Ask::Delete,
                Endpoint::FileContent => objects::Ask::Content,
                _ => objects::Ask::Get,
            };
            let id = param.unwrap_or("");
            objects::one(app, live, session, ctx, objects::Kind::Files, ask, id).await
        }
        Endpoint::BatchGet | Endpoint::BatchCancel => {
            let ask = match route.endpoint {
                Endpoint::BatchCancel => objects::Ask::Cancel,
                _ => objects::Ask::Get,
            };
            let id = param.unwrap_or("");
            objects::one(app, live, session, ctx, objects::Kind::Batches, ask, id).await
        }
        Endpoint::BatchCreate => objects::create_batch(app, live, session, ctx, body).await,
        Endpoint::ImageEdits => {
            uploads::upload(app, live, session, ctx, uploads::Upload::ImageEdits).await
        }
        Endpoint::ResponseGet => responses::get(app, live, session, ctx, param.unwrap_or("")).await,
        Endpoint::ResponseDelete => {
            responses::delete(app, live, session, ctx, param.unwrap_or("")).await
        }
        Endpoint::ResponseInputItems => {
            responses::input_items_of(app, live, session, ctx, param.unwrap_or("")).await
        }
        Endpoint::PassThrough(kind) => {
            let rest = format!("/{}", param.unwrap_or(""));
            passthrough::forward(app, live, session, ctx, kind, &rest, body).await
        }
    }
}

/// Authenticates, then reads the body (so that an unauthenticated client cannot make the
/// gateway buffer a large body).
async fn authed_body(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Bytes, ApiError> {
    authenticate(app, live, session, ctx)?;
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

/// Authenticates the request's key (a `routeiq.auth` step of its span).
fn authenticate(
    app: &App,
    live: &LiveState,
    session: &Session,
    ctx: &mut RequestCtx,
) -> Result<(), ApiError> {
    let started = ctx
        .span
        .as_ref()
        .is_some_and(crate::otel::RouteSpan::sampled)
        .then(std::time::Instant::now);
    let key = auth::authenticate(live, session.req_header()).map(auth::Caller::into_key);
    if let (Some(started), Some(spans), Some(route)) = (started, &app.spans, &ctx.span) {
        let mut attrs = routeiq_service::telemetry::Attributes::with_capacity(64);
        match &key {
            Ok(Some(k)) if !k.team_id.is_empty() => attrs.str("routeiq.team_id", &k.team_id),
            Ok(_) => {}
            Err(e) => attrs.str("error.type", e.kind.type_str()),
        }
        spans.step(route, "routeiq.auth", started, attrs);
    }
    ctx.key = key?;
    Ok(())
}

/// A model endpoint's request, after the checks each of them makes first.
struct Incoming {
    req: request::RawObject,
    /// The model group asked for.
    model: String,
    /// For tag routing, taken out of the body.
    tags: Vec<String>,
}

/// Parses a model endpoint's body and checks that it names a model group open to the key
/// and served on this endpoint (`mode`, see [`check_mode`]); takes its end user and tags.
fn incoming(
    live: &LiveState,
    ctx: &mut RequestCtx,
    body: &[u8],
    mode: Option<&str>,
    op: Operation,
) -> Result<Incoming, ApiError> {
    let mut req = request::RawObject::parse(body)?;
    let model = req.model()?;
    crate::access::check(live, ctx.key.as_deref(), &model)?;
    check_mode(live, &model, mode, op)?;
    end_user_from_body(ctx, &req);
    let tags = take_tags(&mut req)?;
    Ok(Incoming { req, model, tags })
}

/// `model_info.mode` decides which endpoints a deployment serves: a model group whose
/// deployments all declare a mode, none of them `mode` (`None`: a chat endpoint, served by
/// `chat`, `completion` and `responses` deployments), is refused with a 400 naming the
/// endpoints it does serve. Deployments without a mode serve any endpoint.
fn check_mode(
    live: &LiveState,
    model: &str,
    mode: Option<&str>,
    op: Operation,
) -> Result<(), ApiError> {
    let Some(declared) = live.group(model).and_then(|g| g.modes.as_deref()) else {
        return Ok(());
    };
    let serves = |m: &String| match mode {
        Some(wanted) => m == wanted,
        None => matches!(m.as_str(), "chat" | "completion" | "responses"),
    };
    if declared.iter().any(serves) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "model group `{model}` serves `{}` (model_info.mode), not {}",
        declared.join("`, `"),
        op.endpoint()
    ))
    .with_param("model")
    .with_code("wrong_endpoint"))
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

/// The usage of a whole answer that goes to the client as the provider sent it, into
/// `ctx`; a recorded attempt span reads its fields in the same pass.
fn read_answer(ctx: &mut RequestCtx, body: &[u8]) {
    ctx.usage = match &mut ctx.attempt_span {
        Some(a) => a.read_body_and_usage(body),
        None => crate::usage::from_body(body),
    };
}

/// `x-litellm-response-cost`: the request's cost in USD, once its usage is known (not on
/// streams, whose headers go out first).
fn cost_header(ctx: &RequestCtx) -> Option<(&'static str, String)> {
    // A deployment's answer without usage has no known cost (its side charges alone
    // would understate it).
    if ctx.deployment.is_some() && ctx.usage.is_none() {
        return None;
    }
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
    if let Some(c) = &ctx.cache {
        h.extend(c.headers());
    }
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
        if r.sha256.is_some() {
            h.push(("x-routeiq-router-arm", r.arm.name().to_owned()));
        }
    }
    if let Some((confidence, escalated)) = ctx.automix {
        h.push(("x-routeiq-automix-confidence", format!("{confidence:.3}")));
        h.push(("x-routeiq-automix-escalated", escalated.to_string()));
    }
    h
}
