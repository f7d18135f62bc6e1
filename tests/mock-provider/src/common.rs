//! What every protocol shares: recorded requests, fault injection, reply text and token
//! counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A stored Responses API answer and its input items.
pub type StoredResponse = (Value, Vec<Value>);

#[derive(Clone, Default)]
pub struct State {
    last: Arc<Mutex<Value>>,
    faults: Arc<Mutex<HashMap<String, Fault>>>,
    stats: Arc<Mutex<BTreeMap<String, Stats>>>,
    /// Google service accounts and the access tokens given out for them.
    pub oauth: crate::oauth::Registry,
    /// AWS credentials whose SigV4 signatures verify, including those STS gave out.
    pub aws: crate::aws::Registry,
    /// Responses API answers given (their ids).
    responses: Arc<std::sync::atomic::AtomicU64>,
    /// The Responses API answers stored, by id: the response and its input items.
    pub stored_responses: Arc<Mutex<HashMap<String, StoredResponse>>>,
    /// Files and batches.
    pub files: crate::files::Shared,
    /// Skills uploaded through the Skills API.
    pub skills: crate::skills::Shared,
}

/// Faults injected for one upstream model (`POST /__faults` with `{model: fault}`), so a
/// test can make one deployment of a group misbehave.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Answer with this HTTP status (an error in the provider's shape) ...
    pub status: Option<u16>,
    /// ... with this probability (default 1).
    pub fail_rate: Option<f64>,
    /// `retry-after` seconds on the error.
    pub retry_after: Option<u64>,
    /// `error.code` of the error (`content_policy_violation`, ...).
    pub code: Option<String>,
    /// Wait before answering.
    pub delay_ms: Option<u64>,
    /// Streams: wait before each event after the first.
    pub chunk_delay_ms: Option<u64>,
    /// Streams: break the connection after this many events.
    pub reset_after_chunks: Option<usize>,
    /// A prompt over this many tokens gets the provider's context-length 400 (OpenAI's
    /// `context_length_exceeded`).
    pub max_prompt_tokens: Option<u64>,
    /// Not a fault: report this many prompt tokens as read from the prompt cache.
    pub cached_tokens: Option<u64>,
    /// Not a fault: report this many prompt tokens as written to the prompt cache
    /// (Anthropic's `cache_creation_input_tokens`).
    pub cache_write_tokens: Option<u64>,
    /// Not a fault: report this many completion tokens as reasoning (OpenAI's
    /// `completion_tokens_details.reasoning_tokens`).
    pub reasoning_tokens: Option<u64>,
    /// Not a fault: the requests and tokens left in the provider's rate-limit window, sent
    /// in its headers (OpenAI's `x-ratelimit-remaining-*`, Anthropic's
    /// `anthropic-ratelimit-*-remaining`).
    pub ratelimit_remaining: Option<[u64; 2]>,
}

/// What `GET /__stats` reports per upstream model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub failures: u64,
}

/// An error the fault asks for, before the provider shapes it.
#[derive(Debug)]
pub struct Injected {
    pub status: u16,
    pub message: String,
    pub code: String,
    pub retry_after: Option<u64>,
    /// For `context_length_exceeded`: the prompt limit the fault set.
    pub max_prompt_tokens: Option<u64>,
}

/// How a stream should misbehave (and how many prompt tokens came from the cache).
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamFault {
    pub chunk_delay_ms: Option<u64>,
    pub reset_after_chunks: Option<usize>,
    pub cached_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub ratelimit_remaining: Option<[u64; 2]>,
}

impl StreamFault {
    /// Adds the rate-limit headers the fault asks for, under `names` (requests, tokens).
    pub fn ratelimit_headers(
        &self,
        mut r: axum::response::Response,
        names: [&'static str; 2],
    ) -> axum::response::Response {
        if let Some(left) = self.ratelimit_remaining {
            for (name, n) in names.into_iter().zip(left) {
                r.headers_mut()
                    .insert(name, axum::http::HeaderValue::from(n));
            }
        }
        r
    }
}

impl State {
    /// Counts a request for `model`, waits as its fault says, and returns the error to
    /// answer with, if any.
    pub async fn inject(&self, model: &str, prompt_tokens: u64) -> (Option<Injected>, StreamFault) {
        let fault = self
            .faults
            .lock()
            .ok()
            .and_then(|f| f.get(model).cloned())
            .unwrap_or_default();
        if let Some(ms) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut injected = None;
        if let Some(max) = fault.max_prompt_tokens.filter(|max| prompt_tokens > *max) {
            injected = Some(Injected {
                status: 400,
                message: format!("This model's maximum context length is {max} tokens. However, your messages resulted in {prompt_tokens} tokens."),
                code: "context_length_exceeded".into(),
                retry_after: None,
                max_prompt_tokens: Some(max),
            });
        } else if let Some(status) = fault.status {
            if fastrand::f64() < fault.fail_rate.unwrap_or(1.0) {
                injected = Some(Injected {
                    status,
                    message: format!("mock fault {status} for {model}"),
                    code: fault.code.clone().unwrap_or_else(|| "mock_fault".into()),
                    retry_after: fault.retry_after,
                    max_prompt_tokens: fault.max_prompt_tokens,
                });
            }
        }
        if let Ok(mut stats) = self.stats.lock() {
            let s = stats.entry(model.to_owned()).or_default();
            s.requests += 1;
            s.failures += u64::from(injected.is_some());
        }
        (
            injected,
            StreamFault {
                chunk_delay_ms: fault.chunk_delay_ms,
                reset_after_chunks: fault.reset_after_chunks,
                cached_tokens: fault.cached_tokens,
                cache_write_tokens: fault.cache_write_tokens,
                reasoning_tokens: fault.reasoning_tokens,
                ratelimit_remaining: fault.ratelimit_remaining,
            },
        )
    }

    /// The next Responses API answer's number.
    pub fn next_response(&self) -> u64 {
        self.responses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Remembers a request so tests can see what the gateway sent upstream.
    pub fn record(&self, path: &str, headers: &HeaderMap, body: &Value) {
        let headers: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        if let Ok(mut last) = self.last.lock() {
            *last = json!({"path": path, "headers": headers, "body": body});
        }
    }
}

/// `POST /__faults`: replaces every fault (`{}` clears them) and the statistics.
pub async fn set_faults(
    AxumState(state): AxumState<State>,
    Json(faults): Json<HashMap<String, Fault>>,
) -> Json<Value> {
    if let Ok(mut f) = state.faults.lock() {
        *f = faults;
    }
    if let Ok(mut s) = state.stats.lock() {
        s.clear();
    }
    Json(json!({"ok": true}))
}

/// `GET /__stats`: requests and injected failures per upstream model since the last
/// `POST /__faults`.
pub async fn stats(AxumState(state): AxumState<State>) -> Json<Value> {
    Json(json!(state
        .stats
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default()))
}

pub async fn last_request(AxumState(state): AxumState<State>) -> Json<Value> {
    Json(state.last.lock().map(|v| v.clone()).unwrap_or(Value::Null))
}

/// A streamed body, one write per chunk (an SSE event, an event-stream frame); `fault` may
/// slow it down (`chunk_delay_ms` before each chunk after the first) or break the connection
/// off (`reset_after_chunks`).
pub fn streamed(chunks: Vec<Bytes>, fault: StreamFault, content_type: &'static str) -> Response {
    let cut = fault.reset_after_chunks.unwrap_or(usize::MAX);
    let delay = fault.chunk_delay_ms.map(Duration::from_millis);
    let stream = futures_util::StreamExt::then(
        futures_util::stream::iter(chunks.into_iter().enumerate()),
        move |(i, chunk)| async move {
            if i > 0 {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
            }
            if i >= cut {
                if i > 0 {
                    // Let the server flush the chunks before, so the client sees them, then
                    // the reset.
                    tokio::task::yield_now().await;
                }
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "mock stream reset",
                ))
            } else {
                Ok(chunk)
            }
        },
    );
    Response::builder()
        .header("content-type", content_type)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Text of a string content or an array of text parts/blocks.
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") | None => p.get("text").and_then(Value::as_str),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

pub fn reply_to(user_text: &str) -> String {
    let echoed: String = user_text.chars().take(200).collect();
    format!("mock reply to: {echoed}")
}

pub fn words(text: &str) -> u64 {
    text.split_whitespace().count().max(1) as u64
}

pub fn prompt_tokens(total_chars: usize) -> u64 {
    (total_chars as u64).div_ceil(4).max(1)
}

/// A fault the test asked for: `x-mock-status: NNN` header or `mock-status-NNN` in the
/// last user message (the gateway does not forward client headers).
pub fn requested_status(headers: &HeaderMap, last_user: &str) -> Option<u16> {
    headers
        .get("x-mock-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            last_user
                .split("mock-status-")
                .nth(1)
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse().ok())
        })
}

/// Delay asked for: `x-mock-delay-ms` header, or 2 s for the upstream model `slow`.
pub async fn maybe_delay(headers: &HeaderMap, model: &str) {
    let ms = headers
        .get("x-mock-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(if model == "slow" { 2000 } else { 0 });
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// A tiny deterministic unit vector for embeddings.
pub fn vector(text: &str) -> Vec<f32> {
    vector_n(text, 8)
}

/// A bag-of-words unit vector of 256 dimensions: each lower-cased word (letters and digits)
/// adds one to a dimension chosen by its hash. Texts that share most of their words are
/// close, as with a real embedding model, so semantic matching can be tested end to end
/// (upstream models named `mock-bow-*`).
pub fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 256];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.to_lowercase().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        v[(h % 256) as usize] += 1.0;
    }
    unit(v)
}

/// `v` scaled to length 1.
fn unit(v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.into_iter().map(|x| x / norm).collect()
}

/// A deterministic unit vector of `dims` dimensions, for APIs that ask for a size (its first
/// eight values are not [`vector`]'s: both are normalized).
pub fn vector_n(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut v = Vec::with_capacity(dims);
    for i in 0..dims {
        for b in text.bytes().chain([i as u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        v.push(((h >> 40) as f32 / (1u64 << 24) as f32) - 0.5);
    }
    unit(v)
}

pub fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= chunk.len() {
                A[((n >> shift) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_from_text_or_header() {
        let mut h = HeaderMap::new();
        assert_eq!(
            requested_status(&h, "please mock-status-503 now"),
            Some(503)
        );
        assert_eq!(requested_status(&h, "hello"), None);
        h.insert("x-mock-status", "429".parse().unwrap());
        assert_eq!(requested_status(&h, "hello"), Some(429));
    }

    #[test]
    fn helpers() {
        assert_eq!(reply_to("hi"), "mock reply to: hi");
        assert_eq!(words("a b  c"), 3);
        assert_eq!(prompt_tokens(9), 3);
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(vector("x"), vector("x"));
        assert_eq!(vector("x"), vector_n("x", 8));
        let long = vector_n("x", 1024);
        assert_eq!(long.len(), 1024);
        let norm: f32 = long.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-3);
    }
}
