//! OpenTelemetry: per chat request (OpenAI or Anthropic API) a `routeiq.route` span and,
//! under it, one GenAI client span per provider attempt; one `execute_tool {name}` span per
//! MCP tool call; one `invoke_agent {name}` span per A2A agent call. A request joins its
//! caller's trace when it sent a W3C `traceparent` ([`TraceParent`]), else the trace named
//! by its id (`x-litellm-call-id`), so feedback collected by call id joins the trace
//! (`routeiq_training traces`). Spans are exported over OTLP/gRPC in batches off the
//! request path when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set.
//!
//! The route span carries the routing decision (strategy, model version, candidate,
//! deployment), the query a learned strategy routed on, tokens, cost and status.

use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use routeiq_proto::ProviderKind;

use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::providers::Operation;
use crate::state::CompiledDeployment;

/// A caller's W3C trace context (its `traceparent` header): the trace it is in, its span
/// (the parent of the gateway's) and its flags, lowercase hex each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: String,
    pub flags: String,
}

impl TraceParent {
    /// `value` read as W3C's `traceparent` (any version but `ff`; fields after the fourth
    /// are ignored in a version after `00`, as the specification asks of versions it does
    /// not know); `None` when it is not one (upper case, zero ids, wrong lengths).
    pub fn parse(value: &str) -> Option<Self> {
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
        // Version 00 has exactly four fields; a later one may add more.
        let extra = parts.next().is_some();
        (hex(version, 2)
            && version != "ff"
            && !(version == "00" && extra)
            && hex(trace, 32)
            && nonzero(trace)
            && hex(parent, 16)
            && nonzero(parent)
            && hex(flags, 2))
        .then(|| Self {
            trace_id: trace.to_owned(),
            parent_id: parent.to_owned(),
            flags: flags.to_owned(),
        })
    }
}

/// The exporter and tracer; spans are sent by a task on the runtime it was built on.
pub struct Spans {
    /// Kept so the exporter lives as long as the process.
    _provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Spans {
    /// Set up when an OTLP endpoint is configured (must run inside a Tokio runtime).
    pub fn from_env() -> Option<Self> {
        let configured = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        if !configured {
            return None;
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "OTLP span exporter not set up; no traces");
                return None;
            }
        };
        let batch = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("routeiq-dataplane")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("routeiq");
        tracing::info!("exporting routing spans over OTLP");
        Some(Self {
            _provider: provider,
            tracer,
        })
    }

    /// Opens the request's `routeiq.route` span (chat requests only: `ctx.route` is set),
    /// in the caller's trace when it sent one, else in the trace named by the request id.
    /// Its id is the parent the providers are sent (`RequestCtx::outgoing_traceparent`).
    pub fn start(&self, ctx: &RequestCtx) -> Option<RouteSpan> {
        if !matches!(ctx.route, "chat" | "messages") {
            return None;
        }
        let now = SystemTime::now();
        let start = now.checked_sub(ctx.start.elapsed()).unwrap_or(now);
        let builder = self
            .tracer
            .span_builder("routeiq.route")
            .with_kind(SpanKind::Server)
            .with_start_time(start);
        let caller = match &ctx.traceparent {
            Some(t) => remote(&t.trace_id, &t.parent_id, &t.flags),
            None => parent(&ctx.request_id),
        };
        Some(RouteSpan(Box::new(
            self.tracer.build_with_context(builder, &caller),
        )))
    }

    /// Ends the request's `routeiq.route` span (see [`Self::start`]) with what became of
    /// the request.
    pub fn record(&self, ctx: &mut RequestCtx, strategy: &str) {
        let Some(RouteSpan(mut span)) = ctx.span.take() else {
            return;
        };
        let end = SystemTime::now();
        let mut attrs = vec![
            KeyValue::new("routeiq.request_id", ctx.request_id.clone()),
            KeyValue::new("http.response.status_code", i64::from(ctx.status)),
            KeyValue::new("routeiq.route.retries", i64::from(ctx.retries)),
            KeyValue::new("routeiq.route.fallbacks", i64::from(ctx.fallbacks)),
        ];
        if let Some(m) = &ctx.model {
            attrs.push(KeyValue::new("gen_ai.request.model", m.clone()));
        }
        if let Some(u) = &ctx.end_user {
            attrs.push(KeyValue::new("routeiq.end_user", u.clone()));
        }
        match &ctx.routed {
            Some(r) => {
                attrs.push(KeyValue::new("routeiq.route.strategy", r.strategy.clone()));
                attrs.push(KeyValue::new(
                    "routeiq.route.version",
                    r.version.clone().unwrap_or_else(|| "fallback".into()),
                ));
                attrs.push(KeyValue::new("routeiq.route.query", r.query.to_string()));
                if let Some(c) = &r.candidate {
                    attrs.push(KeyValue::new("routeiq.route.candidate", c.clone()));
                }
            }
            None => attrs.push(KeyValue::new("routeiq.route.strategy", strategy.to_owned())),
        }
        if let Some(d) = &ctx.deployment {
            attrs.push(KeyValue::new(
                "routeiq.deployment.id",
                d.deployment.id.0.clone(),
            ));
            attrs.push(KeyValue::new(
                "gen_ai.response.model",
                d.deployment.upstream_model.clone(),
            ));
            if ctx.routed.as_ref().is_none_or(|r| r.candidate.is_none()) {
                attrs.push(KeyValue::new(
                    "routeiq.route.candidate",
                    d.deployment.upstream_model.clone(),
                ));
            }
        }
        if let Some(u) = &ctx.usage {
            attrs.push(KeyValue::new(
                "gen_ai.usage.input_tokens",
                u.input_tokens as i64,
            ));
            attrs.push(KeyValue::new(
                "gen_ai.usage.output_tokens",
                u.output_tokens as i64,
            ));
        }
        if let Some(c) = ctx.cost() {
            attrs.push(KeyValue::new("routeiq.cost_usd", c));
        }
        if !ctx.skills.is_empty() {
            attrs.push(KeyValue::new("routeiq.skills", ctx.skills.join(",")));
        }
        use opentelemetry::trace::Span;
        if let Some(attempt) = ctx.attempt_span.take() {
            attempt.served(ctx, end);
        }
        span.set_attributes(attrs);
        span.end_with_timestamp(end);
    }
}

/// The request's `routeiq.route` span, open while the request is served. Boxed, as the
/// attempt's span: an SDK span is large, and futures holding one are copied when boxed.
pub struct RouteSpan(Box<opentelemetry_sdk::trace::Span>);

impl Spans {
    /// Opens the GenAI client span of one provider attempt (`{operation} {model}`,
    /// OpenTelemetry's GenAI model-span conventions), a child of the request's span:
    /// retries and fallbacks are its siblings.
    pub fn attempt(&self, route: &RouteSpan, d: &CompiledDeployment, op: Operation) -> AttemptSpan {
        use opentelemetry::trace::Span;
        let operation = operation_name(op);
        let model = &d.deployment.upstream_model;
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.provider.name", provider_name(d.deployment.provider)),
            KeyValue::new("gen_ai.request.model", model.clone()),
            KeyValue::new("routeiq.deployment.id", d.deployment.id.0.clone()),
        ];
        if let Some(t) = &d.target {
            attrs.push(KeyValue::new("server.address", t.host.clone()));
            attrs.push(KeyValue::new("server.port", i64::from(t.port)));
        }
        let builder = self
            .tracer
            .span_builder(format!("{operation} {model}"))
            .with_kind(SpanKind::Client)
            .with_attributes(attrs);
        let parent = Context::new().with_remote_span_context(route.0.span_context().clone());
        AttemptSpan(Box::new(self.tracer.build_with_context(builder, &parent)))
    }
}

/// A provider attempt's span, open while the attempt lasts (for the attempt that serves the
/// request: until the request ends, its answer streamed and its usage known).
pub struct AttemptSpan(Box<opentelemetry_sdk::trace::Span>);

impl AttemptSpan {
    /// The `traceparent` the provider is sent: this span, in its trace, sampled or not as
    /// the SDK's sampler decided.
    pub fn traceparent(&self) -> String {
        use opentelemetry::trace::Span;
        let c = self.0.span_context();
        format!(
            "00-{}-{}-{:02x}",
            c.trace_id(),
            c.span_id(),
            c.trace_flags().to_u8()
        )
    }

    /// Ends a failed attempt: `error.type` is the error's class (and its status).
    pub fn failed(mut self, e: &ApiError) {
        use opentelemetry::trace::{Span, Status};
        self.0
            .set_attribute(KeyValue::new("error.type", e.kind.type_str()));
        self.0.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(e.status),
        ));
        self.0.set_status(Status::error(e.message.clone()));
        self.0.end();
    }

    /// Ends the attempt that served the request, with what it answered.
    fn served(mut self, ctx: &RequestCtx, end: SystemTime) {
        use opentelemetry::trace::Span;
        if let Some(d) = &ctx.deployment {
            self.0.set_attribute(KeyValue::new(
                "gen_ai.response.model",
                d.deployment.upstream_model.clone(),
            ));
        }
        if let Some(u) = &ctx.usage {
            self.0.set_attribute(KeyValue::new(
                "gen_ai.usage.input_tokens",
                u.input_tokens as i64,
            ));
            self.0.set_attribute(KeyValue::new(
                "gen_ai.usage.output_tokens",
                u.output_tokens as i64,
            ));
        }
        // Whatever became of the request after it (a cascade's escalation, a later MCP
        // round) is the request's span's to say.
        self.0.end_with_timestamp(end);
    }
}

/// `gen_ai.operation.name` of an operation: the conventions' names where they have one.
fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Chat { .. } | Operation::Responses { .. } => "chat",
        Operation::Embeddings => "embeddings",
        Operation::Completions { .. } => "text_completion",
        Operation::Rerank => "rerank",
        Operation::Moderations => "moderation",
        Operation::Images => "image_generation",
        Operation::ImageEdits => "image_edit",
        Operation::Transcriptions => "transcription",
        Operation::Translations => "translation",
        Operation::Speech => "speech",
    }
}

/// `gen_ai.provider.name`: the conventions' well-known values (the OpenAI-compatible
/// providers speak OpenAI's API, and are named for it).
fn provider_name(p: ProviderKind) -> &'static str {
    match p {
        ProviderKind::OpenAi => "openai",
        ProviderKind::Azure => "azure.ai.openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::VertexAi => "gcp.vertex_ai",
        ProviderKind::Bedrock => "aws.bedrock",
        ProviderKind::Cohere => "cohere",
        ProviderKind::Mock => "routeiq.mock",
    }
}

impl Spans {
    /// Records an MCP tool call's `execute_tool {tool}` span (OpenTelemetry's GenAI
    /// conventions), in the trace of the request that made it.
    pub fn tool_call(&self, ctx: &RequestCtx, server: &str, tool: &str, seconds: f64, ok: bool) {
        let request_id = &ctx.request_id;
        let end = SystemTime::now();
        let start = end
            .checked_sub(std::time::Duration::from_secs_f64(seconds))
            .unwrap_or(end);
        let attrs = vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", tool.to_owned()),
            KeyValue::new("mcp.server.name", server.to_owned()),
            KeyValue::new("routeiq.request_id", request_id.to_owned()),
            KeyValue::new("routeiq.tool.ok", ok),
        ];
        let builder = self
            .tracer
            .span_builder(format!("execute_tool {tool}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attrs);
        let mut span = self
            .tracer
            .build_with_context(builder, &request_parent(ctx));
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
    }
}

/// Where a span of the request's own work goes: under the request's span when it has one
/// (a chat request), else under the caller's span, else in the trace named by its id.
fn request_parent(ctx: &RequestCtx) -> Context {
    use opentelemetry::trace::Span;
    match (&ctx.span, &ctx.traceparent) {
        (Some(route), _) => Context::new().with_remote_span_context(route.0.span_context().clone()),
        (None, Some(t)) => remote(&t.trace_id, &t.parent_id, &t.flags),
        (None, None) => parent(&ctx.request_id),
    }
}

impl Spans {
    /// Starts an A2A agent call's `invoke_agent {agent}` span (OpenTelemetry's GenAI
    /// conventions): a child of the caller's span when it sent one, else in the request's
    /// trace. Its id goes to the agent in `traceparent`.
    pub fn agent_call(&self, trace: &crate::a2a::Trace, agent: &str) -> AgentSpan {
        let attrs = vec![
            KeyValue::new("gen_ai.operation.name", "invoke_agent"),
            KeyValue::new("gen_ai.agent.name", agent.to_owned()),
            KeyValue::new("routeiq.request_id", trace.request_id.clone()),
        ];
        let builder = self
            .tracer
            .span_builder(format!("invoke_agent {agent}"))
            .with_kind(SpanKind::Client)
            .with_attributes(attrs);
        let parent = match &trace.parent {
            Some(span) => remote(&trace.trace_id, span, &trace.flags),
            None => parent(&trace.request_id),
        };
        AgentSpan(self.tracer.build_with_context(builder, &parent))
    }
}

/// An agent call's span, open while the call lasts.
pub struct AgentSpan(opentelemetry_sdk::trace::Span);

impl AgentSpan {
    /// Its id, 16 hex digits.
    pub fn span_id(&self) -> String {
        use opentelemetry::trace::Span;
        self.0.span_context().span_id().to_string()
    }

    /// Ends it with the status the caller was answered with.
    pub fn end(mut self, status: u16) {
        use opentelemetry::trace::Span;
        self.0.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        self.0.end();
    }
}

/// A remote parent: the caller's span `span_id` in trace `trace_id`, with its `flags` (all
/// hex): a parent-based sampler follows the caller's sampled flag.
fn remote(trace_id: &str, span_id: &str, flags: &str) -> Context {
    let flags = u8::from_str_radix(flags, 16).unwrap_or(1) & TraceFlags::SAMPLED.to_u8();
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex(trace_id).unwrap_or(TraceId::INVALID),
        SpanId::from_hex(span_id).unwrap_or(SpanId::INVALID),
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// A remote parent carrying the request id as trace id, so the span joins that trace.
fn parent(request_id: &str) -> Context {
    let trace_id = TraceId::from_hex(request_id).unwrap_or(TraceId::INVALID);
    let span_id = request_id
        .get(16..)
        .and_then(|s| SpanId::from_hex(s).ok())
        .filter(|s| *s != SpanId::INVALID)
        .unwrap_or(SpanId::from(1u64));
    Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}
