//! Token usage of one request, as reported by the provider.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
        Lenient::<RawUsage>::deserialize(v).ok()?.0?.usage()
    }
}

/// Pulls `usage` out of a whole response body without materialising the rest of it.
pub fn from_body(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct OnlyUsage {
        #[serde(default)]
        usage: Lenient<RawUsage>,
    }
    let parsed: OnlyUsage = serde_json::from_slice(body).ok()?;
    parsed.usage.0?.usage()
}

/// A usage object as the providers send it (OpenAI's chat and Responses API, Anthropic's),
/// read straight from the body: a count that is not a non-negative integer, or a details
/// field that is not an object, counts as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawUsage {
    prompt_tokens: Lenient<u64>,
    completion_tokens: Lenient<u64>,
    input_tokens: Lenient<u64>,
    output_tokens: Lenient<u64>,
    cache_read_input_tokens: Lenient<u64>,
    cache_creation_input_tokens: Lenient<u64>,
    prompt_tokens_details: Lenient<Details>,
    input_tokens_details: Lenient<Details>,
    completion_tokens_details: Lenient<Details>,
    output_tokens_details: Lenient<Details>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Details {
    cached_tokens: Lenient<u64>,
    reasoning_tokens: Lenient<u64>,
}

impl RawUsage {
    pub fn usage(&self) -> Option<Usage> {
        let input = self.prompt_tokens.0.or_else(|| {
            // Anthropic counts cached prompt tokens separately.
            self.input_tokens.0.map(|i| {
                i + self.cache_read_input_tokens.0.unwrap_or(0)
                    + self.cache_creation_input_tokens.0.unwrap_or(0)
            })
        });
        let output = self.completion_tokens.0.or(self.output_tokens.0);
        // Chat's details, else the Responses API's.
        let detail = |chat: &Lenient<Details>,
                      responses: &Lenient<Details>,
                      k: fn(&Details) -> Option<u64>| {
            [chat, responses]
                .iter()
                .find_map(|d| d.0.as_ref().and_then(k))
        };
        let cached = detail(
            &self.prompt_tokens_details,
            &self.input_tokens_details,
            |d| d.cached_tokens.0,
        )
        .or(self.cache_read_input_tokens.0)
        .unwrap_or(0);
        let reasoning = detail(
            &self.completion_tokens_details,
            &self.output_tokens_details,
            |d| d.reasoning_tokens.0,
        )
        .unwrap_or(0);
        // Anthropic's, and LiteLLM's OpenAI-shaped usage of an Anthropic answer.
        let written = self.cache_creation_input_tokens.0.unwrap_or(0);
        match (input, output) {
            (None, None) => None,
            (i, o) => {
                let (i, o) = (i.unwrap_or(0), o.unwrap_or(0));
                let cached = cached.min(i);
                Some(Usage {
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

/// Any JSON value, read as a `T` when it has `T`'s shape ([`Loose`]) and as absent
/// otherwise: one odd field does not cost the rest of the object.
#[derive(Debug, Clone, Copy)]
pub struct Lenient<T>(pub Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

/// What a value read leniently may be: a non-negative integer or an object.
pub trait Loose<'de>: Sized {
    fn count(_: u64) -> Option<Self> {
        None
    }

    fn object<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl Loose<'_> for u64 {
    fn count(n: u64) -> Option<Self> {
        Some(n)
    }
}

impl<'de> Loose<'de> for RawUsage {
    fn object<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        Self::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
}

impl<'de> Loose<'de> for Details {
    fn object<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        Self::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
}

impl<'de, T: Loose<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(PhantomData)).map(Lenient)
    }
}

struct LenientVisitor<T>(PhantomData<T>);

impl<'de, T: Loose<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<T>, E> {
        Ok(T::count(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<T>, E> {
        Ok(u64::try_from(n).ok().and_then(T::count))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        T::object(map)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
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
    fn a_field_of_another_type_counts_as_absent_and_costs_nothing_else() {
        let odd = r#"{"prompt_tokens":"3","input_tokens":-1,"completion_tokens":4.5,"output_tokens":4,
            "prompt_tokens_details":null,"input_tokens_details":[{"cached_tokens":1}],
            "completion_tokens_details":{"reasoning_tokens":{"n":2}},
            "output_tokens_details":{"reasoning_tokens":3},"extra":{"deep":[1,{"x":true}]}}"#;
        let want = Usage {
            output_tokens: 4,
            reasoning_tokens: 3,
            ..Usage::default()
        };
        let body = format!(r#"{{"id":"x","usage":{odd},"choices":[]}}"#);
        assert_eq!(from_body(body.as_bytes()), Some(want));
        let v: serde_json::Value = serde_json::from_str(odd).unwrap();
        assert_eq!(Usage::from_json(&v), Some(want));
        for not_usage in [
            r#"{"usage":7}"#,
            r#"{"usage":null}"#,
            r#"{"usage":[1]}"#,
            r#"{"usage":{}}"#,
        ] {
            assert_eq!(from_body(not_usage.as_bytes()), None, "{not_usage}");
        }
        assert_eq!(Usage::from_json(&serde_json::json!("usage")), None);
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
