//! OAuth2 access tokens for Google service accounts (Vertex AI's `vertex_credentials`):
//! the JWT-bearer grant (RFC 7523) against the account's `token_uri`, sent on the data
//! plane's own pooled connections.
//!
//! Tokens are cached per service account in [`GoogleTokens`], which outlives snapshot
//! swaps, and refreshed ahead of expiry (see `refresh`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::refresh::{Fetch, Refreshing};
use crate::clock::now_secs;
use crate::error::{ApiError, ErrorKind};
use crate::upstream::{Target, Upstream, UpstreamRequest};

/// The scope Vertex AI needs.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime asked for in the assertion (Google's maximum).
const ASSERTION_LIFETIME_SECS: u64 = 3600;
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// The parts of a service account key file the grant needs.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
    project_id: Option<String>,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".to_owned()
}

/// A service account, parsed once.
pub struct ServiceAccount {
    pub client_email: String,
    pub project_id: Option<String>,
    key: jsonwebtoken::EncodingKey,
    token_uri: String,
    token_target: Target,
}

impl ServiceAccount {
    /// From `vertex_credentials`: the key file's JSON, or the path of the file.
    pub fn from_setting(value: &str) -> Result<Self, String> {
        let text = if value.trim_start().starts_with('{') {
            value.to_owned()
        } else {
            std::fs::read_to_string(value)
                .map_err(|e| format!("cannot read the service account file `{value}`: {e}"))?
        };
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|e| format!("vertex_credentials is not a service account key: {e}"))?;
        if let Some(kind) = file.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(format!(
                "vertex_credentials is a `{kind}` credential; RouteIQ takes service account keys"
            ));
        }
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|e| format!("vertex_credentials' private_key is not an RSA key: {e}"))?;
        let token_target = Target::parse(&file.token_uri)
            .map_err(|e| format!("vertex_credentials' token_uri: {e}"))?;
        Ok(Self {
            client_email: file.client_email,
            project_id: file.project_id,
            key,
            token_uri: file.token_uri,
            token_target,
        })
    }

    /// The signed assertion for a grant at `now` (seconds since the epoch).
    fn assertion(&self, now: u64) -> Result<String, ApiError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &self.key,
        )
        .map_err(|e| ApiError::internal(format!("cannot sign the service account assertion: {e}")))
    }
}

#[async_trait]
impl Fetch for ServiceAccount {
    type Value = Arc<str>;

    async fn fetch(
        &self,
        upstream: &Arc<Upstream>,
    ) -> Result<(Arc<str>, Option<Instant>), ApiError> {
        let assertion = self.assertion(now_secs())?;
        let target = &self.token_target;
        let path = if target.base_path.is_empty() {
            "/".to_owned()
        } else {
            target.base_path.clone()
        };
        let req = UpstreamRequest {
            method: http::Method::POST,
            path,
            headers: vec![(
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            )],
            body: Bytes::from(format!(
                "grant_type={}&assertion={assertion}",
                GRANT_TYPE.replace(':', "%3A")
            )),
        };
        let who: Arc<str> = Arc::from(self.describe());
        let started = Instant::now();
        let mut ex = upstream.send(target, req, None, Arc::clone(&who)).await?;
        let status = ex.status;
        let body = ex.read_all(MAX_TOKEN_RESPONSE).await?;
        if status != 200 {
            let text = String::from_utf8_lossy(&body);
            return Err(ApiError::upstream(
                502,
                ErrorKind::Upstream,
                format!(
                    "{who} refused the grant ({status}): {} (check vertex_credentials)",
                    text.chars().take(500).collect::<String>()
                ),
            )
            .with_code("upstream_auth_error"));
        }
        #[derive(Deserialize)]
        struct Granted {
            access_token: String,
            expires_in: Option<u64>,
        }
        let g: Granted = serde_json::from_slice(&body).map_err(|e| {
            ApiError::upstream(
                502,
                ErrorKind::Upstream,
                format!("{who} answered without an access token: {e}"),
            )
        })?;
        let expires = started + Duration::from_secs(g.expires_in.unwrap_or(3600));
        Ok((Arc::from(g.access_token), Some(expires)))
    }

    fn describe(&self) -> String {
        format!(
            "the token endpoint of service account `{}`",
            self.client_email
        )
    }
}

/// One service account's access tokens.
pub type TokenSource = Refreshing<ServiceAccount>;

/// Token sources by service account, across snapshot versions.
#[derive(Default)]
pub struct GoogleTokens {
    sources: Mutex<HashMap<[u8; 32], Arc<TokenSource>>>,
}

impl GoogleTokens {
    /// The source for `vertex_credentials`, created (and its first fetch started, when a
    /// runtime is there) the first time it is seen.
    pub fn source(
        &self,
        credentials: &str,
        upstream: &Arc<Upstream>,
    ) -> Result<Arc<TokenSource>, String> {
        let id: [u8; 32] = Sha256::digest(credentials.as_bytes()).into();
        let mut sources = self
            .sources
            .lock()
            .map_err(|_| "token cache poisoned".to_owned())?;
        if let Some(s) = sources.get(&id) {
            return Ok(Arc::clone(s));
        }
        let source = Refreshing::start(ServiceAccount::from_setting(credentials)?, upstream);
        sources.insert(id, Arc::clone(&source));
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_credentials_say_what_is_wrong() {
        let e = ServiceAccount::from_setting("/nonexistent/sa.json")
            .err()
            .unwrap();
        assert!(e.contains("cannot read"), "{e}");
        let e = ServiceAccount::from_setting("{\"client_email\": 1}")
            .err()
            .unwrap();
        assert!(e.contains("not a service account key"), "{e}");
        let e = ServiceAccount::from_setting(
            r#"{"type": "authorized_user", "client_email": "a", "private_key": "x"}"#,
        )
        .err()
        .unwrap();
        assert!(e.contains("authorized_user"), "{e}");
        let e = ServiceAccount::from_setting(
            r#"{"type": "service_account", "client_email": "a", "private_key": "not a key"}"#,
        )
        .err()
        .unwrap();
        assert!(e.contains("not an RSA key"), "{e}");
    }
}
