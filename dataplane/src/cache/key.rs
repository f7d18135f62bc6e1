//! The exact cache's key: SHA-256 over a canonical form of everything that changes the
//! answer.
//!
//! In the key: the client's API, the tenant (see [`tenant`]), the namespace, the model
//! group, and every body field but those that change nothing about the answer
//! ([`IGNORED`]). Each field's value is written canonically (object keys sorted, no
//! whitespace), so two bodies that differ only in key order or spacing share an answer.

use routeiq_proto::{CacheScope, VirtualKey};
use serde_json::Value;
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
        let v: Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("`{name}` is not valid JSON: {e}")))?;
        if v.is_null() {
            continue;
        }
        buf.clear();
        canonical(&v, &mut buf);
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

/// `v` as JSON with object keys sorted and no whitespace.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        Value::String(s) => string(s, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    // Writing a `str` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
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
