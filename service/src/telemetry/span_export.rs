//! The OTLP span exporter of the three services: each batch the span processor
//! ([`super::span_batch`]) hands over is encoded by [`super::span_encode`] and sent as one
//! `Export` call, over gRPC or
//! HTTP/protobuf as `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` (else `OTEL_EXPORTER_OTLP_PROTOCOL`)
//! says. The variables are the specification's:
//! - the endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, else
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (with `/v1/traces` appended for HTTP);
//! - headers: `OTEL_EXPORTER_OTLP_HEADERS`, then `OTEL_EXPORTER_OTLP_TRACES_HEADERS`
//!   (`key=value,...`, values percent-decoded; the signal's own win);
//! - the timeout: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
//!   (milliseconds, 10 s by default);
//! - compression: only `none` (gzip is not built in, and is refused by name).
//!
//! An `https://` collector takes HTTP/protobuf (verified against the system's roots); the
//! gRPC transport is plain HTTP/2, as it was with `opentelemetry-otlp`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::PathAndQuery;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::HttpClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::Resource;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;

use super::otlp::{self, Transport, TRACES};
use super::span_encode::{export_request, export_request_len, EncodedResource, EncodedSpans};

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends span batches to the collector.
pub(super) struct OtlpSpanExporter {
    resource: ArcSwap<EncodedResource>,
    sink: Sink,
    /// Whether the last export failed: a failure is logged when it follows a success, and
    /// a success when it follows a failure, not once per batch.
    failing: AtomicBool,
}

enum Sink {
    Grpc {
        grpc: tonic::client::Grpc<Channel>,
        metadata: MetadataMap,
        timeout: Duration,
    },
    Http {
        client: Box<HyperClient<HttpsConnector<HttpConnector>>>,
        uri: http::Uri,
        headers: http::HeaderMap,
    },
}

impl std::fmt::Debug for OtlpSpanExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match &self.sink {
            Sink::Grpc { .. } => "grpc",
            Sink::Http { .. } => "http/protobuf",
        };
        f.debug_struct("OtlpSpanExporter")
            .field("transport", &transport)
            .finish_non_exhaustive()
    }
}

impl OtlpSpanExporter {
    /// Set up from the standard variables (must run inside a Tokio runtime: the gRPC
    /// channel connects lazily on it). An error names the variable that is wrong.
    pub(super) fn from_env() -> Result<Self, String> {
        refuse_compression()?;
        let headers = headers_from_env();
        let sink = match otlp::transport(&TRACES)? {
            Transport::Grpc => {
                let endpoint = otlp::first_set(&[
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                ])
                .map_or_else(|| "http://localhost:4317".to_owned(), |(_, v)| v);
                if endpoint.trim().starts_with("https://") {
                    return Err(format!(
                        "the OTLP/gRPC span exporter does not speak TLS ({endpoint}); set \
                         OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf for an https:// collector"
                    ));
                }
                let timeout = otlp::timeout(&TRACES);
                let channel = Channel::from_shared(endpoint.trim().to_owned())
                    .map_err(|e| format!("OTLP traces endpoint {endpoint:?}: {e}"))?
                    .connect_timeout(timeout)
                    .connect_lazy();
                Sink::Grpc {
                    grpc: tonic::client::Grpc::new(channel),
                    metadata: grpc_metadata(&headers),
                    timeout,
                }
            }
            Transport::HttpProtobuf => {
                let endpoint = match otlp::first_set(&["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]) {
                    Some((_, e)) => e,
                    None => match otlp::first_set(&["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
                        Some((_, base)) => {
                            format!("{}/v1/traces", base.trim().trim_end_matches('/'))
                        }
                        None => "http://localhost:4318/v1/traces".to_owned(),
                    },
                };
                let uri = endpoint
                    .trim()
                    .parse::<http::Uri>()
                    .map_err(|e| format!("OTLP traces endpoint {endpoint:?}: {e}"))?;
                Sink::Http {
                    client: Box::new(otlp::http_client(&TRACES)?),
                    uri,
                    headers: http_headers(&headers),
                }
            }
        };
        Ok(Self {
            resource: ArcSwap::from_pointee(EncodedResource::default()),
            sink,
            failing: AtomicBool::new(false),
        })
    }

    async fn send(&self, batch: EncodedSpans) -> Result<ExportTraceServiceResponse, String> {
        let resource = self.resource.load_full();
        match &self.sink {
            Sink::Grpc {
                grpc,
                metadata,
                timeout,
            } => {
                let call = async {
                    let mut grpc = grpc.clone();
                    grpc.ready().await.map_err(|e| e.to_string())?;
                    let mut request = tonic::Request::new(Export { resource, batch });
                    *request.metadata_mut() = metadata.clone();
                    request.set_timeout(*timeout);
                    grpc.unary(request, PathAndQuery::from_static(GRPC_PATH), ExportCodec)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
                };
                tokio::time::timeout(*timeout, call)
                    .await
                    .map_err(|_| format!("no answer within {timeout:?}"))?
            }
            Sink::Http {
                client,
                uri,
                headers,
            } => {
                let mut body = Vec::with_capacity(export_request_len(&resource, &batch));
                export_request(&resource, &batch, &mut body);
                drop(batch);
                let mut request = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Bytes::from(body))
                    .map_err(|e| e.to_string())?;
                request.headers_mut().extend(headers.clone());
                let response = client
                    .send_bytes(request)
                    .await
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("HTTP {}", response.status()));
                }
                // An empty body is a full success; so is one that is not the protobuf
                // answer (a collector off the specification): the spans were taken.
                Ok(ExportTraceServiceResponse::decode(response.into_body()).unwrap_or_default())
            }
        }
    }
}

impl OtlpSpanExporter {
    /// Sends one batch; a failure is logged when it follows a success (and the batch is
    /// dropped: the collector's outage is not buffered).
    pub(super) async fn export(&self, batch: EncodedSpans) -> Result<(), String> {
        let spans = batch.len();
        match self.send(batch).await {
            Ok(answer) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("OTLP span export works again");
                }
                if let Some(p) = answer.partial_success.filter(|p| p.rejected_spans > 0) {
                    tracing::warn!(
                        rejected = p.rejected_spans,
                        sent = spans,
                        reason = %p.error_message,
                        "the OTLP collector rejected spans"
                    );
                }
                Ok(())
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, dropped = spans, "OTLP span export failed; spans are dropped until it works again");
                }
                Err(e)
            }
        }
    }

    /// The resource every batch is sent with (the tracer provider's).
    pub(super) fn set_resource(&self, resource: &Resource) {
        self.resource
            .store(std::sync::Arc::new(EncodedResource::new(resource)));
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION` (else `OTEL_EXPORTER_OTLP_COMPRESSION`): only
/// `none` is built in.
fn refuse_compression() -> Result<(), String> {
    let Some((k, v)) = otlp::first_set(&[
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
    ]) else {
        return Ok(());
    };
    match v.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(()),
        other => Err(format!(
            "{k}={other:?}: RouteIQ sends spans uncompressed; unset it or use none"
        )),
    }
}

/// The export's headers: `OTEL_EXPORTER_OTLP_HEADERS`, then the signal's own
/// (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`), which replace a header of the same name.
fn headers_from_env() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for k in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some((_, v)) = otlp::first_set(&[k]) {
            for (name, value) in parse_headers(&v) {
                out.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                out.push((name, value));
            }
        }
    }
    out
}

/// A `key=value,...` list as the specification writes headers: entries without `=` or
/// with an empty key or value are skipped; values are percent-decoded (kept as written
/// when that is not UTF-8).
fn parse_headers(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|entry| {
            let (k, v) = entry.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_or_else(|_| v.to_owned(), |d| d.into_owned());
            (!k.is_empty() && !v.is_empty()).then(|| (k.to_ascii_lowercase(), v))
        })
        .collect()
}

fn grpc_metadata(headers: &[(String, String)]) -> MetadataMap {
    let mut m = MetadataMap::new();
    for (k, v) in headers {
        match (
            MetadataKey::from_bytes(k.as_bytes()),
            MetadataValue::try_from(v.as_str()),
        ) {
            (Ok(k), Ok(v)) => {
                m.insert(k, v);
            }
            _ => tracing::warn!(header = %k, "OTLP header not valid gRPC metadata; not sent"),
        }
    }
    m
}

fn http_headers(headers: &[(String, String)]) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (k, v) in headers {
        match (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(k), Ok(v)) => {
                m.insert(k, v);
            }
            _ => tracing::warn!(header = %k, "OTLP header not a valid HTTP header; not sent"),
        }
    }
    m
}

/// An export over gRPC: a batch and the resource it is sent with.
struct Export {
    resource: std::sync::Arc<EncodedResource>,
    batch: EncodedSpans,
}

/// The gRPC codec of an export: the request is framed straight into the call's buffer (its
/// spans are encoded already); the answer is decoded.
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = Export;
    type Decode = ExportTraceServiceResponse;
    type Encoder = ExportCodec;
    type Decoder = ExportCodec;

    fn encoder(&mut self) -> Self::Encoder {
        ExportCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        ExportCodec
    }
}

impl Encoder for ExportCodec {
    type Item = Export;
    type Error = tonic::Status;

    fn encode(&mut self, item: Export, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.reserve(export_request_len(&item.resource, &item.batch));
        export_request(&item.resource, &item.batch, dst);
        Ok(())
    }
}

impl Decoder for ExportCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_as_the_specification_writes_them() {
        assert_eq!(
            parse_headers("api-key=secret%20value, X-Tenant = acme ,bad,=x,y=,a=b=c"),
            [
                ("api-key".to_owned(), "secret value".to_owned()),
                ("x-tenant".to_owned(), "acme".to_owned()),
                ("a".to_owned(), "b=c".to_owned()),
            ]
        );
        // Not UTF-8 once decoded: kept as written.
        assert_eq!(parse_headers("k=%ff"), [("k".to_owned(), "%ff".to_owned())]);
        let m = grpc_metadata(&parse_headers("authorization=Bearer t,bad header=x"));
        assert_eq!(m.get("authorization").unwrap(), "Bearer t");
        assert_eq!(m.len(), 1);
    }
}
