//! OpenTelemetry spans of the data plane. Per request (but the probes and `/metrics`), a
//! `routeiq.route` server span; under it, the steps (`routeiq.auth`, `routeiq.limits`,
//! `routeiq.routing`, `routeiq.cache.lookup`) and one GenAI client span per provider
//! attempt, one `execute_tool {name}` span per MCP tool call and one `invoke_agent {name}`
//! span per A2A agent call. A request joins its caller's trace when it sent a W3C
//! `traceparent` ([`TraceParent`]), else it is the root of the trace named by its id
//! (`x-litellm-call-id`), so feedback collected by call id joins the trace
//! (`routeiq_training traces`). The exporter is the one the three services share
//! (`routeiq_service::telemetry`): OTLP/gRPC in batches off the request path when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, sampled
//! as `OTEL_TRACES_SAMPLER` says.
//!
//! The route span carries the routing decision (strategy, model version, candidate,
//! deployment), tokens, cost and status; prompt text (the query a learned strategy routed
//! on) only with `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`.

use std::time::{Instant, SystemTime};

use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt, TraceId, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use routeiq_service::telemetry::{in_trace, Attributes, OpenSpan, Tracing};

use routeiq_proto::ProviderKind;

use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi};
use crate::handlers::request::RawObject;
use crate::otel_genai::Answer;
use crate::providers::Operation;
use crate::state::CompiledDeployment;
use crate::usage::Usage;

pub use routeiq_service::telemetry::TraceParent;

/// The W3C trace context a call made on a request's behalf carries: a `traceparent`, and
/// the caller's `tracestate` passed on as it came (RouteIQ adds no entry of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub traceparent: String,
    pub tracestate: Option<std::sync::Arc<str>>,
}

impl Outgoing {
    /// Its headers.
    pub fn headers(self) -> impl Iterator<Item = (&'static str, String)> {
        std::iter::once(("traceparent", self.traceparent)).chain(
            self.tracestate
                .map(|s| ("tracestate", s.as_ref().to_owned())),
        )
    }
}

/// A caller's `tracestate` header values, combined as the specification says (joined with
/// commas); `None` when there is none, or it is not printable ASCII of at most 512 bytes
/// (the length the specification asks participants to propagate at least).
pub fn tracestate<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<std::sync::Arc<str>> {
    let mut joined = String::new();
    for v in values {
        let v = std::str::from_utf8(v).ok()?.trim();
        if v.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(v);
    }
    let printable = joined.bytes().all(|b| (0x20..=0x7e).contains(&b));
    (!joined.is_empty() && joined.len() <= 512 && printable).then(|| joined.into())
}

/// The exporter and tracer (the setup the three services share).
pub struct Spans {
    tracing: Tracing,
    /// `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`: spans may carry prompt text
    /// (the query a learned strategy routed on) unless the snapshot's
    /// `litellm_settings.turn_off_message_logging` is on. Off by default.
    capture_content: bool,
}

impl Spans {
    /// Set up when an OTLP endpoint is configured (must run inside a Tokio runtime).
    pub fn from_env() -> Option<Self> {
        let tracing = Tracing::from_env("routeiq-dataplane")?;
        let capture_content = std::env::var("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Some(Self {
            tracing,
            capture_content,
        })
    }

    fn tracer(&self) -> &SdkTracer {
        self.tracing.tracer()
    }

    /// The exporting pipeline (to flush it at shutdown).
    pub fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    /// Opens the request's `routeiq.route` span (a server span; probes and metrics have
    /// none), in the caller's trace when it sent one, else as the root of the trace named
    /// by the request id.
    /// `message_logging`: whether the live settings allow message content in telemetry
    /// (`litellm_settings.turn_off_message_logging` off).
    pub fn start(&self, ctx: &RequestCtx, method: &str, message_logging: bool) -> RouteSpan {
        let now = SystemTime::now();
        let start = now.checked_sub(ctx.start.elapsed()).unwrap_or(now);
        let caller = ctx
            .traceparent
            .as_deref()
            .map(|t| (t, ctx.tracestate.as_deref()));
        let (context, mut span) = self.tracing.start(
            caller,
            TraceId::from_bytes(ctx.id.to_be_bytes()),
            "routeiq.route",
            SpanKind::Server,
            start,
        );
        // Set only when the sampler kept it (no sampler here reads attributes): a dropped
        // span keeps its ids alone, and costs no allocation for its attributes.
        if let Some(s) = &mut span {
            let a = s.attributes();
            a.reserve(ROUTE_ATTRIBUTES_ROOM);
            a.str("http.request.method", method);
            a.str("routeiq.endpoint", ctx.route);
        }
        RouteSpan {
            span,
            context,
            request: Attributes::default(),
            capture: self.capture_content && message_logging,
        }
    }

    /// Notes a sampled chat request's `gen_ai.request.*` parameters (and, with content
    /// capture, its messages) for its attempts' spans.
    pub fn note_request(&self, ctx: &mut RequestCtx, req: &RawObject, client: ClientApi) {
        if let Some(route) = ctx.span.as_mut().filter(|r| r.sampled()) {
            route.request = crate::otel_genai::request_attributes(req, client, route.capture);
        }
    }

    /// Records a step of the request that began at `started` and ends now (authentication,
    /// limits, the routing decision, the cache lookup) as a child of its span.
    pub fn step(&self, route: &RouteSpan, name: &'static str, started: Instant, attrs: Attributes) {
        if !route.sampled() {
            return;
        }
        let end = SystemTime::now();
        let start = end.checked_sub(started.elapsed()).unwrap_or(end);
        self.tracing.child(&route.context, name, start, end, attrs);
    }

    /// Ends the request's `routeiq.route` span (see [`Self::start`]) with what became of
    /// the request.
    pub fn record(&self, ctx: &mut RequestCtx, strategy: &str) {
        let Some(RouteSpan {
            span: Some(mut span),
            capture,
            ..
        }) = ctx.span.take()
        else {
            ctx.attempt_span = None;
            return;
        };
        let end = SystemTime::now();
        let attrs = span.attributes();
        attrs.str("routeiq.request_id", &ctx.request_id);
        attrs.int("http.response.status_code", i64::from(ctx.status));
        attrs.int("routeiq.route.retries", i64::from(ctx.retries));
        attrs.int("routeiq.route.fallbacks", i64::from(ctx.fallbacks));
        if let Some(m) = &ctx.model {
            attrs.str("gen_ai.request.model", m);
        }
        if let Some(u) = &ctx.end_user {
            attrs.str("routeiq.end_user", u);
        }
        match &ctx.routed {
            Some(r) => {
                attrs.str("routeiq.route.strategy", &r.strategy);
                attrs.str(
                    "routeiq.route.version",
                    r.version.as_deref().unwrap_or("fallback"),
                );
                if capture {
                    attrs.str("routeiq.route.query", &r.query);
                }
                if let Some(c) = &r.candidate {
                    attrs.str("routeiq.route.candidate", c);
                }
                if r.sha256.is_some() {
                    attrs.str("routeiq.route.arm", r.arm.name());
                }
                if let Some(s) = r.shadow.as_ref().and_then(|c| c.get()) {
                    attrs.str("routeiq.route.shadow.version", &s.version);
                    attrs.str("routeiq.route.shadow.sha256", &s.sha256);
                    if let Some(c) = &s.candidate {
                        attrs.str("routeiq.route.shadow.candidate", c);
                    }
                }
            }
            None if ctx.deployment.is_some() => {
                attrs.str("routeiq.route.strategy", strategy);
            }
            None => {}
        }
        if let Some(d) = &ctx.deployment {
            attrs.str("routeiq.deployment.id", &d.deployment.id.0);
            attrs.str("gen_ai.response.model", &d.deployment.upstream_model);
            if ctx.routed.as_ref().is_none_or(|r| r.candidate.is_none()) {
                attrs.str("routeiq.route.candidate", &d.deployment.upstream_model);
            }
        }
        if let Some(u) = &ctx.usage {
            attrs.int("gen_ai.usage.input_tokens", u.input_tokens as i64);
            attrs.int("gen_ai.usage.output_tokens", u.output_tokens as i64);
        }
        if let Some(c) = ctx.cost() {
            attrs.float("routeiq.cost_usd", c);
        }
        if !ctx.skills.is_empty() {
            attrs.str("routeiq.skills", &ctx.skills.join(","));
        }
        if let Some(e) = ctx.error_type {
            attrs.str("error.type", e);
        }
        if let Some(attempt) = ctx.attempt_span.take() {
            attempt.served(ctx, end);
        }
        // A server span is an error when the server failed (5xx), not the client.
        if ctx.status >= 500 {
            span.set_status(opentelemetry::trace::Status::error(String::new()));
        }
        span.end(end);
    }
}

/// The room a route span's attributes are given up front: what a routed chat request's take.
const ROUTE_ATTRIBUTES_ROOM: usize = 1024;

/// The room an attempt span's own attributes are given up front, besides the request's.
const ATTEMPT_ATTRIBUTES_ROOM: usize = 768;

/// The request's `routeiq.route` span, open while the request is served: recorded when the
/// sampler kept it, else only its ids.
pub struct RouteSpan {
    span: Option<OpenSpan>,
    /// Its ids and flags (also when it is not recorded).
    context: SpanContext,
    /// The request's GenAI attributes, for each attempt's span ([`Spans::note_request`]).
    request: Attributes,
    /// Whether its spans may carry message content.
    capture: bool,
}

impl RouteSpan {
    /// Whether the sampler kept it: its children are kept with it, or dropped with it (so
    /// nothing is built for them).
    pub fn sampled(&self) -> bool {
        self.span.is_some()
    }

    /// The context a sampled request is served in when log lines carry trace ids (JSON
    /// or OTLP logs): the lines logged while it is served name this span's trace and id.
    pub fn log_context(&self) -> Option<Context> {
        (self.sampled() && routeiq_service::telemetry::logs_carry_traces()).then(|| self.context())
    }

    /// A context whose (remote) span is this one, for its children.
    fn context(&self) -> Context {
        Context::new().with_remote_span_context(self.context.clone())
    }

    /// The `traceparent` header naming this span.
    pub fn header(&self) -> String {
        TraceParent::header(&self.context)
    }

    /// This span as a caller's trace context (for the spans of work done on the request's
    /// behalf that take one, and the usage event's `traceparent`).
    pub fn traceparent(&self) -> TraceParent {
        TraceParent::of(&self.context)
    }
}

impl Spans {
    /// Opens the GenAI client span of one provider attempt (`{operation} {model}`,
    /// OpenTelemetry's GenAI model-span conventions), a child of the request's span:
    /// retries and fallbacks are its siblings.
    pub fn attempt(&self, route: &RouteSpan, d: &CompiledDeployment, op: Operation) -> AttemptSpan {
        let context = self.tracing.child_context(&route.context);
        if !route.sampled() {
            // Dropped with its parent: only its ids are needed (the provider's traceparent).
            return AttemptSpan {
                span: None,
                context,
                answer: None,
            };
        }
        let operation = operation_name(op);
        let model = &d.deployment.upstream_model;
        let mut attrs = Attributes::with_capacity(ATTEMPT_ATTRIBUTES_ROOM + route.request.bytes());
        attrs.str("gen_ai.operation.name", operation);
        attrs.str("gen_ai.provider.name", provider_name(d.deployment.provider));
        attrs.str("gen_ai.request.model", model);
        attrs.str("routeiq.deployment.id", &d.deployment.id.0);
        attrs.append(&route.request);
        if let Operation::Chat { stream: true, .. }
        | Operation::Responses { stream: true }
        | Operation::Completions { stream: true } = op
        {
            attrs.bool("gen_ai.request.stream", true);
        }
        if let Some(t) = &d.target {
            attrs.str("server.address", &t.host);
            attrs.int("server.port", i64::from(t.port));
        }
        let span = self.tracing.open(
            context.clone(),
            &route.context,
            [operation, " ", model].concat(),
            SpanKind::Client,
            SystemTime::now(),
            attrs,
        );
        AttemptSpan {
            context,
            span: Some(span),
            answer: Some(Box::new(Answer::new(route.capture))),
        }
    }
}

/// A provider attempt's span, open while the attempt lasts (for the attempt that serves the
/// request: until the request ends, its answer streamed and its usage known).
pub struct AttemptSpan {
    /// Recorded when its request's span was sampled.
    span: Option<OpenSpan>,
    /// Its ids and flags (also when it is not recorded).
    context: SpanContext,
    /// What the answer says of itself; none when the span is dropped.
    answer: Option<Box<Answer>>,
}

impl AttemptSpan {
    /// Reads a whole answer, in the client's format, for the span.
    pub fn read_body(&mut self, body: &[u8]) {
        if let Some(a) = &mut self.answer {
            a.read_body(body);
        }
    }

    /// Reads a whole answer, in the client's format, for the span, and its usage: one pass
    /// over the body when the span is recorded.
    pub fn read_body_and_usage(&mut self, body: &[u8]) -> Option<Usage> {
        match &mut self.answer {
            Some(a) => a.read_body(body),
            None => crate::usage::from_body(body),
        }
    }

    /// Reads a whole answer already parsed, for the span.
    pub fn read_value(&mut self, v: &serde_json::Value) {
        if let Some(a) = &mut self.answer {
            a.read_value(v);
        }
    }

    /// Reads a stream's events, as sent to the client, for the span.
    pub fn read_events(&mut self, events: &[bytes::Bytes]) {
        if let Some(a) = &mut self.answer {
            a.read_events(events);
        }
    }

    /// The `traceparent` the provider is sent: this span, in its trace, sampled or not as
    /// the SDK's sampler decided.
    pub fn traceparent(&self) -> String {
        TraceParent::header(&self.context)
    }

    /// Ends a failed attempt: `error.type` is the error's class (and its status).
    pub fn failed(self, e: &ApiError) {
        let Some(mut span) = self.span else {
            return;
        };
        let attrs = span.attributes();
        attrs.str("error.type", e.kind.type_str());
        attrs.int("http.response.status_code", i64::from(e.status));
        span.set_status(opentelemetry::trace::Status::error(e.message.clone()));
        span.end(SystemTime::now());
    }

    /// Ends the attempt that served the request, with what it answered.
    fn served(self, ctx: &RequestCtx, end: SystemTime) {
        let (Some(mut span), answer) = (self.span, self.answer) else {
            return;
        };
        let attrs = span.attributes();
        if let Some(d) = &ctx.deployment {
            attrs.str("gen_ai.response.model", &d.deployment.upstream_model);
        }
        if let Some(u) = &ctx.usage {
            attrs.int("gen_ai.usage.input_tokens", u.input_tokens as i64);
            attrs.int("gen_ai.usage.output_tokens", u.output_tokens as i64);
            for (name, n) in [
                (
                    "gen_ai.usage.cache_read.input_tokens",
                    u.cached_input_tokens,
                ),
                (
                    "gen_ai.usage.cache_creation.input_tokens",
                    u.cache_write_input_tokens,
                ),
                ("gen_ai.usage.reasoning.output_tokens", u.reasoning_tokens),
            ] {
                if n > 0 {
                    attrs.int(name, n as i64);
                }
            }
        }
        if let Some(a) = answer {
            a.write_attributes(attrs);
        }
        if let Some(ttft) = ctx.time_to_first_token {
            // A stream's first chunk, from the moment the attempt was sent.
            attrs.float("gen_ai.response.time_to_first_chunk", ttft.as_secs_f64());
        }
        // Whatever became of the request after it (a cascade's escalation, a later MCP
        // round) is the request's span's to say.
        span.end(end);
    }
}

/// `gen_ai.operation.name` of an operation: the conventions' names where they have one.
pub(crate) fn operation_name(op: Operation) -> &'static str {
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
pub(crate) fn provider_name(p: ProviderKind) -> &'static str {
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
    /// Starts an MCP tool call's `execute_tool {tool}` span (OpenTelemetry's GenAI
    /// conventions, with the MCP conventions' client attributes), in the trace of the
    /// request that makes it. Its id goes to the server in the call's
    /// `params._meta.traceparent`, so the server's span is its child.
    pub fn tool_call(&self, ctx: &RequestCtx, server: &str, tool: &str) -> ToolSpan {
        let attrs = vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", tool.to_owned()),
            KeyValue::new("mcp.method.name", "tools/call"),
            KeyValue::new("mcp.server.name", server.to_owned()),
            KeyValue::new("routeiq.request_id", ctx.request_id.clone()),
        ];
        let builder = self
            .tracer()
            .span_builder(format!("execute_tool {tool}"))
            .with_kind(SpanKind::Client)
            .with_attributes(attrs);
        ToolSpan(self.build_for(ctx, builder))
    }
}

/// An MCP tool call's span, open while the call lasts.
pub struct ToolSpan(opentelemetry_sdk::trace::Span);

impl ToolSpan {
    /// The `traceparent` the server is sent: this span, in its trace.
    pub fn traceparent(&self) -> String {
        use opentelemetry::trace::Span;
        TraceParent::header(self.0.span_context())
    }

    /// Ends it: `error` is the JSON-RPC error's code, or `tool_error` for a result with
    /// `isError` (the MCP conventions' `error.type`).
    pub fn end(mut self, ok: bool, error: Option<String>) {
        use opentelemetry::trace::{Span, Status};
        self.0.set_attribute(KeyValue::new("routeiq.tool.ok", ok));
        if let Some(e) = error {
            self.0.set_attribute(KeyValue::new("error.type", e.clone()));
            self.0.set_status(Status::error(e));
        }
        self.0.end();
    }
}

impl Spans {
    /// Builds a span of the request's own work: under the request's span when it has one,
    /// else under the caller's span, else as the root of the trace named by its id.
    fn build_for(
        &self,
        ctx: &RequestCtx,
        builder: opentelemetry::trace::SpanBuilder,
    ) -> opentelemetry_sdk::trace::Span {
        match &ctx.span {
            Some(route) => self.tracer().build_with_context(builder, &route.context()),
            None => self.build_under(
                ctx.traceparent.as_deref(),
                ctx.tracestate.as_deref(),
                &ctx.request_id,
                builder,
            ),
        }
    }

    /// Builds a span under `caller`'s span, else as the root of the trace named by
    /// `request_id` (a random one when that is not a trace id).
    fn build_under(
        &self,
        caller: Option<&TraceParent>,
        tracestate: Option<&str>,
        request_id: &str,
        builder: opentelemetry::trace::SpanBuilder,
    ) -> opentelemetry_sdk::trace::Span {
        match caller {
            Some(t) => self
                .tracer()
                .build_with_context(builder, &t.context_with_state(tracestate)),
            None => in_trace(request_id, || {
                self.tracer().build_with_context(builder, &Context::new())
            }),
        }
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
            .tracer()
            .span_builder(format!("invoke_agent {agent}"))
            .with_kind(SpanKind::Client)
            .with_attributes(attrs);
        let caller = trace.parent.as_ref().map(|span| TraceParent {
            trace_id: trace.trace_id.clone(),
            parent_id: span.clone(),
            flags: trace.flags.clone(),
        });
        AgentSpan(self.build_under(caller.as_ref(), None, &trace.request_id, builder))
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

    /// Its trace flags, 2 hex digits (`01`: sampled).
    pub fn flags(&self) -> String {
        use opentelemetry::trace::Span;
        format!("{:02x}", self.0.span_context().trace_flags().to_u8())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_tracestate_is_passed_on_only_when_it_is_one() {
        let one = |v: &[&str]| tracestate(v.iter().map(|s| s.as_bytes()));
        assert_eq!(
            one(&["rojo=00f067aa0ba902b7"]).as_deref(),
            Some("rojo=00f067aa0ba902b7")
        );
        // Several header lines are one list.
        assert_eq!(one(&["a=1", " b=2 ", ""]).as_deref(), Some("a=1,b=2"));
        assert_eq!(one(&[]), None);
        assert_eq!(one(&[""]), None);
        let long = format!("v={}", "x".repeat(511));
        assert_eq!(one(&[&long]), None, "over 512 bytes");
        assert_eq!(one(&["v=caf\u{e9}"]), None);
        assert_eq!(one(&["v=\u{7}"]), None);
        assert_eq!(tracestate([b"v=\xff".as_slice()].into_iter()), None);
        let out = Outgoing {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: one(&["a=1"]),
        };
        let headers: Vec<_> = out.clone().headers().collect();
        assert_eq!(
            headers,
            [
                ("traceparent", out.traceparent.clone()),
                ("tracestate", "a=1".to_owned())
            ]
        );
        let bare = Outgoing {
            tracestate: None,
            ..out
        };
        assert_eq!(bare.headers().count(), 1);
    }
}

pin_project_lite::pin_project! {
    /// A future polled with an OpenTelemetry context attached, when it has one (lines
    /// logged meanwhile carry its trace); without one, the future alone, at no cost.
    pub struct InContext<F> {
        #[pin]
        inner: F,
        cx: Option<Context>,
    }
}

impl<F> InContext<F> {
    pub fn new(inner: F, cx: Option<Context>) -> Self {
        Self { inner, cx }
    }
}

impl<F: std::future::Future> std::future::Future for InContext<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _attached = this.cx.as_ref().map(|cx| cx.clone().attach());
        this.inner.poll(task)
    }
}
