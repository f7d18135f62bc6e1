//! Criterion benches for the cloud providers' per-request code: request and response
//! translation to and from Gemini, Bedrock Converse and Cohere, their stream conversion
//! (Bedrock's binary event stream decoded on the way), and SigV4 signing.

use std::hint::black_box;

use aws_credential_types::Credentials;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use routeiq_dataplane::error::ClientApi;
use routeiq_dataplane::eventstream::Decoder;
use routeiq_dataplane::handlers::request::RawObject;
use routeiq_dataplane::providers::sigv4::Signer;
use routeiq_dataplane::translate::{
    openai_to_bedrock, openai_to_cohere, openai_to_gemini, stream, ChatFormat,
};
use routeiq_proto::ProviderKind;
use serde_json::{json, Map, Value};

fn chat_request() -> Map<String, Value> {
    match json!({
        "model": "m", "max_tokens": 256, "temperature": 0.2, "top_p": 0.9,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the weather in Paris today? Answer briefly."}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn bedrock_client_request() -> RawObject {
    let body = serde_json::to_vec(&chat_request()).unwrap_or_default();
    RawObject::parse(&body).unwrap_or_default()
}

fn gemini_stream() -> String {
    let mut s = String::new();
    for i in 0..50 {
        s.push_str(&format!("data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"text\":\"word{i} \"}}]}},\"index\":0}}],\"usageMetadata\":{{\"promptTokenCount\":10}},\"responseId\":\"r\"}}\r\n\r\n"));
    }
    s.push_str("data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":50,\"totalTokenCount\":60},\"responseId\":\"r\"}\r\n\r\n");
    s
}

fn cohere_stream() -> String {
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut s = ev(
        "message-start",
        json!({"type": "message-start", "id": "c1", "delta": {"message": {"role": "assistant"}}}),
    );
    s.push_str(&ev("content-start", json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
    for i in 0..50 {
        s.push_str(&ev("content-delta", json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": format!("word{i} ")}}}})));
    }
    s.push_str(&ev(
        "content-end",
        json!({"type": "content-end", "index": 0}),
    ));
    s.push_str(&ev("message-end", json!({"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": {"tokens": {"input_tokens": 10, "output_tokens": 50}}}})));
    s
}

fn frame(event: &str, payload: Value) -> Vec<u8> {
    let m = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ));
    let mut out = Vec::new();
    let _ = write_message_to(&m, &mut out);
    out
}

fn bedrock_stream() -> Vec<u8> {
    let mut s = frame("messageStart", json!({"role": "assistant"}));
    for i in 0..50 {
        s.extend(frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": format!("word{i} ")}}),
        ));
    }
    s.extend(frame("contentBlockStop", json!({"contentBlockIndex": 0})));
    s.extend(frame("messageStop", json!({"stopReason": "end_turn"})));
    s.extend(frame(
        "metadata",
        json!({"usage": {"inputTokens": 10, "outputTokens": 50, "totalTokens": 60}, "metrics": {"latencyMs": 100}}),
    ));
    s
}

fn convert(kind: ProviderKind, format: ChatFormat, input: &[u8]) -> usize {
    let mut d = Decoder::for_provider(kind);
    let mut conv = stream::converter(format, ClientApi::OpenAi, true, "m", Default::default());
    let mut out = Vec::with_capacity(64);
    for ev in d.feed(input).unwrap_or_default() {
        conv.event(&ev, &mut out);
    }
    conv.finish(&mut out);
    out.len()
}

fn translations(c: &mut Criterion) {
    let req = chat_request();
    c.bench_function("translate/openai_request_to_gemini", |b| {
        b.iter(|| openai_to_gemini::request(black_box(&req)))
    });
    // As the handler has it (fields parsed one level deep) to the bytes sent upstream.
    let raw = bedrock_client_request();
    c.bench_function("translate/openai_request_to_bedrock", |b| {
        b.iter(|| openai_to_bedrock::request(black_box(&raw)))
    });
    c.bench_function("translate/openai_request_to_cohere", |b| {
        b.iter(|| openai_to_cohere::request(black_box(&req), "command-r"))
    });
    let gemini = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello! How can I help you today?"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":24,"candidatesTokenCount":9,"totalTokenCount":33},"responseId":"r1"}"#;
    c.bench_function("translate/gemini_response_to_openai", |b| {
        b.iter(|| openai_to_gemini::response(black_box(gemini), "m"))
    });
    let bedrock = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello! How can I help you today?"}]}},"stopReason":"end_turn","usage":{"inputTokens":24,"outputTokens":9,"totalTokens":33},"metrics":{"latencyMs":100}}"#;
    // The upstream bytes to the bytes the client gets.
    c.bench_function("translate/bedrock_response_to_openai", |b| {
        b.iter(|| openai_to_bedrock::completion(black_box(bedrock), "m").map(|(c, _)| c.to_vec()))
    });
    let cohere = br#"{"id":"c1","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"Hello! How can I help you today?"}]},"usage":{"billed_units":{"input_tokens":24,"output_tokens":9},"tokens":{"input_tokens":30,"output_tokens":9}}}"#;
    c.bench_function("translate/cohere_response_to_openai", |b| {
        b.iter(|| openai_to_cohere::response(black_box(cohere), "m"))
    });

    let g = gemini_stream();
    c.bench_function("stream/gemini_51_chunks_to_openai", |b| {
        b.iter(|| {
            convert(
                ProviderKind::Gemini,
                ChatFormat::Gemini,
                black_box(g.as_bytes()),
            )
        })
    });
    let br = bedrock_stream();
    c.bench_function("stream/bedrock_54_frames_to_openai", |b| {
        b.iter(|| convert(ProviderKind::Bedrock, ChatFormat::Bedrock, black_box(&br)))
    });
    let co = cohere_stream();
    c.bench_function("stream/cohere_54_events_to_openai", |b| {
        b.iter(|| {
            convert(
                ProviderKind::Cohere,
                ChatFormat::Cohere,
                black_box(co.as_bytes()),
            )
        })
    });
}

fn sigv4(c: &mut Criterion) {
    let creds = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        Some("session-token".into()),
        None,
        "bench",
    );
    let body = openai_to_bedrock::request(&bedrock_client_request()).unwrap_or_default();
    let host = "bedrock-runtime.us-east-1.amazonaws.com";
    let path = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";
    let signer = Signer::new("us-east-1", "bedrock");
    c.bench_function("sigv4/sign_converse_request", |b| {
        b.iter(|| {
            signer.sign(
                black_box(&creds),
                host,
                path,
                black_box(&body),
                std::time::SystemTime::now(),
            )
        })
    });
}

criterion_group!(providers, translations, sigv4);
criterion_main!(providers);
