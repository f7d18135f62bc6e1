//! Token usage of one request, as reported by the provider.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token, cached ones included.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The prompt tokens read from the provider's prompt cache (part of `input_tokens`,
    /// priced lower).
    pub cached_input_tokens: u64,
    /// The prompt tokens written to the provider's prompt cache (part of `input_tokens`,
    /// priced higher by the providers that charge for it: Anthropic's
    /// `cache_creation_input_tokens`, Bedrock's `cacheWriteInputTokens`).
    pub cache_write_input_tokens: u64,
    /// The output tokens spent reasoning (part of `output_tokens`).
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Reads either an OpenAI (`prompt_tokens`/`completion_tokens`) or an Anthropic
    /// (`input_tokens`/`output_tokens`) usage object.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let get = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let input = get("prompt_tokens").or_else(|| {
            // Anthropic counts cached prompt tokens separately.
            get("input_tokens").map(|i| {
                i + get("cache_read_input_tokens").unwrap_or(0)
                    + get("cache_creation_input_tokens").unwrap_or(0)
            })
        });
        let output = get("completion_tokens").or_else(|| get("output_tokens"));
        // Chat's details, else the Responses API's.
        let detail = |chat: &str, responses: &str, k: &str| {
            [chat, responses].iter().find_map(|d| {
                v.get(*d)
                    .and_then(|d| d.get(k))
                    .and_then(serde_json::Value::as_u64)
            })
        };
        let cached = detail(
            "prompt_tokens_details",
            "input_tokens_details",
            "cached_tokens",
        )
        .or_else(|| get("cache_read_input_tokens"))
        .unwrap_or(0);
        let reasoning = detail(
            "completion_tokens_details",
            "output_tokens_details",
            "reasoning_tokens",
        )
        .unwrap_or(0);
        // Anthropic's, and LiteLLM's OpenAI-shaped usage of an Anthropic answer.
        let written = get("cache_creation_input_tokens").unwrap_or(0);
        match (input, output) {
            (None, None) => None,
            (i, o) => {
                let (i, o) = (i.unwrap_or(0), o.unwrap_or(0));
                let cached = cached.min(i);
                Some(Self {
                    input_tokens: i,
                    output_tokens: o,
                    cached_input_tokens: cached,
                    cache_write_input_tokens: written.min(i - cached),
                    reasoning_tokens: reasoning.min(o),
                })
            }
        }
    }
}

/// Pulls `usage` out of a whole response body without materialising the rest of it.
pub fn from_body(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct OnlyUsage {
        usage: Option<serde_json::Value>,
    }
    let parsed: OnlyUsage = serde_json::from_slice(body).ok()?;
    parsed.usage.as_ref().and_then(Usage::from_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_shapes() {
        let openai = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        assert_eq!(
            from_body(openai),
            Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                cached_input_tokens: 0,
                ..Usage::default()
            })
        );
        let anthropic = br#"{"content":[],"usage":{"input_tokens":5,"cache_read_input_tokens":2,"output_tokens":1}}"#;
        assert_eq!(
            from_body(anthropic),
            Some(Usage {
                input_tokens: 7,
                output_tokens: 1,
                cached_input_tokens: 2,
                ..Usage::default()
            })
        );
        let cached = br#"{"usage":{"prompt_tokens":100,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":64}}}"#;
        assert_eq!(from_body(cached).unwrap().cached_input_tokens, 64);
        assert_eq!(from_body(b"{}"), None);
    }

    #[test]
    fn reads_cache_writes_and_reasoning() {
        // Anthropic's own: the prompt is the plain, read and written tokens.
        let anthropic = br#"{"usage":{"input_tokens":5,"cache_read_input_tokens":2,"cache_creation_input_tokens":3,"output_tokens":1}}"#;
        let u = from_body(anthropic).unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_write_input_tokens
            ),
            (10, 2, 3)
        );
        // OpenAI-shaped (LiteLLM's for an Anthropic answer, and o-series reasoning).
        let openai = br#"{"usage":{"prompt_tokens":10,"completion_tokens":8,"prompt_tokens_details":{"cached_tokens":2},"cache_creation_input_tokens":3,"completion_tokens_details":{"reasoning_tokens":6}}}"#;
        let u = from_body(openai).unwrap();
        assert_eq!(
            (
                u.cached_input_tokens,
                u.cache_write_input_tokens,
                u.reasoning_tokens
            ),
            (2, 3, 6)
        );
        // The Responses API's details.
        let responses = br#"{"usage":{"input_tokens":4,"output_tokens":9,"input_tokens_details":{"cached_tokens":1},"output_tokens_details":{"reasoning_tokens":5}}}"#;
        let u = from_body(responses).unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_input_tokens, u.reasoning_tokens),
            (4, 1, 5)
        );
        // Details never exceed what they are part of.
        let odd = br#"{"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2},"cache_creation_input_tokens":9,"completion_tokens_details":{"reasoning_tokens":4}}}"#;
        let u = from_body(odd).unwrap();
        assert_eq!(
            (
                u.cached_input_tokens,
                u.cache_write_input_tokens,
                u.reasoning_tokens
            ),
            (2, 1, 1)
        );
    }
}
