//! AutoMix's cascade (`llmrouter-automix`) once the small model has answered a
//! non-streaming request: the small model verifies its own draft (`verify_samples`
//! times), and below `verify_threshold` the request is sent again to the large model.
//! Nothing has reached the client yet. The draft and the verifications are paid for by
//! the request (`RequestCtx::extra_cost`).

use bytes::Bytes;

use super::attempt::{self, Reply, Served};
use super::internal;
use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::providers::Operation;
use crate::routing::failover::Failover;
use crate::routing::learned::automix::Cascade;
use crate::routing::learned::is_candidate;
use crate::state::{App, CompiledDeployment, LiveState};

#[allow(clippy::too_many_arguments)]
pub async fn run(
    app: &App,
    live: &LiveState,
    ctx: &mut RequestCtx,
    plan: &mut Failover<'_>,
    cascade: &Cascade,
    served: Served,
    question: &str,
    op: Operation,
    max_response_bytes: usize,
    build: impl Fn(&CompiledDeployment) -> Result<Bytes, ApiError>,
) -> Result<Served, ApiError> {
    let small = &served.deployment;
    let Reply::Full(draft) = &served.reply else {
        return Ok(served);
    };
    if !is_candidate(small, &cascade.small) {
        return Ok(served);
    }
    let format = small.format;
    let answer = internal::reply_text(format, draft).unwrap_or_default();
    let verdicts = futures_util::future::join_all((0..cascade.samples).map(|_| {
        internal::complete_on(
            app,
            small,
            cascade.verify_body(question, &answer),
            cascade.timeout,
        )
    }))
    .await;
    let mut yes = 0u32;
    for v in verdicts {
        match v {
            Ok(a) => {
                ctx.extra_cost += a.cost;
                yes += u32::from(Cascade::says_yes(&a.text));
            }
            Err(e) => tracing::warn!(error = %e, "automix verification failed; counted as a no"),
        }
    }
    let confidence = f64::from(yes) / f64::from(cascade.samples.max(1));
    let large = live.group(&small.deployment.model_name).and_then(|g| {
        g.deployments
            .iter()
            .find(|d| is_candidate(d, &cascade.large))
            .cloned()
    });
    let Some(large) = large.filter(|_| confidence < cascade.threshold) else {
        ctx.automix = Some((confidence, false));
        return Ok(served);
    };
    // The draft is discarded but was paid for; its deployment served it.
    let draft_usage = crate::usage::from_body(draft);
    ctx.extra_cost += draft_usage.as_ref().map_or(0.0, |u| small.prices.of(u));
    if let Some(lease) = ctx.lease.take() {
        lease.settle(
            draft_usage.as_ref().map(crate::usage::Usage::total),
            Some(served.sent.elapsed()),
            None,
        );
    }
    ctx.automix = Some((confidence, true));
    let escalated = attempt::serve(app, ctx, plan, large, op, max_response_bytes, build).await?;
    if let Some(r) = &mut ctx.routed {
        r.candidate = Some(cascade.large.clone());
    }
    Ok(escalated)
}
