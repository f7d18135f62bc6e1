//! OAuth 2.0 client-credentials tokens for MCP servers with `auth_type: oauth2` (RFC 6749
//! §4.4): fetched from the server's token endpoint over the pooled upstream client (so the
//! egress allow-list and the SSRF guard apply), cached until shortly before they expire,
//! one fetch at a time per client, and forgotten when the server refuses one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::client::Server;
use crate::jsonrpc::{RpcError, INTERNAL_ERROR};
use crate::upstream::{Upstream, UpstreamRequest};

/// A token without `expires_in` is used this long.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Token responses larger than this are refused.
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Clone)]
struct Token {
    value: String,
    refresh_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Tokens by client (token URL, client id and secret, scopes), shared by every state
/// version of this data plane.
#[derive(Default)]
pub struct Tokens(Mutex<HashMap<u64, Slot>>);

fn key(s: &Server) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let o = s.config.oauth2.as_ref()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&o.token_url, &o.client_id, &o.scopes, s.config.auth.value()).hash(&mut h);
    Some(h.finish())
}

fn failed(s: &Server, why: impl std::fmt::Display) -> RpcError {
    RpcError::new(
        200,
        INTERNAL_ERROR,
        format!(
            "MCP server {}: getting its OAuth token: {why}",
            s.config.name
        ),
    )
}

impl Tokens {
    fn slot(&self, key: u64) -> Slot {
        match self.0.lock() {
            Ok(mut m) => Arc::clone(m.entry(key).or_default()),
            Err(_) => Slot::default(),
        }
    }

    /// The `authorization` header for `s`, if it uses OAuth: a cached token, or a new one.
    pub async fn header(
        &self,
        upstream: &Arc<Upstream>,
        s: &Server,
    ) -> Result<Option<(&'static str, String)>, RpcError> {
        let Some(key) = key(s) else {
            return Ok(None);
        };
        let slot = self.slot(key);
        let mut held = slot.lock().await;
        if let Some(t) = held.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(Some(("authorization", format!("Bearer {}", t.value))));
        }
        let token = fetch(upstream, s).await?;
        let header = format!("Bearer {}", token.value);
        *held = Some(token);
        Ok(Some(("authorization", header)))
    }

    /// Drops `s`'s token (the server refused it): the next request fetches another.
    pub async fn forget(&self, s: &Server) {
        if let Some(key) = key(s) {
            *self.slot(key).lock().await = None;
        }
    }
}

async fn fetch(upstream: &Arc<Upstream>, s: &Server) -> Result<Token, RpcError> {
    let Some(o) = s.config.oauth2.as_ref() else {
        return Err(failed(s, "no token endpoint"));
    };
    let (target, path) = super::client::endpoint(&o.token_url).map_err(|e| failed(s, e))?;
    let who: Arc<str> = Arc::from(format!("MCP server {} (token endpoint)", s.config.name));
    upstream
        .refuse_internal(&target, &who)
        .await
        .map_err(|e| failed(s, e.message))?;
    let form = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &o.client_id)
            .append_pair("client_secret", s.config.auth.value());
        if !o.scopes.is_empty() {
            form.append_pair("scope", &o.scopes.join(" "));
        }
        form.finish()
    };
    let req = UpstreamRequest {
        method: http::Method::POST,
        path,
        headers: vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept", "application/json".to_owned()),
        ],
        body: Bytes::from(form),
    };
    let mut ex = upstream
        .send(&target, req, None, who)
        .await
        .map_err(|e| failed(s, e.message))?;
    let status = ex.status;
    let body = ex
        .read_all(MAX_RESPONSE)
        .await
        .map_err(|e| failed(s, e.message))?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != 200 {
        // RFC 6749 §5.2: `error` names what is wrong; nothing else of the body is told.
        let error = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error code");
        tracing::warn!(server = %s.config.name, status, error, "MCP OAuth token endpoint refused the client");
        return Err(failed(s, format!("HTTP {status} ({error})")));
    }
    let Some(value) = v.get("access_token").and_then(Value::as_str) else {
        return Err(failed(s, "the answer has no access_token"));
    };
    let lifetime = v
        .get("expires_in")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_LIFETIME, Duration::from_secs);
    // Renewed ahead of expiry: a minute early, or a quarter of a short lifetime.
    let margin = (lifetime / 4).min(Duration::from_secs(60));
    Ok(Token {
        value: value.to_owned(),
        refresh_at: Instant::now() + lifetime - margin,
    })
}
