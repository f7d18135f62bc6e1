//! OpenAI's legacy text completions (`/v1/completions`) answered through chat, for
//! deployments without a `/completions` of their own (every provider but OpenAI's
//! completion models): the chat answer, in OpenAI's format, becomes a `text_completion`,
//! and its stream a stream of `text_completion` chunks.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::stream::StreamConverter;
use crate::sse::{self, Event};
use crate::usage::Usage;

/// A `text_completion` from a `chat.completion`.
pub fn response(chat: &Value) -> Value {
    let choices = chat
        .get("choices")
        .and_then(Value::as_array)
        .map(|choices| {
            choices
                .iter()
                .map(|c| {
                    let text = c
                        .pointer("/message/content")
                        .map_or_else(String::new, super::content_text);
                    choice(c, text)
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut out = head(chat);
    out.insert("choices".into(), Value::Array(choices));
    if let Some(usage) = chat.get("usage") {
        out.insert("usage".into(), usage.clone());
    }
    Value::Object(out)
}

/// `id`, `object`, `created` and `model` of a completion from a chat answer or chunk.
fn head(chat: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    let id = chat.get("id").and_then(Value::as_str).unwrap_or_default();
    let id = id
        .strip_prefix("chatcmpl-")
        .map_or_else(|| id.to_owned(), |rest| format!("cmpl-{rest}"));
    m.insert("id".into(), id.into());
    m.insert("object".into(), "text_completion".into());
    for f in ["created", "model", "system_fingerprint"] {
        if let Some(v) = chat.get(f) {
            m.insert(f.into(), v.clone());
        }
    }
    m
}

fn choice(c: &Value, text: String) -> Value {
    json!({
        "text": text,
        "index": c.get("index").cloned().unwrap_or(Value::from(0)),
        "logprobs": null,
        "finish_reason": c.get("finish_reason").cloned().unwrap_or(Value::Null),
    })
}

/// OpenAI `chat.completion.chunk`s → `text_completion` chunks. A chunk with neither
/// text, a finish reason nor usage (the role's opening chunk, tool-call deltas) has no
/// counterpart and is left out; `[DONE]` and error events pass as they are.
#[derive(Default)]
pub struct ChunksToCompletions;

impl StreamConverter for ChunksToCompletions {
    fn event(&mut self, ev: &Event, out: &mut Vec<Bytes>) {
        let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) else {
            out.push(ev.raw.clone()); // `[DONE]`
            return;
        };
        if chunk.get("error").is_some() || chunk.get("choices").is_none() {
            out.push(ev.raw.clone());
            return;
        }
        let choices: Vec<Value> = chunk["choices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let text = c
                    .pointer("/delta/content")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let finished = c.get("finish_reason").is_some_and(|f| !f.is_null());
                (!text.is_empty() || finished).then(|| choice(c, text.to_owned()))
            })
            .collect();
        let usage = chunk.get("usage").filter(|u| !u.is_null());
        if choices.is_empty() && usage.is_none() {
            return;
        }
        let mut m = head(&chunk);
        m.insert("choices".into(), Value::Array(choices));
        if let Some(u) = usage {
            m.insert("usage".into(), u.clone());
        }
        out.push(sse::data_json(&Value::Object(m)));
    }

    fn finish(&mut self, _out: &mut Vec<Bytes>) {}

    /// The chain's first converter reads the usage.
    fn usage(&self) -> Option<Usage> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_answer_becomes_a_text_completion() {
        let chat = r#"{"id":"chatcmpl-abc","object":"chat.completion","created":7,"model":"g",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let v = response(&serde_json::from_str(chat).unwrap());
        assert_eq!(v["id"], "cmpl-abc");
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "Hello");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 4);
    }

    fn events(data: &[&str]) -> Vec<String> {
        let mut conv = ChunksToCompletions;
        let mut out = Vec::new();
        for d in data {
            let raw = sse::data(d);
            conv.event(
                &Event {
                    event: None,
                    data: (*d).to_owned(),
                    raw,
                },
                &mut out,
            );
        }
        out.iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn chunks_become_completion_chunks() {
        let out = events(&[
            r#"{"id":"chatcmpl-1","created":1,"model":"g","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","created":1,"model":"g","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","created":1,"model":"g","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"chatcmpl-1","created":1,"model":"g","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
            "[DONE]",
        ]);
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out[0].contains(r#""text":"Hi""#) && out[0].contains("text_completion"));
        assert!(out[0].contains(r#""id":"cmpl-1""#));
        assert!(out[1].contains(r#""finish_reason":"stop""#));
        assert!(out[2].contains(r#""total_tokens":2"#));
        assert_eq!(out[3], "data: [DONE]\n\n");
    }
}
