//! Usage events: one `routeiq.v1.UsageEvent` per routed request, published to
//! `routeiq.usage.<dataplane-id>` with `Nats-Msg-Id` = the request id and, when the request
//! is in a trace, `traceparent` = its span (else its caller's), so that its ingestion joins
//! the trace.
//!
//! The request path only does a non-blocking send into a bounded channel (the local buffer).
//! A publisher task drains it in batches and waits for JetStream's acks; a batch that is not
//! acknowledged (NATS down) is retried until it is, and meanwhile the channel fills. When
//! the buffer is full, new events are dropped and counted
//! (`routeiq_usage_events_dropped_total`). Re-sent events are deduplicated by JetStream
//! (message id) and by the control plane (request id).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use prost::Message;
use routeiq_proto::wire::pb;
use routeiq_proto::{subjects, UsageEvent};
use tokio::sync::mpsc;

use crate::context::RequestCtx;
use crate::otel::TraceParent;
use crate::routing::learned::experiment::ShadowCell;
use crate::routing::learned::Decision;
use crate::state::App;
use crate::telemetry::Metrics;

/// A usage event and the trace context of its request (sent as the message's
/// `traceparent` header).
pub struct Queued {
    pub event: UsageEvent,
    pub trace: Option<TraceParent>,
    /// The shadow version's decision, still being made when the request ended: its
    /// fields are filled when the event is published.
    pub shadow: Option<Arc<ShadowCell>>,
}

/// How long a batch waits for its requests' shadow decisions (the shadow worker is
/// behind); past it, an event goes without them.
const SHADOW_WAIT: Duration = Duration::from_millis(50);

/// The request path's handle: cheap to call, never waits.
pub struct Reporter {
    tx: mpsc::Sender<Queued>,
    dataplane_id: Arc<str>,
    /// Events queued and not yet acknowledged by JetStream (what [`Self::drain`] waits for).
    unsent: AtomicU64,
}

/// A data-plane id usable as one NATS subject token.
pub fn subject_token(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Reporter {
    /// `n` queued events were acknowledged by JetStream.
    fn acknowledged(&self, n: u64) {
        self.unsent.fetch_sub(n, Ordering::AcqRel);
    }

    /// Waits, blocking the thread, until every queued event is acknowledged or `timeout`
    /// has passed (at shutdown, once the server no longer serves); how many are left.
    pub fn drain(&self, timeout: Duration) -> u64 {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = self.unsent.load(Ordering::Acquire);
            if left == 0 || std::time::Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The reporter and the receiving end for [`publish`].
    pub fn new(dataplane_id: &str, buffer: usize) -> (Self, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        (
            Self {
                tx,
                dataplane_id: Arc::from(dataplane_id),
                unsent: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Queues the usage of a finished request that reached a deployment or an A2A agent
    /// (provider `a2a`, the agent's id as the deployment), that the response cache
    /// answered or charged for its embedding before the request was refused (provider
    /// `cache`), or that was charged without any of these (priced MCP tool calls: provider
    /// `mcp`, no deployment).
    pub fn record(&self, ctx: &RequestCtx, trace: Option<TraceParent>, metrics: &Metrics) {
        let (deployment_id, provider) = match (&ctx.deployment, &ctx.served_by) {
            (Some(d), _) => (
                d.deployment.id.0.clone(),
                d.deployment.provider.as_str().to_owned(),
            ),
            (None, Some((provider, id))) => (id.clone(), (*provider).to_owned()),
            // A request that consulted the cache and was charged without reaching a
            // deployment paid for the semantic cache's embedding.
            (None, None) if ctx.cache_hit() || ctx.cache_cost > 0.0 => {
                (String::new(), "cache".to_owned())
            }
            (None, None) if ctx.extra_cost > 0.0 => (String::new(), "mcp".to_owned()),
            (None, None) => return,
        };
        let usage = ctx.usage.unwrap_or_default();
        let cost = ctx.cost().unwrap_or(0.0);
        let elapsed = ctx.start.elapsed();
        let now_ms = crate::clock::now_ms() as i64;
        let key = ctx.key.as_deref();
        let started_at_ms = match &ctx.once {
            Some(once) => once.started_at_ms,
            None => now_ms - elapsed.as_millis() as i64,
        };
        let event = UsageEvent {
            request_id: ctx
                .once
                .as_ref()
                .map_or_else(|| ctx.request_id.clone(), |o| o.request_id.clone()),
            key_hash: key.map(|k| k.hash),
            team_id: key.map(|k| k.team_id.clone()).unwrap_or_default(),
            user_id: key.map(|k| k.user_id.clone()).unwrap_or_default(),
            model_group: ctx.model.clone().unwrap_or_default(),
            deployment_id,
            provider,
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            cost,
            latency_ms: elapsed.as_millis() as u64,
            status: ctx.status,
            started_at_ms,
            dataplane_id: self.dataplane_id.to_string(),
            end_user: ctx.end_user.clone().unwrap_or_default(),
            cache_hit: ctx.cache_hit(),
            saved_cost: match &ctx.cache {
                Some(crate::cache::Outcome::Hit { saved_cost, .. }) => *saved_cost,
                _ => 0.0,
            },
            ..routed(ctx.routed.as_ref())
        };
        let shadow = ctx.routed.as_ref().and_then(|d| d.shadow.clone());
        // Counted before it is sent, so that the publisher never acknowledges more than
        // were counted.
        self.unsent.fetch_add(1, Ordering::AcqRel);
        if self
            .tx
            .try_send(Queued {
                event,
                trace,
                shadow,
            })
            .is_err()
        {
            self.unsent.fetch_sub(1, Ordering::AcqRel);
            metrics.usage_dropped.inc();
        }
    }
}

/// Publishes queued events forever (until every [`Reporter`] is gone).
pub async fn publish(
    js: jetstream::Context,
    mut rx: mpsc::Receiver<Queued>,
    dataplane_id: String,
    app: Arc<App>,
) {
    let subject = format!(
        "{}{}",
        subjects::USAGE_SUBJECT_PREFIX,
        subject_token(&dataplane_id)
    );
    let mut batch = Vec::with_capacity(1024);
    loop {
        if rx.recv_many(&mut batch, 1024).await == 0 {
            return;
        }
        settle(&mut batch).await;
        let mut wait = Duration::from_millis(100);
        loop {
            let acknowledged = |sent: u64| {
                app.metrics.usage_published.inc_by(sent);
                if let Some(a) = &app.attached {
                    a.reporter.acknowledged(sent);
                }
            };
            match send(&js, &subject, &mut batch).await {
                Ok(sent) => {
                    acknowledged(sent);
                    break;
                }
                Err((sent, e)) => {
                    acknowledged(sent);
                    tracing::warn!(error = %e, pending = batch.len(), "usage events not published yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Sends a batch pipelined and waits for the acks. Acknowledged events leave `batch`; on
/// error the rest stay for the retry. Returns how many were acknowledged.
async fn send(
    js: &jetstream::Context,
    subject: &str,
    batch: &mut Vec<Queued>,
) -> Result<u64, (u64, String)> {
    let mut acks = Vec::with_capacity(batch.len());
    let mut failure = None;
    for q in batch.iter() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", q.event.request_id.as_str());
        if let Some(t) = &q.trace {
            headers.insert("traceparent", t.to_string().as_str());
        }
        let payload = pb::UsageEvent::from(&q.event).encode_to_vec();
        match js
            .publish_with_headers(subject.to_owned(), headers, payload.into())
            .await
        {
            Ok(ack) => acks.push(ack),
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    let mut done = vec![false; batch.len()];
    for (i, ack) in acks.into_iter().enumerate() {
        match ack.await {
            Ok(_) => done[i] = true,
            Err(e) => {
                failure.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let sent = done.iter().filter(|d| **d).count() as u64;
    let mut i = 0;
    batch.retain(|_| {
        let keep = !done[i];
        i += 1;
        keep
    });
    match failure {
        None => Ok(sent),
        Some(e) => Err((sent, e)),
    }
}

/// Waits (at most [`SHADOW_WAIT`]) for the batch's shadow decisions, then writes them into
/// their events.
async fn settle(batch: &mut [Queued]) {
    let deadline = tokio::time::Instant::now() + SHADOW_WAIT;
    while batch
        .iter()
        .any(|q| q.shadow.as_ref().is_some_and(|c| !c.settled()))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for q in batch {
        if let Some(s) = q.shadow.take().as_deref().and_then(ShadowCell::get) {
            q.event.shadow_sha256 = s.sha256.clone();
            q.event.shadow_candidate = s.candidate.clone().unwrap_or_default();
        }
    }
}

/// The usage event's router fields: the learned version that decided the request (the
/// shadow's are filled when it is published, see [`settle`]).
fn routed(d: Option<&Decision>) -> UsageEvent {
    let Some(d) = d else {
        return UsageEvent::default();
    };
    UsageEvent {
        router_sha256: d.sha256.clone().unwrap_or_default(),
        router_arm: if d.sha256.is_some() {
            d.arm.name().to_owned()
        } else {
            String::new()
        },
        router_candidate: d.candidate.clone().unwrap_or_default(),
        ..UsageEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Outcome;

    fn provider_of(ctx: &RequestCtx) -> Option<String> {
        let (reporter, mut rx) = Reporter::new("dp", 4);
        reporter.record(ctx, None, &Metrics::new().unwrap());
        rx.try_recv().ok().map(|q| q.event.provider)
    }

    #[test]
    fn charges_without_a_deployment_are_labelled_by_what_made_them() {
        let mut ctx = RequestCtx::default();
        assert_eq!(provider_of(&ctx), None, "nothing reached, nothing charged");
        ctx.extra_cost = 0.002;
        assert_eq!(provider_of(&ctx).as_deref(), Some("mcp"));
        // A router model's cost on a request then refused is not the cache's.
        ctx.cache = Some(Outcome::Miss { key: "k".into() });
        ctx.status = 429;
        assert_eq!(provider_of(&ctx).as_deref(), Some("mcp"));
        // Refused after the semantic cache's embedding deployment was paid.
        ctx.cache_cost = 0.002;
        assert_eq!(provider_of(&ctx).as_deref(), Some("cache"));
        ctx.extra_cost = 0.0;
        ctx.cache_cost = 0.0;
        assert_eq!(provider_of(&ctx), None);
        ctx.cache = Some(Outcome::Hit {
            key: "k".into(),
            saved_cost: 0.1,
            similarity: None,
        });
        assert_eq!(provider_of(&ctx).as_deref(), Some("cache"));
    }
}
