//! Telemetry the three binaries share: their logs (text or JSON lines, and OTLP), the OTLP
//! span and metric exporters set up from the standard `OTEL_*` variables, W3C trace
//! context, and a server span per HTTP or gRPC call ([`ServerSpans`]).

mod logs;
mod otlp;
mod span_batch;
mod span_encode;
mod span_export;

pub use logs::{export_logs, exporting_logs, init_logging, logs_carry_traces};
pub use span_encode::Attributes;

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::context::FutureExt;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider, ShouldSample,
};

/// The OTLP span exporter and the tracer of one service. Spans are sent in batches by a task
/// on the Tokio runtime this was built on, never on a request's path; the sampler is the
/// one `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` name (parent-based, always on by
/// default), and `OTEL_BSP_*` tune the batches.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Where the spans recorded without the SDK's span objects go ([`Self::start`],
    /// [`Self::open`], [`Self::child`]).
    recorder: Arc<Recorder>,
    /// The provider's sampler (`OTEL_TRACES_SAMPLER`), which decides on those spans too.
    sampler: Box<dyn ShouldSample>,
    ids: RandomIdGenerator,
}

/// The provider's span processor, with what the spans recorded without the SDK's span
/// objects take from the provider: its tracer's scope and its span limit.
#[derive(Debug)]
struct Recorder {
    batch: span_batch::SpanBatcher,
    scope: opentelemetry::InstrumentationScope,
    /// The most attributes a span keeps (`OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`).
    max_attributes: usize,
}

impl Recorder {
    /// Queues a finished span for export, encoded (when it is sampled, as the SDK's
    /// processor would).
    fn push(&self, record: &span_encode::Record) {
        if record.context.is_sampled() {
            self.batch.push(&self.scope, |out| {
                span_encode::put_record(record, self.max_attributes, out);
            });
        }
    }
}

impl Tracing {
    /// Set up when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is
    /// (and `OTEL_SDK_DISABLED` is not `true`); must run inside a Tokio runtime.
    /// `OTEL_SERVICE_NAME` overrides `service`.
    pub fn from_env(service: &'static str) -> Option<Self> {
        if !exporting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER") {
            return None;
        }
        let exporter = match span_export::OtlpSpanExporter::from_env() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "OTLP span exporter not set up; no traces");
                return None;
            }
        };
        let batch = span_batch::SpanBatcher::start(exporter, span_batch::Batching::from_env());
        // The SDK's reading of `OTEL_TRACES_SAMPLER` and `OTEL_SPAN_*_LIMIT`, shared by the
        // provider's spans and the ones recorded here.
        let tracing = Self::new(batch, opentelemetry_sdk::trace::Config::default(), service);
        tracing::info!("exporting spans over OTLP");
        Some(tracing)
    }

    fn new(
        batch: span_batch::SpanBatcher,
        config: opentelemetry_sdk::trace::Config,
        service: &'static str,
    ) -> Self {
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch.clone())
            .with_id_generator(RequestTraceIds::default())
            .with_sampler(config.sampler.clone())
            .with_span_limits(config.span_limits)
            .with_resource(resource(service))
            .build();
        let scope = opentelemetry::InstrumentationScope::builder("routeiq").build();
        let tracer = provider.tracer_with_scope(scope.clone());
        Self {
            provider,
            tracer,
            recorder: Arc::new(Recorder {
                batch,
                scope,
                max_attributes: usize::try_from(config.span_limits.max_attributes_per_span)
                    .unwrap_or(usize::MAX),
            }),
            sampler: config.sampler,
            ids: RandomIdGenerator::default(),
        }
    }

    /// Starts the span of a request's own work (a server span), without the SDK's span
    /// objects: a child of the caller's span when it sent a `traceparent` (`caller`, with
    /// its `tracestate`), else the root of trace `trace_id` (the one the request's id names;
    /// a random one when it is not valid). The sampler decides on it as the SDK's tracer
    /// would. Its ids, and the open span when the sampler kept it: a dropped span costs its
    /// ids only.
    pub fn start(
        &self,
        caller: Option<(&TraceParent, Option<&str>)>,
        trace_id: TraceId,
        name: &'static str,
        kind: SpanKind,
        start: std::time::SystemTime,
    ) -> (SpanContext, Option<OpenSpan>) {
        use opentelemetry_sdk::trace::SamplingDecision;
        let parent_cx = caller.map_or_else(Context::new, |(t, state)| t.context_with_state(state));
        let parent = parent_cx.span();
        let psc = parent.span_context();
        let trace_id = if psc.is_valid() {
            psc.trace_id()
        } else if trace_id != TraceId::INVALID {
            trace_id
        } else {
            self.ids.new_trace_id()
        };
        let sampling =
            self.sampler
                .should_sample(Some(&parent_cx), trace_id, name, &kind, &[], &[]);
        let flags = match sampling.decision {
            SamplingDecision::RecordAndSample => psc.trace_flags().with_sampled(true),
            // Recorded but not sampled: the processor would drop it at its end.
            SamplingDecision::RecordOnly => psc.trace_flags().with_sampled(false),
            SamplingDecision::Drop => TraceFlags::default(),
        };
        let context = SpanContext::new(
            trace_id,
            self.ids.new_span_id(),
            flags,
            false,
            sampling.trace_state,
        );
        let open = context.is_sampled().then(|| {
            let mut attributes = Attributes::default();
            for kv in &sampling.attributes {
                attributes.key_value(kv);
            }
            self.open_span(span_encode::Record {
                context: context.clone(),
                parent: psc.span_id(),
                parent_remote: psc.is_remote(),
                kind,
                name: name.into(),
                start,
                end: start,
                attributes,
                status: Status::Unset,
            })
        });
        (context, open)
    }

    /// Starts recording a span under a sampled `parent` whose end is not known yet (a
    /// provider attempt), without the SDK's span objects. `context` is its ids
    /// ([`Self::child_context`] of `parent`).
    pub fn open(
        &self,
        context: SpanContext,
        parent: &SpanContext,
        name: impl Into<std::borrow::Cow<'static, str>>,
        kind: SpanKind,
        start: std::time::SystemTime,
        attributes: Attributes,
    ) -> OpenSpan {
        self.open_span(span_encode::Record {
            context,
            parent: parent.span_id(),
            parent_remote: false,
            kind,
            name: name.into(),
            start,
            end: start,
            attributes,
            status: Status::Unset,
        })
    }

    fn open_span(&self, record: span_encode::Record) -> OpenSpan {
        OpenSpan {
            record: Box::new(record),
            recorder: self.recorder.clone(),
            ended: false,
        }
    }

    /// Exports a finished span under `parent` whose start and end are known (a step of a
    /// request), encoded straight into the batch: none of the SDK's span objects, context
    /// or processor calls, which cost several times the span itself. Nothing for an
    /// unsampled parent.
    pub fn child(
        &self,
        parent: &SpanContext,
        name: &'static str,
        start: std::time::SystemTime,
        end: std::time::SystemTime,
        attributes: Attributes,
    ) {
        if !parent.is_sampled() {
            return;
        }
        self.recorder.push(&span_encode::Record {
            context: self.child_context(parent),
            parent: parent.span_id(),
            parent_remote: false,
            kind: SpanKind::Internal,
            name: name.into(),
            start,
            end,
            attributes,
            status: Status::Unset,
        });
    }

    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// The ids of a new span under `parent`, in its trace, with its flags and state: for a
    /// span built without the SDK's span objects ([`Self::open`]), or not recorded at all
    /// but named in a `traceparent` (an unsampled request's call to a provider).
    pub fn child_context(&self, parent: &SpanContext) -> SpanContext {
        SpanContext::new(
            parent.trace_id(),
            self.ids.new_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    }

    /// Sends the spans still queued (at shutdown; at most 5 s, `SpanBatcher::force_flush`).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::debug!(error = %e, "spans not flushed");
        }
    }
}

/// A sampled span recorded without the SDK's span objects ([`Tracing::start`],
/// [`Tracing::open`]): its fields and its attributes, encoded as they are set; the span is
/// encoded into its batch when it ends. One dropped before it was ended ends then, as the
/// SDK's spans do (an attempt whose request was abandoned).
pub struct OpenSpan {
    record: Box<span_encode::Record>,
    recorder: Arc<Recorder>,
    ended: bool,
}

impl OpenSpan {
    /// Its attributes, to set more. Past the span limit (`OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`)
    /// the ones set first are kept.
    pub fn attributes(&mut self) -> &mut Attributes {
        &mut self.record.attributes
    }

    pub fn set_status(&mut self, status: Status) {
        self.record.status = status;
    }

    /// Ends it at `end` and queues it for export.
    pub fn end(mut self, end: std::time::SystemTime) {
        self.finish(end);
    }

    fn finish(&mut self, end: std::time::SystemTime) {
        if !std::mem::replace(&mut self.ended, true) {
            self.record.end = end;
            self.recorder.push(&self.record);
        }
    }
}

impl Drop for OpenSpan {
    fn drop(&mut self) {
        if !self.ended {
            self.finish(std::time::SystemTime::now());
        }
    }
}

/// Whether a signal is exported: an OTLP endpoint is set (the signal's own, or the common
/// one), its `OTEL_*_EXPORTER` is not `none`, and `OTEL_SDK_DISABLED` is not `true`.
fn exporting(endpoint: &str, exporter: &str) -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let is = |k: &str, v: &str| std::env::var(k).is_ok_and(|x| x.trim().eq_ignore_ascii_case(v));
    !is("OTEL_SDK_DISABLED", "true")
        && !is(exporter, "none")
        && (set(endpoint) || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The service's resource: `OTEL_SERVICE_NAME` (else `service`) and its version.
fn resource(service: &'static str) -> opentelemetry_sdk::Resource {
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| service.to_owned());
    opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The OTLP metric exporter of one service: its instruments are read and sent every
/// `OTEL_METRIC_EXPORT_INTERVAL` (60 s by default) by a task on the Tokio runtime this was
/// built on; recording a measurement never waits on the collector.
pub struct OtlpMetrics {
    provider: opentelemetry_sdk::metrics::SdkMeterProvider,
}

impl OtlpMetrics {
    /// Set up when `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is
    /// (and neither `OTEL_METRICS_EXPORTER=none` nor `OTEL_SDK_DISABLED=true`); must run
    /// inside a Tokio runtime. Temporality as
    /// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` says (cumulative by default).
    pub fn from_env(service: &'static str) -> Option<Self> {
        if !exporting(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_METRICS_EXPORTER",
        ) {
            return None;
        }
        let exporter = match otlp::metric_exporter() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "OTLP metric exporter not set up; no OTLP metrics");
                return None;
            }
        };
        let reader =
            opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .build();
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource(service))
            .build();
        tracing::info!("exporting metrics over OTLP");
        Some(Self { provider })
    }

    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        opentelemetry::metrics::MeterProvider::meter(&self.provider, "routeiq")
    }

    /// Sends the measurements not yet exported (at shutdown), waiting at most 5 s.
    pub fn flush(&self) {
        let provider = self.provider.clone();
        flush_within("metrics", move || provider.force_flush());
    }
}

/// At a service's exit: sends the spans, OTLP metrics and log records still queued, side
/// by side (each waits at most 5 s for a collector that hangs).
pub fn flush_all(tracing: Option<&Tracing>, metrics: Option<&OtlpMetrics>) {
    std::thread::scope(|scope| {
        if let Some(t) = tracing {
            scope.spawn(|| t.flush());
        }
        if let Some(m) = metrics {
            scope.spawn(|| m.flush());
        }
        scope.spawn(logs::flush_logs);
    });
}

/// Runs an SDK `force_flush` at shutdown on a thread of its own and waits for it at most
/// 5 s: the SDK's flush waits for the export, which a hung collector would hold up.
pub(crate) fn flush_within(
    what: &'static str,
    flush: impl FnOnce() -> opentelemetry_sdk::error::OTelSdkResult + Send + 'static,
) {
    let (done, wait) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = done.send(flush());
    });
    match wait.recv_timeout(std::time::Duration::from_secs(5)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "{what} not flushed"),
        Err(_) => tracing::debug!("{what} not flushed within 5 s"),
    }
}

thread_local! {
    /// The trace id the next root span built on this thread takes ([`in_trace`]).
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, except that a root span built inside [`in_trace`] takes the trace id it
/// names: a request without a caller's trace gets its call id as trace id, and the sampler
/// still decides on it as on any new trace.
#[derive(Debug, Default)]
struct RequestTraceIds(RandomIdGenerator);

impl IdGenerator for RequestTraceIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .take()
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Runs `build`, in which a root span built on `tracer` is in trace `id` (32 hex digits;
/// a random trace when it is not a valid trace id).
pub fn in_trace<T>(id: &str, build: impl FnOnce() -> T) -> T {
    /// Clears the id however `build` ends, so that it never names another span's trace.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            NEXT_TRACE_ID.set(None);
        }
    }
    NEXT_TRACE_ID.set(
        TraceId::from_hex(id)
            .ok()
            .filter(|t| *t != TraceId::INVALID),
    );
    let _clear = Clear;
    build()
}

/// A W3C `traceparent`: the trace, the span that is the parent of the receiver's, and the
/// flags, lowercase hex each.
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

    /// `span` as the parent of a receiver's span.
    pub fn of(span: &SpanContext) -> Self {
        Self {
            trace_id: hex::encode(span.trace_id().to_bytes()),
            parent_id: hex::encode(span.span_id().to_bytes()),
            flags: hex::encode([span.trace_flags().to_u8()]),
        }
    }

    /// The header naming `span` (version 00). Written without the formatting machinery: it
    /// goes out with every provider request, and that cost more than the rest of it.
    pub fn header(span: &SpanContext) -> String {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        // The slices are twice their bytes' length: encoding cannot fail.
        let _ = hex::encode_to_slice(span.trace_id().to_bytes(), &mut out[3..35]);
        let _ = hex::encode_to_slice(span.span_id().to_bytes(), &mut out[36..52]);
        let _ = hex::encode_to_slice([span.trace_flags().to_u8()], &mut out[53..55]);
        // Only ASCII was written.
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }

    /// A context whose remote span is this one: spans built in it are its children, and a
    /// parent-based sampler follows its sampled flag.
    pub fn context(&self) -> Context {
        self.context_with_state(None)
    }

    /// [`Self::context`] with the caller's `tracestate`, which the spans built in it carry
    /// (dropped when it is not a valid one).
    pub fn context_with_state(&self, tracestate: Option<&str>) -> Context {
        let flags = u8::from_str_radix(&self.flags, 16).unwrap_or(1) & TraceFlags::SAMPLED.to_u8();
        let state = tracestate
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex(&self.trace_id).unwrap_or(TraceId::INVALID),
            SpanId::from_hex(&self.parent_id).unwrap_or(SpanId::INVALID),
            TraceFlags::new(flags),
            true,
            state,
        ))
    }
}

/// The header's value (version 00).
impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

/// The context a `traceparent` value names, or an empty one (a new trace) when there is
/// none or it is not valid.
fn context_of(traceparent: Option<&str>) -> Context {
    traceparent
        .and_then(TraceParent::parse)
        .map_or_else(Context::new, |t| t.context())
}

/// The `traceparent` naming the current context's span (the server span of the call being
/// served, see [`ServerSpans`]), for a call made on its behalf; `None` outside any span.
pub fn current_traceparent() -> Option<String> {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| TraceParent::header(sc))
}

/// The context of `headers`' `traceparent` (and `tracestate`), or an empty one (a new
/// trace).
fn caller_context(headers: &http::HeaderMap) -> Context {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    text("traceparent")
        .and_then(TraceParent::parse)
        .map_or_else(Context::new, |t| t.context_with_state(text("tracestate")))
}

/// Which protocol a server speaks, for its spans' names and attributes.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    /// `{method} {route}`, the route being axum's matched path (use as a route layer).
    Http,
    /// `{service}/{method}`, OpenTelemetry's RPC conventions.
    Grpc,
}

/// A tower layer that serves every call inside a server span: a child of the caller's
/// `traceparent`, ended with the call's status. The span is the current OpenTelemetry
/// context while the call is served, so the calls it makes ([`current_traceparent`]) and
/// the spans it starts join the trace. Without a tracer, calls pass through.
#[derive(Clone)]
pub struct ServerSpans {
    tracer: Option<SdkTracer>,
    protocol: Protocol,
}

impl ServerSpans {
    pub fn new(tracing: Option<&Tracing>, protocol: Protocol) -> Self {
        Self {
            tracer: tracing.map(|t| t.tracer.clone()),
            protocol,
        }
    }
}

impl<S> tower_layer::Layer<S> for ServerSpans {
    type Service = ServerSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerSpan {
            inner,
            tracer: self.tracer.clone(),
            protocol: self.protocol,
        }
    }
}

#[derive(Clone)]
pub struct ServerSpan<S> {
    inner: S,
    tracer: Option<SdkTracer>,
    protocol: Protocol,
}

type Boxed<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower_service::Service<http::Request<B>> for ServerSpan<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Boxed<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Probes are not traced (a readiness probe would make a trace every few seconds).
        let probe = req.uri().path().starts_with("/health/");
        let Some(tracer) = self.tracer.as_ref().filter(|_| !probe) else {
            return Box::pin(self.inner.call(req));
        };
        let (name, mut attrs) = match self.protocol {
            Protocol::Http => http_span(&req),
            Protocol::Grpc => grpc_span(&req),
        };
        let parent = caller_context(req.headers());
        attrs.shrink_to_fit();
        let builder = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attrs);
        let span = tracer.build_with_context(builder, &parent);
        let cx = parent.with_span(span);
        let protocol = self.protocol;
        let served = self.inner.call(req).with_context(cx.clone());
        Box::pin(async move {
            let out = served.await;
            let span = cx.span();
            match &out {
                Ok(res) => finish(&span, protocol, res),
                Err(_) => span.set_status(Status::error("the call failed")),
            }
            span.end();
            out
        })
    }
}

fn http_span<B>(req: &http::Request<B>) -> (String, Vec<KeyValue>) {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut attrs = vec![KeyValue::new("http.request.method", method.clone())];
    let name = match route {
        Some(r) => {
            attrs.push(KeyValue::new("http.route", r.clone()));
            format!("{method} {r}")
        }
        None => method,
    };
    (name, attrs)
}

fn grpc_span<B>(req: &http::Request<B>) -> (String, Vec<KeyValue>) {
    let path = req.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let attrs = vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
    ];
    (path.to_owned(), attrs)
}

/// Ends a served call's span with its status: the HTTP status (5xx an error), or the gRPC
/// status of a trailers-only answer (an error; a successful call's status comes in the
/// trailers, which the layer does not wait for, and is `0`).
fn finish<R>(
    span: &opentelemetry::trace::SpanRef<'_>,
    protocol: Protocol,
    res: &http::Response<R>,
) {
    match protocol {
        Protocol::Http => {
            let status = res.status().as_u16();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(String::new()));
            }
        }
        Protocol::Grpc => {
            let code = res
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", code));
            // Server errors, as the RPC conventions count them: UNKNOWN, DEADLINE_EXCEEDED,
            // UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
            if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                span.set_attribute(KeyValue::new("error.type", code.to_string()));
                span.set_status(Status::error(String::new()));
            }
        }
    }
}

/// A span of work done for a message received from NATS (a consumer span): a child of the
/// `traceparent` the message carries (a new trace when it is not a valid one). End it with
/// `Span::end`.
pub fn consumer_span(
    tracer: &SdkTracer,
    name: &'static str,
    traceparent: &str,
    attrs: Vec<KeyValue>,
) -> opentelemetry_sdk::trace::Span {
    let parent = context_of(Some(traceparent));
    let builder = tracer
        .span_builder(name)
        .with_kind(SpanKind::Consumer)
        .with_attributes(attrs);
    tracer.build_with_context(builder, &parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::Span;

    #[test]
    fn traceparent_round_trips() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(v).unwrap();
        let cx = t.context();
        assert_eq!(TraceParent::header(cx.span().span_context()), v);
        assert_eq!(TraceParent::of(cx.span().span_context()), t);
        // The hand-written hex is the SDK's, for ids of every digit and unsampled flags.
        let sc = SpanContext::new(
            TraceId::from_hex("0123456789abcdeffedcba9876543210").unwrap(),
            SpanId::from_hex("a0b1c2d3e4f50617").unwrap(),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        assert_eq!(
            TraceParent::header(&sc),
            format!("00-{}-{}-00", sc.trace_id(), sc.span_id())
        );
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(TraceParent::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        )
        .is_some());
    }

    /// A tracer whose spans stay queued (its exporter's collector is never reached in the
    /// test), with `sampler` and at most 4 attributes a span.
    fn queued_tracing(sampler: opentelemetry_sdk::trace::Sampler) -> Tracing {
        let exporter = span_export::OtlpSpanExporter::from_env().unwrap();
        let batching = span_batch::Batching {
            delay: std::time::Duration::from_secs(3600),
            max_queue: 100,
            max_batch: 100,
            timeout: std::time::Duration::from_secs(1),
        };
        let mut config = opentelemetry_sdk::trace::Config::default();
        config.sampler = Box::new(sampler);
        config.span_limits.max_attributes_per_span = 4;
        Tracing::new(
            span_batch::SpanBatcher::start(exporter, batching),
            config,
            "t",
        )
    }

    // On more than one thread: dropping a tracer waits for its export task's answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spans_recorded_without_the_sdks_objects_follow_its_sampler_and_limits() {
        use opentelemetry_sdk::trace::Sampler;
        use std::time::{Duration, SystemTime};
        let named = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let caller =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let unsampled = TraceParent {
            flags: "00".into(),
            ..caller.clone()
        };
        let start = SystemTime::now() - Duration::from_millis(5);

        // Sampling nothing new: a request's own trace is dropped (its ids still name it),
        // a caller's sampled trace is followed with its tracestate, an unsampled one not.
        let t = queued_tracing(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            0.0,
        ))));
        let (dropped, open) = t.start(None, named, "root", SpanKind::Server, start);
        assert!(open.is_none() && !dropped.is_sampled());
        assert_eq!(dropped.trace_id(), named);
        assert!(dropped.span_id() != SpanId::INVALID);
        let (off, open) = t.start(
            Some((&unsampled, None)),
            named,
            "r",
            SpanKind::Server,
            start,
        );
        assert!(open.is_none() && !off.is_sampled());
        assert_eq!(hex::encode(off.trace_id().to_bytes()), caller.trace_id);
        let (joined, open) = t.start(
            Some((&caller, Some("rojo=00f067aa0ba902b7"))),
            named,
            "routeiq.route",
            SpanKind::Server,
            start,
        );
        let mut route = open.expect("the caller's sampled trace is followed");
        assert!(joined.is_sampled());
        assert_eq!(joined.trace_state().header(), "rojo=00f067aa0ba902b7");
        for i in 0..6 {
            route.attributes().int(&format!("a{i}"), i);
        }
        route.set_status(Status::error("boom"));
        let end = SystemTime::now();
        route.end(end);

        // A child with no end is ended when dropped (an abandoned attempt).
        let child = t.child_context(&joined);
        drop(t.open(
            child.clone(),
            &joined,
            "chat m",
            SpanKind::Client,
            start,
            Attributes::default(),
        ));
        // A step, ended when it is recorded.
        let mut step = Attributes::default();
        step.str("routeiq.team_id", "t1");
        t.child(&joined, "routeiq.auth", start, end, step);

        let nanos =
            |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let spans = t.recorder.batch.take_queued();
        assert_eq!(spans.len(), 3, "nothing is queued for a dropped span");
        let (route, attempt, auth) = (&spans[0], &spans[1], &spans[2]);
        assert_eq!(route.trace_id, joined.trace_id().to_bytes());
        assert_eq!(route.span_id, joined.span_id().to_bytes());
        assert_eq!(route.trace_state, "rojo=00f067aa0ba902b7");
        assert_eq!(hex::encode(&route.parent_span_id), caller.parent_id);
        // Sampled, the parent's remoteness known, and remote.
        assert_eq!(route.flags, 0x301);
        assert_eq!((route.name.as_str(), route.kind), ("routeiq.route", 2));
        assert_eq!(
            (route.start_time_unix_nano, route.end_time_unix_nano),
            (nanos(start), nanos(end))
        );
        let status = route.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "boom"));
        // The SDK's limit: the first attributes are kept, the rest counted.
        let kept: Vec<_> = route.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(kept, ["a0", "a1", "a2", "a3"]);
        assert_eq!(route.dropped_attributes_count, 2);
        assert_eq!(attempt.span_id, child.span_id().to_bytes());
        assert_eq!(attempt.parent_span_id, joined.span_id().to_bytes());
        assert_eq!(attempt.flags, 0x101, "a local parent");
        assert_eq!(attempt.trace_state, "rojo=00f067aa0ba902b7");
        assert_eq!((attempt.name.as_str(), attempt.kind), ("chat m", 3));
        assert!(attempt.end_time_unix_nano > nanos(start));
        assert_eq!((auth.name.as_str(), auth.kind), ("routeiq.auth", 1));
        assert_eq!(auth.parent_span_id, joined.span_id().to_bytes());
        assert_eq!(auth.end_time_unix_nano, nanos(end));
        assert_eq!(auth.attributes.len(), 1);
        assert_eq!(auth.attributes[0].key, "routeiq.team_id");

        // Sampling everything: a request without a caller's trace is the root of its own.
        let t = queued_tracing(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let (own, open) = t.start(None, named, "routeiq.route", SpanKind::Server, start);
        assert!(own.is_sampled() && own.trace_id() == named);
        open.unwrap().end(SystemTime::now());
        let (random, open) = t.start(None, TraceId::INVALID, "r", SpanKind::Server, start);
        assert!(random.trace_id() != TraceId::INVALID && random.trace_id() != named);
        drop(open);
        let spans = t.recorder.batch.take_queued();
        assert_eq!(spans.len(), 2);
        assert!(spans[0].parent_span_id.is_empty());
        assert_eq!(spans[0].flags, 0x101, "a root: no remote parent");
    }

    #[test]
    fn a_root_span_takes_the_named_trace_and_the_samplers_decision() {
        use opentelemetry_sdk::trace::Sampler;
        let id = "0af7651916cd43dd8448eb211c80319c";
        let build = |sampler: Sampler| {
            let provider = SdkTracerProvider::builder()
                .with_id_generator(RequestTraceIds::default())
                .with_sampler(sampler)
                .build();
            let tracer = provider.tracer("t");
            let span = in_trace(id, || tracer.start("root"));
            let sc = span.span_context().clone();
            // Only the span built inside `in_trace` takes the id.
            let other = tracer.start("other");
            (sc, other.span_context().trace_id())
        };
        let (on, other) = build(Sampler::AlwaysOn);
        assert_eq!(on.trace_id().to_string(), id);
        assert!(on.is_sampled());
        assert_ne!(other.to_string(), id);
        let (off, _) = build(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            0.0,
        ))));
        assert_eq!(off.trace_id().to_string(), id);
        assert!(!off.is_sampled(), "a ratio of 0 samples no new trace");
        // Not a trace id: a random one.
        let provider = SdkTracerProvider::builder()
            .with_id_generator(RequestTraceIds::default())
            .build();
        let span = in_trace("call-1", || provider.tracer("t").start("root"));
        assert!(span.span_context().is_valid());
    }
}
