//! OpenAI's Responses API (the default of the OpenAI Agents SDK and Codex), through the
//! same keys, access, limits, budgets, routing, retries, fallbacks, usage and cost as chat.
//!
//! - `POST /v1/responses` is native to OpenAI and Azure (and to any OpenAI-format
//!   deployment whose `model_info.mode` is `responses`): the request goes up with its
//!   model renamed and the answer, typed event stream included, comes back unchanged but
//!   for its id, which names the deployment and the owner (`held`): `previous_response_id`
//!   then reaches that deployment, and `GET`/`DELETE /v1/responses/{id}` are sent to it.
//! - Every other deployment gets it through chat (`translate::responses_via_chat`),
//!   streams included. Those responses are kept by the gateway (`conversations`), so that
//!   `previous_response_id` continues them and `GET`/`DELETE /v1/responses/{id}` and
//!   `/input_items` find them.
//! - The response cache answers a request that starts a conversation (no
//!   `previous_response_id` nor `conversation`, not in the background, no MCP tools). A
//!   hit is a response of its own, under the request's id, kept by the gateway as if it
//!   had answered through chat.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::Method;
use pingora::proxy::Session;
use serde_json::{json, Map, Value};

use super::attempt::{self, Reply};
use super::cached::{self, Lookup};
use super::held::{self, Held};
use super::mcp_tools::Shape;
use super::request::RawObject;
use super::response_headers;
use crate::cache::Api;
use crate::context::RequestCtx;
use crate::conversations;
use crate::error::{ApiError, ClientApi};
use crate::providers::Operation;
use crate::respond;
use crate::routing::failover::Failover;
use crate::state::{App, CompiledDeployment, LiveState};
use crate::translate::responses_via_chat::{self, Meta};
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
    let super::Incoming {
        mut req,
        model,
        tags,
    } = super::incoming(
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
    let owner = conversations::owner(ctx.key.as_deref());
    let previous = match req.value("previous_response_id") {
        Some(Value::String(id)) => match Held::parse(live, held::RESPONSE, &id) {
            Some(h) if owner.is_empty() || h.owner == owner => Previous::Native(h),
            Some(_) => Previous::Named(id, None),
            None => {
                let stored = app.conversations.get(&id).await;
                Previous::Named(id, stored.filter(|s| s.readable_by(&owner)))
            }
        },
        _ => Previous::None,
    };
    let named = |f: &str| req.value(f).is_some_and(|v| !v.is_null());
    let ask = cached::Ask {
        api: Api::Responses,
        model: &model,
        stream,
        include_usage: true,
        // A turn of a stored conversation depends on it (which may since have been
        // deleted), a background response is fetched later, and MCP tools are offered
        // afresh to each request.
        bypass: named("previous_response_id")
            || named("conversation")
            || req.value("background") == Some(Value::Bool(true))
            || super::mcp_tools::named(&req),
    };
    let cache = match cached::lookup(app, live, session, ctx, ask, &mut req).await? {
        Lookup::Hit(hit) => return answer_cached(app, live, session, ctx, &req, &model, hit).await,
        Lookup::Miss(plan) => plan,
    };
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
            pinned: match &previous {
                Previous::Native(h) => Some(h.deployment.clone()),
                _ => None,
            },
        },
    )
    .await?;
    if super::mcp_tools::named(&req)
        && matches!(req.value("tools"), Some(Value::Array(t)) if t.iter().any(crate::mcp::proxied))
    {
        let run = with_mcp_tools(
            app,
            live,
            session,
            ctx,
            (plan, first),
            &req,
            &previous,
            owner,
        );
        return Box::pin(run).await;
    }
    // Translated once, by the first deployment that needs it.
    let via_chat = OnceLock::new();
    let served = attempt::serve(app, ctx, &mut plan, first, op, MAX_RESPONSE_BYTES, |d| {
        if d.responses_api {
            native_body(&req, d, &previous)
        } else {
            let chat = via_chat.get_or_init(|| chat_request(&req, &previous));
            let t = chat.as_ref().map_err(Clone::clone)?;
            super::chat::from_openai(&t.chat, d, false)
        }
    })
    .await?;
    let (d, sent) = (served.deployment, served.sent);
    let mut headers = response_headers(ctx, &d);
    if d.responses_api {
        let held = Held::of(live, &d, ctx);
        let upstream = Upstream {
            reply: served.reply,
            sent,
            deployment: &d,
            model: &model,
        };
        return native_reply(app, session, ctx, upstream, headers, held, cache.as_ref()).await;
    }
    let Some(Ok(Translated { request, .. })) = via_chat.into_inner() else {
        return Err(ApiError::internal("a translated request was not kept"));
    };
    let meta = meta(ctx, &model);
    let keep = Keep::of(app, &request, &meta, owner, &previous);
    match served.reply {
        Reply::Full(out) => {
            ctx.upstream_latency = Some(sent.elapsed());
            let (chat, usage) = super::chat::openai_answer(d.format, &out, &model)?;
            ctx.usage = usage;
            let response = responses_via_chat::response(&request, &meta, &chat);
            if let Some(a) = &mut ctx.attempt_span {
                a.read_value(&response);
            }
            if let Some(keep) = keep {
                let json = keep.encode(&response);
                keep.conversations.put(&keep.id, json).await;
            }
            headers.extend(super::cost_header(ctx));
            let out = crate::json::bytes(&response);
            cached::keep_full(app, ctx, cache.as_ref(), &out);
            if let Err(e) = respond::json(session, ctx, &headers, out).await {
                tracing::debug!(error = %e, "client went away");
            }
            Ok(())
        }
        Reply::Stream { mut resp, first } => {
            // Kept before the client hears the response is complete, so that a
            // follow-up can name it at once: here at once, in Redis a moment later.
            let on_done = keep.map(Keep::on_done);
            let conv = stream::responses_through_chat(
                d.format,
                &model,
                d.prices,
                responses_via_chat::ChunksToResponses::new(request, meta, on_done),
            );
            let mut recording = cached::recorder(cache.as_ref(), false);
            super::streaming::pump(
                session,
                ctx,
                super::streaming::Stream::of(&mut resp, first, sent, &d, ClientApi::OpenAi, &model),
                conv,
                &headers,
                recording.as_mut(),
            )
            .await?;
            cached::keep_stream(app, ctx, cache.as_ref(), recording);
            Ok(())
        }
    }
}

/// Sends a cached answer as a response of its own, once the key's limits admit it: under
/// this request's id, with this request's own echoed fields, and kept by the gateway
/// (unless the request says `store: false`), so that `previous_response_id` continues it
/// and `GET /v1/responses/{id}` finds it, whichever deployment made the answer.
async fn answer_cached(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    req: &RawObject,
    model: &str,
    mut hit: cached::Hit,
) -> Result<(), ApiError> {
    cached::admit(app, live, ctx, model, &hit).await?;
    let owner = conversations::owner(ctx.key.as_deref());
    let meta = meta(ctx, model);
    hit.reply = hit.reply.reissued(&meta.id, &echo(req));
    let request = req.to_map()?;
    if let Some(keep) = Keep::of(app, &request, &meta, owner, &Previous::None) {
        match hit.reply.response() {
            Some(response) => keep.on_done()(&response),
            None => tracing::warn!("a cached response could not be read to keep"),
        }
    }
    cached::send(session, ctx, model, hit).await;
    Ok(())
}

/// The fields a response echoes that are not in its cache key, as this request sets them:
/// a hit shows these, not the first requester's.
fn echo(req: &RawObject) -> Map<String, Value> {
    crate::cache::replay::ECHOED
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), req.value(k)?)))
        .collect()
}

/// A request with the gateway's MCP tools (`handlers::mcp_tools`): served through chat on
/// every deployment, since the gateway runs the tools (a deployment with the Responses
/// API would look for a server at `litellm_proxy`).
#[allow(clippy::too_many_arguments)]
async fn with_mcp_tools(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    (plan, first): (Failover<'_>, Arc<CompiledDeployment>),
    req: &RawObject,
    previous: &Previous,
    owner: String,
) -> Result<(), ApiError> {
    let prepared = async {
        let Translated { request, chat } = chat_request(req, previous)?;
        let mut chat = RawObject::parse(&Value::Object(chat).to_string().into_bytes())?;
        let offer =
            super::mcp_tools::offer(app, live, ctx, session.req_header(), &mut chat).await?;
        Ok::<_, ApiError>((request, chat, offer))
    };
    let (request, chat, offer) = match prepared.await {
        Ok((request, chat, Some(offer))) => (request, chat, offer),
        Ok((_, _, None)) => return Err(ApiError::internal("the MCP tools were not found again")),
        Err(e) => {
            plan.abandon(&first);
            return Err(e);
        }
    };
    let model = req.model()?;
    let stream = req.flag("stream")?;
    let meta = meta(ctx, &model);
    let keep = Keep::of(app, &request, &meta, owner, previous);
    let shape = if stream {
        let on_done = keep.map(Keep::on_done);
        Shape::Stream(Box::new(responses_via_chat::ChunksToResponses::new(
            request, meta, on_done,
        )))
    } else {
        Shape::Full(Box::new(move |chat: Value| {
            let response = responses_via_chat::response(&request, &meta, &chat);
            if let Some(keep) = keep {
                keep.on_done()(&response);
            }
            response
        }))
    };
    let turn = super::mcp_tools::Turn {
        stream,
        client_wants_usage: true,
        model,
        drop_params: false,
        shape,
    };
    super::mcp_tools::run(app, live, session, ctx, plan, first, chat, offer, turn).await
}

/// The response's id, time and model group.
fn meta(ctx: &RequestCtx, model: &str) -> Meta {
    Meta {
        id: format!("resp_{}", ctx.request_id),
        created_at: crate::clock::now_secs(),
        model: model.to_owned(),
    }
}

/// What `previous_response_id` names.
enum Previous {
    None,
    /// The id, and the response when the gateway answered it itself.
    Named(String, Option<conversations::Stored>),
    /// A response a deployment with the API holds.
    Native(Held),
}

impl Previous {
    /// The conversation before this turn, as chat messages.
    fn messages(&self) -> Vec<Value> {
        match self {
            Self::Named(_, Some(s)) => s.messages.clone(),
            _ => Vec::new(),
        }
    }
}

/// A translated response to keep, once it is complete.
struct Keep {
    conversations: Arc<conversations::Conversations>,
    id: String,
    owner: String,
    history: Vec<Value>,
    input: Value,
}

impl Keep {
    /// What to keep of a response answered through chat, unless the request says
    /// `store: false`.
    fn of(
        app: &App,
        request: &Map<String, Value>,
        meta: &Meta,
        owner: String,
        previous: &Previous,
    ) -> Option<Self> {
        (request.get("store") != Some(&Value::Bool(false))).then(|| Keep {
            conversations: Arc::clone(&app.conversations),
            id: meta.id.clone(),
            owner,
            history: previous.messages(),
            input: request.get("input").cloned().unwrap_or(Value::Null),
        })
    }

    /// Keeps the response before the client hears that it is complete, so that a
    /// follow-up can name it at once: here at once, in Redis a moment later.
    fn on_done(self) -> responses_via_chat::OnDone {
        Box::new(move |response: &Value| {
            let json = self.encode(response);
            self.conversations.put_local(&self.id, Arc::clone(&json));
            tokio::spawn(async move {
                self.conversations.put_shared(&self.id, &json).await;
            });
        })
    }

    /// The response's JSON text as stored: with the conversation so far and its input.
    fn encode(&self, response: &Value) -> Arc<str> {
        let mut messages = Vec::with_capacity(self.history.len() + 2);
        messages.extend(self.history.iter().cloned());
        messages.extend(responses_via_chat::input_messages(&self.input).unwrap_or_default());
        messages.extend(responses_via_chat::output_messages(response));
        conversations::ToStore {
            owner: &self.owner,
            response,
            messages: &messages,
            input_items: &input_items(&self.input, &self.id),
        }
        .encode()
    }
}

/// This turn's input as items, each with an id (`/input_items`).
fn input_items(input: &Value, response_id: &str) -> Vec<Value> {
    let items = match input {
        Value::String(s) => vec![json!({"type": "message", "role": "user",
                                       "content": [{"type": "input_text", "text": s}]})],
        Value::Array(items) => items.clone(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            if let Value::Object(m) = &mut item {
                m.entry("id")
                    .or_insert_with(|| format!("item_{i}_{response_id}").into());
                m.entry("type").or_insert_with(|| "message".into());
            }
            item
        })
        .collect()
}

/// A Responses request and the chat request it becomes.
struct Translated {
    request: Map<String, Value>,
    chat: Map<String, Value>,
}

/// The chat request (and the Responses request it came from) for a deployment without
/// the Responses API: a 404 when `previous_response_id` names a response the gateway
/// does not hold.
fn chat_request(req: &RawObject, previous: &Previous) -> Result<Translated, ApiError> {
    let missing = match previous {
        Previous::Named(id, None) => Some(format!(
            "Previous response with id '{id}' not found (responses answered through chat are \
             kept for {} h)",
            conversations::TTL.as_secs() / 3600
        )),
        Previous::Native(h) => Some(format!(
            "the previous response is held by deployment `{}`, which cannot serve this \
             request; a conversation continues on the deployment that holds it",
            h.deployment
        )),
        _ => None,
    };
    if let Some(message) = missing {
        return Err(ApiError::not_found(message)
            .with_param("previous_response_id")
            .with_code("previous_response_not_found"));
    }
    let request = req.to_map()?;
    let chat = responses_via_chat::request(&request, &previous.messages())?;
    Ok(Translated { request, chat })
}

/// The client's request with the model renamed. A conversation the gateway holds goes
/// up as input items, since the provider never saw it.
fn native_body(
    req: &RawObject,
    d: &CompiledDeployment,
    previous: &Previous,
) -> Result<Bytes, ApiError> {
    let stored = match previous {
        Previous::Named(_, Some(stored)) => stored,
        Previous::Native(h) => {
            let mut req = req.clone();
            req.set("previous_response_id", &h.upstream)?;
            return req.with("model", &d.deployment.upstream_model);
        }
        // An id the gateway did not give is not passed on: it could name another
        // tenant's response at the provider.
        Previous::Named(id, None) => {
            return Err(
                ApiError::not_found(format!("Previous response with id '{id}' not found."))
                    .with_param("previous_response_id")
                    .with_code("previous_response_not_found"),
            )
        }
        Previous::None => return req.with("model", &d.deployment.upstream_model),
    };
    let mut req = req.clone();
    req.remove("previous_response_id");
    let mut input = responses_via_chat::history_items(&stored.messages);
    match req.value("input") {
        Some(Value::String(s)) => input.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => input.extend(items),
        _ => {}
    }
    req.set("input", &input)?;
    req.with("model", &d.deployment.upstream_model)
}

/// A deployment's answer: what came back, when the request was sent, who sent it and
/// for which model group.
struct Upstream<'a> {
    reply: Reply,
    sent: std::time::Instant,
    deployment: &'a CompiledDeployment,
    model: &'a str,
}

/// A native deployment's answer, passed on with the client's id for the response
/// (`held`: its deployment and owner); its usage read on the side. `cache`: the plan
/// to keep it under.
async fn native_reply(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
    upstream: Upstream<'_>,
    mut headers: Vec<(&'static str, String)>,
    held: Held,
    cache: Option<&crate::cache::Plan>,
) -> Result<(), ApiError> {
    let Upstream {
        reply,
        sent,
        deployment: d,
        model,
    } = upstream;
    match reply {
        Reply::Full(out) => {
            ctx.upstream_latency = Some(sent.elapsed());
            ctx.usage = usage::from_body(&out);
            let out = with_client_id(out, &held);
            if let Some(a) = &mut ctx.attempt_span {
                a.read_body(&out);
            }
            headers.extend(super::cost_header(ctx));
            cached::keep_full(app, ctx, cache, &out);
            if let Err(e) = respond::json(session, ctx, &headers, out).await {
                tracing::debug!(error = %e, "client went away");
            }
            Ok(())
        }
        Reply::Stream { mut resp, first } => {
            let mut recording = cached::recorder(cache, false);
            super::streaming::pump(
                session,
                ctx,
                super::streaming::Stream::of(&mut resp, first, sent, d, ClientApi::OpenAi, model),
                stream::responses_passthrough(Box::new(move |id: &str| {
                    held.sibling(id).id(held::RESPONSE)
                })),
                &headers,
                recording.as_mut(),
            )
            .await?;
            cached::keep_stream(app, ctx, cache, recording);
            Ok(())
        }
    }
}

/// A response the gateway holds, if the caller may read it; else a 404.
async fn held(app: &App, ctx: &RequestCtx, id: &str) -> Result<conversations::Stored, ApiError> {
    let owner = conversations::owner(ctx.key.as_deref());
    app.conversations
        .get(id)
        .await
        .filter(|s| s.readable_by(&owner))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Response with id '{id}' not found. The gateway holds the responses it \
                 answered through chat; responses of OpenAI and Azure deployments are read \
                 from the provider"
            ))
            .with_code("response_not_found")
        })
}

/// `GET /v1/responses/{id}`.
pub async fn get(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    id: &str,
) -> Result<(), ApiError> {
    if let Some(h) = Held::parse(live, held::RESPONSE, id) {
        return at_provider(app, live, session, ctx, Method::GET, h, "").await;
    }
    let stored = held(app, ctx, id).await?;
    let out = crate::json::bytes(&stored.response);
    if let Err(e) = respond::json(session, ctx, &[], out).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    id: &str,
) -> Result<(), ApiError> {
    if let Some(h) = Held::parse(live, held::RESPONSE, id) {
        return at_provider(app, live, session, ctx, Method::DELETE, h, "").await;
    }
    held(app, ctx, id).await?;
    app.conversations.delete(id).await;
    let out = json!({"id": id, "object": "response", "deleted": true});
    if let Err(e) = respond::json(session, ctx, &[], crate::json::bytes(&out)).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}

/// `GET /v1/responses/{id}/input_items`: the turn's input, in order (one page).
pub async fn input_items_of(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    id: &str,
) -> Result<(), ApiError> {
    if let Some(h) = Held::parse(live, held::RESPONSE, id) {
        let query = session
            .req_header()
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let rest = format!("/input_items{query}");
        return at_provider(app, live, session, ctx, Method::GET, h, &rest).await;
    }
    let stored = held(app, ctx, id).await?;
    let items = &stored.input_items;
    let out = json!({
        "object": "list",
        "data": items,
        "first_id": items.first().and_then(|i| i.get("id")),
        "last_id": items.last().and_then(|i| i.get("id")),
        "has_more": false,
    });
    if let Err(e) = respond::json(session, ctx, &[], crate::json::bytes(&out)).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}

/// A native answer with its top-level `id` the client's (`held`: its deployment and
/// owner); unchanged if it has none.
fn with_client_id(out: Bytes, held: &Held) -> Bytes {
    let Ok(obj) = RawObject::parse(&out) else {
        return out;
    };
    match obj.value("id") {
        Some(Value::String(id)) => obj
            .with("id", &held.sibling(&id).id(held::RESPONSE))
            .unwrap_or(out),
        _ => out,
    }
}

/// `GET`/`DELETE /v1/responses/{id}{rest}` for a response a deployment with the API
/// holds: sent to that deployment with its own id, the answer passed back with the
/// client's id.
async fn at_provider(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    method: Method,
    h: Held,
    rest: &str,
) -> Result<(), ApiError> {
    let client_id = &h.id(held::RESPONSE);
    let d = held::holder(live, ctx, &h, client_id)?;
    if !held::supported(&d) {
        return Err(held::not_found(client_id));
    }
    let path = held::path(&d, &format!("/responses/{}{rest}", h.upstream));
    let mut ex = held::call(app, &d, method, path, None, client_id).await?;
    let body = ex.read_all(MAX_RESPONSE_BYTES).await?;
    let body = if rest.is_empty() {
        // The response itself (or the deletion's answer) names the client's id.
        match RawObject::parse(&body) {
            Ok(obj) if obj.raw("id").is_some() => obj.with("id", &client_id).unwrap_or(body),
            _ => body,
        }
    } else {
        body
    };
    if let Err(e) = respond::json(session, ctx, &[], body).await {
        tracing::debug!(error = %e, "client went away");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_answers_get_the_clients_id() {
        let h = Held {
            deployment: "d".into(),
            owner: "team:t".into(),
            upstream: String::new(),
            creator: String::new(),
            signer: held::Signer::new(None),
        };
        let out = with_client_id(Bytes::from_static(br#"{"id":"resp_abc","output":[]}"#), &h);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], h.sibling("resp_abc").id(held::RESPONSE));
        assert_eq!(v["output"], json!([]));
    }
}
