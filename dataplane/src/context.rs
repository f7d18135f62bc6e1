//! Per-request context: what the request was, what served it, and how it ended. Filled by
//! the handlers, read by telemetry when the request is logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use routeiq_proto::{ScopeKind, VirtualKey};

use crate::holder::Holder;

use crate::state::CompiledDeployment;

use crate::usage::Usage;

/// The rate-limit standings of a request's key and team, for those with limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Standings {
    pub key: Option<crate::limits::Standing>,
    pub team: Option<crate::limits::Standing>,
}

pub struct RequestCtx {
    pub start: Instant,
    /// The request's random id ...
    pub id: u128,
    /// ... as 32 lowercase hex digits (`x-litellm-call-id`): the trace a request without a
    /// caller's trace is the root of.
    pub request_id: String,
    /// The caller's W3C trace context, when it sent a valid `traceparent`: the request's
    /// span joins that trace (else the trace named by `request_id`).
    pub traceparent: Option<Box<crate::otel::TraceParent>>,
    /// The caller's W3C `tracestate` (only with a valid `traceparent`), passed on with the
    /// trace to providers, MCP servers and agents.
    pub tracestate: Option<Arc<str>>,
    /// The request's own span, when spans are exported (every route but the probes and
    /// `/metrics`).
    pub span: Option<crate::otel::RouteSpan>,
    /// The span of the provider attempt that served the request (ended with the request;
    /// in a request of several calls, each replaced span ends when it is replaced).
    pub attempt_span: Option<crate::otel::AttemptSpan>,
    /// What the serving attempt asked of its provider (for the OTLP GenAI metrics).
    pub operation: Option<crate::providers::Operation>,
    /// What the response cache's own work cost the request (an embedding deployment's
    /// embedding of its message for the semantic cache): part of `extra_cost`.
    pub cache_cost: f64,
    /// Low-cardinality route label (`chat`, `messages`, ...).
    pub route: &'static str,
    /// Its count in `litellm_in_flight_requests`, taken back when the context is dropped
    /// (after it is logged, or when its task ends any other way).
    pub in_flight: Option<crate::telemetry::InFlight>,
    /// The virtual key that authenticated the request (none for the master key).
    pub key: Option<Arc<VirtualKey>>,
    pub model: Option<String>,
    /// The deployment that served the request.
    pub deployment: Option<Arc<CompiledDeployment>>,
    pub status: u16,
    /// Whether the response header has gone out (errors after that cannot change it).
    pub response_started: bool,
    pub usage: Option<Usage>,
    /// Time spent waiting for the upstream (or the mock) to answer.
    pub upstream_latency: Option<Duration>,
    pub time_to_first_token: Option<Duration>,
    /// From the request's arrival to the first chunk of its (provider) stream.
    pub first_chunk: Option<Duration>,
    /// `error.type` of a failed request.
    pub error_type: Option<&'static str>,
    /// The rate-limit slots and token reservations of the key and its team, user and
    /// organization, settled when the request is logged.
    pub admissions: Vec<crate::limits::Admission>,
    /// `x-ratelimit-*` headers for the response (keys with limits).
    pub rate_headers: Vec<(&'static str, String)>,
    /// Where the key and its team stood against their rate limits when admitted (LiteLLM's
    /// rate-limit gauges).
    pub standing: Standings,
    /// What the serving provider said is left of its own rate limits.
    pub provider_remaining: crate::providers::Remaining,
    /// The budget reservations of the key and its team, user and organization, settled to
    /// the request's cost when it is logged.
    pub budget_holds: Vec<crate::budgets::Hold>,
    /// Reservations for charges besides the request's own worst case (MCP tool calls in
    /// chat), released once `budget_holds` are settled to the request's cost, which
    /// includes those charges.
    pub charge_holds: Vec<crate::budgets::Hold>,
    /// The end user the request was made for (`user_header_name`, or the body's `user`).
    pub end_user: Option<String>,
    /// The serving deployment's hold (in flight, usage), settled when the request is logged.
    pub lease: Option<crate::routing::Lease>,
    /// Retries and fallback groups it took to serve the request.
    pub retries: u32,
    pub fallbacks: u32,
    /// A learned strategy's decision for the request.
    pub routed: Option<crate::routing::learned::Decision>,
    /// USD spent on the request's behalf besides the serving deployment's response:
    /// `llmrouter-causallm`'s router-model call, `llmrouter-automix`'s draft and
    /// verifications.
    pub extra_cost: f64,
    /// `llmrouter-automix`: the verification's confidence, and whether it escalated.
    pub automix: Option<(f64, bool)>,
    /// A charge made on the request's behalf that must be counted once however often it
    /// is made (a completed batch's, seen on every read of the batch): its cost (not the
    /// serving deployment's prices for `usage`), and the request id and start (Unix ms)
    /// its usage event carries, which the control plane counts once.
    pub once: Option<Once>,
    /// What served the request when no model deployment did: `(provider, id)`, an A2A
    /// agent (`("a2a", agent_id)`). Reported as the usage event's provider and
    /// deployment id.
    pub served_by: Option<(&'static str, String)>,
    /// The registry's skills the request loads (their ids), for its span.
    pub skills: Vec<String>,
    /// How the response cache took part (`None`: the cache is off for the request).
    pub cache: Option<crate::cache::Outcome>,
}

/// See [`RequestCtx::once`].
#[derive(Debug, Clone)]
pub struct Once {
    pub cost: f64,
    pub request_id: String,
    pub started_at_ms: i64,
}

impl RequestCtx {
    /// Admits the request under the budgets (`budgets`) and rate limits (`limits`) of its
    /// key, the key's budget on the requested model, and the key's team, user and
    /// organization (those with something to enforce), with its worst case, served by `d`. Every one must admit it: the first
    /// that refuses names itself in the error, and the holds taken before it are released.
    /// The holds last until the request is logged.
    pub async fn admit(
        &mut self,
        app: &crate::state::App,
        live: &crate::state::LiveState,
        d: &CompiledDeployment,
        worst: crate::limits::WorstCase,
    ) -> Result<(), crate::error::ApiError> {
        let cost = d.prices.of(&Usage {
            input_tokens: worst.prompt,
            output_tokens: worst.completion,
            cached_input_tokens: 0,
            ..Usage::default()
        });
        self.hold(app, live, cost, worst.tokens()).await
    }

    /// Admits the request as [`Self::admit`] does, with `cost` (USD) held against the
    /// budgets and `tokens` reserved under the token limits: a request no model serves (an
    /// A2A agent call, with its price and no tokens).
    pub async fn hold(
        &mut self,
        app: &crate::state::App,
        live: &crate::state::LiveState,
        cost: f64,
        tokens: u64,
    ) -> Result<(), crate::error::ApiError> {
        let Some(key) = self.key.clone() else {
            return Ok(());
        };
        // No allocation: the key, its budget on the requested model, then its team, user
        // and organization when they enforce something.
        let model_budget = self
            .model
            .as_deref()
            .and_then(|m| key.model_budgets.iter().find(|b| b.model == m));
        let model_account = model_budget.map(|b| Holder::model_account(&key.hash, &b.model));
        let [team, user, organization] = scope_holders(live, &key);
        let holders: [Option<Holder<'_>>; 5] = [
            Some(Holder::key(&key)),
            model_budget
                .zip(model_account.as_ref())
                .map(|(b, a)| Holder::key_model(b, a)),
            team,
            user,
            organization,
        ];
        let mut holds = Vec::new();
        for h in holders.iter().flatten() {
            if let Some(hold) = app.budgets.admit(h, live.version, cost)? {
                if hold.over_soft_budget {
                    app.metrics.soft_budget_exceeded.inc();
                }
                holds.push(hold);
            }
        }
        let mut admissions = Vec::new();
        for h in holders.iter().flatten() {
            match app.limiter.admit(h, tokens).await {
                Ok(Some(a)) => {
                    match h.kind {
                        crate::holder::HolderKind::Key => {
                            self.rate_headers = a.standing.headers();
                            self.standing.key = Some(a.standing);
                        }
                        crate::holder::HolderKind::Scope(ScopeKind::Team) => {
                            self.standing.team = Some(a.standing);
                        }
                        _ => {}
                    }
                    admissions.push(a);
                }
                Ok(None) => {}
                Err(refused) => {
                    self.rate_headers = refused.headers;
                    return Err(refused.error);
                }
            }
        }
        self.budget_holds = holds;
        self.admissions = admissions;
        Ok(())
    }

    /// What the request cost (USD): its usage at its deployment's prices, once both are
    /// known, plus its other charges; or, when no model served it, those charges alone.
    pub fn cost(&self) -> Option<f64> {
        if self.cache_hit() {
            // The answer is free; the semantic cache's embedding deployment is not.
            return Some(self.extra_cost);
        }
        if let Some(once) = &self.once {
            return Some(once.cost);
        }
        match (&self.deployment, &self.usage) {
            (Some(d), Some(u)) => Some(d.prices.of(u) + self.extra_cost),
            // No model answered: only its charges (MCP tool calls, an embedding).
            _ if self.extra_cost > 0.0 => Some(self.extra_cost),
            _ => None,
        }
    }

    /// Whether the response cache answered the request.
    pub fn cache_hit(&self) -> bool {
        matches!(self.cache, Some(crate::cache::Outcome::Hit { .. }))
    }

    /// The `traceparent` a call made on the request's behalf carries when the call has no
    /// span of its own: the request's span, else (spans not exported) the caller's, passed
    /// on as it came.
    pub fn outgoing_traceparent(&self) -> Option<String> {
        match &self.span {
            Some(span) => Some(span.header()),
            None => self.traceparent.as_ref().map(ToString::to_string),
        }
    }

    /// The trace context of a call made on the request's behalf: `own`, the `traceparent`
    /// of the call's span when it has one, else [`Self::outgoing_traceparent`]; with the
    /// caller's `tracestate`.
    pub fn outgoing_trace(&self, own: Option<String>) -> Option<crate::otel::Outgoing> {
        Some(crate::otel::Outgoing {
            traceparent: own.or_else(|| self.outgoing_traceparent())?,
            tracestate: self.tracestate.clone(),
        })
    }

    pub fn new() -> Self {
        // Never 0: the all-zero trace id is not a valid one.
        let id = fastrand::u128(1..);
        Self {
            start: Instant::now(),
            id,
            request_id: hex_id(id),
            traceparent: None,
            tracestate: None,
            span: None,
            attempt_span: None,
            first_chunk: None,
            operation: None,
            cache_cost: 0.0,
            route: "other",
            in_flight: None,
            key: None,
            model: None,
            deployment: None,
            status: 0,
            response_started: false,
            usage: None,
            upstream_latency: None,
            time_to_first_token: None,
            error_type: None,
            admissions: Vec::new(),
            rate_headers: Vec::new(),
            standing: Standings::default(),
            provider_remaining: Default::default(),
            budget_holds: Vec::new(),
            end_user: None,
            lease: None,
            retries: 0,
            fallbacks: 0,
            routed: None,
            extra_cost: 0.0,
            charge_holds: Vec::new(),
            automix: None,
            once: None,
            served_by: None,
            skills: Vec::new(),
            cache: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// `id` as 32 lowercase hex digits, written without the formatting machinery (every request
/// has one).
fn hex_id(id: u128) -> String {
    let mut out = [0u8; 32];
    // The slice is twice the bytes' length: encoding cannot fail.
    let _ = hex::encode_to_slice(id.to_be_bytes(), &mut out);
    out.iter().map(|&b| char::from(b)).collect()
}

/// The key's team, user and organization, where they enforce something.
fn scope_holders<'a>(
    live: &'a crate::state::LiveState,
    key: &'a VirtualKey,
) -> [Option<Holder<'a>>; 3] {
    let mut holders = [None, None, None];
    let scopes = live.scopes();
    if !scopes.is_empty() {
        for (slot, (kind, id)) in holders.iter_mut().zip([
            (ScopeKind::Team, &key.team_id),
            (ScopeKind::User, &key.user_id),
            (ScopeKind::Organization, &key.organization_id),
        ]) {
            *slot = scopes.get(kind, id).map(Holder::scope);
        }
    }
    holders
}

/// Holds `cost` (USD), a charge that is not a model's (an MCP tool call), against the
/// budgets of `key` and its team, user and organization: refused when one of them is
/// spent, like a request.
pub fn hold_charge(
    app: &crate::state::App,
    live: &crate::state::LiveState,
    key: &VirtualKey,
    cost: f64,
) -> Result<Vec<crate::budgets::Hold>, crate::error::ApiError> {
    let [team, user, organization] = scope_holders(live, key);
    let mut holds = Vec::new();
    for h in [Some(Holder::key(key)), team, user, organization]
        .iter()
        .flatten()
    {
        if let Some(hold) = app.budgets.admit(h, live.version, cost)? {
            holds.push(hold);
        }
    }
    Ok(holds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_span_the_callers_trace_context_goes_on_as_it_came() {
        let mut ctx = RequestCtx::new();
        assert_eq!(ctx.outgoing_traceparent(), None);
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        ctx.traceparent = crate::otel::TraceParent::parse(caller).map(Box::new);
        assert_eq!(ctx.outgoing_traceparent().as_deref(), Some(caller));
    }

    #[test]
    fn a_requests_id_is_its_number_in_32_lowercase_hex_digits() {
        for id in [
            1,
            0xab,
            u128::MAX,
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
        ] {
            assert_eq!(hex_id(id), format!("{id:032x}"));
        }
        let ctx = RequestCtx::new();
        assert_ne!(ctx.id, 0);
        assert_eq!(ctx.request_id, format!("{:032x}", ctx.id));
    }
}
