//! Who is calling. For now the master key; virtual keys come with the control plane.

use pingora::http::RequestHeader;

use crate::error::ApiError;
use crate::state::LiveState;

/// The key a client presented: `Authorization: Bearer`, `x-api-key` (Anthropic clients),
/// or `api-key` (Azure clients).
pub fn presented_key(req: &RequestHeader) -> Option<&str> {
    if let Some(v) = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let key = match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ if v.eq_ignore_ascii_case("bearer") => "",
            _ => v,
        };
        if !key.is_empty() {
            return Some(key);
        }
    }
    ["x-api-key", "api-key"].into_iter().find_map(|h| {
        req.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
    })
}

/// Accepts the request or says why not. Without a configured master key the gateway is
/// open, as LiteLLM is.
pub fn authenticate(state: &LiveState, req: &RequestHeader) -> Result<(), ApiError> {
    let Some(master) = state.master_key.as_ref() else {
        return Ok(());
    };
    match presented_key(req) {
        None => Err(ApiError::unauthorized(
            "no API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`)",
        )),
        Some(key) if constant_time_eq(key.as_bytes(), master.expose().as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("invalid API key")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        for (k, v) in headers {
            r.insert_header(*k, *v).unwrap();
        }
        r
    }

    #[test]
    fn finds_keys_in_all_headers() {
        assert_eq!(
            presented_key(&req(&[("authorization", "Bearer sk-1")])),
            Some("sk-1")
        );
        assert_eq!(presented_key(&req(&[("x-api-key", "sk-2")])), Some("sk-2"));
        assert_eq!(presented_key(&req(&[("api-key", "sk-3")])), Some("sk-3"));
        assert_eq!(presented_key(&req(&[("authorization", "Bearer ")])), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
