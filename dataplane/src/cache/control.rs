//! A request's own cache controls: LiteLLM's body field `cache` (`no-cache`, `no-store`,
//! `ttl`, `s-maxage`, `namespace`, `use-cache`) and the `Cache-Control` request header
//! (`no-cache`, `no-store`, `max-age` / `s-maxage`), with the same meanings. The body wins
//! where both say something.

use std::time::Duration;

use serde::Deserialize;

use crate::error::ApiError;
use crate::handlers::request::RawObject;

/// Longest `ttl` a request may ask for (30 days).
const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Controls {
    /// Do not answer from the cache (a fresh answer is still stored).
    pub no_cache: bool,
    /// Do not store the answer.
    pub no_store: bool,
    /// How long to keep the answer.
    pub ttl: Option<Duration>,
    /// Accept only answers at most this old.
    pub max_age: Option<Duration>,
    pub namespace: Option<String>,
    /// `default_off` mode: use the cache for this request.
    pub use_cache: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(rename = "no-cache", default)]
    no_cache: Option<bool>,
    #[serde(rename = "no-store", default)]
    no_store: Option<bool>,
    #[serde(default)]
    ttl: Option<f64>,
    #[serde(rename = "s-maxage", default)]
    s_maxage: Option<f64>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(rename = "use-cache", default)]
    use_cache: Option<bool>,
}

fn seconds(field: &str, s: f64) -> Result<Duration, ApiError> {
    if s.is_finite() && s >= 0.0 && s <= MAX_TTL.as_secs_f64() {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(ApiError::bad_request(format!(
            "`cache.{field}` must be a number of seconds from 0 to {}",
            MAX_TTL.as_secs()
        ))
        .with_param("cache"))
    }
}

impl Controls {
    /// The request's controls; its body's `cache` field is taken out (providers do not
    /// know it). A malformed one is a 400 naming it.
    pub fn take(req: &mut RawObject, cache_control: Option<&str>) -> Result<Self, ApiError> {
        let mut c = Self::default();
        if let Some(header) = cache_control {
            for d in header.split(',').map(str::trim) {
                let (name, value) = d.split_once('=').unwrap_or((d, ""));
                match name.to_ascii_lowercase().as_str() {
                    "no-cache" => c.no_cache = true,
                    "no-store" => c.no_store = true,
                    "max-age" | "s-maxage" => {
                        c.max_age = value
                            .trim_matches('"')
                            .parse::<u64>()
                            .ok()
                            .map(Duration::from_secs)
                    }
                    _ => {}
                }
            }
        }
        let Some(raw) = req.remove("cache") else {
            return Ok(c);
        };
        if raw.get() == "null" {
            return Ok(c);
        }
        let b: Body = serde_json::from_str(raw.get()).map_err(|e| {
            ApiError::bad_request(format!(
                "`cache` must be an object with `no-cache`, `no-store`, `ttl`, `s-maxage`, `namespace` or `use-cache`: {e}"
            ))
            .with_param("cache")
        })?;
        if let Some(v) = b.no_cache {
            c.no_cache = v;
        }
        if let Some(v) = b.no_store {
            c.no_store = v;
        }
        if let Some(s) = b.ttl {
            c.ttl = Some(seconds("ttl", s)?);
        }
        if let Some(s) = b.s_maxage {
            c.max_age = Some(seconds("s-maxage", s)?);
        }
        c.namespace = b.namespace.filter(|n| !n.is_empty());
        c.use_cache = b.use_cache.unwrap_or(false);
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(body: &str, header: Option<&str>) -> Result<(Controls, RawObject), ApiError> {
        let mut req = RawObject::parse(body.as_bytes()).unwrap();
        Controls::take(&mut req, header).map(|c| (c, req))
    }

    #[test]
    fn body_and_header_controls() {
        let (c, req) = take(
            r#"{"model":"m","cache":{"no-cache":true,"ttl":5,"s-maxage":2,"namespace":"n","use-cache":true}}"#,
            None,
        )
        .unwrap();
        assert!(req.raw("cache").is_none(), "the field is taken out");
        assert_eq!(
            c,
            Controls {
                no_cache: true,
                no_store: false,
                ttl: Some(Duration::from_secs(5)),
                max_age: Some(Duration::from_secs(2)),
                namespace: Some("n".into()),
                use_cache: true,
            }
        );
        let (c, _) = take(r#"{"model":"m"}"#, Some("no-store, max-age=7")).unwrap();
        assert!(c.no_store && !c.no_cache);
        assert_eq!(c.max_age, Some(Duration::from_secs(7)));
        let (c, _) = take(r#"{"cache":{"no-store":false}}"#, Some("no-store")).unwrap();
        assert!(!c.no_store, "the body wins");
    }

    #[test]
    fn malformed_controls_are_400() {
        for body in [
            r#"{"cache":true}"#,
            r#"{"cache":{"ttl":-1}}"#,
            r#"{"cache":{"nocache":true}}"#,
            r#"{"cache":{"ttl":"5"}}"#,
        ] {
            let e = take(body, None).err().unwrap();
            assert_eq!(e.status, 400, "{body}");
        }
    }
}
