//! Who is calling: the master key or a virtual key, both recognised by the SHA-256 of the
//! presented key, looked up in the live snapshot. No database on this path.

use std::sync::Arc;

use pingora::http::RequestHeader;
use routeiq_proto::{KeyHash, VirtualKey};

use crate::error::ApiError;
use crate::state::LiveState;

/// The key a client presented: `x-litellm-api-key` (LiteLLM's header, for pass-through
/// clients that sign `authorization` themselves), `Authorization: Bearer`, `x-api-key`
/// (Anthropic clients), `api-key` (Azure clients) or `x-goog-api-key` (Google's).
pub fn presented_key(req: &RequestHeader) -> Option<&str> {
    // LiteLLM's own header first: pass-through clients (boto3) sign `authorization` with
    // their provider's scheme.
    if let Some(k) = req
        .headers
        .get("x-litellm-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        return Some(k.strip_prefix("Bearer ").unwrap_or(k).trim());
    }
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
    ["x-api-key", "api-key", "x-goog-api-key"]
        .into_iter()
        .find_map(|h| {
            req.headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|k| !k.is_empty())
        })
}

/// Who a request is from.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No master key is configured: the gateway is open, as LiteLLM is.
    Open,
    Master,
    Key(Arc<VirtualKey>),
}

impl Caller {
    pub fn into_key(self) -> Option<Arc<VirtualKey>> {
        match self {
            Self::Key(k) => Some(k),
            _ => None,
        }
    }
}

/// Accepts the request or says why not: 401 for a missing, unknown, blocked or expired key.
/// (Budgets and rate limits are checked once the request's worst case is known: `budgets`,
/// `limits`.)
pub fn authenticate(state: &LiveState, req: &RequestHeader) -> Result<Caller, ApiError> {
    let Some(master) = state.master_key_hash.as_ref() else {
        return Ok(Caller::Open);
    };
    let Some(key) = presented_key(req) else {
        return Err(ApiError::unauthorized(
            "no API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`)",
        ));
    };
    let hash = KeyHash::of(key);
    if hash.ct_eq(master) {
        return Ok(Caller::Master);
    }
    let Some(k) = state.keys.get(&hash) else {
        return Err(ApiError::unauthorized("invalid API key"));
    };
    if k.blocked {
        return Err(ApiError::unauthorized(
            "this key is blocked; an admin can unblock it with /key/unblock",
        ));
    }
    if let Some(at) = k.expires_at {
        if crate::clock::now_secs() as i64 >= at {
            return Err(ApiError::unauthorized(format!(
                "this key expired at unix time {at}"
            )));
        }
    }
    Ok(Caller::Key(Arc::clone(k)))
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
        assert_eq!(
            presented_key(&req(&[("x-goog-api-key", "sk-4")])),
            Some("sk-4")
        );
        // A pass-through client's own signature does not hide LiteLLM's header.
        assert_eq!(
            presented_key(&req(&[
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=y"
                ),
                ("x-litellm-api-key", "Bearer sk-5"),
            ])),
            Some("sk-5")
        );
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use routeiq_proto::Snapshot;

    fn state(keys: Vec<VirtualKey>) -> LiveState {
        LiveState::prepare(
            Snapshot {
                master_key_hash: Some(KeyHash::of("sk-master")),
                keys: keys.into_iter().map(std::sync::Arc::new).collect(),
                ..Snapshot::default()
            },
            &Default::default(),
        )
        .unwrap()
    }

    fn bearer(k: &str) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        r.insert_header("authorization", format!("Bearer {k}"))
            .unwrap();
        r
    }

    fn key(name: &str) -> VirtualKey {
        VirtualKey {
            hash: KeyHash::of(name),
            ..VirtualKey::default()
        }
    }

    #[test]
    fn master_and_virtual_keys() {
        let s = state(vec![
            key("sk-ok"),
            VirtualKey {
                blocked: true,
                ..key("sk-blocked")
            },
            VirtualKey {
                expires_at: Some(1),
                ..key("sk-expired")
            },
            VirtualKey {
                max_budget: Some(1.0),
                spend: 1.0,
                ..key("sk-spent")
            },
            VirtualKey {
                max_budget: Some(1.0),
                spend: 0.5,
                ..key("sk-budget-left")
            },
        ]);
        assert!(matches!(
            authenticate(&s, &bearer("sk-master")),
            Ok(Caller::Master)
        ));
        assert!(matches!(
            authenticate(&s, &bearer("sk-ok")),
            Ok(Caller::Key(_))
        ));
        assert!(authenticate(&s, &bearer("sk-budget-left")).is_ok());
        // A spent budget is refused later, by `budgets`, with the request's worst case.
        assert!(authenticate(&s, &bearer("sk-spent")).is_ok());
        for (k, status) in [
            ("sk-unknown", 401),
            ("sk-blocked", 401),
            ("sk-expired", 401),
        ] {
            assert_eq!(
                authenticate(&s, &bearer(k)).unwrap_err().status,
                status,
                "{k}"
            );
        }
        let open = LiveState::prepare(Snapshot::default(), &Default::default()).unwrap();
        assert!(matches!(
            authenticate(&open, &bearer("anything")),
            Ok(Caller::Open)
        ));
    }

    #[test]
    fn deltas_apply_in_order_and_gaps_are_refused() {
        use routeiq_proto::{Delta, DeltaOp};
        let s = state(vec![key("sk-a")]);
        let next = s
            .apply(&Delta {
                version: 1,
                ops: vec![
                    DeltaOp::DeleteKey(KeyHash::of("sk-a")),
                    DeltaOp::UpsertKey(key("sk-b")),
                ],
            })
            .unwrap();
        assert_eq!(next.version, 1);
        assert!(authenticate(&next, &bearer("sk-a")).is_err());
        assert!(authenticate(&next, &bearer("sk-b")).is_ok());
        // the old state is untouched
        assert!(authenticate(&s, &bearer("sk-a")).is_ok());
        let spent = next
            .apply(&Delta {
                version: 2,
                ops: vec![
                    DeltaOp::UpsertKey(VirtualKey {
                        max_budget: Some(2.0),
                        ..key("sk-b")
                    }),
                    DeltaOp::KeySpend {
                        hash: KeyHash::of("sk-b"),
                        spend: 2.5,
                    },
                ],
            })
            .unwrap();
        assert_eq!(
            spent.keys.get(&KeyHash::of("sk-b")).map(|k| k.spend),
            Some(2.5)
        );
        assert!(matches!(
            spent.apply(&Delta {
                version: 4,
                ops: vec![]
            }),
            Err(crate::state::InvalidSnapshot::VersionGap { current: 2, got: 4 })
        ));
        // A resync (the control plane's database was restored) is never applied on top:
        // only the full snapshot replaces the state.
        assert!(matches!(
            spent.apply(&Delta {
                version: 3,
                ops: vec![DeltaOp::UpsertKey(key("sk-c")), DeltaOp::Resync],
            }),
            Err(crate::state::InvalidSnapshot::Resync)
        ));
        assert!(authenticate(&spent, &bearer("sk-c")).is_err());
        // A settings delta replaces the master key; keys stay.
        let rekeyed = spent
            .apply(&Delta {
                version: 3,
                ops: vec![DeltaOp::Settings(routeiq_proto::GatewaySettings {
                    master_key_hash: Some(KeyHash::of("sk-new-master")),
                    ..Default::default()
                })],
            })
            .unwrap();
        assert!(matches!(
            authenticate(&rekeyed, &bearer("sk-new-master")),
            Ok(Caller::Master)
        ));
        assert_eq!(rekeyed.keys.len(), spent.keys.len());
        // An invalid update is refused and leaves the state as it was.
        let dup = routeiq_proto::Deployment::mock("d", "m");
        assert!(rekeyed
            .apply(&Delta {
                version: 4,
                ops: vec![
                    DeltaOp::UpsertDeployment(dup.clone()),
                    DeltaOp::UpsertDeployment(routeiq_proto::Deployment {
                        model_name: String::new(),
                        ..dup
                    }),
                ],
            })
            .is_err());
        assert_eq!(rekeyed.version, 3);
    }
}
