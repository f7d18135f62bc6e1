//! A batch of finished spans as an OTLP `ExportTraceServiceRequest`, encoded straight from
//! the SDK's `SpanData` with prost's wire primitives.
//!
//! `opentelemetry-otlp` first copies each span into `opentelemetry-proto`'s message structs
//! (every key and string value allocated again, `Display` for each string) and prost then
//! measures every nested message once per level it is nested in. Measured under callgrind,
//! that was about 11,000 instructions a span (see `docs/benchmarks.md`); here each span is
//! measured once and written once. The output decodes to the same message
//! `opentelemetry-proto`'s transform builds (the tests compare them).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

/// The resource's part of every request, encoded once.
#[derive(Debug, Clone, Default)]
pub(super) struct EncodedResource {
    /// The `Resource` message.
    resource: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    pub(super) fn new(resource: &Resource) -> Self {
        let attrs: Vec<KeyValue> = resource
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let mut out = Vec::new();
        put_attributes(1, &attrs, &mut out);
        Self {
            resource: out,
            schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// `batch` as one `ExportTraceServiceRequest` (one `ResourceSpans`, a `ScopeSpans` per
/// instrumentation scope in the order first seen), appended to `out`.
pub(super) fn export_request(resource: &EncodedResource, batch: &[SpanData], out: &mut Vec<u8>) {
    // Each span measured once: what the writing pass needs again is kept (its attributes'
    // sizes in `sizes`, in batch order).
    let mut sizes = Vec::with_capacity(batch.iter().map(|s| s.attributes.len()).sum());
    let spans: Vec<Measured> = batch.iter().map(|s| Measured::new(s, &mut sizes)).collect();
    let mut scopes: Vec<(&InstrumentationScope, Vec<usize>, usize)> = Vec::new();
    for (i, s) in batch.iter().enumerate() {
        let at = match scopes
            .iter()
            .position(|(scope, ..)| *scope == &s.instrumentation_scope)
        {
            Some(at) => at,
            None => {
                scopes.push((&s.instrumentation_scope, Vec::new(), 0));
                scopes.len() - 1
            }
        };
        let (_, members, len) = &mut scopes[at];
        members.push(i);
        *len += ld_len(2, spans[i].len);
    }
    for (scope, _, len) in &mut scopes {
        *len += ld_len(1, scope_len(scope)) + str_len(3, scope.schema_url().unwrap_or_default());
    }
    let resource_spans_len = ld_len(1, resource.resource.len())
        + scopes
            .iter()
            .map(|(.., len)| ld_len(2, *len))
            .sum::<usize>()
        + str_len(3, &resource.schema_url);
    out.reserve(ld_len(1, resource_spans_len));

    put_header(1, resource_spans_len, out);
    put_header(1, resource.resource.len(), out);
    out.extend_from_slice(&resource.resource);
    for (scope, members, len) in &scopes {
        put_header(2, *len, out);
        put_header(1, scope_len(scope), out);
        put_scope(scope, out);
        for &i in members {
            put_header(2, spans[i].len, out);
            put_span(&batch[i], &spans[i], &sizes, out);
        }
        put_str(3, scope.schema_url().unwrap_or_default(), out);
    }
    put_str(3, &resource.schema_url, out);
}

// --- wire helpers (proto3: scalar fields at their default are left out) ---

/// A length-delimited field's size, `len` bytes of content.
fn ld_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_header(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        ld_len(tag, s.len())
    }
}

fn put_str(tag: u32, s: &str, out: &mut Vec<u8>) {
    put_bytes(tag, s.as_bytes(), out);
}

fn put_bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
    if !b.is_empty() {
        put_header(tag, b.len(), out);
        out.extend_from_slice(b);
    }
}

fn uint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_uint(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }
}

fn fixed64_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + 8
    }
}

fn put_fixed64(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed32_len(tag: u32, v: u32) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + 4
    }
}

fn put_fixed32(tag: u32, v: u32, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

// --- common.v1: KeyValue, AnyValue, ArrayValue ---

/// `AnyValue`'s content (its `oneof` is always written, a default value included).
fn any_len(v: &Value) -> usize {
    match v {
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::String(s) => ld_len(1, s.as_str().len()),
        Value::Array(a) => ld_len(5, array_len(a)),
        other => ld_len(1, other.to_string().len()),
    }
}

fn put_any(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, out);
            out.push(u8::from(*b));
        }
        Value::I64(i) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(*i as u64, out);
        }
        Value::F64(f) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => {
            put_header(1, s.as_str().len(), out);
            out.extend_from_slice(s.as_str().as_bytes());
        }
        Value::Array(a) => {
            put_header(5, array_len(a), out);
            put_array(a, out);
        }
        other => {
            let s = other.to_string();
            put_header(1, s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// An `ArrayValue`'s content: each element an `AnyValue` (field 1).
fn array_len(a: &Array) -> usize {
    let each = |len: usize| ld_len(1, len);
    match a {
        Array::Bool(v) => v.len() * each(key_len(2) + 1),
        Array::I64(v) => v
            .iter()
            .map(|i| each(key_len(3) + encoded_len_varint(*i as u64)))
            .sum(),
        Array::F64(v) => v.len() * each(key_len(4) + 8),
        Array::String(v) => v.iter().map(|s| each(ld_len(1, s.as_str().len()))).sum(),
        other => each(ld_len(1, other.to_string().len())),
    }
}

fn put_array(a: &Array, out: &mut Vec<u8>) {
    let mut each = |v: Value| {
        put_header(1, any_len(&v), out);
        put_any(&v, out);
    };
    match a {
        Array::Bool(v) => v.iter().for_each(|b| each(Value::Bool(*b))),
        Array::I64(v) => v.iter().for_each(|i| each(Value::I64(*i))),
        Array::F64(v) => v.iter().for_each(|f| each(Value::F64(*f))),
        Array::String(v) => v.iter().for_each(|s| each(Value::String(s.clone()))),
        other => each(Value::String(other.to_string().into())),
    }
}

fn kv_len(kv: &KeyValue) -> usize {
    kv_len_of(kv, any_len(&kv.value))
}

/// A `KeyValue`'s size, its value's (`AnyValue`) size `any` already measured.
fn kv_len_of(kv: &KeyValue, any: usize) -> usize {
    str_len(1, kv.key.as_str()) + ld_len(2, any)
}

fn put_kv(kv: &KeyValue, out: &mut Vec<u8>) {
    put_kv_of(kv, any_len(&kv.value), out);
}

/// A `KeyValue`'s content, its value's size `any` already measured.
fn put_kv_of(kv: &KeyValue, any: usize, out: &mut Vec<u8>) {
    put_str(1, kv.key.as_str(), out);
    put_header(2, any, out);
    put_any(&kv.value, out);
}

fn attributes_len(tag: u32, attrs: &[KeyValue]) -> usize {
    attrs.iter().map(|kv| ld_len(tag, kv_len(kv))).sum()
}

fn put_attributes(tag: u32, attrs: &[KeyValue], out: &mut Vec<u8>) {
    for kv in attrs {
        put_header(tag, kv_len(kv), out);
        put_kv(kv, out);
    }
}

// --- InstrumentationScope ---

fn scope_len(s: &InstrumentationScope) -> usize {
    str_len(1, s.name())
        + str_len(2, s.version().unwrap_or_default())
        + s.attributes()
            .map(|kv| ld_len(3, kv_len(kv)))
            .sum::<usize>()
}

fn put_scope(s: &InstrumentationScope, out: &mut Vec<u8>) {
    put_str(1, s.name(), out);
    put_str(2, s.version().unwrap_or_default(), out);
    for kv in s.attributes() {
        put_header(3, kv_len(kv), out);
        put_kv(kv, out);
    }
}

// --- trace.v1: Span, Event, Link, Status ---

/// The span's `flags`: its trace flags, and whether its parent is remote (OTLP's
/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK` always, `..._IS_REMOTE_MASK` when it is).
fn flags(trace_flags: u8, remote: bool) -> u32 {
    u32::from(trace_flags) | 0x100 | if remote { 0x200 } else { 0 }
}

fn kind(k: &SpanKind) -> u64 {
    match k {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn status_code(s: &Status) -> u64 {
    match s {
        Status::Unset => 0,
        Status::Ok => 1,
        Status::Error { .. } => 2,
    }
}

fn status_message(s: &Status) -> &str {
    match s {
        Status::Error { description } => description,
        _ => "",
    }
}

fn status_len(s: &Status) -> usize {
    str_len(2, status_message(s)) + uint_len(3, status_code(s))
}

fn event_len(e: &opentelemetry::trace::Event) -> usize {
    fixed64_len(1, nanos(e.timestamp))
        + str_len(2, &e.name)
        + attributes_len(3, &e.attributes)
        + uint_len(4, u64::from(e.dropped_attributes_count))
}

fn put_event(e: &opentelemetry::trace::Event, out: &mut Vec<u8>) {
    put_fixed64(1, nanos(e.timestamp), out);
    put_str(2, &e.name, out);
    put_attributes(3, &e.attributes, out);
    put_uint(4, u64::from(e.dropped_attributes_count), out);
}

/// A trace id (16 bytes) and a span id (8), fields 1 and 2.
fn ids_len() -> usize {
    ld_len(1, 16) + ld_len(2, 8)
}

fn put_ids(c: &SpanContext, out: &mut Vec<u8>) {
    put_bytes(1, &c.trace_id().to_bytes(), out);
    put_bytes(2, &c.span_id().to_bytes(), out);
}

fn link_len(l: &opentelemetry::trace::Link) -> usize {
    let c = &l.span_context;
    ids_len()
        + str_len(3, &c.trace_state().header())
        + attributes_len(4, &l.attributes)
        + uint_len(5, u64::from(l.dropped_attributes_count))
        + fixed32_len(6, flags(c.trace_flags().to_u8(), c.is_remote()))
}

fn put_link(l: &opentelemetry::trace::Link, out: &mut Vec<u8>) {
    let c = &l.span_context;
    put_ids(c, out);
    put_str(3, &c.trace_state().header(), out);
    put_attributes(4, &l.attributes, out);
    put_uint(5, u64::from(l.dropped_attributes_count), out);
    put_fixed32(6, flags(c.trace_flags().to_u8(), c.is_remote()), out);
}

fn parent_id(s: &SpanData) -> Option<[u8; 8]> {
    (s.parent_span_id != SpanId::INVALID).then(|| s.parent_span_id.to_bytes())
}

/// What writing a span needs from measuring it.
struct Measured {
    /// Its trace state (allocated only when it has one).
    trace_state: String,
    start: u64,
    end: u64,
    /// Its attributes' sizes: `sizes[attributes]`.
    attributes: std::ops::Range<usize>,
    /// The `Span` message's size.
    len: usize,
}

/// A `KeyValue`'s size and its `AnyValue`'s.
type Sizes = (usize, usize);

impl Measured {
    fn new(s: &SpanData, sizes: &mut Vec<Sizes>) -> Self {
        let trace_state = s.span_context.trace_state().header();
        let (start, end) = (nanos(s.start_time), nanos(s.end_time));
        let first = sizes.len();
        let mut attributes_len = 0;
        for kv in &s.attributes {
            let any = any_len(&kv.value);
            let kv_len = kv_len_of(kv, any);
            attributes_len += ld_len(9, kv_len);
            sizes.push((kv_len, any));
        }
        let len = ids_len()
            + str_len(3, &trace_state)
            + parent_id(s).map_or(0, |_| ld_len(4, 8))
            + str_len(5, &s.name)
            + uint_len(6, kind(&s.span_kind))
            + fixed64_len(7, start)
            + fixed64_len(8, end)
            + attributes_len
            + uint_len(10, u64::from(s.dropped_attributes_count))
            + s.events
                .iter()
                .map(|e| ld_len(11, event_len(e)))
                .sum::<usize>()
            + uint_len(12, u64::from(s.events.dropped_count))
            + s.links
                .iter()
                .map(|l| ld_len(13, link_len(l)))
                .sum::<usize>()
            + uint_len(14, u64::from(s.links.dropped_count))
            + ld_len(15, status_len(&s.status))
            + fixed32_len(
                16,
                flags(
                    s.span_context.trace_flags().to_u8(),
                    s.parent_span_is_remote,
                ),
            );
        Self {
            trace_state,
            start,
            end,
            attributes: first..sizes.len(),
            len,
        }
    }
}

fn put_span(s: &SpanData, m: &Measured, sizes: &[Sizes], out: &mut Vec<u8>) {
    put_ids(&s.span_context, out);
    put_str(3, &m.trace_state, out);
    if let Some(p) = parent_id(s) {
        put_bytes(4, &p, out);
    }
    put_str(5, &s.name, out);
    put_uint(6, kind(&s.span_kind), out);
    put_fixed64(7, m.start, out);
    put_fixed64(8, m.end, out);
    for (kv, &(kv_len, any)) in s.attributes.iter().zip(&sizes[m.attributes.clone()]) {
        put_header(9, kv_len, out);
        put_kv_of(kv, any, out);
    }
    put_uint(10, u64::from(s.dropped_attributes_count), out);
    for e in s.events.iter() {
        put_header(11, event_len(e), out);
        put_event(e, out);
    }
    put_uint(12, u64::from(s.events.dropped_count), out);
    for l in s.links.iter() {
        put_header(13, link_len(l), out);
        put_link(l, out);
    }
    put_uint(14, u64::from(s.links.dropped_count), out);
    // Always present, as the SDK's transform writes it.
    put_header(15, status_len(&s.status), out);
    put_str(2, status_message(&s.status), out);
    put_uint(3, status_code(&s.status), out);
    put_fixed32(
        16,
        flags(
            s.span_context.trace_flags().to_u8(),
            s.parent_span_is_remote,
        ),
        out,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::trace::{Event, Link, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;

    use super::*;

    fn context(trace: u128, span: u64, sampled: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            false,
            state.parse::<TraceState>().unwrap(),
        )
    }

    fn span(name: &'static str, scope: &InstrumentationScope) -> SpanData {
        let t0 = UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789);
        SpanData {
            span_context: context(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 7, true, ""),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time: t0,
            end_time: t0 + Duration::from_micros(1500),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        }
    }

    /// What `opentelemetry-otlp` sends for the same batch.
    fn reference(resource: &Resource, batch: Vec<SpanData>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch,
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    fn ours(resource: &Resource, batch: &[SpanData]) -> ExportTraceServiceRequest {
        let mut out = Vec::new();
        export_request(&EncodedResource::new(resource), batch, &mut out);
        ExportTraceServiceRequest::decode(out.as_slice()).expect("our encoding decodes")
    }

    #[test]
    fn a_batch_decodes_to_the_message_the_sdks_transform_builds() {
        let resource = Resource::builder()
            .with_service_name("routeiq-test")
            .with_attribute(KeyValue::new("service.version", "1.2.3"))
            .with_attribute(KeyValue::new("host.cores", 2))
            .build();
        let routeiq = InstrumentationScope::builder("routeiq").build();
        let other = InstrumentationScope::builder("other")
            .with_version("0.1")
            .with_schema_url("https://opentelemetry.io/schemas/1.37.0")
            .with_attributes([KeyValue::new("scope.attr", true)])
            .build();

        let mut server = span("routeiq.route", &routeiq);
        server.span_kind = SpanKind::Server;
        server.span_context = context(1, 2, true, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
        server.parent_span_id = SpanId::from(0x00f0_67aa_0ba9_02b7);
        server.parent_span_is_remote = true;
        server.attributes = vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.response.status_code", 200_i64),
            KeyValue::new("routeiq.cost_usd", 0.000_125),
            KeyValue::new("negative", -3_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("empty", ""),
            KeyValue::new("no", false),
            KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(vec!["stop".into(), "length".into()])),
            ),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, 300]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![0.5, -2.0]))),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("unicode", "caf\u{e9} \u{1f600}"),
            KeyValue::new("long", "x".repeat(300)),
        ];
        server.dropped_attributes_count = 2;
        server.status = Status::error("upstream failed");

        let mut attempt = span("chat gpt-4o", &routeiq);
        attempt.span_kind = SpanKind::Client;
        attempt.parent_span_id = SpanId::from(2);
        attempt.status = Status::Ok;
        attempt.events.events = vec![Event::new(
            "retry",
            UNIX_EPOCH + Duration::from_secs(1_764_000_001),
            vec![KeyValue::new("attempt", 2_i64)],
            1,
        )];
        attempt.events.dropped_count = 3;
        attempt.links.links = vec![Link::new(
            context(9, 10, false, "a=1"),
            vec![KeyValue::new("link.kind", "follows")],
            4,
        )];
        attempt.links.dropped_count = 1;

        let mut unsampled = span("routeiq.auth", &other);
        unsampled.span_context = context(3, 4, false, "");
        unsampled.span_kind = SpanKind::Producer;
        let mut consumer = span("usage.ingest", &routeiq);
        consumer.span_kind = SpanKind::Consumer;
        consumer.start_time = UNIX_EPOCH;

        let batch = vec![server, unsampled, attempt, consumer];
        let ours = ours(&resource, &batch);
        assert_eq!(ours, reference(&resource, batch));
        // Both scopes, in the order first seen, the spans of each in batch order.
        let scopes = &ours.resource_spans[0].scope_spans;
        assert_eq!(scopes.len(), 2);
        assert_eq!(scopes[0].spans.len(), 3);
        assert_eq!(scopes[1].scope.as_ref().unwrap().name, "other");
    }

    #[test]
    fn an_empty_batch_and_a_bare_resource_encode_as_the_sdk_would() {
        let bare = Resource::builder_empty().build();
        assert_eq!(ours(&bare, &[]), reference(&bare, Vec::new()));
        let scope = InstrumentationScope::builder("").build();
        let batch = vec![span("", &scope)];
        assert_eq!(ours(&bare, &batch), reference(&bare, batch));
    }
}
