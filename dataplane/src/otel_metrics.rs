//! OTLP metrics of the data plane: OpenTelemetry's GenAI metric conventions
//! (`open-telemetry/semantic-conventions-genai` at `7269173`,
//! `docs/gen-ai/gen-ai-metrics.md`), with their names, units and bucket boundaries. As a
//! client of the providers: `gen_ai.client.token.usage` and
//! `gen_ai.client.operation.duration` (each provider attempt, failed ones with
//! `error.type`). As a server to its own clients: `gen_ai.server.request.duration`, and for
//! streams `gen_ai.server.time_to_first_token` and `gen_ai.server.time_per_output_token`.
//! Recorded when a request ends (a failed attempt when it fails), exported by the shared
//! OTLP metric exporter off the request path; nothing is built without an endpoint. A
//! served request records into instruments bound once per deployment and operation (the
//! SDK's attribute lookup per measurement cost more than the rest of the request's
//! metrics); failures, rarer, are recorded with their attributes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};

use opentelemetry::metrics::{BoundHistogram, Histogram};
use opentelemetry::KeyValue;
use routeiq_service::telemetry::OtlpMetrics;

use crate::context::RequestCtx;
use crate::otel::{operation_name, provider_name};
use crate::providers::Operation;
use crate::state::CompiledDeployment;

const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const TPOT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

pub struct GenAiMetrics {
    /// Kept: dropping it would stop the exports.
    exporter: OtlpMetrics,
    token_usage: Histogram<u64>,
    operation_duration: Histogram<f64>,
    request_duration: Histogram<f64>,
    time_to_first_token: Histogram<f64>,
    time_per_output_token: Histogram<f64>,
    bound: BoundCache,
}

impl GenAiMetrics {
    /// The exporter (to flush it at shutdown).
    pub fn exporter(&self) -> &OtlpMetrics {
        &self.exporter
    }

    /// Set up when an OTLP metrics endpoint is configured (must run inside a Tokio runtime).
    pub fn from_env() -> Option<Self> {
        let exporter = OtlpMetrics::from_env("routeiq-dataplane")?;
        let meter = exporter.meter();
        let seconds = |name: &'static str, help: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(help)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Some(Self {
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used.")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            operation_duration: seconds(
                "gen_ai.client.operation.duration",
                "GenAI operation duration.",
                &DURATION_BUCKETS,
            ),
            request_duration: seconds(
                "gen_ai.server.request.duration",
                "Generative AI server request duration such as time-to-last byte or last output token.",
                &DURATION_BUCKETS,
            ),
            time_to_first_token: seconds(
                "gen_ai.server.time_to_first_token",
                "Time to generate first token for successful responses.",
                &TTFT_BUCKETS,
            ),
            time_per_output_token: seconds(
                "gen_ai.server.time_per_output_token",
                "Time per output token generated after the first token for successful responses.",
                &TPOT_BUCKETS,
            ),
            exporter,
            bound: BoundCache::default(),
        })
    }

    /// A provider attempt that failed after `seconds`, of class `error`.
    pub fn failed_attempt(
        &self,
        d: &CompiledDeployment,
        op: Operation,
        seconds: f64,
        error: &'static str,
    ) {
        let mut attrs = attributes(d, op);
        attrs.push(KeyValue::new("error.type", error));
        self.operation_duration.record(seconds, &attrs);
    }

    /// A finished request that reached a provider (`ctx.operation` is set by its attempts;
    /// an answer from the cache made no operation).
    pub fn record(&self, ctx: &RequestCtx) {
        let (Some(d), Some(op)) = (&ctx.deployment, ctx.operation) else {
            return;
        };
        if ctx.cache_hit() {
            return;
        }
        let total = ctx.start.elapsed();
        if ctx.status >= 400 || ctx.error_type.is_some() {
            let mut attrs = attributes(d, op);
            attrs.push(KeyValue::new(
                "error.type",
                ctx.error_type.unwrap_or("_OTHER"),
            ));
            self.request_duration.record(total.as_secs_f64(), &attrs);
            // The attempt that answered and then failed (a stream broken off); the attempts
            // that failed outright were recorded as they failed.
            if let Some(upstream) = ctx.upstream_latency {
                self.operation_duration
                    .record(upstream.as_secs_f64(), &attrs);
            }
            return;
        }
        let b = self.bound.get(d, op);
        if let Some(upstream) = ctx.upstream_latency {
            b.get(&b.operation_duration, &self.operation_duration, None)
                .record(upstream.as_secs_f64());
        }
        if let Some(u) = &ctx.usage {
            b.get(&b.input_tokens, &self.token_usage, Some("input"))
                .record(u.input_tokens);
            b.get(&b.output_tokens, &self.token_usage, Some("output"))
                .record(u.output_tokens);
        }
        // A stream's first chunk: from the request's arrival here to that chunk, and the
        // provider's time per token after it.
        if let (Some(first), Some(ttft), Some(upstream)) = (
            ctx.first_chunk,
            ctx.time_to_first_token,
            ctx.upstream_latency,
        ) {
            let after_first = upstream.saturating_sub(ttft);
            b.get(&b.time_to_first_token, &self.time_to_first_token, None)
                .record(first.as_secs_f64());
            let later_tokens = ctx.usage.map_or(0, |u| u.output_tokens.saturating_sub(1));
            if later_tokens > 0 {
                b.get(&b.time_per_output_token, &self.time_per_output_token, None)
                    .record(after_first.as_secs_f64() / later_tokens as f64);
            }
        }
        b.get(&b.request_duration, &self.request_duration, None)
            .record(total.as_secs_f64());
    }
}

/// The instruments bound to one deployment's and operation's attributes, each on its
/// first measurement (a bound series is exported from then on, with or without
/// measurements: a deployment that never streams has no time-to-first-token series).
struct Bound {
    /// Keeps the deployment's allocation (not its contents, credentials included) from
    /// being reused for another deployment while it is a key.
    deployment: Weak<CompiledDeployment>,
    operation: &'static str,
    attrs: Vec<KeyValue>,
    request_duration: OnceLock<BoundHistogram<f64>>,
    operation_duration: OnceLock<BoundHistogram<f64>>,
    input_tokens: OnceLock<BoundHistogram<u64>>,
    output_tokens: OnceLock<BoundHistogram<u64>>,
    time_to_first_token: OnceLock<BoundHistogram<f64>>,
    time_per_output_token: OnceLock<BoundHistogram<f64>>,
}

impl Bound {
    /// `cell`'s instrument, bound to these attributes (and `token_type`) on first use.
    fn get<'a, T>(
        &self,
        cell: &'a OnceLock<BoundHistogram<T>>,
        instrument: &Histogram<T>,
        token_type: Option<&'static str>,
    ) -> &'a BoundHistogram<T> {
        cell.get_or_init(|| match token_type {
            None => instrument.bind(&self.attrs),
            Some(t) => {
                let mut attrs = self.attrs.clone();
                attrs.push(KeyValue::new("gen_ai.token.type", t));
                instrument.bind(&attrs)
            }
        })
    }
}

/// Bound instruments by deployment and operation, at most [`BoundCache::MAX`] (then it
/// starts over: the series stay, only their bindings are made again).
#[derive(Default)]
struct BoundCache(RwLock<HashMap<(usize, &'static str), Arc<Bound>>>);

impl BoundCache {
    const MAX: usize = 10_000;

    fn get(&self, d: &Arc<CompiledDeployment>, op: Operation) -> Arc<Bound> {
        let operation = operation_name(op);
        let key = (Arc::as_ptr(d) as usize, operation);
        if let Ok(map) = self.0.read() {
            if let Some(b) = map.get(&key).filter(|b| {
                std::ptr::eq(b.deployment.as_ptr(), Arc::as_ptr(d)) && b.operation == operation
            }) {
                return Arc::clone(b);
            }
        }
        let bound = Arc::new(Bound {
            deployment: Arc::downgrade(d),
            operation,
            attrs: attributes(d, op),
            request_duration: OnceLock::new(),
            operation_duration: OnceLock::new(),
            input_tokens: OnceLock::new(),
            output_tokens: OnceLock::new(),
            time_to_first_token: OnceLock::new(),
            time_per_output_token: OnceLock::new(),
        });
        if let Ok(mut map) = self.0.write() {
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(key, Arc::clone(&bound));
        }
        bound
    }
}

/// The conventions' attributes of an operation on deployment `d`.
fn attributes(d: &CompiledDeployment, op: Operation) -> Vec<KeyValue> {
    let model = &d.deployment.upstream_model;
    let mut attrs = Vec::with_capacity(8);
    attrs.push(KeyValue::new("gen_ai.operation.name", operation_name(op)));
    attrs.push(KeyValue::new(
        "gen_ai.provider.name",
        provider_name(d.deployment.provider),
    ));
    attrs.push(KeyValue::new("gen_ai.request.model", model.clone()));
    attrs.push(KeyValue::new("gen_ai.response.model", model.clone()));
    if let Some(t) = &d.target {
        attrs.push(KeyValue::new("server.address", t.host.clone()));
        attrs.push(KeyValue::new("server.port", i64::from(t.port)));
    }
    attrs
}
