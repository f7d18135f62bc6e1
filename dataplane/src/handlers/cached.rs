//! The response cache on the request path: looking a request up (by exact key, then by
//! similarity), answering a hit in the delivery the client asked for (a stored stream's
//! own events, or the stored response as a stream, or one response from either) with the
//! key's rate limits and budgets checked as for any request and a cost of 0 (but for an
//! embedding deployment's embedding), and keeping a miss's answer.

use bytes::Bytes;
use pingora::proxy::Session;

use super::request::RawObject;
use crate::cache::{replay, semantic, Answer, Api, Entry, Outcome, Plan, Recording, EMBED_WAIT};
use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::respond;
use crate::state::{App, LiveState, SemanticEmbedder};

/// How a request asks the cache.
pub struct Ask<'a> {
    pub api: Api,
    /// The model group.
    pub model: &'a str,
    pub stream: bool,
    /// An OpenAI chat client's `stream_options.include_usage`.
    pub include_usage: bool,
    /// The request must not be answered from the cache nor stored (its answer depends on
    /// more than its body, such as MCP tools a key is offered afresh each time).
    pub bypass: bool,
}

/// What the response cache did with a request.
pub enum Lookup {
    /// A stored answer to send with [`answer`].
    Hit(Hit),
    /// Not answered from the cache: the plan to store the answer under, if any.
    Miss(Option<Plan>),
}

/// An answer the cache has for a request.
pub struct Hit {
    /// The plan of the request the answer was stored for.
    pub plan: Plan,
    pub entry: Entry,
    /// A semantic hit: how similar that request was.
    pub similarity: Option<f32>,
    /// The answer in the delivery the client asked for.
    pub reply: Reply,
}

/// Looks the request up in the response cache (taking out its `cache` controls).
pub async fn lookup(
    app: &App,
    live: &LiveState,
    session: &Session,
    ctx: &mut RequestCtx,
    ask: Ask<'_>,
    req: &mut RawObject,
) -> Result<Lookup, ApiError> {
    let cache_control = session
        .req_header()
        .headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok());
    let plan = Plan::of(
        live.cache.as_deref(),
        ctx.key.as_deref(),
        ask.api,
        ask.model,
        req,
        cache_control,
    )?;
    let Some(mut plan) = plan.filter(|_| !ask.bypass) else {
        if live.cache.is_some() {
            ctx.cache = Some(Outcome::Bypass);
        }
        return Ok(Lookup::Miss(None));
    };
    plan.epoch = app.cache.epoch();
    let started = ctx
        .span
        .as_ref()
        .is_some_and(crate::otel::RouteSpan::sampled)
        .then(std::time::Instant::now);
    let found = look(app, live, ctx, &ask, plan).await;
    if let (Some(started), Some(spans), Some(span)) = (started, &app.spans, &ctx.span) {
        let mut attrs = routeiq_service::telemetry::Attributes::with_capacity(96);
        attrs.str(
            "routeiq.cache.result",
            match &found {
                Lookup::Hit(_) => "hit",
                Lookup::Miss(_) if matches!(ctx.cache, Some(Outcome::Bypass)) => "bypass",
                Lookup::Miss(_) => "miss",
            },
        );
        if let Lookup::Hit(Hit {
            similarity: Some(s),
            ..
        }) = &found
        {
            attrs.float("routeiq.cache.similarity", f64::from(*s));
        }
        spans.step(span, "routeiq.cache.lookup", started, attrs);
    }
    Ok(found)
}

/// Looks `plan` up: exactly, then semantically.
async fn look(
    app: &App,
    live: &LiveState,
    ctx: &mut RequestCtx,
    ask: &Ask<'_>,
    mut plan: Plan,
) -> Lookup {
    if !plan.read {
        // Not answered from the cache, but its answer is indexed under its embedding.
        similar(app, live, ctx, &mut plan).await;
        ctx.cache = Some(Outcome::Bypass);
        return Lookup::Miss(Some(plan));
    }
    let found = match app.cache.get(&plan).await {
        Some(entry) => Some((None, entry, None)),
        None => similar(app, live, ctx, &mut plan)
            .await
            .map(|(matched, entry, similarity)| (Some(matched), entry, Some(similarity))),
    };
    if let Some((matched, entry, similarity)) = found {
        if let Some(reply) = Reply::of(&entry, ask.api, ask.stream, ask.include_usage) {
            return Lookup::Hit(Hit {
                plan: matched.unwrap_or(plan),
                entry,
                similarity,
                reply,
            });
        }
    }
    app.cache
        .metrics
        .misses
        .with_label_values(&[ask.model])
        .inc();
    ctx.cache = Some(Outcome::Miss {
        key: plan.hex.clone(),
    });
    Lookup::Miss(Some(plan))
}

/// The semantic cache's answer to a request the exact cache has none for (see
/// [`crate::cache::Cache::similar`]); an embedding deployment embeds its message first.
async fn similar(
    app: &App,
    live: &LiveState,
    ctx: &mut RequestCtx,
    plan: &mut Plan,
) -> Option<(Plan, Entry, f32)> {
    let source = live.semantic.as_ref()?;
    if let SemanticEmbedder::Deployment { group, id } = source {
        // Embedded only when the vector can be used: to search entries there are, or to
        // index the answer to be kept.
        let useful = plan.semantic.as_ref().is_some_and(|q| {
            plan.store.is_some() || (plan.read && app.cache.indexed(id, &q.partition))
        });
        if !useful {
            return None;
        }
        embed_on(app, live, ctx, group, plan).await;
    }
    app.cache.similar(plan, source.embedder()).await
}

/// Embeds the message the semantic cache matches the request on with the embedding
/// deployments of model group `group`, at the request's cost. On a failure the request
/// uses the exact cache only.
async fn embed_on(app: &App, live: &LiveState, ctx: &mut RequestCtx, group: &str, plan: &mut Plan) {
    let Some(query) = plan.semantic.as_mut() else {
        return;
    };
    let embedded = super::internal::embed(app, live, group, &query.text, EMBED_WAIT).await;
    match embedded.map(|e| (semantic::unit(&e.vector), e.cost)) {
        Ok((Some(vector), cost)) => {
            ctx.extra_cost += cost;
            ctx.cache_cost += cost;
            plan.embedding_cost += cost;
            query.vector = Some(vector);
        }
        Ok((None, cost)) => {
            ctx.extra_cost += cost;
            ctx.cache_cost += cost;
            plan.embedding_cost += cost;
            app.cache
                .embedding_failed(group, "the embedding is empty or not finite");
            plan.semantic = None;
        }
        Err(e) => {
            app.cache.embedding_failed(group, &e);
            plan.semantic = None;
        }
    }
}

/// What a hit sends.
pub enum Reply {
    Full(Bytes),
    Stream(Vec<Bytes>),
}

impl Reply {
    /// `entry` in the delivery asked for; `None` when a stored answer cannot be read in it
    /// (the request is then served as a miss).
    fn of(entry: &Entry, api: Api, stream: bool, include_usage: bool) -> Option<Self> {
        let drop_usage = api == Api::Chat && !include_usage;
        match (&entry.answer, stream) {
            (Answer::Full(body), false) => Some(Self::Full(body.clone())),
            (Answer::Stream(events), false) => {
                replay::full_from_stream(api, events).map(Self::Full)
            }
            (Answer::Stream(events), true) => Some(Self::Stream(
                events
                    .iter()
                    .filter(|e| !(drop_usage && replay::is_usage_chunk(e)))
                    .map(replay::without_cost)
                    .collect(),
            )),
            (Answer::Full(body), true) => {
                replay::stream_from_full(api, body, include_usage).map(Self::Stream)
            }
        }
    }

    /// A Responses answer re-issued as a response of this request's own: under response
    /// id `id` (in place of the stored one wherever it appears, item ids included), made
    /// now, with `echo`'s fields (see `replay::reissue`) the request's, not the first
    /// requester's.
    pub fn reissued(self, id: &str, echo: &serde_json::Map<String, serde_json::Value>) -> Self {
        match self {
            Self::Full(body) => Self::Full(replay::reissue_full(body, id, echo)),
            Self::Stream(events) => Self::Stream(replay::reissue_stream(events, id, echo)),
        }
    }

    /// The response a Responses answer ends with.
    pub fn response(&self) -> Option<serde_json::Value> {
        let body = match self {
            Self::Full(body) => body.clone(),
            Self::Stream(events) => replay::full_from_stream(Api::Responses, events)?,
        };
        serde_json::from_slice(&body).ok()
    }
}

/// Sends a hit for model group `model`, once its key's limits and budgets admit it.
pub async fn answer(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    model: &str,
    hit: Hit,
) -> Result<(), ApiError> {
    admit(app, live, ctx, model, &hit).await?;
    send(session, ctx, model, hit).await;
    Ok(())
}

/// Admits a hit for model group `model`: rate limits count the request, budgets must not
/// be exhausted, nothing is charged. Records it as a hit.
pub async fn admit(
    app: &App,
    live: &LiveState,
    ctx: &mut RequestCtx,
    model: &str,
    hit: &Hit,
) -> Result<(), ApiError> {
    ctx.model = Some(model.to_owned());
    ctx.hold(app, live, 0.0, 0).await?;
    crate::cache::hit(ctx, &hit.plan, &hit.entry, hit.similarity);
    let m = &app.cache.metrics;
    m.hits.with_label_values(&[model]).inc();
    if let Some(u) = hit.entry.usage {
        m.cached_tokens
            .with_label_values(&[model])
            .inc_by(u.total());
    }
    Ok(())
}

/// Sends an admitted hit.
pub async fn send(session: &mut Session, ctx: &mut RequestCtx, model: &str, hit: Hit) {
    let reply = hit.reply;
    let mut headers = vec![
        ("x-litellm-call-id", ctx.request_id.clone()),
        ("x-litellm-model-group", model.to_owned()),
        (
            "x-litellm-response-cost",
            ctx.cost().unwrap_or(0.0).to_string(),
        ),
    ];
    headers.extend(ctx.rate_headers.iter().cloned());
    if let Some(c) = &ctx.cache {
        headers.extend(c.headers());
    }
    let sent = match reply {
        Reply::Full(body) => respond::json(session, ctx, &headers, body).await,
        Reply::Stream(mut events) => {
            async {
                respond::stream_start(session, ctx, &headers).await?;
                respond::stream_write(session, &mut events).await?;
                respond::stream_end(session).await
            }
            .await
        }
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "client went away");
    }
}

/// A recording of the stream about to be served, when the cache keeps its answer
/// (`drop_usage`: see [`Recording`]).
pub fn recorder(plan: Option<&Plan>, drop_usage: bool) -> Option<Recording> {
    plan.filter(|p| p.store.is_some())
        .map(|_| Recording::new(drop_usage))
}

/// Keeps a served stream's recording, once the stream is over, if it is a complete and
/// successful answer.
pub fn keep_stream(app: &App, ctx: &RequestCtx, plan: Option<&Plan>, recording: Option<Recording>) {
    let (Some(plan), Some(r)) = (plan, recording) else {
        return;
    };
    if ctx.error_type.is_none() {
        if let Some(answer) = r.keepable(plan) {
            app.cache
                .put(plan, answer, ctx.usage, answer_cost(ctx, plan));
        }
    }
}

/// Keeps a served response body.
pub fn keep_full(app: &App, ctx: &RequestCtx, plan: Option<&Plan>, body: &Bytes) {
    if let Some(plan) = plan {
        let answer = Answer::Full(body.clone());
        app.cache
            .put(plan, answer, ctx.usage, answer_cost(ctx, plan));
    }
}

/// What the answer cost (what a hit on it saves): the request's cost without its
/// embedding.
fn answer_cost(ctx: &RequestCtx, plan: &Plan) -> f64 {
    (ctx.cost().unwrap_or(0.0) - plan.embedding_cost).max(0.0)
}
