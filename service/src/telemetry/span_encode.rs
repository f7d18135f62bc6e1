//! Finished spans as OTLP `Span` messages, encoded when they end, and a batch of them as
//! one `ExportTraceServiceRequest`, with prost's wire primitives.
//!
//! The spans of a request ([`Record`]: the route span, its steps and provider attempts) never
//! exist as the SDK's `SpanData`: their attributes are written as OTLP `KeyValue`s when they
//! are set ([`Attributes`], no `KeyValue`, `Value` or owned string per attribute), and the
//! span is written into its batch's buffer when it ends. An export then only frames the
//! buffer. Spans made with the SDK's tracer (the admin API's and the control plane's server
//! spans, MCP and A2A calls) are encoded from their `SpanData` the same way
//! ([`put_span_data`]). Before, a span was built as `SpanData`, measured and then written
//! field by field at export, about 3,100 instructions a span (`docs/benchmarks.md`). The
//! output decodes to the message `opentelemetry-proto`'s transform builds (the tests compare
//! them).

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use prost::bytes::BufMut;
use prost::encoding::{decode_varint, encode_varint, encoded_len_varint, key_len, WireType};

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

/// Finished spans, each encoded as a `ScopeSpans.spans` entry, grouped by instrumentation
/// scope in the order first seen.
#[derive(Debug, Default)]
pub(super) struct EncodedSpans {
    scopes: Vec<(InstrumentationScope, Vec<u8>)>,
    len: usize,
    /// The room the first scope's buffer is made with.
    room: usize,
}

impl EncodedSpans {
    /// Room for `bytes` of spans (of one scope: a service's spans share its tracer's).
    pub(super) fn with_capacity(bytes: usize) -> Self {
        Self {
            room: bytes,
            ..Self::default()
        }
    }

    /// Spans held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of spans held.
    pub(super) fn bytes(&self) -> usize {
        self.scopes.iter().map(|(_, b)| b.len()).sum()
    }

    /// The spans' bytes, scope after scope, and the room the buffers have.
    #[cfg(test)]
    pub(super) fn raw(&self) -> (Vec<u8>, usize) {
        let bytes = self.scopes.iter().flat_map(|(_, b)| b.clone()).collect();
        (bytes, self.scopes.iter().map(|(_, b)| b.capacity()).sum())
    }

    /// Adds a span of `scope`, which `encode` writes (a `ScopeSpans.spans` entry).
    pub(super) fn push(&mut self, scope: &InstrumentationScope, encode: impl FnOnce(&mut Vec<u8>)) {
        let at = match self.scopes.iter().position(|(s, _)| s == scope) {
            Some(at) => at,
            None => {
                let room = std::mem::take(&mut self.room);
                self.scopes.push((scope.clone(), Vec::with_capacity(room)));
                self.scopes.len() - 1
            }
        };
        encode(&mut self.scopes[at].1);
        self.len += 1;
    }
}

/// The size of [`export_request`]'s message.
pub(super) fn export_request_len(resource: &EncodedResource, spans: &EncodedSpans) -> usize {
    ld_len(1, resource_spans_len(resource, &scope_spans(spans)))
}

/// `spans` as one `ExportTraceServiceRequest` (one `ResourceSpans`, a `ScopeSpans` per
/// instrumentation scope in the order first seen), appended to `out`.
pub(super) fn export_request(
    resource: &EncodedResource,
    spans: &EncodedSpans,
    out: &mut impl BufMut,
) {
    let scopes = scope_spans(spans);
    put_header(1, resource_spans_len(resource, &scopes), out);
    put_header(1, resource.resource.len(), out);
    out.put_slice(&resource.resource);
    for (scope, encoded, len) in &scopes {
        put_header(2, *len, out);
        put_header(1, scope_len(scope), out);
        put_scope(scope, out);
        out.put_slice(encoded);
        put_str(3, scope.schema_url().unwrap_or_default(), out);
    }
    put_str(3, &resource.schema_url, out);
}

/// Each scope's spans, and the size of the `ScopeSpans` message they make.
fn scope_spans(spans: &EncodedSpans) -> Vec<(&InstrumentationScope, &[u8], usize)> {
    spans
        .scopes
        .iter()
        .map(|(scope, b)| {
            let len = ld_len(1, scope_len(scope))
                + b.len()
                + str_len(3, scope.schema_url().unwrap_or_default());
            (scope, b.as_slice(), len)
        })
        .collect()
}

/// The size of the `ResourceSpans` message.
fn resource_spans_len(
    resource: &EncodedResource,
    scopes: &[(&InstrumentationScope, &[u8], usize)],
) -> usize {
    ld_len(1, resource.resource.len())
        + scopes
            .iter()
            .map(|(.., len)| ld_len(2, *len))
            .sum::<usize>()
        + str_len(3, &resource.schema_url)
}

/// A span's attributes, each written as an OTLP `KeyValue` (field 9 of `Span`) when it is
/// set: no `KeyValue`, `Value` or owned string is made for one. Keys and string values are
/// copied from what they borrow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes {
    encoded: Vec<u8>,
    count: usize,
}

/// `Span.attributes`.
const SPAN_ATTRIBUTES: u32 = 9;

impl Attributes {
    /// Room for `bytes` of attributes (a short string attribute takes about 40).
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            encoded: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// Room for `bytes` more.
    pub fn reserve(&mut self, bytes: usize) {
        self.encoded.reserve(bytes);
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes they take, encoded.
    pub fn bytes(&self) -> usize {
        self.encoded.len()
    }

    pub fn str(&mut self, key: &str, value: &str) {
        self.put(key, string_value_len(value), |out| {
            put_string_value(value, out);
        });
    }

    pub fn int(&mut self, key: &str, value: i64) {
        self.put(key, int_value_len(value), |out| put_int_value(value, out));
    }

    pub fn float(&mut self, key: &str, value: f64) {
        self.put(key, double_value_len(), |out| put_double_value(value, out));
    }

    pub fn bool(&mut self, key: &str, value: bool) {
        self.put(key, bool_value_len(), |out| put_bool_value(value, out));
    }

    /// An array of strings.
    pub fn strs<'a, I>(&mut self, key: &str, values: I)
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Clone,
    {
        let values = values.into_iter();
        let array: usize = values.clone().map(|v| ld_len(1, string_value_len(v))).sum();
        self.put(key, ld_len(5, array), |out| {
            put_header(5, array, out);
            for v in values {
                put_header(1, string_value_len(v), out);
                put_string_value(v, out);
            }
        });
    }

    /// An array of numbers.
    pub fn floats(&mut self, key: &str, values: &[f64]) {
        let array = values.len() * ld_len(1, double_value_len());
        self.put(key, ld_len(5, array), |out| {
            put_header(5, array, out);
            for v in values {
                put_header(1, double_value_len(), out);
                put_double_value(*v, out);
            }
        });
    }

    /// An attribute as the OpenTelemetry API holds it (a sampler's, the SDK's spans').
    pub fn key_value(&mut self, kv: &KeyValue) {
        self.put(kv.key.as_str(), any_len(&kv.value), |out| {
            put_any(&kv.value, out);
        });
    }

    /// `other`'s attributes, after these.
    pub fn append(&mut self, other: &Attributes) {
        self.encoded.extend_from_slice(&other.encoded);
        self.count += other.count;
    }

    /// One `KeyValue` whose `AnyValue` is `any` bytes, which `write` writes.
    fn put(&mut self, key: &str, any: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let out = &mut self.encoded;
        put_header(SPAN_ATTRIBUTES, str_len(1, key) + ld_len(2, any), out);
        put_str(1, key, out);
        put_header(2, any, out);
        write(out);
        self.count += 1;
    }

    /// The encoding of the first `max` attributes, and how many are left out.
    fn first(&self, max: usize) -> (&[u8], usize) {
        if self.count <= max {
            return (&self.encoded, 0);
        }
        let mut at = 0;
        for _ in 0..max {
            // Each is its one-byte key (field 9), a length and that many bytes.
            let mut rest = self.encoded.get(at + 1..).unwrap_or_default();
            let Ok(len) = decode_varint(&mut rest) else {
                break;
            };
            at = self.encoded.len() - rest.len() + usize::try_from(len).unwrap_or(usize::MAX);
        }
        (
            &self.encoded[..at.min(self.encoded.len())],
            self.count - max,
        )
    }

    /// Decoded, as the OpenTelemetry API holds attributes (for tests and diagnostics).
    pub fn to_key_values(&self) -> Vec<KeyValue> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        use opentelemetry_proto::tonic::trace::v1::Span;
        use prost::Message;
        fn value(v: Option<Any>) -> Value {
            match v {
                Some(Any::StringValue(s)) => Value::from(s),
                Some(Any::BoolValue(b)) => Value::Bool(b),
                Some(Any::IntValue(i)) => Value::I64(i),
                Some(Any::DoubleValue(f)) => Value::F64(f),
                Some(Any::ArrayValue(a)) => {
                    let items: Vec<Any> = a.values.into_iter().filter_map(|v| v.value).collect();
                    // The API's arrays hold one type: numbers when all are (what `floats`
                    // writes), else each element as text (what `strs` writes).
                    let numbers: Option<Vec<f64>> = items
                        .iter()
                        .map(|v| match v {
                            Any::DoubleValue(f) => Some(*f),
                            _ => None,
                        })
                        .collect();
                    Value::Array(match numbers {
                        Some(f) if !f.is_empty() => Array::F64(f),
                        _ => Array::String(
                            items
                                .into_iter()
                                .map(|v| value(Some(v)).as_str().into_owned().into())
                                .collect(),
                        ),
                    })
                }
                _ => Value::from(""),
            }
        }
        Span::decode(self.encoded.as_slice())
            .map(|s| s.attributes)
            .unwrap_or_default()
            .into_iter()
            .map(|kv| KeyValue::new(kv.key, value(kv.value.and_then(|v| v.value))))
            .collect()
    }
}

/// A span recorded without the SDK's span objects: what its `Span` message says, its
/// attributes already encoded.
#[derive(Debug)]
pub(super) struct Record {
    pub context: SpanContext,
    /// `SpanId::INVALID` for a root.
    pub parent: SpanId,
    pub parent_remote: bool,
    pub kind: SpanKind,
    pub name: Cow<'static, str>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Attributes,
    pub status: Status,
}

/// `r` as a `ScopeSpans.spans` entry, keeping its first `max_attributes` attributes (the
/// SDK's span limit; the rest are counted as dropped).
pub(super) fn put_record(r: &Record, max_attributes: usize, out: &mut Vec<u8>) {
    let (attributes, dropped) = r.attributes.first(max_attributes);
    put_span(
        &Fields {
            context: &r.context,
            parent: r.parent,
            parent_remote: r.parent_remote,
            name: &r.name,
            kind: &r.kind,
            start: nanos(r.start),
            end: nanos(r.end),
            attributes,
            dropped_attributes: u32::try_from(dropped).unwrap_or(u32::MAX),
            events_and_links: &[],
            status: &r.status,
        },
        out,
    );
}

/// A span made with the SDK's tracer as a `ScopeSpans.spans` entry.
pub(super) fn put_span_data(s: &SpanData, out: &mut Vec<u8>) {
    let mut attributes = Attributes::default();
    for kv in &s.attributes {
        attributes.key_value(kv);
    }
    let mut rest = Vec::new();
    for e in s.events.iter() {
        put_header(11, event_len(e), &mut rest);
        put_event(e, &mut rest);
    }
    put_uint(12, u64::from(s.events.dropped_count), &mut rest);
    for l in s.links.iter() {
        put_header(13, link_len(l), &mut rest);
        put_link(l, &mut rest);
    }
    put_uint(14, u64::from(s.links.dropped_count), &mut rest);
    put_span(
        &Fields {
            context: &s.span_context,
            parent: s.parent_span_id,
            parent_remote: s.parent_span_is_remote,
            name: &s.name,
            kind: &s.span_kind,
            start: nanos(s.start_time),
            end: nanos(s.end_time),
            attributes: &attributes.encoded,
            dropped_attributes: s.dropped_attributes_count,
            events_and_links: &rest,
            status: &s.status,
        },
        out,
    );
}

/// What a `Span` message holds, its attributes (field 9) and its events and links (fields
/// 11 to 14) already encoded.
struct Fields<'a> {
    context: &'a SpanContext,
    parent: SpanId,
    parent_remote: bool,
    name: &'a str,
    kind: &'a SpanKind,
    start: u64,
    end: u64,
    attributes: &'a [u8],
    dropped_attributes: u32,
    events_and_links: &'a [u8],
    status: &'a Status,
}

// --- wire helpers (proto3: scalar fields at their default are left out) ---

/// A length-delimited field's size, `len` bytes of content.
/// A varint: most written here (keys, short lengths) take one byte.
#[inline]
fn put_varint(v: u64, out: &mut impl BufMut) {
    if v < 0x80 {
        out.put_u8(v as u8);
    } else {
        encode_varint(v, out);
    }
}

/// A field's key (tag and wire type).
#[inline]
fn put_key(tag: u32, wire_type: WireType, out: &mut impl BufMut) {
    put_varint(u64::from(tag << 3 | wire_type as u32), out);
}

fn ld_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_header(tag: u32, len: usize, out: &mut impl BufMut) {
    put_key(tag, WireType::LengthDelimited, out);
    put_varint(len as u64, out);
}

fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        ld_len(tag, s.len())
    }
}

fn put_str(tag: u32, s: &str, out: &mut impl BufMut) {
    put_bytes(tag, s.as_bytes(), out);
}

fn put_bytes(tag: u32, b: &[u8], out: &mut impl BufMut) {
    if !b.is_empty() {
        put_header(tag, b.len(), out);
        out.put_slice(b);
    }
}

fn uint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_uint(tag: u32, v: u64, out: &mut impl BufMut) {
    if v != 0 {
        put_key(tag, WireType::Varint, out);
        put_varint(v, out);
    }
}

fn fixed64_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + 8
    }
}

fn put_fixed64(tag: u32, v: u64, out: &mut impl BufMut) {
    if v != 0 {
        put_key(tag, WireType::SixtyFourBit, out);
        out.put_slice(&v.to_le_bytes());
    }
}

fn fixed32_len(tag: u32, v: u32) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + 4
    }
}

fn put_fixed32(tag: u32, v: u32, out: &mut impl BufMut) {
    if v != 0 {
        put_key(tag, WireType::ThirtyTwoBit, out);
        out.put_slice(&v.to_le_bytes());
    }
}

// --- AnyValue's scalar variants ---

fn string_value_len(s: &str) -> usize {
    ld_len(1, s.len())
}

fn put_string_value(s: &str, out: &mut impl BufMut) {
    put_header(1, s.len(), out);
    out.put_slice(s.as_bytes());
}

fn bool_value_len() -> usize {
    key_len(2) + 1
}

fn put_bool_value(b: bool, out: &mut impl BufMut) {
    put_key(2, WireType::Varint, out);
    out.put_u8(u8::from(b));
}

fn int_value_len(i: i64) -> usize {
    key_len(3) + encoded_len_varint(i as u64)
}

fn put_int_value(i: i64, out: &mut impl BufMut) {
    put_key(3, WireType::Varint, out);
    put_varint(i as u64, out);
}

fn double_value_len() -> usize {
    key_len(4) + 8
}

fn put_double_value(v: f64, out: &mut impl BufMut) {
    put_key(4, WireType::SixtyFourBit, out);
    out.put_slice(&v.to_le_bytes());
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

// --- common.v1: KeyValue, AnyValue, ArrayValue ---

/// `AnyValue`'s content (its `oneof` is always written, a default value included).
fn any_len(v: &Value) -> usize {
    match v {
        Value::Bool(_) => bool_value_len(),
        Value::I64(i) => int_value_len(*i),
        Value::F64(_) => double_value_len(),
        Value::String(s) => string_value_len(s.as_str()),
        Value::Array(a) => ld_len(5, array_len(a)),
        other => string_value_len(&other.to_string()),
    }
}

fn put_any(v: &Value, out: &mut impl BufMut) {
    match v {
        Value::Bool(b) => put_bool_value(*b, out),
        Value::I64(i) => put_int_value(*i, out),
        Value::F64(f) => put_double_value(*f, out),
        Value::String(s) => put_string_value(s.as_str(), out),
        Value::Array(a) => {
            put_header(5, array_len(a), out);
            put_array(a, out);
        }
        other => put_string_value(&other.to_string(), out),
    }
}

/// An `ArrayValue`'s content: each element an `AnyValue` (field 1).
fn array_len(a: &Array) -> usize {
    let each = |len: usize| ld_len(1, len);
    match a {
        Array::Bool(v) => v.len() * each(bool_value_len()),
        Array::I64(v) => v.iter().map(|i| each(int_value_len(*i))).sum(),
        Array::F64(v) => v.len() * each(double_value_len()),
        Array::String(v) => v.iter().map(|s| each(string_value_len(s.as_str()))).sum(),
        other => each(string_value_len(&other.to_string())),
    }
}

fn put_array(a: &Array, out: &mut impl BufMut) {
    match a {
        Array::Bool(v) => v.iter().for_each(|b| {
            put_header(1, bool_value_len(), out);
            put_bool_value(*b, out);
        }),
        Array::I64(v) => v.iter().for_each(|i| {
            put_header(1, int_value_len(*i), out);
            put_int_value(*i, out);
        }),
        Array::F64(v) => v.iter().for_each(|f| {
            put_header(1, double_value_len(), out);
            put_double_value(*f, out);
        }),
        Array::String(v) => v.iter().for_each(|s| {
            put_header(1, string_value_len(s.as_str()), out);
            put_string_value(s.as_str(), out);
        }),
        other => {
            let s = other.to_string();
            put_header(1, string_value_len(&s), out);
            put_string_value(&s, out);
        }
    }
}

fn kv_len(kv: &KeyValue) -> usize {
    str_len(1, kv.key.as_str()) + ld_len(2, any_len(&kv.value))
}

fn put_kv(kv: &KeyValue, out: &mut impl BufMut) {
    put_str(1, kv.key.as_str(), out);
    put_header(2, any_len(&kv.value), out);
    put_any(&kv.value, out);
}

fn attributes_len(tag: u32, attrs: &[KeyValue]) -> usize {
    attrs.iter().map(|kv| ld_len(tag, kv_len(kv))).sum()
}

fn put_attributes(tag: u32, attrs: &[KeyValue], out: &mut impl BufMut) {
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

fn put_scope(s: &InstrumentationScope, out: &mut impl BufMut) {
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

fn put_event(e: &opentelemetry::trace::Event, out: &mut impl BufMut) {
    put_fixed64(1, nanos(e.timestamp), out);
    put_str(2, &e.name, out);
    put_attributes(3, &e.attributes, out);
    put_uint(4, u64::from(e.dropped_attributes_count), out);
}

/// A trace id (16 bytes) and a span id (8), fields 1 and 2.
fn ids_len() -> usize {
    ld_len(1, 16) + ld_len(2, 8)
}

fn put_ids(c: &SpanContext, out: &mut impl BufMut) {
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

fn put_link(l: &opentelemetry::trace::Link, out: &mut impl BufMut) {
    let c = &l.span_context;
    put_ids(c, out);
    put_str(3, &c.trace_state().header(), out);
    put_attributes(4, &l.attributes, out);
    put_uint(5, u64::from(l.dropped_attributes_count), out);
    put_fixed32(6, flags(c.trace_flags().to_u8(), c.is_remote()), out);
}

/// `f` as a `ScopeSpans.spans` entry (field 2).
fn put_span(f: &Fields<'_>, out: &mut Vec<u8>) {
    // Allocated only when there is one.
    let trace_state = f.context.trace_state().header();
    let parent = (f.parent != SpanId::INVALID).then(|| f.parent.to_bytes());
    let flags = flags(f.context.trace_flags().to_u8(), f.parent_remote);
    let status_len = status_len(f.status);
    let len = ids_len()
        + str_len(3, &trace_state)
        + parent.map_or(0, |_| ld_len(4, 8))
        + str_len(5, f.name)
        + uint_len(6, kind(f.kind))
        + fixed64_len(7, f.start)
        + fixed64_len(8, f.end)
        + f.attributes.len()
        + uint_len(10, u64::from(f.dropped_attributes))
        + f.events_and_links.len()
        + ld_len(15, status_len)
        + fixed32_len(16, flags);
    out.reserve(ld_len(2, len));
    put_header(2, len, out);
    put_ids(f.context, out);
    put_str(3, &trace_state, out);
    if let Some(p) = parent {
        put_bytes(4, &p, out);
    }
    put_str(5, f.name, out);
    put_uint(6, kind(f.kind), out);
    put_fixed64(7, f.start, out);
    put_fixed64(8, f.end, out);
    out.put_slice(f.attributes);
    put_uint(10, u64::from(f.dropped_attributes), out);
    out.put_slice(f.events_and_links);
    // Always present, as the SDK's transform writes it.
    put_header(15, status_len, out);
    put_str(2, status_message(f.status), out);
    put_uint(3, status_code(f.status), out);
    put_fixed32(16, flags, out);
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

    fn decoded(resource: &Resource, spans: &EncodedSpans) -> ExportTraceServiceRequest {
        let mut out = Vec::new();
        export_request(&EncodedResource::new(resource), spans, &mut out);
        ExportTraceServiceRequest::decode(out.as_slice()).expect("our encoding decodes")
    }

    fn ours(resource: &Resource, batch: &[SpanData]) -> ExportTraceServiceRequest {
        let mut spans = EncodedSpans::default();
        for s in batch {
            spans.push(&s.instrumentation_scope, |out| put_span_data(s, out));
        }
        assert_eq!(spans.len(), batch.len());
        decoded(resource, &spans)
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

    #[test]
    fn a_record_encodes_as_the_sdk_would_encode_the_same_span() {
        let resource = Resource::builder()
            .with_service_name("routeiq-test")
            .build();
        let scope = InstrumentationScope::builder("routeiq").build();
        let mut expected = span("chat gpt-4o", &scope);
        expected.span_kind = SpanKind::Client;
        expected.span_context = context(1, 2, true, "rojo=00f067aa0ba902b7");
        expected.parent_span_id = SpanId::from(3);
        expected.status = Status::error("upstream failed");

        let mut attributes = Attributes::with_capacity(16);
        attributes.str("gen_ai.request.model", "gpt-4o");
        attributes.str("empty", "");
        attributes.int("server.port", 443);
        attributes.int("negative", -3);
        attributes.float("routeiq.cost_usd", 0.000_125);
        attributes.bool("gen_ai.request.stream", true);
        let mut request = Attributes::default();
        request.strs("gen_ai.response.finish_reasons", ["stop", "length"]);
        request.floats("routeiq.route.scores", &[0.5, -2.0]);
        request.key_value(&KeyValue::new("sampler.attr", 7_i64));
        attributes.append(&request);
        attributes.str("unicode", "caf\u{e9} \u{1f600}");
        assert_eq!(attributes.len(), 10);
        let all = [
            KeyValue::new("gen_ai.request.model", "gpt-4o"),
            KeyValue::new("empty", ""),
            KeyValue::new("server.port", 443_i64),
            KeyValue::new("negative", -3_i64),
            KeyValue::new("routeiq.cost_usd", 0.000_125),
            KeyValue::new("gen_ai.request.stream", true),
            KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(vec!["stop".into(), "length".into()])),
            ),
            KeyValue::new(
                "routeiq.route.scores",
                Value::Array(Array::F64(vec![0.5, -2.0])),
            ),
            KeyValue::new("sampler.attr", 7_i64),
            KeyValue::new("unicode", "caf\u{e9} \u{1f600}"),
        ];
        assert_eq!(attributes.to_key_values(), all);

        let record = |max: usize| {
            let r = Record {
                context: expected.span_context.clone(),
                parent: expected.parent_span_id,
                parent_remote: false,
                kind: SpanKind::Client,
                name: "chat gpt-4o".into(),
                start: expected.start_time,
                end: expected.end_time,
                attributes: attributes.clone(),
                status: expected.status.clone(),
            };
            let mut spans = EncodedSpans::with_capacity(1024);
            spans.push(&scope, |out| put_record(&r, max, out));
            decoded(&resource, &spans)
        };
        for max in [128, 10, 4, 0] {
            let mut e = expected.clone();
            e.attributes = all.iter().take(max).cloned().collect();
            e.dropped_attributes_count = u32::try_from(all.len().saturating_sub(max)).unwrap();
            assert_eq!(record(max), reference(&resource, vec![e]), "at most {max}");
        }
    }
}
