//! Prometheus metrics, named, labelled and bucketed as LiteLLM's (litellm 1.110.2) where it
//! has a name, so its dashboards keep working; RouteIQ's own carry a `routeiq_` prefix.
//!
//! A finished request updates a dozen families with LiteLLM's label sets (up to 16 labels
//! each). Resolving those label sets per request would cost microseconds, so the children
//! of one label combination (key, deployment, requested model, route, status, error class)
//! are resolved once into a [`Series`] and found again by one hash lookup ([`SeriesCache`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use prometheus::{
    Counter, CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::context::RequestCtx;

/// Buckets of RouteIQ's own duration histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// LiteLLM's `LATENCY_BUCKETS`, in seconds (`+Inf` is implied).
const LITELLM_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 420.0,
    600.0,
];

/// prometheus_client's default buckets: LiteLLM's latency per output token has no others.
const CLIENT_DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// A label LiteLLM sets and RouteIQ does not know or does not export (its Python `None`).
const NONE: &str = "None";

/// LiteLLM's label sets, in its order. `end_user`, `user_email`, `client_ip`, `user_agent`
/// and `service_tier` are always `None` (the first four are the client's to choose and
/// would let a client grow the series without bound). `team_alias` and `org_alias` are the
/// key's team's and organization's, carried on the key's snapshot view.
const PROXY_TOTAL: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "status_code",
    "user_email",
    "route",
    "client_ip",
    "user_agent",
    "model_id",
    "api_provider",
    "org_id",
    "org_alias",
];
const PROXY_FAILED: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "user_email",
    "exception_status",
    "exception_class",
    "route",
    "client_ip",
    "user_agent",
    "model_id",
    "api_provider",
    "org_id",
    "org_alias",
];
const REQUESTS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "model",
    "team",
    "team_alias",
    "user",
    "user_email",
    "client_ip",
    "user_agent",
    "requested_model",
    "model_id",
    "api_provider",
    "org_id",
    "org_alias",
];
const SPEND: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "model",
    "team",
    "team_alias",
    "user",
    "user_email",
    "client_ip",
    "user_agent",
    "requested_model",
    "model_id",
    "api_provider",
    "service_tier",
    "org_id",
    "org_alias",
];
const TOKENS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "model",
    "team",
    "team_alias",
    "user",
    "user_email",
    "requested_model",
    "model_id",
    "api_provider",
    "org_id",
    "org_alias",
];
const TOKEN_DETAILS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "model",
    "team",
    "team_alias",
    "user",
    "user_email",
    "requested_model",
    "model_id",
    "api_provider",
];
const TOTAL_LATENCY: &[&str] = &[
    "model_group",
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "model",
    "model_id",
    "api_provider",
    "service_tier",
    "org_id",
    "org_alias",
];
const LLM_LATENCY: &[&str] = &[
    "model_group",
    "model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "requested_model",
    "end_user",
    "user",
    "model_id",
    "api_provider",
    "service_tier",
    "org_id",
    "org_alias",
];
const OVERHEAD: &[&str] = &[
    "model_group",
    "api_provider",
    "api_base",
    "litellm_model_name",
    "hashed_api_key",
    "api_key_alias",
    "model_id",
];
const PER_OUTPUT_TOKEN: &[&str] = &[
    "model_group",
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "org_id",
    "org_alias",
];
const DEPLOYMENT_REQUESTS: &[&str] = &[
    "model_group",
    "requested_model",
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "client_ip",
    "user_agent",
];
/// `litellm_remaining_requests_metric` and `litellm_remaining_tokens_metric`.
const PROVIDER_REMAINING: &[&str] = &[
    "model_group",
    "api_provider",
    "api_base",
    "litellm_model_name",
    "hashed_api_key",
    "api_key_alias",
    "model_id",
];
/// `litellm_provider_cache_read_input_tokens_metric_total` and its creation twin.
const PROVIDER_CACHE: &[&str] = &[
    "model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "end_user",
    "user",
    "model_id",
    "api_provider",
];
/// `litellm_deployment_rpm_limit` and `litellm_deployment_tpm_limit`.
const DEPLOYMENT_LIMIT: &[&str] = &[
    "model_group",
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
];
const DEPLOYMENT_STATE: &[&str] = &["litellm_model_name", "model_id", "api_base", "api_provider"];
const DEPLOYMENT_FAILURES: &[&str] = &[
    "model_group",
    "requested_model",
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "exception_status",
    "exception_class",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "client_ip",
    "user_agent",
];
const COOLED_DOWN: &[&str] = &[
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "exception_status",
];
const FALLBACKS: &[&str] = &[
    "requested_model",
    "fallback_model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "exception_status",
    "exception_class",
    "model_id",
];

pub struct Metrics {
    registry: Registry,
    families: Families,
    series: SeriesCache,
    /// `litellm_in_flight_requests`: requests being served (see [`InFlight`]).
    in_flight: IntGauge,
    snapshot_version: IntGauge,
    /// Attached mode: snapshot updates refused (the last good state kept serving).
    pub snapshot_rejected: IntCounter,
    /// Attached mode: full snapshots fetched after the first (gaps, refused updates).
    pub snapshot_refetches: IntCounter,
    /// Attached mode: usage events dropped because the local buffer was full.
    pub usage_dropped: IntCounter,
    /// Attached mode: usage events accepted by JetStream.
    pub usage_published: IntCounter,
    /// Requests admitted while their key's spend was past its `soft_budget`.
    pub soft_budget_exceeded: IntCounter,
    deployment_state: IntGaugeVec,
    /// `litellm_deployment_rpm_limit` and `litellm_deployment_tpm_limit`: each deployment's
    /// configured `rpm` and `tpm`, as of the snapshot served.
    deployment_limits: [IntGaugeVec; 2],
    rate_limits: RateLimitGauges,
    deployment_failures: IntCounterVec,
    cooled_down: IntCounterVec,
    retries: IntCounterVec,
    fallbacks_ok: IntCounterVec,
    fallbacks_failed: IntCounterVec,
    mcp_tool_calls: IntCounterVec,
    mcp_tool_call_duration: HistogramVec,
    budgets: BudgetGauges,
}

/// LiteLLM's rate-limit gauges, set when a request admitted under a key's or team's
/// `rpm_limit` / `tpm_limit` is logged, from where the holder stood at its admission (the
/// request counted): `litellm_api_key_rate_limit_{allowed,used}_metric` and
/// `litellm_team_rate_limit_{allowed,used}_metric` by `rate_limit_type` (`requests`,
/// `tokens`), and `litellm_remaining_api_key_{requests,tokens}_for_model` (a key's limits
/// hold for every model, so what is left of them is what is left for the model asked for).
struct RateLimitGauges {
    key: [IntGaugeVec; 2],
    team: [IntGaugeVec; 2],
    for_model: [IntGaugeVec; 2],
}

impl RateLimitGauges {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        let key = ["hashed_api_key", "api_key_alias", "rate_limit_type"];
        let team = ["team", "team_alias", "rate_limit_type"];
        let model = ["hashed_api_key", "api_key_alias", "model", "model_id"];
        Ok(Self {
            key: [
                int_gauge(
                    r,
                    "litellm_api_key_rate_limit_allowed_metric",
                    "A key's rpm_limit (requests) or tpm_limit (tokens)",
                    &key,
                )?,
                int_gauge(
                    r,
                    "litellm_api_key_rate_limit_used_metric",
                    "Requests or tokens a key used of its limit this minute",
                    &key,
                )?,
            ],
            team: [
                int_gauge(
                    r,
                    "litellm_team_rate_limit_allowed_metric",
                    "A team's rpm_limit (requests) or tpm_limit (tokens)",
                    &team,
                )?,
                int_gauge(
                    r,
                    "litellm_team_rate_limit_used_metric",
                    "Requests or tokens a team used of its limit this minute",
                    &team,
                )?,
            ],
            for_model: [
                int_gauge(
                    r,
                    "litellm_remaining_api_key_requests_for_model",
                    "Requests left this minute under the key's rpm_limit",
                    &model,
                )?,
                int_gauge(
                    r,
                    "litellm_remaining_api_key_tokens_for_model",
                    "Tokens left this minute under the key's tpm_limit",
                    &model,
                )?,
            ],
        })
    }

    fn set(&self, ctx: &RequestCtx) {
        let standing = ctx.standing;
        let Some(key) = ctx.key.as_deref() else {
            return;
        };
        if standing.key.is_none() && standing.team.is_none() {
            return;
        }
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let both = |s: &crate::limits::Standing| [("requests", s.requests), ("tokens", s.tokens)];
        let k = KeyLabels::of(Some(key));
        if let Some(s) = standing.key {
            let (hash, alias) = (k.hashed.as_str(), k.alias);
            let model = or_none(ctx.model.as_deref().unwrap_or(""));
            let model_id = or_none(
                ctx.deployment
                    .as_ref()
                    .map_or("", |d| d.deployment.id.0.as_str()),
            );
            for (i, (kind, left)) in both(&s).into_iter().enumerate() {
                let Some(l) = left else { continue };
                let [allowed, used] = &self.key;
                allowed
                    .with_label_values(&[hash, alias, kind])
                    .set(int(l.limit));
                used.with_label_values(&[hash, alias, kind])
                    .set(int(l.limit - l.remaining));
                self.for_model[i]
                    .with_label_values(&[hash, alias, model, model_id])
                    .set(int(l.remaining));
            }
        }
        if let Some(s) = standing.team {
            let (team, alias) = (k.team, k.team_alias);
            for (kind, left) in both(&s) {
                let Some(l) = left else { continue };
                let [allowed, used] = &self.team;
                allowed
                    .with_label_values(&[team, alias, kind])
                    .set(int(l.limit));
                used.with_label_values(&[team, alias, kind])
                    .set(int(l.limit - l.remaining));
            }
        }
    }
}

/// LiteLLM's remaining-budget gauges of keys, teams, users and organizations: set, when a
/// request with a budget hold is logged, to `max_budget` minus the spend this data plane
/// sees (the control plane's last figure, plus its own unreported requests, this one
/// included); `+Inf` without a `max_budget` (a soft budget only). Aliases of teams and
/// organizations are not in the snapshot: `""`.
struct BudgetGauges {
    key: [GaugeVec; 2],
    team: [GaugeVec; 2],
    user: [GaugeVec; 2],
    organization: [GaugeVec; 2],
}

impl BudgetGauges {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        let gauge_pair = |remaining: &str, max: &str, what: &str, labels: &[&str]| {
            prometheus::Result::Ok([
                gauge(
                    r,
                    remaining,
                    &format!("Remaining budget for {what}"),
                    labels,
                )?,
                gauge(r, max, &format!("Maximum budget set for {what}"), labels)?,
            ])
        };
        Ok(Self {
            key: gauge_pair(
                "litellm_remaining_api_key_budget_metric",
                "litellm_api_key_max_budget_metric",
                "api key",
                &["hashed_api_key", "api_key_alias"],
            )?,
            team: gauge_pair(
                "litellm_remaining_team_budget_metric",
                "litellm_team_max_budget_metric",
                "team",
                &["team", "team_alias"],
            )?,
            user: gauge_pair(
                "litellm_remaining_user_budget_metric",
                "litellm_user_max_budget_metric",
                "user",
                &["user"],
            )?,
            organization: gauge_pair(
                "litellm_remaining_org_budget_metric",
                "litellm_org_max_budget_metric",
                "organization",
                &["org_id", "org_alias"],
            )?,
        })
    }

    /// `key`: the request's key, whose view names its team's and organization's aliases.
    fn set(&self, s: &crate::budgets::Settled, key: Option<&routeiq_proto::VirtualKey>) {
        use crate::holder::HolderKind;
        use routeiq_proto::ScopeKind;
        let o = &s.owner;
        let hashed;
        let team_alias = key
            .filter(|k| k.team_id == o.name)
            .map_or("", |k| k.team_alias.as_str());
        let org_alias = key
            .filter(|k| k.organization_id == o.name)
            .map_or("", |k| k.organization_alias.as_str());
        let (gauges, labels): (_, &[&str]) = match o.kind {
            HolderKind::Key => {
                hashed = o.hash.to_hex();
                (&self.key, &[hashed.as_str(), o.name.as_str()])
            }
            HolderKind::Scope(ScopeKind::Team) => (&self.team, &[o.name.as_str(), team_alias]),
            HolderKind::Scope(ScopeKind::User) => (&self.user, &[o.name.as_str()]),
            HolderKind::Scope(ScopeKind::Organization) => {
                (&self.organization, &[o.name.as_str(), org_alias])
            }
            // A key's budget on one model has no LiteLLM gauge.
            HolderKind::KeyModel => return,
        };
        let [remaining, max] = gauges;
        remaining
            .with_label_values(labels)
            .set(o.max_budget.map_or(f64::INFINITY, |m| m - s.spent));
        if let Some(m) = o.max_budget {
            max.with_label_values(labels).set(m);
        }
    }
}

/// `c`, registered in `r`.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: C,
) -> prometheus::Result<C> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
    registered(r, GaugeVec::new(Opts::new(name, help), labels)?)
}

fn int_gauge(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

fn plain_counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    registered(r, IntCounter::new(name, help)?)
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    registered(
        r,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )?,
    )
}

impl Metrics {
    /// Adds a metric owned elsewhere (the Redis limiter's).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(c)
    }

    /// Sets the remaining-budget gauges of a settled hold's owner.
    /// A budget hold of a request by `key` settled.
    pub fn budget(
        &self,
        settled: &crate::budgets::Settled,
        key: Option<&routeiq_proto::VirtualKey>,
    ) {
        self.budgets.set(settled, key);
    }

    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let snapshot_version = registered(
            &r,
            IntGauge::new(
                "routeiq_snapshot_version",
                "Version of the snapshot this data plane serves from",
            )?,
        )?;
        let in_flight = registered(
            &r,
            IntGauge::new("litellm_in_flight_requests", "Requests being served")?,
        )?;
        Ok(Self {
            families: Families::new(&r)?,
            budgets: BudgetGauges::new(&r)?,
            series: SeriesCache::default(),
            in_flight,
            snapshot_version,
            snapshot_rejected: plain_counter(
                &r,
                "routeiq_snapshot_updates_rejected_total",
                "Snapshot updates refused; the last good state kept serving",
            )?,
            snapshot_refetches: plain_counter(
                &r,
                "routeiq_snapshot_refetches_total",
                "Full snapshots re-fetched after a version gap or a refused update",
            )?,
            usage_dropped: plain_counter(
                &r,
                "routeiq_usage_events_dropped_total",
                "Usage events dropped because the local buffer was full",
            )?,
            soft_budget_exceeded: plain_counter(
                &r,
                "routeiq_soft_budget_exceeded_requests_total",
                "Requests admitted while their key's spend was past its soft_budget",
            )?,
            usage_published: plain_counter(
                &r,
                "routeiq_usage_events_published_total",
                "Usage events accepted by JetStream",
            )?,
            deployment_state: int_gauge(
                &r,
                "litellm_deployment_state",
                "Circuit breaker of a deployment: 0 closed (healthy), 1 half-open, 2 open (cooling down)",
                DEPLOYMENT_STATE,
            )?,
            deployment_limits: [
                int_gauge(
                    &r,
                    "litellm_deployment_rpm_limit",
                    "A deployment's configured requests per minute (rpm)",
                    DEPLOYMENT_LIMIT,
                )?,
                int_gauge(
                    &r,
                    "litellm_deployment_tpm_limit",
                    "A deployment's configured tokens per minute (tpm)",
                    DEPLOYMENT_LIMIT,
                )?,
            ],
            rate_limits: RateLimitGauges::new(&r)?,
            deployment_failures: counter(
                &r,
                "litellm_deployment_failure_responses_total",
                "Failed attempts on a deployment, by error class",
                DEPLOYMENT_FAILURES,
            )?,
            cooled_down: counter(
                &r,
                "litellm_deployment_cooled_down_total",
                "Times a deployment was put in cooldown (its breaker opened)",
                COOLED_DOWN,
            )?,
            retries: counter(
                &r,
                "routeiq_retries_total",
                "Retries within a model group, by the error class that caused them",
                &["model_group", "exception_class"],
            )?,
            fallbacks_ok: counter(
                &r,
                "litellm_deployment_successful_fallbacks_total",
                "Requests served by a fallback model group",
                FALLBACKS,
            )?,
            fallbacks_failed: counter(
                &r,
                "litellm_deployment_failed_fallbacks_total",
                "Requests whose fallbacks all failed",
                FALLBACKS,
            )?,
            mcp_tool_calls: counter(
                &r,
                "litellm_mcp_tool_calls_total",
                "MCP tool calls forwarded, by server, tool and outcome (ok, error)",
                &["server", "tool", "status"],
            )?,
            mcp_tool_call_duration: histogram(
                &r,
                "litellm_mcp_tool_call_duration_seconds",
                "MCP tool call duration in seconds, by server and tool",
                &["server", "tool"],
                LATENCY_BUCKETS,
            )?,
            registry: r,
        })
    }

    pub fn deployment_state(
        &self,
        d: &crate::state::CompiledDeployment,
        state: crate::routing::health::BreakerState,
    ) {
        self.deployment_state
            .with_label_values(&deployment_labels(&d.deployment))
            .set(state as i64);
    }

    /// A failed attempt on `d` for a request of model group `requested` (and `key`), with
    /// the error's status and class.
    pub fn deployment_failure(
        &self,
        d: &crate::state::CompiledDeployment,
        requested: &str,
        key: Option<&routeiq_proto::VirtualKey>,
        (status, class): (u16, &str),
    ) {
        let k = KeyLabels::of(key);
        let d = &d.deployment;
        self.deployment_failures
            .with_label_values(&[
                d.model_name.as_str(),
                requested,
                d.upstream_model.as_str(),
                d.id.0.as_str(),
                or_none(&d.api_base),
                d.provider.as_str(),
                &status.to_string(),
                class,
                &k.hashed,
                k.alias,
                k.team,
                k.team_alias,
                NONE,
                NONE,
            ])
            .inc();
    }

    /// `d`'s breaker opened on an error of `status`. LiteLLM names the deployment by its
    /// model group here.
    pub fn cooled_down(&self, d: &crate::state::CompiledDeployment, status: u16) {
        let d = &d.deployment;
        self.cooled_down
            .with_label_values(&[
                d.model_name.as_str(),
                d.id.0.as_str(),
                or_none(&d.api_base),
                d.provider.as_str(),
                &status.to_string(),
            ])
            .inc();
    }

    /// A forwarded MCP tool call and how long the server took.
    pub fn mcp_tool_call(&self, server: &str, tool: &str, ok: bool, seconds: f64) {
        let status = if ok { "ok" } else { "error" };
        self.mcp_tool_calls
            .with_label_values(&[server, tool, status])
            .inc();
        self.mcp_tool_call_duration
            .with_label_values(&[server, tool])
            .observe(seconds);
    }

    /// `litellm_remaining_requests_metric` and `litellm_remaining_tokens_metric` of a
    /// served request: what its provider said is left of its own limits, else, for a
    /// deployment with `rpm` / `tpm`, what is left of those this minute (as LiteLLM's
    /// router reports it). Nothing when neither is known.
    fn provider_remaining(&self, served: &Served, ctx: &RequestCtx) {
        let Some(d) = ctx.deployment.as_deref() else {
            return;
        };
        let said = ctx.provider_remaining;
        let (limits, wanted) = (
            (d.deployment.rpm, d.deployment.tpm),
            [said.requests, said.tokens],
        );
        if wanted.iter().all(Option::is_none) && limits == (None, None) {
            return;
        }
        let mut this_minute = None;
        let mut used =
            || *this_minute.get_or_insert_with(|| d.health.usage(crate::clock::now_ms()));
        let values = [
            said.requests
                .or_else(|| limits.0.map(|l| l.saturating_sub(used().0))),
            said.tokens
                .or_else(|| limits.1.map(|l| l.saturating_sub(used().1))),
        ];
        let gauges = served.remaining.get_or_init(|| {
            let l = Labels::of(ctx);
            let labels = [
                l.model_group.as_str(),
                l.provider.as_str(),
                l.api_base.as_str(),
                l.model.as_str(),
                l.hashed_api_key.as_str(),
                l.alias.as_str(),
                l.model_id.as_str(),
            ];
            let [requests, tokens] = &self.families.remaining;
            [
                requests.with_label_values(&labels),
                tokens.with_label_values(&labels),
            ]
        });
        for (gauge, v) in gauges.iter().zip(values) {
            if let Some(v) = v {
                gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
    }

    pub fn retry(&self, group: &str, class: &str) {
        self.retries.with_label_values(&[group, class]).inc();
    }

    /// A request of `requested` (and `key`) that fell back, after a failure of `cause`
    /// (status, class), to `fallback`, which served it or not.
    pub fn fallback(
        &self,
        requested: &str,
        fallback: &str,
        key: Option<&routeiq_proto::VirtualKey>,
        (status, class): (u16, &str),
        served: bool,
    ) {
        let c = if served {
            &self.fallbacks_ok
        } else {
            &self.fallbacks_failed
        };
        let k = KeyLabels::of(key);
        c.with_label_values(&[
            requested,
            fallback,
            &k.hashed,
            k.alias,
            k.team,
            k.team_alias,
            &status.to_string(),
            class,
            NONE,
        ])
        .inc();
    }

    /// What depends on the snapshot served: its version, and the deployments' limits (a
    /// deployment gone, or without its limit any more, leaves no series behind).
    pub fn snapshot_served(&self, state: &crate::state::LiveState) {
        self.snapshot_version
            .set(i64::try_from(state.version).unwrap_or(i64::MAX));
        let [rpm, tpm] = &self.deployment_limits;
        rpm.reset();
        tpm.reset();
        for d in state.compiled() {
            let d = &d.deployment;
            let [model, id, api_base, provider] = deployment_labels(d);
            let labels = [d.model_name.as_str(), model, id, api_base, provider];
            for (gauge, limit) in [(rpm, d.rpm), (tpm, d.tpm)] {
                if let Some(l) = limit {
                    gauge
                        .with_label_values(&labels)
                        .set(i64::try_from(l).unwrap_or(i64::MAX));
                }
            }
        }
    }

    /// Counts a request in `litellm_in_flight_requests` until the returned guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records a finished request.
    pub fn observe(&self, ctx: &RequestCtx) {
        if matches!(ctx.route, "metrics" | "health") {
            return;
        }
        self.rate_limits.set(ctx);
        let series = self.series.get(&self.families, ctx);
        series.requests.inc();
        let total = ctx.start.elapsed();
        if let Some(failed) = &series.failed {
            failed.inc();
        }
        let Some(served) = &series.served else {
            return;
        };
        served.latency.observe(total.as_secs_f64());
        if ctx.deployment.is_some() {
            served.deployment_total.inc();
        }
        if !failed(ctx) {
            served.requests.inc();
            served.deployment_success.inc();
            self.provider_remaining(served, ctx);
            if let Some(d) = ctx.upstream_latency {
                served.llm_latency.observe(d.as_secs_f64());
                served
                    .overhead
                    .observe(total.saturating_sub(d).as_secs_f64());
            }
            if let Some(d) = ctx.time_to_first_token {
                served.ttft.observe(d.as_secs_f64());
            }
        }
        // What a failed request used and cost before it failed (earlier rounds) counts too.
        if let Some(cost) = ctx.cost().filter(|c| *c > 0.0) {
            served.spend.inc_by(cost);
        }
        // A hit's tokens are the cache's (`litellm_cached_tokens_metric_total`), not a provider's.
        if let Some(u) = ctx.usage.filter(|_| !ctx.cache_hit()) {
            served.input_tokens.inc_by(u.input_tokens);
            served.output_tokens.inc_by(u.output_tokens);
            served.total_tokens.inc_by(u.total());
            for (counter, n) in [
                (&served.cached_input_tokens, u.cached_input_tokens),
                (&served.provider_cache_read, u.cached_input_tokens),
                (&served.cache_creation_tokens, u.cache_write_input_tokens),
                (&served.provider_cache_creation, u.cache_write_input_tokens),
                (&served.reasoning_tokens, u.reasoning_tokens),
            ] {
                if n > 0 {
                    counter.inc_by(n);
                }
            }
            if u.output_tokens > 0 {
                let took = ctx
                    .time_to_first_token
                    .or(ctx.upstream_latency)
                    .unwrap_or(total);
                served
                    .per_output_token
                    .observe(took.as_secs_f64() / u.output_tokens as f64);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// A request's count in `litellm_in_flight_requests`: taken back on drop, so a request
/// whose task ends without being logged (a panic) is not counted for ever.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The request families, labelled as LiteLLM labels them.
struct Families {
    requests: IntCounterVec,
    failed: IntCounterVec,
    requests_metric: IntCounterVec,
    spend: CounterVec,
    input_tokens: IntCounterVec,
    output_tokens: IntCounterVec,
    total_tokens: IntCounterVec,
    cached_input_tokens: IntCounterVec,
    cache_creation_tokens: IntCounterVec,
    reasoning_tokens: IntCounterVec,
    provider_cache_read: IntCounterVec,
    provider_cache_creation: IntCounterVec,
    /// `litellm_remaining_requests_metric`, `litellm_remaining_tokens_metric`.
    remaining: [IntGaugeVec; 2],
    latency: HistogramVec,
    llm_latency: HistogramVec,
    ttft: HistogramVec,
    overhead: HistogramVec,
    per_output_token: HistogramVec,
    deployment_success: IntCounterVec,
    deployment_total: IntCounterVec,
}

impl Families {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let r = registry.clone();
        let spend = registered(
            &r,
            CounterVec::new(
                Opts::new("litellm_spend_metric_total", "Spend on LLM requests, USD"),
                SPEND,
            )?,
        )?;
        Ok(Self {
            requests: counter(
                &r,
                "litellm_proxy_total_requests_metric_total",
                "Requests made to the proxy",
                PROXY_TOTAL,
            )?,
            failed: counter(
                &r,
                "litellm_proxy_failed_requests_metric_total",
                "Requests that failed",
                PROXY_FAILED,
            )?,
            requests_metric: counter(
                &r,
                "litellm_requests_metric_total",
                "Successful LLM requests (deprecated by LiteLLM; kept for its dashboards)",
                REQUESTS,
            )?,
            spend,
            input_tokens: counter(
                &r,
                "litellm_input_tokens_metric_total",
                "Input (prompt) tokens",
                TOKENS,
            )?,
            output_tokens: counter(
                &r,
                "litellm_output_tokens_metric_total",
                "Output (completion) tokens",
                TOKENS,
            )?,
            total_tokens: counter(
                &r,
                "litellm_total_tokens_metric_total",
                "Input plus output tokens",
                TOKENS,
            )?,
            cached_input_tokens: counter(
                &r,
                "litellm_input_cached_tokens_metric_total",
                "Input tokens the provider read from its prompt cache",
                TOKEN_DETAILS,
            )?,
            cache_creation_tokens: counter(
                &r,
                "litellm_input_cache_creation_tokens_metric_total",
                "Input tokens written to the provider's prompt cache",
                TOKEN_DETAILS,
            )?,
            reasoning_tokens: counter(
                &r,
                "litellm_output_reasoning_tokens_metric_total",
                "Output tokens the model spent reasoning",
                TOKEN_DETAILS,
            )?,
            provider_cache_read: counter(
                &r,
                "litellm_provider_cache_read_input_tokens_metric_total",
                "Input tokens the provider read from its prompt cache",
                PROVIDER_CACHE,
            )?,
            provider_cache_creation: counter(
                &r,
                "litellm_provider_cache_creation_input_tokens_metric_total",
                "Input tokens the provider wrote to its prompt cache",
                PROVIDER_CACHE,
            )?,
            remaining: [
                int_gauge(
                    &r,
                    "litellm_remaining_requests_metric",
                    "Requests left in the provider's rate-limit window for the deployment",
                    PROVIDER_REMAINING,
                )?,
                int_gauge(
                    &r,
                    "litellm_remaining_tokens_metric",
                    "Tokens left in the provider's rate-limit window for the deployment",
                    PROVIDER_REMAINING,
                )?,
            ],
            latency: histogram(
                &r,
                "litellm_request_total_latency_metric",
                "Total request latency in seconds, as the client sees it",
                TOTAL_LATENCY,
                LITELLM_BUCKETS,
            )?,
            llm_latency: histogram(
                &r,
                "litellm_llm_api_latency_metric",
                "Upstream LLM API latency in seconds",
                LLM_LATENCY,
                LITELLM_BUCKETS,
            )?,
            ttft: histogram(
                &r,
                "litellm_llm_api_time_to_first_token_metric",
                "Time to first token of streaming responses, seconds",
                LLM_LATENCY,
                LITELLM_BUCKETS,
            )?,
            overhead: histogram(
                &r,
                "litellm_overhead_latency_metric",
                "The gateway's own time in a request (total minus the provider's), seconds",
                OVERHEAD,
                LITELLM_BUCKETS,
            )?,
            per_output_token: histogram(
                &r,
                "litellm_deployment_latency_per_output_token",
                "Latency (time to first token of a stream) per output token, seconds",
                PER_OUTPUT_TOKEN,
                CLIENT_DEFAULT_BUCKETS,
            )?,
            deployment_success: counter(
                &r,
                "litellm_deployment_success_responses_total",
                "Requests a deployment answered",
                DEPLOYMENT_REQUESTS,
            )?,
            deployment_total: counter(
                &r,
                "litellm_deployment_total_requests_total",
                "Requests served by a deployment, failed or not",
                DEPLOYMENT_REQUESTS,
            )?,
        })
    }
}

/// A deployment's `litellm_model_name` (its model), `model_id`, `api_base` and
/// `api_provider`: [`DEPLOYMENT_STATE`]'s values, and the last four of [`DEPLOYMENT_LIMIT`].
fn deployment_labels(d: &routeiq_proto::Deployment) -> [&str; 4] {
    [
        d.upstream_model.as_str(),
        d.id.0.as_str(),
        or_none(&d.api_base),
        d.provider.as_str(),
    ]
}

/// `s`, or LiteLLM's `None` for an unset label.
fn or_none(s: &str) -> &str {
    if s.is_empty() {
        NONE
    } else {
        s
    }
}

/// A key's labels on the deployment and fallback metrics, as LiteLLM fills them.
struct KeyLabels<'a> {
    hashed: String,
    alias: &'a str,
    team: &'a str,
    team_alias: &'a str,
}

impl<'a> KeyLabels<'a> {
    fn of(key: Option<&'a routeiq_proto::VirtualKey>) -> Self {
        Self {
            hashed: key.map_or_else(|| NONE.to_owned(), |k| k.hash.to_hex()),
            alias: or_none(key.map_or("", |k| k.alias.as_str())),
            team: or_none(key.map_or("", |k| k.team_id.as_str())),
            team_alias: or_none(key.map_or("", |k| k.team_alias.as_str())),
        }
    }
}

/// A request's label values, as LiteLLM fills them.
struct Labels {
    hashed_api_key: String,
    alias: String,
    team: String,
    team_alias: String,
    user: String,
    org: String,
    org_alias: String,
    requested: String,
    route: &'static str,
    status: String,
    exception_class: &'static str,
    /// `model_id`, `api_provider`, `model` (the deployment's model), `model_group` (its
    /// group: a fallback's when one served), `api_base`; `None` without a deployment.
    model_id: String,
    provider: String,
    model: String,
    model_group: String,
    api_base: String,
}

impl Labels {
    fn of(ctx: &RequestCtx) -> Self {
        let or_none = |s: &str| {
            if s.is_empty() {
                NONE.to_owned()
            } else {
                s.to_owned()
            }
        };
        let key = ctx.key.as_deref();
        let d = ctx.deployment.as_deref().map(|d| &d.deployment);
        Self {
            hashed_api_key: key.map_or_else(|| NONE.to_owned(), |k| k.hash.to_hex()),
            alias: or_none(key.map_or("", |k| k.alias.as_str())),
            team: or_none(key.map_or("", |k| k.team_id.as_str())),
            team_alias: or_none(key.map_or("", |k| k.team_alias.as_str())),
            user: or_none(key.map_or("", |k| k.user_id.as_str())),
            org: or_none(key.map_or("", |k| k.organization_id.as_str())),
            org_alias: or_none(key.map_or("", |k| k.organization_alias.as_str())),
            requested: or_none(ctx.model.as_deref().unwrap_or("")),
            route: ctx.route,
            status: ctx.status.to_string(),
            exception_class: ctx.error_type.unwrap_or(NONE),
            model_id: or_none(d.map_or("", |d| d.id.0.as_str())),
            provider: or_none(d.map_or("", |d| d.provider.as_str())),
            model: or_none(d.map_or("", |d| d.upstream_model.as_str())),
            model_group: or_none(d.map_or("", |d| d.model_name.as_str())),
            api_base: or_none(d.map_or("", |d| d.api_base.as_str())),
        }
    }
}

/// The children of one label combination, resolved once.
struct Series {
    /// What it was resolved for (a hash match is checked against it).
    id: SeriesId,
    requests: IntCounter,
    /// For a request that failed (status 400 or more).
    failed: Option<IntCounter>,
    /// For a request with a deployment or usage ([`served`]).
    served: Option<Served>,
}

struct Served {
    latency: Histogram,
    requests: IntCounter,
    spend: Counter,
    input_tokens: IntCounter,
    output_tokens: IntCounter,
    total_tokens: IntCounter,
    cached_input_tokens: IntCounter,
    cache_creation_tokens: IntCounter,
    reasoning_tokens: IntCounter,
    provider_cache_read: IntCounter,
    provider_cache_creation: IntCounter,
    /// The provider's remaining requests and tokens, resolved when first known.
    remaining: std::sync::OnceLock<[IntGauge; 2]>,
    llm_latency: Histogram,
    ttft: Histogram,
    overhead: Histogram,
    per_output_token: Histogram,
    deployment_success: IntCounter,
    deployment_total: IntCounter,
}

impl Series {
    fn resolve(f: &Families, id: SeriesId, ctx: &RequestCtx) -> Self {
        let l = Labels::of(ctx);
        let requests = f.requests.with_label_values(&[
            NONE,
            &l.hashed_api_key,
            &l.alias,
            &l.requested,
            &l.team,
            &l.team_alias,
            &l.user,
            &l.status,
            NONE,
            l.route,
            NONE,
            NONE,
            &l.model_id,
            &l.provider,
            &l.org,
            &l.org_alias,
        ]);
        let failed = failed(ctx).then(|| {
            f.failed.with_label_values(&[
                NONE,
                &l.hashed_api_key,
                &l.alias,
                &l.requested,
                &l.team,
                &l.team_alias,
                &l.user,
                NONE,
                &l.status,
                l.exception_class,
                l.route,
                NONE,
                NONE,
                &l.model_id,
                &l.provider,
                &l.org,
                &l.org_alias,
            ])
        });
        let served = served(ctx).then(|| {
            let provider_cache = [
                &l.model,
                &l.hashed_api_key,
                &l.alias,
                &l.team,
                &l.team_alias,
                NONE,
                &l.user,
                &l.model_id,
                &l.provider,
            ];
            let tokens = [
                NONE,
                &l.hashed_api_key,
                &l.alias,
                &l.model,
                &l.team,
                &l.team_alias,
                &l.user,
                NONE,
                &l.requested,
                &l.model_id,
                &l.provider,
                &l.org,
                &l.org_alias,
            ];
            let llm = [
                &l.model_group,
                &l.model,
                &l.hashed_api_key,
                &l.alias,
                &l.team,
                &l.team_alias,
                &l.requested,
                NONE,
                &l.user,
                &l.model_id,
                &l.provider,
                NONE,
                &l.org,
                &l.org_alias,
            ];
            let deployment = [
                &l.model_group,
                &l.requested,
                &l.model,
                &l.model_id,
                &l.api_base,
                &l.provider,
                &l.hashed_api_key,
                &l.alias,
                &l.team,
                &l.team_alias,
                NONE,
                NONE,
            ];
            Served {
                latency: f.latency.with_label_values(&[
                    &l.model_group,
                    NONE,
                    &l.hashed_api_key,
                    &l.alias,
                    &l.requested,
                    &l.team,
                    &l.team_alias,
                    &l.user,
                    &l.model,
                    &l.model_id,
                    &l.provider,
                    NONE,
                    &l.org,
                    &l.org_alias,
                ]),
                requests: f.requests_metric.with_label_values(&[
                    NONE,
                    &l.hashed_api_key,
                    &l.alias,
                    &l.model,
                    &l.team,
                    &l.team_alias,
                    &l.user,
                    NONE,
                    NONE,
                    NONE,
                    &l.requested,
                    &l.model_id,
                    &l.provider,
                    &l.org,
                    &l.org_alias,
                ]),
                spend: f.spend.with_label_values(&[
                    NONE,
                    &l.hashed_api_key,
                    &l.alias,
                    &l.model,
                    &l.team,
                    &l.team_alias,
                    &l.user,
                    NONE,
                    NONE,
                    NONE,
                    &l.requested,
                    &l.model_id,
                    &l.provider,
                    NONE,
                    &l.org,
                    &l.org_alias,
                ]),
                input_tokens: f.input_tokens.with_label_values(&tokens),
                output_tokens: f.output_tokens.with_label_values(&tokens),
                total_tokens: f.total_tokens.with_label_values(&tokens),
                cached_input_tokens: f.cached_input_tokens.with_label_values(&tokens[..11]),
                cache_creation_tokens: f.cache_creation_tokens.with_label_values(&tokens[..11]),
                reasoning_tokens: f.reasoning_tokens.with_label_values(&tokens[..11]),
                provider_cache_read: f.provider_cache_read.with_label_values(&provider_cache),
                provider_cache_creation: f
                    .provider_cache_creation
                    .with_label_values(&provider_cache),
                remaining: std::sync::OnceLock::new(),
                llm_latency: f.llm_latency.with_label_values(&llm),
                ttft: f.ttft.with_label_values(&llm),
                overhead: f.overhead.with_label_values(&[
                    &l.model_group,
                    &l.provider,
                    &l.api_base,
                    &l.model,
                    &l.hashed_api_key,
                    &l.alias,
                    &l.model_id,
                ]),
                per_output_token: f.per_output_token.with_label_values(&[
                    &l.model_group,
                    &l.model,
                    &l.model_id,
                    &l.api_base,
                    &l.provider,
                    &l.hashed_api_key,
                    &l.alias,
                    &l.team,
                    &l.team_alias,
                    &l.org,
                    &l.org_alias,
                ]),
                deployment_success: f.deployment_success.with_label_values(&deployment),
                deployment_total: f.deployment_total.with_label_values(&deployment),
            }
        });
        Self {
            id,
            requests,
            failed,
            served,
        }
    }
}

/// Whether a request failed: an error status, or an error after a 200 went out (a stream
/// that broke off).
fn failed(ctx: &RequestCtx) -> bool {
    ctx.status >= 400 || ctx.error_type.is_some()
}

/// Whether a request has the families of a served one: it reached a deployment, or it used
/// tokens (the rounds of a request that failed later).
fn served(ctx: &RequestCtx) -> bool {
    ctx.deployment.is_some() || ctx.usage.is_some()
}

/// What makes a request's label values: its key and its deployment (the very versions it
/// was served with: a key or deployment changed by a snapshot is another allocation, so its
/// new aliases or address make new series), the model group asked for, its route, status
/// and error class. Holding them keeps their allocations from being reused for another.
struct SeriesId {
    key: Option<Arc<routeiq_proto::VirtualKey>>,
    deployment: Option<Arc<crate::state::CompiledDeployment>>,
    requested: Option<String>,
    route: &'static str,
    status: u16,
    error: Option<&'static str>,
    served: bool,
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl SeriesId {
    fn matches(&self, ctx: &RequestCtx) -> bool {
        same(&self.key, &ctx.key)
            && same(&self.deployment, &ctx.deployment)
            && self.requested == ctx.model
            && self.route == ctx.route
            && self.status == ctx.status
            && self.error == ctx.error_type
            && self.served == served(ctx)
    }

    fn of(ctx: &RequestCtx) -> Self {
        Self {
            key: ctx.key.clone(),
            deployment: ctx.deployment.clone(),
            requested: ctx.model.clone(),
            route: ctx.route,
            status: ctx.status,
            error: ctx.error_type,
            served: served(ctx),
        }
    }

    /// The hash of `ctx`'s id, computed without building it.
    fn hash(ctx: &RequestCtx) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ctx.key.as_ref().map(Arc::as_ptr).hash(&mut h);
        ctx.deployment.as_ref().map(Arc::as_ptr).hash(&mut h);
        ctx.model.hash(&mut h);
        ctx.route.hash(&mut h);
        ctx.status.hash(&mut h);
        ctx.error_type.hash(&mut h);
        served(ctx).hash(&mut h);
        h.finish()
    }
}

/// Resolved series by the hash of their id, at most [`SeriesCache::MAX`] (then it starts
/// over: the children stay registered, only their handles are resolved again).
#[derive(Default)]
struct SeriesCache(RwLock<HashMap<u64, Arc<Series>>>);

impl SeriesCache {
    const MAX: usize = 10_000;

    fn get(&self, f: &Families, ctx: &RequestCtx) -> Arc<Series> {
        let hash = SeriesId::hash(ctx);
        if let Ok(map) = self.0.read() {
            if let Some(s) = map.get(&hash).filter(|s| s.id.matches(ctx)) {
                return Arc::clone(s);
            }
        }
        let series = Arc::new(Series::resolve(f, SeriesId::of(ctx), ctx));
        if let Ok(mut map) = self.0.write() {
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(hash, Arc::clone(&series));
        }
        series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders() {
        let m = Metrics::new().unwrap();
        let mut ctx = RequestCtx::new();
        ctx.route = "chat";
        ctx.model = Some("gpt".into());
        ctx.status = 200;
        ctx.usage = Some(crate::usage::Usage {
            input_tokens: 2,
            output_tokens: 3,
            cached_input_tokens: 0,
            ..crate::usage::Usage::default()
        });
        m.observe(&ctx);
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "litellm_proxy_total_requests_metric_total",
            "litellm_in_flight_requests",
            "routeiq_snapshot_version",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }

    /// The value of the one sample of `name` whose labels include every one of `labels`.
    fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| labels.iter().all(|want| l.contains(want)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn budget_gauges_name_their_holder_in_litellms_labels() {
        use crate::budgets::{Owner, Settled};
        use crate::holder::HolderKind;
        let m = Metrics::new().unwrap();
        let hash = routeiq_proto::KeyHash::of("sk-gauge");
        let settled = |kind, name: &str, max_budget| Settled {
            owner: Owner {
                kind,
                hash,
                name: name.into(),
                max_budget,
            },
            spent: 2.5,
        };
        let key = routeiq_proto::VirtualKey {
            team_id: "team-2".into(),
            team_alias: "Search".into(),
            organization_id: "org-1".into(),
            organization_alias: "Acme".into(),
            ..routeiq_proto::VirtualKey::default()
        };
        m.budget(&settled(HolderKind::Key, "alias-1", Some(10.0)), Some(&key));
        m.budget(
            &settled(
                HolderKind::Scope(routeiq_proto::ScopeKind::Team),
                "team-1",
                None,
            ),
            None,
        );
        // The request's key names its team's and organization's aliases.
        m.budget(
            &settled(
                HolderKind::Scope(routeiq_proto::ScopeKind::Team),
                "team-2",
                Some(5.0),
            ),
            Some(&key),
        );
        m.budget(
            &settled(
                HolderKind::Scope(routeiq_proto::ScopeKind::Organization),
                "org-1",
                Some(4.0),
            ),
            Some(&key),
        );
        m.budget(&settled(HolderKind::KeyModel, "gpt", Some(1.0)), None);
        let text = String::from_utf8(m.render()).unwrap();
        let hashed = format!("hashed_api_key=\"{}\"", hash.to_hex());
        let key = [hashed.as_str(), "api_key_alias=\"alias-1\""];
        assert_eq!(
            value(&text, "litellm_remaining_api_key_budget_metric", &key),
            Some(7.5)
        );
        assert_eq!(
            value(&text, "litellm_api_key_max_budget_metric", &key),
            Some(10.0)
        );
        // No max_budget: +Inf remaining, no maximum.
        let team = ["team=\"team-1\"", "team_alias=\"\""];
        assert_eq!(
            value(&text, "litellm_remaining_team_budget_metric", &team),
            Some(f64::INFINITY)
        );
        assert_eq!(value(&text, "litellm_team_max_budget_metric", &team), None);
        let named = ["team=\"team-2\"", "team_alias=\"Search\""];
        assert_eq!(
            value(&text, "litellm_remaining_team_budget_metric", &named),
            Some(2.5)
        );
        let org = ["org_id=\"org-1\"", "org_alias=\"Acme\""];
        assert_eq!(
            value(&text, "litellm_remaining_org_budget_metric", &org),
            Some(1.5)
        );
        // A key's budget on one model has no LiteLLM gauge.
        assert!(!text.contains("gpt"), "{text}");
    }

    #[test]
    fn a_request_is_in_flight_until_its_guard_drops() {
        let m = Metrics::new().unwrap();
        let a = m.in_flight();
        let b = m.in_flight();
        assert_eq!(m.in_flight.get(), 2);
        drop(a);
        assert_eq!(m.in_flight.get(), 1);
        // However the request ends: a panicking task drops its context too.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = b;
            panic!("handler panicked");
        }));
        assert_eq!(m.in_flight.get(), 0);
    }

    #[test]
    fn a_requests_series_is_resolved_once_and_follows_its_status() {
        let m = Metrics::new().unwrap();
        let mut ctx = RequestCtx::new();
        ctx.route = "chat";
        ctx.model = Some("gpt".into());
        ctx.status = 200;
        m.observe(&ctx);
        m.observe(&ctx);
        assert_eq!(m.series.0.read().unwrap().len(), 1);
        ctx.status = 429;
        ctx.error_type = Some("rate_limit_error");
        m.observe(&ctx);
        assert_eq!(m.series.0.read().unwrap().len(), 2);
        let text = String::from_utf8(m.render()).unwrap();
        let total = "litellm_proxy_total_requests_metric_total";
        assert_eq!(value(&text, total, &["status_code=\"200\""]), Some(2.0));
        assert_eq!(value(&text, total, &["status_code=\"429\""]), Some(1.0));
        let failed = "litellm_proxy_failed_requests_metric_total";
        let labels = [
            "exception_status=\"429\"",
            "exception_class=\"rate_limit_error\"",
            "end_user=\"None\"",
        ];
        assert_eq!(value(&text, failed, &labels), Some(1.0));
        // LiteLLM's 16 labels, whatever RouteIQ does not know as "None".
        let line = text.lines().find(|l| l.starts_with(total)).unwrap();
        assert_eq!(line.matches("=\"").count(), PROXY_TOTAL.len(), "{line}");
        assert!(line.contains("hashed_api_key=\"None\""), "{line}");
        // A request that failed after using tokens (an earlier round) counts them.
        ctx.status = 400;
        ctx.error_type = Some("context_window_exceeded");
        ctx.usage = Some(crate::usage::Usage {
            input_tokens: 5,
            output_tokens: 7,
            cached_input_tokens: 0,
            ..crate::usage::Usage::default()
        });
        m.observe(&ctx);
        let text = String::from_utf8(m.render()).unwrap();
        let input = "litellm_input_tokens_metric_total";
        assert_eq!(
            value(&text, input, &["requested_model=\"gpt\""]),
            Some(5.0),
            "{text}"
        );
    }
}
