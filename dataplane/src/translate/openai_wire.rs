//! OpenAI's chat wire format as typed, borrowing structs, for translations on the request
//! path: a request's messages and tools are read without building a `Value` tree (text
//! kept as the JSON string it came as, other strings borrowed from the body unless they
//! hold escapes), and a chat completion is
//! written straight from its parts. For Bedrock that took each direction to about 40 % of
//! the instructions it took through `serde_json::Value` (docs/benchmarks.md, providers,
//! "Thirty-fifth session").

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::json::Object;
use crate::usage::Usage;

/// A JSON string, borrowed from the input when it has no escapes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Str<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A string field as the gateway reads the client's: the string, or `None` for `null` or
/// any other JSON (skipped, as a `Value`'s `as_str` would).
fn loose<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Str<'a>>, D::Error> {
    struct V<'a>(PhantomData<&'a ()>);
    impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
        type Value = Option<Str<'a>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Str(Cow::Borrowed(s))))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(Str(Cow::Owned(s.to_owned()))))
        }
        fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
            Ok(Some(Str(Cow::Owned(s))))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V(PhantomData))
}

/// Text as it will be written: JSON string literals from the other side kept as they came
/// (escapes and all, so text is never unescaped or escaped again).
#[derive(Debug)]
pub enum Text<'a> {
    Empty,
    /// One string literal.
    Json(&'a RawValue),
    /// Several string literals joined: their contents between one pair of quotes.
    Joined(Box<RawValue>),
}

impl<'a> Text<'a> {
    pub fn is_empty(&self) -> bool {
        self.json() == "\"\""
    }

    /// The text's JSON string literal.
    pub fn json(&self) -> &str {
        match self {
            Text::Empty => "\"\"",
            Text::Json(raw) => raw.get(),
            Text::Joined(raw) => raw.get(),
        }
    }

    /// The string literals among `texts` (JSON text) concatenated; others are left out.
    pub fn join(texts: impl IntoIterator<Item = &'a RawValue>) -> Text<'a> {
        let mut strings = texts.into_iter().filter(|t| t.get().starts_with('"'));
        let Some(first) = strings.next() else {
            return Text::Empty;
        };
        let Some(second) = strings.next() else {
            return Text::Json(first);
        };
        let mut all = String::from("\"");
        for t in [first, second].into_iter().chain(strings) {
            let literal = t.get();
            all.push_str(&literal[1..literal.len() - 1]);
        }
        all.push('"');
        // Valid string contents between quotes are a valid string, so this cannot fail.
        RawValue::from_string(all).map_or(Text::Empty, Text::Joined)
    }
}

/// A message's `content`: absent or `null`, a string, or an array of parts. Any other JSON
/// is `Other`, for the translation to refuse with the message's index.
#[derive(Debug)]
pub enum Content<'a> {
    None,
    Text(&'a RawValue),
    Parts(Vec<Part<'a>>),
    Other,
}

impl<'a> Content<'a> {
    /// `content` from its JSON text. Parts that are not objects are kept as parts with no
    /// type or text, as a `Value` reader sees them.
    pub fn of(raw: Option<&'a RawValue>) -> Result<Self, serde_json::Error> {
        let Some(raw) = raw else {
            return Ok(Content::None);
        };
        Ok(match raw.get().as_bytes().first() {
            Some(b'"') => Content::Text(raw),
            Some(b'[') => {
                let parts: Vec<&RawValue> = serde_json::from_str(raw.get())?;
                Content::Parts(
                    parts
                        .into_iter()
                        .map(|p| match p.get().starts_with('{') {
                            true => serde_json::from_str(p.get()),
                            false => Ok(Part::default()),
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            Some(b'n') => Content::None,
            _ => Content::Other,
        })
    }

    /// The text: the string, or the parts' texts joined (OpenAI's `content` as one text).
    pub fn text(&self) -> Text<'a> {
        match self {
            Content::Text(raw) => Text::Json(raw),
            Content::Parts(parts) => Text::join(parts.iter().filter_map(|p| p.text)),
            Content::None | Content::Other => Text::Empty,
        }
    }
}

/// A content part: `{"type": "text", "text": ...}`, `{"type": "image_url", ...}`, ...
#[derive(Debug, Default, Deserialize)]
pub struct Part<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "loose")]
    pub kind: Option<Str<'a>>,
    /// JSON text: a string, unless the client sent something else.
    #[serde(borrow, default)]
    pub text: Option<&'a RawValue>,
    /// `{"url": ...}` or the URL itself; kept as JSON text (images are the rare case).
    #[serde(borrow, default)]
    pub image_url: Option<&'a RawValue>,
}

/// One of a request's `messages`. Fields of the wrong type read as absent, as they did
/// when translations read `Value`s.
#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    #[serde(borrow, default, deserialize_with = "loose")]
    pub role: Option<Str<'a>>,
    /// JSON text; see [`Content::of`].
    #[serde(borrow, default)]
    pub content: Option<&'a RawValue>,
    /// JSON text: the calls when it is an array.
    #[serde(borrow, default)]
    pub tool_calls: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "loose")]
    pub tool_call_id: Option<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "loose")]
    pub name: Option<Str<'a>>,
}

/// An assistant message's tool call.
#[derive(Debug, Deserialize)]
pub struct ToolCall<'a> {
    #[serde(borrow, default, deserialize_with = "loose")]
    pub id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub function: Option<Function<'a>>,
}

/// A tool call's or a tool's `function`.
#[derive(Debug, Deserialize)]
pub struct Function<'a> {
    #[serde(borrow, default, deserialize_with = "loose")]
    pub name: Option<Str<'a>>,
    /// The call's arguments: JSON text in a string (or, from some clients, the object).
    #[serde(borrow, default)]
    pub arguments: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "loose")]
    pub description: Option<Str<'a>>,
    /// The tool's JSON schema.
    #[serde(borrow, default)]
    pub parameters: Option<&'a RawValue>,
}

/// One of a request's `tools`.
#[derive(Debug, Deserialize)]
pub struct Tool<'a> {
    #[serde(borrow, default)]
    pub function: Option<Function<'a>>,
}

/// A chat completion with one choice, as an OpenAI client reads it.
#[derive(Debug)]
pub struct Completion<'a> {
    pub id: String,
    pub created: u64,
    pub model: &'a str,
    /// The answer's text; `null` when the model only called tools.
    pub content: Option<Text<'a>>,
    pub reasoning_content: Option<Text<'a>>,
    pub tool_calls: Vec<CalledTool<'a>>,
    pub finish_reason: &'static str,
    pub usage: Option<OpenAiUsage>,
}

/// A tool call in an answer; `arguments` is the JSON text of the input.
#[derive(Debug)]
pub struct CalledTool<'a> {
    pub id: Option<Str<'a>>,
    pub name: Option<Str<'a>>,
    pub arguments: &'a str,
}

impl Completion<'_> {
    /// The completion as JSON, written field by field: text goes out as it came.
    pub fn to_vec(&self) -> Vec<u8> {
        let text = |t: &Option<Text>| t.as_ref().map_or(0, |t| t.json().len());
        let mut out = Vec::with_capacity(320 + text(&self.content) + text(&self.reasoning_content));
        let mut o = Object::new(&mut out);
        o.plain("id", &self.id);
        o.plain("object", "chat.completion");
        o.value("created", &self.created);
        o.value("model", self.model);
        self.write_choice(o.array("choices").object());
        if let Some(usage) = &self.usage {
            o.value("usage", usage);
        }
        drop(o);
        out
    }

    fn write_choice(&self, mut choice: Object) {
        choice.raw("index", "0");
        let mut message = choice.object("message");
        message.plain("role", "assistant");
        message.raw("content", self.content.as_ref().map_or("null", Text::json));
        if let Some(reasoning) = &self.reasoning_content {
            message.raw("reasoning_content", reasoning.json());
        }
        if !self.tool_calls.is_empty() {
            let mut calls = message.array("tool_calls");
            for call in &self.tool_calls {
                let mut c = calls.object();
                c.value("id", &call.id);
                c.plain("type", "function");
                let mut function = c.object("function");
                function.value("name", &call.name);
                function.value("arguments", call.arguments);
            }
        }
        drop(message);
        choice.plain("finish_reason", self.finish_reason);
    }
}

/// Token usage in OpenAI's shape, with LiteLLM's `cache_creation_input_tokens` for prompt
/// cache writes.
#[derive(Debug, Serialize)]
pub struct OpenAiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<CachedTokens>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<ReasoningTokens>,
}

#[derive(Debug, Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Debug, Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

impl From<Usage> for OpenAiUsage {
    fn from(u: Usage) -> Self {
        let some = |n: u64| (n > 0).then_some(n);
        Self {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total(),
            prompt_tokens_details: some(u.cached_input_tokens)
                .map(|cached_tokens| CachedTokens { cached_tokens }),
            cache_creation_input_tokens: some(u.cache_write_input_tokens),
            completion_tokens_details: some(u.reasoning_tokens)
                .map(|reasoning_tokens| ReasoningTokens { reasoning_tokens }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn message(json: &str) -> Message<'_> {
        serde_json::from_str(json).unwrap()
    }

    fn written(t: &Text) -> String {
        t.json().to_owned()
    }

    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let m = message(r#"{"role":"user","name":"a\nb"}"#);
        assert!(matches!(m.role.unwrap().0, Cow::Borrowed("user")));
        assert!(matches!(m.name.unwrap().0, Cow::Owned(ref s) if s == "a\nb"));
    }

    #[test]
    fn content_of_every_shape() {
        let content = |json: &str| format!("{:?}", Content::of(message(json).content).unwrap());
        assert_eq!(content(r#"{"role":"user"}"#), "None");
        assert_eq!(content(r#"{"role":"user","content":null}"#), "None");
        for other in [r#"{"a":[1]}"#, "5", "true", "-1.5"] {
            let json = format!(r#"{{"role":"user","content":{other}}}"#);
            assert_eq!(content(&json), "Other");
        }
        // A part that is not an object has no type and no text, as a `Value` reader saw it.
        let m = message(r#"{"role":"user","content":[{"type":"text","text":"a"}, 3]}"#);
        let parts = Content::of(m.content).unwrap();
        assert_eq!(
            format!("{parts:?}")
                .matches("kind: None, text: None")
                .count(),
            1
        );
        assert_eq!(parts.text().json(), r#""a""#);
        // Strings of the wrong type read as absent.
        let m = message(r#"{"role":5,"name":{"a":[1]},"tool_call_id":null}"#);
        assert!(m.role.is_none() && m.name.is_none() && m.tool_call_id.is_none());
    }

    #[test]
    fn text_is_written_as_it_came() {
        // A string's escapes go through untouched, and the same text results.
        let m = message(r#"{"role":"user","content":"say \"hi\"\n\u00e9"}"#);
        let text = Content::of(m.content).unwrap().text();
        assert_eq!(written(&text), r#""say \"hi\"\n\u00e9""#);
        assert_eq!(
            serde_json::from_str::<Value>(text.json()).unwrap(),
            Value::String("say \"hi\"\né".into())
        );
        assert!(!text.is_empty());
        let empty = message(r#"{"role":"user","content":""}"#);
        assert!(Content::of(empty.content).unwrap().text().is_empty());
        // Parts: one text is kept as it came, several are joined, other parts and texts
        // that are not strings are left out.
        let m = message(
            r#"{"role":"user","content":[{"type":"text","text":"a\"b"},{"type":"image_url","image_url":{"url":"u"}}]}"#,
        );
        assert_eq!(
            written(&Content::of(m.content).unwrap().text()),
            r#""a\"b""#
        );
        let m = message(
            r#"{"role":"user","content":[{"type":"text","text":"a\n"},{"type":"text","text":7},{"type":"text","text":"b"},{"type":"text","text":"c"}]}"#,
        );
        assert_eq!(
            written(&Content::of(m.content).unwrap().text()),
            r#""a\nbc""#
        );
        assert!(Content::Other.text().is_empty());
        assert!(Content::None.text().is_empty());
    }

    #[test]
    fn usage_in_openai_shape() {
        let u = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cached_input_tokens: 4,
            cache_write_input_tokens: 2,
            reasoning_tokens: 3,
        };
        assert_eq!(
            serde_json::to_value(OpenAiUsage::from(u)).unwrap(),
            json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                   "prompt_tokens_details": {"cached_tokens": 4},
                   "cache_creation_input_tokens": 2,
                   "completion_tokens_details": {"reasoning_tokens": 3}})
        );
        assert_eq!(
            serde_json::to_value(OpenAiUsage::from(Usage {
                input_tokens: 1,
                ..Usage::default()
            }))
            .unwrap(),
            json!({"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1})
        );
    }
}
