//! Prometheus metrics, named as LiteLLM names them where it has a name, so existing
//! dashboards keep working.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::context::RequestCtx;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    failed: IntCounterVec,
    latency: HistogramVec,
    llm_latency: HistogramVec,
    ttft: HistogramVec,
    input_tokens: IntCounterVec,
    output_tokens: IntCounterVec,
    total_tokens: IntCounterVec,
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
    deployment_failures: IntCounterVec,
    cooled_down: IntCounterVec,
    retries: IntCounterVec,
    fallbacks_ok: IntCounterVec,
    fallbacks_failed: IntCounterVec,
    mcp_tool_calls: IntCounterVec,
    mcp_tool_call_duration: HistogramVec,
}

fn plain_counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// Adds a metric owned elsewhere (the Redis limiter's).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(c)
    }

    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let req_labels = ["requested_model", "provider", "route", "status_code"];
        let tok_labels = ["requested_model", "provider"];
        let snapshot_version = IntGauge::new(
            "routeiq_snapshot_version",
            "Version of the snapshot this data plane serves from",
        )?;
        r.register(Box::new(snapshot_version.clone()))?;
        Ok(Self {
            requests: counter(
                &r,
                "litellm_proxy_total_requests_metric_total",
                "Requests made to the proxy",
                &req_labels,
            )?,
            failed: counter(
                &r,
                "litellm_proxy_failed_requests_metric_total",
                "Requests that failed",
                &[
                    "requested_model",
                    "provider",
                    "route",
                    "exception_status",
                    "exception_class",
                ],
            )?,
            latency: histogram(
                &r,
                "litellm_request_total_latency_metric",
                "Total request latency in seconds, as the client sees it",
                &req_labels,
            )?,
            llm_latency: histogram(
                &r,
                "litellm_llm_api_latency_metric",
                "Upstream LLM API latency in seconds",
                &tok_labels,
            )?,
            ttft: histogram(
                &r,
                "litellm_llm_api_time_to_first_token_metric",
                "Time to first token of streaming responses, seconds",
                &tok_labels,
            )?,
            input_tokens: counter(
                &r,
                "litellm_input_tokens_metric_total",
                "Input (prompt) tokens",
                &tok_labels,
            )?,
            output_tokens: counter(
                &r,
                "litellm_output_tokens_metric_total",
                "Output (completion) tokens",
                &tok_labels,
            )?,
            total_tokens: counter(
                &r,
                "litellm_total_tokens_metric_total",
                "Input plus output tokens",
                &tok_labels,
            )?,
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
            deployment_state: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "litellm_deployment_state",
                        "Circuit breaker of a deployment: 0 closed (healthy), 1 half-open, 2 open (cooling down)",
                    ),
                    &["model_id", "litellm_model_name", "api_provider"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            deployment_failures: counter(
                &r,
                "litellm_deployment_failure_responses_total",
                "Failed attempts on a deployment, by error class",
                &["model_id", "litellm_model_name", "exception_class"],
            )?,
            cooled_down: counter(
                &r,
                "litellm_deployment_cooled_down_total",
                "Times a deployment was put in cooldown (its breaker opened)",
                &["model_id", "litellm_model_name", "exception_class"],
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
                &["requested_model", "fallback_model"],
            )?,
            fallbacks_failed: counter(
                &r,
                "litellm_deployment_failed_fallbacks_total",
                "Requests whose fallbacks all failed",
                &["requested_model", "fallback_model"],
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
            .with_label_values(&[
                d.deployment.id.0.as_str(),
                &d.deployment.model_name,
                d.deployment.provider.as_str(),
            ])
            .set(state as i64);
    }

    pub fn deployment_failure(&self, d: &crate::state::CompiledDeployment, class: &str) {
        self.deployment_failures
            .with_label_values(&[d.deployment.id.0.as_str(), &d.deployment.model_name, class])
            .inc();
    }

    pub fn cooled_down(&self, d: &crate::state::CompiledDeployment, class: &str) {
        self.cooled_down
            .with_label_values(&[d.deployment.id.0.as_str(), &d.deployment.model_name, class])
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

    pub fn retry(&self, group: &str, class: &str) {
        self.retries.with_label_values(&[group, class]).inc();
    }

    pub fn fallback(&self, requested: &str, fallback: &str, served: bool) {
        let c = if served {
            &self.fallbacks_ok
        } else {
            &self.fallbacks_failed
        };
        c.with_label_values(&[requested, fallback]).inc();
    }

    pub fn set_snapshot_version(&self, v: u64) {
        self.snapshot_version
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }

    /// Records a finished request.
    pub fn observe(&self, ctx: &RequestCtx) {
        if matches!(ctx.route, "metrics" | "health") {
            return;
        }
        let model = ctx.model.as_deref().unwrap_or("");
        let provider = ctx
            .deployment
            .as_ref()
            .map(|d| d.deployment.provider.as_str())
            .unwrap_or("");
        let status = status_label(ctx.status);
        let labels = [model, provider, ctx.route, status];
        self.requests.with_label_values(&labels).inc();
        self.latency
            .with_label_values(&labels)
            .observe(ctx.start.elapsed().as_secs_f64());
        if ctx.status >= 400 {
            self.failed
                .with_label_values(&[
                    model,
                    provider,
                    ctx.route,
                    status,
                    ctx.error_type.unwrap_or(""),
                ])
                .inc();
        }
        let tl = [model, provider];
        if let Some(d) = ctx.upstream_latency {
            self.llm_latency
                .with_label_values(&tl)
                .observe(d.as_secs_f64());
        }
        if let Some(d) = ctx.time_to_first_token {
            self.ttft.with_label_values(&tl).observe(d.as_secs_f64());
        }
        // A hit's tokens are the cache's (`litellm_cached_tokens_metric`), not a provider's.
        if let Some(u) = ctx.usage.filter(|_| !ctx.cache_hit()) {
            self.input_tokens
                .with_label_values(&tl)
                .inc_by(u.input_tokens);
            self.output_tokens
                .with_label_values(&tl)
                .inc_by(u.output_tokens);
            self.total_tokens.with_label_values(&tl).inc_by(u.total());
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

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        0 => "0",
        s if s < 300 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
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
        });
        m.observe(&ctx);
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "litellm_proxy_total_requests_metric_total",
            "litellm_request_total_latency_metric_bucket",
            "litellm_total_tokens_metric_total",
            "routeiq_snapshot_version",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }
}
