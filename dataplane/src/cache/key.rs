//! The exact cache's key: SHA-256 over a canonical form of everything that changes the
//! answer.
//!
//! In the key: the client's API, the tenant (see [`tenant`]), the namespace, the model
//! group, and every body field but those that change nothing about the answer
//! ([`IGNORED`]). Each field's value is written canonically (object keys sorted, no
//! whitespace), so two bodies that differ only in key order or spacing share an answer.

use std::borrow::Cow;
use std::fmt;

use routeiq_proto::{CacheScope, VirtualKey};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

use super::Api;
use crate::error::ApiError;
use crate::handlers::request::RawObject;

/// Body fields that do not change the answer: who asked (`user`, `metadata`), how it is
/// delivered (`stream`, `stream_options`), and what only the gateway reads.
const IGNORED: [&str; 22] = [
    "model",
    "user",
    "metadata",
    "stream",
    "stream_options",
    "cache",
    "caching",
    "tags",
    "drop_params",
    "litellm_metadata",
    "litellm_session_id",
    "litellm_trace_id",
    "num_retries",
    "fallbacks",
    "context_window_fallbacks",
    "timeout",
    "request_timeout",
    "mock_testing_fallbacks",
    "mock_testing_rate_limit_error",
    "safety_identifier",
    "prompt_cache_key",
    "store",
];

/// Whose answers a request may be given, under `scope`: its team's (a key without a team
/// is a tenant of its own), its key's, or everyone's. The master key is a tenant of its
/// own.
pub fn tenant(scope: CacheScope, key: Option<&VirtualKey>) -> String {
    match (scope, key) {
        (CacheScope::Global, _) => String::new(),
        (_, None) => "master".into(),
        (CacheScope::Team, Some(k)) if !k.team_id.is_empty() => format!("team:{}", k.team_id),
        (_, Some(k)) => format!("key:{}", k.hash.to_hex()),
    }
}

/// The namespaces a key is under: the configured one, the key's (or team's) and the
/// request's. Each is hashed in its own place, so none can stand for another.
pub type Namespaces<'a> = [Option<&'a str>; 3];

/// The key of `req` (a request for model group `model` in `api`).
pub fn of(
    api: Api,
    tenant: &str,
    namespaces: Namespaces<'_>,
    model: &str,
    req: &RawObject,
) -> Result<[u8; 32], ApiError> {
    let mut h = Sha256::new();
    let api = match api {
        Api::Chat => "openai-chat",
        Api::Messages => "anthropic-messages",
        Api::Responses => "openai-responses",
    };
    for p in ["routeiq-cache-v1", api, tenant] {
        part(&mut h, p.as_bytes());
    }
    for ns in namespaces {
        match ns {
            Some(n) => part(&mut h, n.as_bytes()),
            // No namespace: a length no part has (not the empty namespace).
            None => h.update(u64::MAX.to_le_bytes()),
        }
    }
    part(&mut h, model.as_bytes());
    let mut buf = Vec::with_capacity(1024);
    // `RawObject` keeps its fields sorted by name.
    for (name, raw) in req.fields() {
        if IGNORED.contains(&name) {
            continue;
        }
        let v: Json = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("`{name}` is not valid JSON: {e}")))?;
        if matches!(v, Json::Null) {
            continue;
        }
        buf.clear();
        v.canonical(&mut buf);
        part(&mut h, name.as_bytes());
        part(&mut h, &buf);
    }
    Ok(h.finalize().into())
}

/// One part of the key, with its length: no part can run into the next.
fn part(h: &mut Sha256, p: &[u8]) {
    h.update((p.len() as u64).to_le_bytes());
    h.update(p);
}

/// A JSON value parsed for its canonical form only: its strings are borrowed from the
/// body unless they hold escapes, and an object is a list of members (no map is built).
enum Json<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl Json<'_> {
    /// Writes the value as JSON with object keys sorted (a key given twice keeps its last
    /// value) and no whitespace: the form `serde_json::Value` prints, without building one.
    /// (One difference: `Value` reads an object whose first key is serde_json's private
    /// raw-value marker as the JSON text of its value, or refuses it; here it is an object
    /// like any other, so it never shares a key with the value it spells out.)
    fn canonical(self, out: &mut Vec<u8>) {
        match self {
            Self::Null => out.extend_from_slice(b"null"),
            Self::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            Self::U64(n) => drop(serde_json::to_writer(&mut *out, &n)),
            Self::I64(n) => drop(serde_json::to_writer(&mut *out, &n)),
            Self::F64(f) => drop(serde_json::to_writer(&mut *out, &f)),
            Self::Str(s) => string(s, out),
            Self::Array(items) => {
                out.push(b'[');
                for (i, item) in items.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.canonical(out);
                }
                out.push(b']');
            }
            Self::Object(mut members) => {
                // A stable sort: of a key given twice, the last value is written.
                members.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'{');
                let mut first = true;
                let mut members = members.into_iter().peekable();
                while let Some((k, v)) = members.next() {
                    if members.peek().is_some_and(|next| next.0 == k) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    string(k, out);
                    out.push(b':');
                    v.canonical(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// A string as JSON. One borrowed from the body held no escape there, so it holds nothing
/// to escape (a quote or a backslash would have been escaped, and serde_json refuses a
/// control character in a string): it is copied as it is. One that held escapes is written
/// by serde_json (writing to a `Vec` cannot fail).
fn string(s: Cow<str>, out: &mut Vec<u8>) {
    match s {
        Cow::Borrowed(s) => {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(s) => drop(serde_json::to_writer(&mut *out, &s)),
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::U64(n))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::I64(n))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Json<'de>, E> {
        Ok(Json::F64(f))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some((k, v)) = map.next_entry::<Key<'de>, Json<'de>>()? {
            members.push((k.0, v));
        }
        Ok(Json::Object(members))
    }
}

/// An object key, borrowed unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Json::deserialize(d)? {
            Json::Str(s) => Ok(Key(s)),
            _ => Err(serde::de::Error::custom("an object key is not a string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> [u8; 32] {
        of(
            Api::Chat,
            "team:t",
            [None; 3],
            "m",
            &RawObject::parse(body.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn order_spacing_and_delivery_fields_do_not_change_the_key() {
        let a =
            key(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.2}"#);
        let b = key(
            r#"{ "temperature": 0.2, "stream": true, "user": "u1", "metadata": {"x": 1},
                 "messages": [ {"content": "hi", "role": "user"} ], "model": "m" }"#,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let base = key(r#"{"messages":[{"role":"user","content":"hi"}]}"#);
        for other in [
            r#"{"messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":1}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
        ] {
            assert_ne!(base, key(other), "{other}");
        }
        let req = RawObject::parse(br#"{"messages":[]}"#).unwrap();
        let k = |api, tenant: &str, ns: Namespaces, model: &str| {
            of(api, tenant, ns, model, &req).unwrap()
        };
        let base = k(Api::Chat, "team:a", [None; 3], "m");
        assert_ne!(base, k(Api::Chat, "team:b", [None; 3], "m"));
        assert_ne!(base, k(Api::Chat, "team:a", [None, None, Some("ns")], "m"));
        assert_ne!(base, k(Api::Chat, "team:a", [None, None, Some("")], "m"));
        assert_ne!(base, k(Api::Chat, "team:a", [None; 3], "m2"));
        assert_ne!(base, k(Api::Messages, "team:a", [None; 3], "m"));
        assert_ne!(base, k(Api::Responses, "team:a", [None; 3], "m"));
        // A request's namespace never stands for a key's or the configured one.
        let key_ns = k(Api::Chat, "", [None, Some("x"), None], "m");
        assert_ne!(key_ns, k(Api::Chat, "", [None, None, Some("x")], "m"));
        assert_ne!(key_ns, k(Api::Chat, "", [Some("x"), None, None], "m"));
    }

    #[test]
    fn the_canonical_form_is_the_one_serde_json_prints_sorted() {
        for raw in [
            r#"{"b":1,"a":[true,false,null,{"z":"x","y":-2}],"c":"h\u00e9\"\n"}"#,
            r#"[0.2, 1e2, 1.0, -0.0, 18446744073709551615, -9223372036854775808, 3.141592653589793]"#,
            r#"{"k":1,"k":2,"\u006b":3,"j":{}}"#,
            r#""plain""#,
            r#"{"nested":{"b":{"d":1,"c":[1,{"f":2,"e":3}]},"a":"\t"}}"#,
            r#"{"é":"naïve ☃","e\u0301":"\u00e9","\/":"a\/b","":""}"#,
        ] {
            let v: Json = serde_json::from_str(raw).unwrap();
            let mut out = Vec::new();
            v.canonical(&mut out);
            // serde_json's `Value` keeps object keys sorted (a key given twice keeps its
            // last value): the form the key had before it was written without one.
            let expected = serde_json::from_str::<serde_json::Value>(raw)
                .unwrap()
                .to_string();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{raw}");
        }
        let raw = r#"{"$serde_json::private::RawValue":"[1, 2]"}"#;
        let mut out = Vec::new();
        serde_json::from_str::<Json>(raw)
            .unwrap()
            .canonical(&mut out);
        assert_eq!(out, br#"{"$serde_json::private::RawValue":"[1, 2]"}"#);
    }

    #[test]
    fn tenants_follow_the_scope() {
        let mut k = VirtualKey {
            hash: routeiq_proto::KeyHash::of("sk-1"),
            ..Default::default()
        };
        k.team_id = "t1".into();
        assert_eq!(tenant(CacheScope::Team, Some(&k)), "team:t1");
        assert!(tenant(CacheScope::Key, Some(&k)).starts_with("key:"));
        assert_eq!(tenant(CacheScope::Global, Some(&k)), "");
        k.team_id.clear();
        assert!(tenant(CacheScope::Team, Some(&k)).starts_with("key:"));
        assert_eq!(tenant(CacheScope::Team, None), "master");
    }
}
