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
        let cached = v
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(serde_json::Value::as_u64)
            .or_else(|| {
                // The Responses API's.
                v.get("input_tokens_details")
                    .and_then(|d| d.get("cached_tokens"))
                    .and_then(serde_json::Value::as_u64)
            })
            .or_else(|| get("cache_read_input_tokens"))
            .unwrap_or(0);
        match (input, output) {
            (None, None) => None,
            (i, o) => Some(Self {
                input_tokens: i.unwrap_or(0),
                output_tokens: o.unwrap_or(0),
                cached_input_tokens: cached.min(i.unwrap_or(0)),
            }),
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
                cached_input_tokens: 0
            })
        );
        let anthropic = br#"{"content":[],"usage":{"input_tokens":5,"cache_read_input_tokens":2,"output_tokens":1}}"#;
        assert_eq!(
            from_body(anthropic),
            Some(Usage {
                input_tokens: 7,
                output_tokens: 1,
                cached_input_tokens: 2
            })
        );
        let cached = br#"{"usage":{"prompt_tokens":100,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":64}}}"#;
        assert_eq!(from_body(cached).unwrap().cached_input_tokens, 64);
        assert_eq!(from_body(b"{}"), None);
    }
}
