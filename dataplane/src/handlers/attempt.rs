//! Sending a request upstream, deployment after deployment (`routing::failover`), until
//! one answers. Nothing reaches the client before an attempt succeeds, so every failure up
//! to then can be retried elsewhere: a non-streaming response is read whole within the
//! deployment's `timeout`; a stream's first chunk must arrive within its `stream_timeout`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use routeiq_service::telemetry::Attributes;

use crate::context::RequestCtx;
use crate::error::{ApiError, ErrorKind};
use crate::providers::{self, Operation, ProviderResponse};
use crate::routing::failover::Failover;
use crate::routing::learned::{self, Query};
use crate::routing::{Lease, Preparation, RouteRequest};
use crate::state::{App, CompiledDeployment, LiveState};

pub enum Reply {
    /// A whole non-streaming body.
    Full(Bytes),
    /// A stream whose first chunk has arrived.
    Stream {
        resp: ProviderResponse,
        first: Bytes,
    },
}

pub struct Served {
    pub deployment: Arc<CompiledDeployment>,
    pub reply: Reply,
    /// When the serving attempt was sent.
    pub sent: Instant,
}

/// What a request asks of its first attempt.
pub struct Request<'a> {
    pub model: &'a str,
    pub body_len: usize,
    /// The client's completion bound (`Some(0)`: none, as for embeddings).
    pub max_tokens: Option<u64>,
    pub stream: bool,
    pub tags: Vec<String>,
    /// The text learned strategies route on (when one is configured).
    pub query: Option<String>,
    /// The deployment that must serve it, where its group has it (`RouteRequest::pinned`).
    pub pinned: Option<String>,
}

/// Plans the attempts for the request (`routing::failover`) and admits it under the
/// budgets and limits of its key and the key's team, user and organization, with its worst
/// case on the first deployment (`max_tokens`, else that deployment's output limit).
/// Returns the plan and the first deployment.
pub async fn plan<'a>(
    app: &'a App,
    live: &'a LiveState,
    ctx: &mut RequestCtx,
    r: Request<'a>,
) -> Result<(Failover<'a>, Arc<CompiledDeployment>), ApiError> {
    let estimate = crate::limits::WorstCase::of(r.body_len, r.max_tokens, None);
    let routing = ctx
        .span
        .as_ref()
        .is_some_and(crate::otel::RouteSpan::sampled)
        .then(Instant::now);
    let mut plan = Failover::new(
        app,
        live,
        r.model,
        RouteRequest {
            key: ctx.key.clone(),
            stream: r.stream,
            prompt_tokens: estimate.prompt,
            tokens: estimate.tokens(),
            tags: r.tags,
            query: r.query.map(|q| {
                let query = Query::for_user(q, ctx.end_user.clone());
                Arc::new(
                    query.explained(
                        ctx.span
                            .as_ref()
                            .is_some_and(crate::otel::RouteSpan::sampled),
                    ),
                )
            }),
            pinned: r.pinned,
        },
    )?;
    // Only a model group that exists names the request (in metrics and logs): a client's
    // unknown name never becomes a label value.
    ctx.model = Some(r.model.to_owned());
    if let Some(query) = plan.request().query.clone() {
        prepare(app, live, ctx, plan.preparation(), &query).await;
    }
    let first = plan.first()?;
    ctx.deployment = Some(Arc::clone(&first));
    if let (Some(started), Some(spans), Some(span)) = (routing, &app.spans, &ctx.span) {
        spans.step(
            span,
            "routeiq.routing",
            started,
            routing_attrs(live, &plan, &first),
        );
    }
    let worst = crate::limits::WorstCase::of(
        r.body_len,
        r.max_tokens,
        first.deployment.model_info.max_output_tokens,
    );
    let limits = ctx
        .span
        .as_ref()
        .is_some_and(crate::otel::RouteSpan::sampled)
        .then(Instant::now);
    let admitted = ctx.admit(app, live, &first, worst).await;
    if let (Some(started), Some(spans), Some(span)) = (limits, &app.spans, &ctx.span) {
        let mut attrs = Attributes::with_capacity(96);
        attrs.int("routeiq.limits.reserved_tokens", worst.tokens() as i64);
        if let Err(e) = &admitted {
            attrs.str("error.type", e.kind.type_str());
        }
        spans.step(span, "routeiq.limits", started, attrs);
    }
    if let Err(e) = admitted {
        plan.abandon(&first);
        return Err(e);
    }
    Ok((plan, first))
}

/// The `routeiq.routing` step's attributes: the strategy, what a learned router decided
/// (its version, candidate and every candidate's score), and the deployment picked.
fn routing_attrs(live: &LiveState, plan: &Failover<'_>, first: &CompiledDeployment) -> Attributes {
    let mut attrs = Attributes::with_capacity(128);
    let decision = plan.request().query.as_ref().and_then(|q| q.decision());
    match &decision {
        Some(d) => attrs.str("routeiq.route.strategy", &d.strategy),
        None => attrs.str(
            "routeiq.route.strategy",
            live.router_settings().routing_strategy.name(),
        ),
    }
    attrs.str("routeiq.deployment.id", &first.deployment.id.0);
    if let Some(d) = decision {
        attrs.str(
            "routeiq.route.version",
            d.version.as_deref().unwrap_or("fallback"),
        );
        if let Some(c) = &d.candidate {
            attrs.str("routeiq.route.candidate", c);
        }
        if !d.scores.is_empty() {
            attrs.strs(
                "routeiq.route.candidates",
                d.scores.iter().map(|(n, _)| n.as_ref()),
            );
            let scores: Vec<f64> = d.scores.iter().map(|(_, s)| f64::from(*s)).collect();
            attrs.floats("routeiq.route.scores", &scores);
        }
    }
    attrs
}

/// Computes what a router needs of `query` before it picks (`Preparation`): an
/// embedding, or a router model's answer (whose cost the request pays).
pub async fn prepare(
    app: &App,
    live: &LiveState,
    ctx: &mut RequestCtx,
    preparation: Preparation,
    query: &Query,
) {
    match preparation {
        Preparation::None => {}
        Preparation::Embed(encoder) => learned::prepare(&encoder, query).await,
        Preparation::Ask(ask) => {
            let answer = super::internal::complete(
                app,
                live,
                &ask.router_model,
                ask.body(&query.text),
                ask.timeout,
            )
            .await;
            if let Ok(a) = &answer {
                ctx.extra_cost += a.cost;
            }
            ask.answered(query, answer.map(|a| a.text));
        }
    }
}

/// Tries `first`, then what `plan` offers after each failure. `build` makes the upstream
/// body for a deployment; its errors are the client's and end the request at once, but for
/// a 503, which says that deployment cannot take the request (the next one is tried).
/// Records the serving deployment, retries and fallbacks in `ctx`.
pub async fn serve(
    app: &App,
    ctx: &mut RequestCtx,
    plan: &mut Failover<'_>,
    first: Arc<CompiledDeployment>,
    op: Operation,
    max_response_bytes: usize,
    build: impl Fn(&CompiledDeployment) -> Result<Bytes, ApiError>,
) -> Result<Served, ApiError> {
    let tokens = plan.request().tokens;
    let mut d = first;
    loop {
        ctx.deployment = Some(Arc::clone(&d));
        let body = match build(&d) {
            Ok(b) => b,
            // 503: `d` cannot take this request now (a skill it loads is not on `d` yet);
            // another deployment of the group may.
            Err(e) if e.status == 503 => {
                d = plan.skip(&d, e)?;
                continue;
            }
            Err(e) => {
                plan.abandon(&d);
                return Err(e);
            }
        };
        let lease = Lease::start(&d, tokens);
        ctx.operation = Some(op.on(&d));
        let sent = Instant::now();
        let span = app
            .spans
            .as_ref()
            .zip(ctx.span.as_ref())
            .map(|(spans, route)| spans.attempt(route, &d, op.on(&d)));
        let trace = ctx.outgoing_trace(span.as_ref().map(|s| s.traceparent()));
        match send(app, &d, op, body, max_response_bytes, trace).await {
            Ok((reply, remaining)) => {
                ctx.provider_remaining = remaining;
                ctx.attempt_span = span;
                plan.succeeded(&d);
                ctx.lease = Some(lease);
                ctx.routed = plan.request().query.as_ref().and_then(|q| q.decision());
                if let Some(r) = &ctx.routed {
                    tracing::debug!(
                        target: "routeiq.route",
                        strategy = %r.strategy,
                        version = r.version.as_deref().unwrap_or("fallback"),
                        candidate = r.candidate.as_deref().unwrap_or(""),
                        deployment = %d.deployment.id,
                        "routed"
                    );
                }
                ctx.retries = plan.retries;
                ctx.fallbacks = plan.fallbacks;
                return Ok(Served {
                    deployment: d,
                    reply,
                    sent,
                });
            }
            Err(e) => {
                drop(lease);
                if let Some(span) = span {
                    span.failed(&e);
                }
                if let Some(m) = &app.genai_metrics {
                    m.failed_attempt(
                        &d,
                        op.on(&d),
                        sent.elapsed().as_secs_f64(),
                        e.kind.type_str(),
                    );
                }
                tracing::debug!(deployment = %d.deployment.id, error = %e, "attempt failed");
                ctx.retries = plan.retries;
                ctx.fallbacks = plan.fallbacks;
                d = plan.failed(&d, e).await?;
            }
        }
    }
}

/// Sends one attempt: its reply, and what the provider says is left of its rate limits.
pub(super) async fn send(
    app: &App,
    d: &CompiledDeployment,
    op: Operation,
    body: Bytes,
    max_response_bytes: usize,
    trace: Option<crate::otel::Outgoing>,
) -> Result<(Reply, providers::Remaining), ApiError> {
    let provider = providers::get(d.deployment.provider);
    let op = op.on(d);
    if op.is_stream() {
        let mut resp = provider.send(&app.upstream, d, op, body, trace).await?;
        let remaining = resp.remaining;
        return match resp.body.next_chunk().await? {
            Some(first) => Ok((Reply::Stream { resp, first }, remaining)),
            None => Err(ApiError::upstream(
                502,
                ErrorKind::Upstream,
                format!("{} ended the stream before sending anything", d.label),
            )),
        };
    }
    let call = async {
        let mut resp = provider.send(&app.upstream, d, op, body, trace).await?;
        let whole = resp.body.read_all(max_response_bytes).await?;
        Ok((Reply::Full(whole), resp.remaining))
    };
    match tokio::time::timeout(d.timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::timeout(format!(
            "{} did not answer within {:.1}s (litellm_params.timeout / router_settings.timeout)",
            d.label,
            d.timeout.as_secs_f64()
        ))),
    }
}
