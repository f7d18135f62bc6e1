//! The services' logs: to stderr as text or JSON lines, and as OTLP log records when an
//! OTLP endpoint is set. A line logged while a traced call is served (the current
//! OpenTelemetry context holds a span) carries that span's `trace_id` and `span_id`, in
//! JSON and in OTLP.

use std::fmt;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Logs to stderr with the `ROUTEIQ_LOG` filter (`default` when it is unset). As JSON lines
/// when `ROUTEIQ_LOG_FORMAT=json` (or LiteLLM's `JSON_LOGS=true`), one object per event
/// with its fields at the top level; otherwise as text, in colour only on a terminal.
/// Events also go to OTLP once [`export_logs`] has set an exporter up.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROUTEIQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let stderr = if json_logs() {
        stderr.event_format(JsonLines).boxed()
    } else {
        stderr
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(OtlpLogs)
        .init();
}

/// Whether log lines show trace ids: as JSON lines, or exported over OTLP (set up by
/// [`init_logging`] and [`export_logs`]; a service attaches a call's trace to the lines
/// logged while it serves the call only then).
pub fn logs_carry_traces() -> bool {
    static JSON: OnceLock<bool> = OnceLock::new();
    *JSON.get_or_init(json_logs) || exporting_logs()
}

fn json_logs() -> bool {
    let set = |k: &str, yes: &[&str]| {
        std::env::var(k).is_ok_and(|v| yes.iter().any(|y| v.trim().eq_ignore_ascii_case(y)))
    };
    set("ROUTEIQ_LOG_FORMAT", &["json"]) || set("JSON_LOGS", &["true", "1"])
}

/// The ids of the span of the current OpenTelemetry context, lowercase hex, when it has a
/// valid one.
fn current_ids() -> Option<(String, String)> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// One JSON object per event: `timestamp`, `level`, `target`, the event's fields (its text
/// as `message`) and, unless the event names its own, the current span's `trace_id` and
/// `span_id`.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(time));
        line.insert("level".into(), Value::String(meta.level().as_str().into()));
        line.insert("target".into(), Value::String(meta.target().into()));
        event.record(&mut Fields(&mut line));
        if !line.contains_key("trace_id") {
            if let Some((trace_id, span_id)) = current_ids() {
                line.insert("trace_id".into(), Value::String(trace_id));
                line.insert("span_id".into(), Value::String(span_id));
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields as JSON values: numbers and booleans as such, the rest as text.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Not a JSON number (NaN, infinities): as text.
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, v);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

type Bridge = OpenTelemetryTracingBridge<SdkLoggerProvider, SdkLogger>;

/// The OTLP log bridge, once [`export_logs`] has built it.
static BRIDGE: OnceLock<(SdkLoggerProvider, Bridge)> = OnceLock::new();

/// Events of the exporters' own transport are not exported: each export would log more
/// to export.
const TRANSPORT_TARGETS: &[&str] = &["opentelemetry", "hyper", "h2", "tonic", "tower", "rustls"];

/// Hands events to the OTLP log bridge once there is one; before that, and when OTLP logs
/// are off, it does nothing.
struct OtlpLogs;

impl<S> Layer<S> for OtlpLogs
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let Some((_, bridge)) = BRIDGE.get() else {
            return;
        };
        let target = event.metadata().target();
        if TRANSPORT_TARGETS.iter().any(|t| target.starts_with(t)) {
            return;
        }
        bridge.on_event(event, ctx);
    }
}

/// Exports the service's log events (those the `ROUTEIQ_LOG` filter lets through) as OTLP
/// log records, in batches sent by a task on the Tokio runtime this runs in, when
/// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and neither
/// `OTEL_LOGS_EXPORTER=none` nor `OTEL_SDK_DISABLED=true`). Each record carries the trace
/// and span of the current OpenTelemetry context. Once per process; a second call does
/// nothing.
pub fn export_logs(service: &'static str) {
    if BRIDGE.get().is_some()
        || !super::exporting("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_LOGS_EXPORTER")
    {
        return;
    }
    let exporter = match super::otlp::log_exporter() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "OTLP log exporter not set up; no OTLP logs");
            return;
        }
    };
    let batch =
        opentelemetry_sdk::logs::log_processor_with_async_runtime::BatchLogProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let provider = SdkLoggerProvider::builder()
        .with_log_processor(batch)
        .with_resource(super::resource(service))
        .build();
    let bridge = OpenTelemetryTracingBridge::new(&provider);
    if BRIDGE.set((provider, bridge)).is_ok() {
        tracing::info!("exporting logs over OTLP");
    }
}

/// Whether log events go out over OTLP ([`export_logs`] set an exporter up).
pub fn exporting_logs() -> bool {
    BRIDGE.get().is_some()
}

/// Sends the log records still queued (at shutdown), waiting at most 5 s.
pub(crate) fn flush_logs() {
    if let Some((provider, _)) = BRIDGE.get() {
        let provider = provider.clone();
        super::flush_within("log records", move || provider.force_flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer, TracerProvider};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_fields_and_the_current_spans_ids() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .with_writer(move || out.clone()),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("t");
        let span = tracer.start("call");
        let sc = span.span_context().clone();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(n = 3_u64, ok = true, ratio = 0.5, who = "a\"b", "outside");
            let cx = opentelemetry::Context::current_with_span(span);
            let _in = cx.attach();
            tracing::warn!(error = %"boom", "inside");
            tracing::warn!(trace_id = "own", "named");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        let outside = &lines[0];
        assert_eq!(outside["message"], "outside");
        assert_eq!(outside["level"], "INFO");
        assert_eq!(
            (outside["n"].as_u64(), outside["ok"].as_bool()),
            (Some(3), Some(true))
        );
        assert_eq!(
            (outside["ratio"].as_f64(), outside["who"].as_str()),
            (Some(0.5), Some("a\"b"))
        );
        assert!(outside.get("trace_id").is_none() && outside["timestamp"].is_string());
        let inside = &lines[1];
        assert_eq!(inside["trace_id"], sc.trace_id().to_string());
        assert_eq!(inside["span_id"], sc.span_id().to_string());
        assert_eq!(inside["error"], "boom");
        // An event that names its trace keeps it.
        assert_eq!(lines[2]["trace_id"], "own");
        assert!(lines[2].get("span_id").is_none());
    }
}
