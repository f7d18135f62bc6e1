//! The OTLP transports of the three signals, over gRPC or HTTP/protobuf as the standard
//! variables choose: `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_PROTOCOL`, else
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, else gRPC (RouteIQ's default since its first release;
//! the specification's is `http/protobuf`). The metric and log exporters are
//! `opentelemetry-otlp`'s, which read endpoints, headers, timeouts and compression from the
//! same variables; spans go through RouteIQ's own exporter (`span_export`).

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_otlp::{LogExporter, MetricExporter, Protocol, WithExportConfig, WithHttpConfig};

/// How one signal goes to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    Grpc,
    HttpProtobuf,
}

/// One signal's variables.
pub(super) struct Signal {
    protocol: &'static str,
    timeout: &'static str,
}

pub(super) const TRACES: Signal = Signal {
    protocol: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    timeout: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
};
const METRICS: Signal = Signal {
    protocol: "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    timeout: "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
};
const LOGS: Signal = Signal {
    protocol: "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    timeout: "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
};

/// The transport `value` names (`grpc` or `http/protobuf`); an error naming the values
/// RouteIQ takes otherwise (`http/json` included: it is not built in).
fn transport_named(var: &str, value: &str) -> Result<Transport, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "grpc" => Ok(Transport::Grpc),
        "http/protobuf" => Ok(Transport::HttpProtobuf),
        other => Err(format!(
            "{var}={other:?} is not a protocol RouteIQ exports with; use grpc or http/protobuf"
        )),
    }
}

pub(super) fn transport(signal: &Signal) -> Result<Transport, String> {
    match first_set(&[signal.protocol, "OTEL_EXPORTER_OTLP_PROTOCOL"]) {
        Some((var, v)) => transport_named(var, &v),
        None => Ok(Transport::Grpc),
    }
}

/// The first of `vars` that is set and not blank (a signal's own variable before the
/// common one), with its value.
pub(super) fn first_set<'a>(vars: &[&'a str]) -> Option<(&'a str, String)> {
    vars.iter().find_map(|k| {
        let v = std::env::var(k).ok().filter(|v| !v.trim().is_empty())?;
        Some((*k, v))
    })
}

/// The export timeout: the signal's variable, else `OTEL_EXPORTER_OTLP_TIMEOUT`, in
/// milliseconds; 10 s by default.
pub(super) fn timeout(signal: &Signal) -> Duration {
    [signal.timeout, "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

/// The HTTP client of an HTTP/protobuf exporter: hyper on the exporter's Tokio runtime,
/// `https://` endpoints verified against the system's roots (as the gRPC exporter's are
/// not configured for TLS, an `https://` collector needs this transport).
pub(super) fn http_client(
    signal: &Signal,
) -> Result<HyperClient<HttpsConnector<HttpConnector>>, String> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no TLS roots for the OTLP/HTTP client: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(HyperClient::new(connector, timeout(signal), None))
}

pub(super) fn metric_exporter() -> Result<MetricExporter, String> {
    let built = match transport(&METRICS)? {
        Transport::Grpc => MetricExporter::builder().with_tonic().build(),
        Transport::HttpProtobuf => MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(http_client(&METRICS)?)
            .build(),
    };
    built.map_err(|e| e.to_string())
}

pub(super) fn log_exporter() -> Result<LogExporter, String> {
    let built = match transport(&LOGS)? {
        Transport::Grpc => LogExporter::builder().with_tonic().build(),
        Transport::HttpProtobuf => LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(http_client(&LOGS)?)
            .build(),
    };
    built.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_named_as_the_specification_names_them() {
        let v = "OTEL_EXPORTER_OTLP_PROTOCOL";
        assert_eq!(transport_named(v, "grpc"), Ok(Transport::Grpc));
        assert_eq!(
            transport_named(v, " HTTP/protobuf "),
            Ok(Transport::HttpProtobuf)
        );
        let e = transport_named(v, "http/json").unwrap_err();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && e.contains("grpc or http/protobuf"),
            "{e}"
        );
        assert!(transport_named(v, "otlp").is_err());
    }
}
