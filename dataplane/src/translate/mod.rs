//! Translation between the chat wire formats the gateway speaks: OpenAI Chat Completions
//! and Anthropic Messages (client and provider formats, both ways), and Google's
//! `generateContent`, Bedrock's Converse and Cohere's v2 chat (provider formats only).
//!
//! The gateway passes a request through untouched (but for the model name) when client and
//! provider speak the same format, and translates only when they differ. Anthropic clients
//! reach provider-only formats through the OpenAI format. Legacy text completions and the
//! Responses API reach chat-only providers through the OpenAI chat format too.

pub mod anthropic_to_openai;
pub mod chat_to_completions;
pub mod openai_to_anthropic;
pub mod openai_to_bedrock;
pub mod openai_to_cohere;
pub mod openai_to_gemini;
pub mod openai_wire;
pub mod responses_via_chat;
pub mod stream;

use serde_json::{Map, Value};

/// A chat wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    OpenAi,
    Anthropic,
    /// Google's `generateContent` (Gemini API, Vertex AI).
    Gemini,
    /// Bedrock's Converse API.
    Bedrock,
    /// Cohere's v2 chat API.
    Cohere,
}

/// Anthropic requires `max_tokens`; this is what an OpenAI request without one gets
/// (LiteLLM's default too).
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u64 = 4096;

/// A chat completion id for an answer whose provider sent none: `chatcmpl-` and 16 random
/// hex digits.
pub fn chat_id() -> String {
    let mut id = String::with_capacity(25);
    id.push_str("chatcmpl-");
    routeiq_proto::push_hex(&mut id, &fastrand::u64(..).to_be_bytes());
    id
}

/// A provider's answer body as JSON; a body that is not JSON is the provider's failure (502),
/// named after `provider`.
pub fn upstream_json(body: &[u8], provider: &str) -> Result<Value, crate::error::ApiError> {
    serde_json::from_slice(body).map_err(|e| not_json(provider, e))
}

/// The 502 for a provider's answer that is not JSON, or not JSON of the expected shape.
pub fn not_json(provider: &str, e: serde_json::Error) -> crate::error::ApiError {
    crate::error::ApiError::upstream(
        502,
        crate::error::ErrorKind::Upstream,
        format!("{provider} returned a body that is not JSON of its answer's shape: {e}"),
    )
}

/// Text of an OpenAI `content` (string or parts) or Anthropic content (string or blocks).
pub fn content_text(content: &Value) -> String {
    joined_text(content, "")
}

/// Text of an OpenAI `content` (string or parts), its text parts joined by newlines.
pub fn content_lines(content: &Value) -> String {
    joined_text(content, "\n")
}

/// A content's string, or its parts' texts joined by `separator`.
fn joined_text(content: &Value, separator: &str) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(separator),
        _ => String::new(),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chat_id_is_the_prefix_and_sixteen_hex_digits() {
        let ids: Vec<String> = (0..64).map(|_| super::chat_id()).collect();
        for id in &ids {
            let digits = id.strip_prefix("chatcmpl-").unwrap();
            assert_eq!(digits.len(), 16, "{id}");
            assert!(digits
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
        // Random: 64 draws of 64 bits do not repeat.
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }
}
