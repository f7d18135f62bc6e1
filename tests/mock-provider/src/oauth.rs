//! Google's OAuth2 token endpoint for service accounts: the JWT-bearer grant (RFC 7523) that
//! turns a service account's signed assertion into the bearer token Vertex AI asks for.
//!
//! A test registers the account's public key first (`POST /__service_accounts`), then the
//! gateway signs its assertion with the private key and trades it at `POST /token`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::FormRejection;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::common::State;

/// The scope a token needs for Vertex AI.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// `grant_type` of the JWT-bearer grant.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long Google's tokens (and so the mock's, unless told otherwise) live.
const DEFAULT_LIFETIME_SECS: u64 = 3600;
/// An assertion may live at most this long (`exp - iat`).
const MAX_ASSERTION_SECS: u64 = 3600;
/// How far in the future `iat` may be, for clocks that disagree a little.
const CLOCK_SKEW_SECS: u64 = 60;
/// Google's description for an assertion whose `iat`/`exp` are out of bounds.
const BAD_TIMES: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
    reasonable timeframe. Check your iat and exp values in the JWT claim.";

/// Service accounts, the access tokens given out for them, and how many.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    /// Access token → when it expires.
    tokens: HashMap<String, Instant>,
    issued: u64,
}

#[derive(Clone)]
struct Account {
    key: DecodingKey,
    lifetime_secs: u64,
}

/// What an access token presented to Vertex AI turns out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

impl Registry {
    /// Whether `token` is one `/token` gave out, and still alive.
    pub fn check(&self, token: &str) -> TokenCheck {
        let expiry = self
            .inner
            .lock()
            .ok()
            .and_then(|inner| inner.tokens.get(token).copied());
        match expiry {
            Some(at) if Instant::now() < at => TokenCheck::Valid,
            Some(_) => TokenCheck::Expired,
            None => TokenCheck::Unknown,
        }
    }

    fn key_of(&self, client_email: &str) -> Option<Account> {
        self.inner
            .lock()
            .ok()
            .and_then(|inner| inner.accounts.get(client_email).cloned())
    }

    /// A fresh access token that expires in `lifetime_secs`.
    fn issue(&self, lifetime_secs: u64) -> String {
        let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(40)
            .collect();
        let token = format!("ya29.mock-{suffix}");
        if let Ok(mut inner) = self.inner.lock() {
            let expires = Instant::now() + Duration::from_secs(lifetime_secs);
            inner.tokens.insert(token.clone(), expires);
            inner.issued += 1;
        }
        token
    }
}

/// Why a grant is refused: an OAuth2 error code (RFC 6749 §5.2) and Google's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: &'static str,
    pub description: String,
}

impl Refusal {
    fn grant(description: impl Into<String>) -> Self {
        Refusal {
            error: "invalid_grant",
            description: description.into(),
        }
    }

    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response()
    }
}

/// A NumericDate claim (seconds since the epoch), integer or not.
fn seconds(claims: &Value, name: &str) -> Option<u64> {
    let v = claims.get(name)?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Checks a service account's assertion as Google does: RS256, signed by the registered key
/// of its `iss`, meant for `audience`, asking for the cloud-platform scope, alive at `now`
/// and short-lived. Returns the service account's email.
pub fn verify_assertion(
    assertion: &str,
    audience: &str,
    now: u64,
    key_of: impl Fn(&str) -> Option<DecodingKey>,
) -> Result<String, Refusal> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| Refusal::grant(format!("Invalid JWT: the assertion is not a JWT ({e})")))?;
    if header.alg != Algorithm::RS256 {
        return Err(Refusal::grant(format!(
            "Invalid JWT: the signing algorithm must be RS256, not {:?}",
            header.alg
        )));
    }
    // The issuer names the key that checks the signature, so read it before checking.
    let mut peek = Validation::new(Algorithm::RS256);
    peek.insecure_disable_signature_validation();
    peek.validate_exp = false;
    peek.validate_aud = false;
    peek.required_spec_claims.clear();
    let unverified =
        jsonwebtoken::decode::<Value>(assertion, &DecodingKey::from_secret(&[]), &peek)
            .map_err(|e| Refusal::grant(format!("Invalid JWT: {e}")))?
            .claims;
    let Some(iss) = unverified.get("iss").and_then(Value::as_str) else {
        return Err(Refusal::grant("Invalid JWT: the iss claim is missing"));
    };
    let key = key_of(iss).ok_or_else(|| Refusal::grant("Invalid grant: account not found"))?;

    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    // Times are checked below, against `now`.
    validation.validate_exp = false;
    validation.set_audience(&[audience]);
    validation.set_issuer(&[iss]);
    validation.set_required_spec_claims(&["iss", "aud", "iat", "exp"]);
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|e| {
            Refusal::grant(match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::Crypto(_) => "Invalid JWT Signature.".to_owned(),
                ErrorKind::InvalidAudience => {
                    format!("Invalid JWT: Failed audience check. The right audience is {audience}")
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    format!("Invalid JWT: the {claim} claim is missing")
                }
                _ => format!("Invalid JWT: {e}"),
            })
        })?
        .claims;

    let (Some(iat), Some(exp)) = (seconds(&claims, "iat"), seconds(&claims, "exp")) else {
        return Err(Refusal::grant(BAD_TIMES));
    };
    if exp <= now || exp <= iat || exp - iat > MAX_ASSERTION_SECS || iat > now + CLOCK_SKEW_SECS {
        return Err(Refusal::grant(BAD_TIMES));
    }
    let scoped = claims
        .get("scope")
        .and_then(Value::as_str)
        .is_some_and(|s| s.split_whitespace().any(|s| s == CLOUD_PLATFORM));
    if !scoped {
        return Err(Refusal {
            error: "invalid_scope",
            description: format!(
                "Invalid OAuth scope or ID token audience provided: the scope claim must include {CLOUD_PLATFORM}"
            ),
        });
    }
    Ok(iss.to_owned())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `POST /token`: `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`,
/// form-encoded. The assertion's `aud` must be this endpoint as the client reached it,
/// `http://<Host>/token`.
pub async fn token(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return Refusal {
            error: "invalid_request",
            description: "the body must be application/x-www-form-urlencoded".into(),
        }
        .into_response();
    };
    match form.get("grant_type").map(String::as_str) {
        Some(JWT_BEARER) => {}
        other => {
            return Refusal {
                error: "unsupported_grant_type",
                description: format!("Invalid grant_type: {}", other.unwrap_or("")),
            }
            .into_response()
        }
    }
    let Some(assertion) = form.get("assertion") else {
        return Refusal {
            error: "invalid_request",
            description: "Missing required parameter: assertion".into(),
        }
        .into_response();
    };
    let Some(host) = headers.get("host").and_then(|h| h.to_str().ok()) else {
        return Refusal {
            error: "invalid_request",
            description: "the request has no Host header".into(),
        }
        .into_response();
    };
    let audience = format!("http://{host}/token");
    let registry = &state.oauth;
    let verified = verify_assertion(assertion, &audience, unix_now(), |email| {
        registry.key_of(email).map(|a| a.key)
    });
    let email = match verified {
        Ok(email) => email,
        Err(refusal) => return refusal.into_response(),
    };
    let lifetime = registry
        .key_of(&email)
        .map(|a| a.lifetime_secs)
        .unwrap_or(DEFAULT_LIFETIME_SECS);
    let access_token = registry.issue(lifetime);
    let mut r = Json(json!({
        "access_token": access_token, "expires_in": lifetime, "token_type": "Bearer",
    }))
    .into_response();
    r.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// A service account as `POST /__service_accounts` registers it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccount {
    pub client_email: String,
    /// The public half of the account's key, SPKI (`BEGIN PUBLIC KEY`) or PKCS#1 PEM.
    pub public_key_pem: String,
    /// Tokens granted to this account expire after this many seconds (default 3600).
    pub token_lifetime_secs: Option<u64>,
}

/// `POST /__service_accounts`: registers (or replaces) a service account whose assertions
/// `/token` accepts.
pub async fn register(
    AxumState(state): AxumState<State>,
    Json(account): Json<ServiceAccount>,
) -> Response {
    if account.client_email.trim().is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "client_email must not be empty"})),
        )
            .into_response();
    }
    let key = match DecodingKey::from_rsa_pem(account.public_key_pem.as_bytes()) {
        Ok(key) => key,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("public_key_pem is not an RSA public key: {e}")})),
            )
                .into_response()
        }
    };
    if let Ok(mut inner) = state.oauth.inner.lock() {
        inner.accounts.insert(
            account.client_email,
            Account {
                key,
                lifetime_secs: account.token_lifetime_secs.unwrap_or(DEFAULT_LIFETIME_SECS),
            },
        );
    }
    Json(json!({"ok": true})).into_response()
}

/// `GET /__oauth`: how many access tokens `/token` has given out.
pub async fn stats(AxumState(state): AxumState<State>) -> Json<Value> {
    let issued = state.oauth.inner.lock().map(|i| i.issued).unwrap_or(0);
    Json(json!({"tokens_issued": issued}))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    /// TEST-ONLY throwaway RSA key pair, generated for these tests and used nowhere else.
    /// It guards nothing: never use it for anything real.
    pub const TEST_PRIVATE_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQClcPa55LaW6kG8
YOUPGvuHWjY/yJI+exP4QCOHW7MqIZi0lF3R/5O2Jd77FRZSLyGOee8LTgjgs8z8
UqGLfNleTawY1nk7z4YKxOl/hcwLz54n/Dr/CZWKBufvkRoc9g4sBHVIp95+oydB
TMO8KK84KAVYGp6Hoc8IdbPJce+hg6IZ1UvX++/zzMhc7hkmkoJW6t4OneCoRoOS
SeGcWaiHQ9SL9cKc+g292XqqK7ujJsqMWojM/LhXU1iXtkPe7IKJEb+cNQMlJ5BU
3xParhr95zrtZqCx4lldUQhquO0jzaCYjnTXCFF2rQ8Ok7TiPtEsNiyhiqeMokEL
5mhLgi8pAgMBAAECggEAApVZ3vN/t+nSyrWjIgogcx/BINwZj4T1vf7HZz/S84WY
iDpYYDT62iFrgtV0lqYygpJsHYuzhwm7udVy/RX/IXI6TZ18wWa3T7/9Ku78jZMp
g7OUOsMMLR54PPURuLHNbRnJOJAZgPX8gRApLs0eVlTGp5Zr0w+fZ2EKJItFTAr3
Ffh2S6zow3fuKeZurrftYHJ7kOD3qUD2AzjxgfIcpFeloGjrDuW/Ok/EEkWU1kFm
/OVI3UvDRmdYUT2kn34OCsObfkipQPeEmzBrHfyraF3gwJaJ2zFvbc1qXIs+5wVY
1dhnDymQo0944YL81Q5XckNk3Tcm11XkT9+CG1kZ0QKBgQDi258GcyA2HC95/S0u
tlkNGScCRW67E3gtigkc9SJZsR54kARPIK4EqQ2ZUjGQL20uBVCPY/gEqZ70ntRd
Bsbq7P/dXoXoHNW9Sbnx6t5+cw6VzZpaY3zT6zTJOtxKd6VlwLLld+zO1gIfTBUI
PnoDa4Uc+QfjEiyZlnKPt0ZoWQKBgQC6sZ08cqjFyU6poNzxh64ZX3IeLGyEnX/g
ui9jNxYkCmMHmx90uEngur42suaZb1md9DGW9HpZhPZYIYrJ8vZmB+kraBPYXbXF
+9kqdzJquL2JRZ+S44orXNLhO8ei0x5agH6u9+NupYSlh+3wA4Ci80svln7wQh3w
T+F6/s8jUQKBgQC9awV4PC5cH+KgZ/4O7+ChKCxDIDhZ6eLBm20Kib/ZxiMcJZwD
edTzPTiGmXOa4Y63C2b9o0oWko6P0AKffiYfSC5H50HF0jXBbErfLO4EBQvblyXX
bRRwWgbkMsp3PzmSIXj+Uske1uBEw6EYFhqIuoEV9PVZ6vXkdBNJ3oziWQKBgGoP
3bQpr5gt9XKI4PyWiGIBx2M8+amdkLirDaDf+sQe4oO/rO8yg0YY0Vdh63/fspn5
0PJhkeCpmQoYhDCWx0TP2be/OQcCtfH0Uju92/alXYhO9YkNm8FmyqcKvy/RoLzp
ow7j5WFGx0UDJDnmw33Pmjc+2H7GERwlRYQKnsMBAoGAB06W19196z+1MjDPPvrL
ftVkp7UN+9RBCBBYKV98bKOt9iIjSg263mrhfirsZOP78f9YS0sKMiBgA8MZPEvr
0NSG12OsE8qePdIRZpTHFQ5GpV0S++aRdgYAyKM328xze35vEMEIFs+5L31295WH
cVEgDzqNA4HFoWSY70BW/FU=
-----END PRIVATE KEY-----
";

    /// TEST-ONLY: the public half of [`TEST_PRIVATE_KEY_PEM`] (SPKI).
    pub const TEST_PUBLIC_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEApXD2ueS2lupBvGDlDxr7
h1o2P8iSPnsT+EAjh1uzKiGYtJRd0f+TtiXe+xUWUi8hjnnvC04I4LPM/FKhi3zZ
Xk2sGNZ5O8+GCsTpf4XMC8+eJ/w6/wmVigbn75EaHPYOLAR1SKfefqMnQUzDvCiv
OCgFWBqeh6HPCHWzyXHvoYOiGdVL1/vv88zIXO4ZJpKCVureDp3gqEaDkknhnFmo
h0PUi/XCnPoNvdl6qiu7oybKjFqIzPy4V1NYl7ZD3uyCiRG/nDUDJSeQVN8T2q4a
/ec67WagseJZXVEIarjtI82gmI501whRdq0PDpO04j7RLDYsoYqnjKJBC+ZoS4Iv
KQIDAQAB
-----END PUBLIC KEY-----
";

    pub const EMAIL: &str = "mock-sa@mock-project.iam.gserviceaccount.com";
    const AUD: &str = "http://127.0.0.1:9199/token";
    const NOW: u64 = 1_800_000_000;

    pub fn sign(claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(TEST_PRIVATE_KEY_PEM.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
    }

    pub fn claims(aud: &str, iat: u64) -> Value {
        json!({
            "iss": EMAIL, "scope": CLOUD_PLATFORM, "aud": aud,
            "iat": iat, "exp": iat + 3600,
        })
    }

    fn keys(email: &str) -> Option<DecodingKey> {
        (email == EMAIL).then(|| DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY_PEM.as_bytes()).unwrap())
    }

    fn check(assertion: &str) -> Result<String, Refusal> {
        verify_assertion(assertion, AUD, NOW, keys)
    }

    #[test]
    fn accepts_a_good_assertion() {
        assert_eq!(check(&sign(&claims(AUD, NOW - 10))).unwrap(), EMAIL);
        let mut c = claims(AUD, NOW);
        c["scope"] = json!(format!("openid {CLOUD_PLATFORM}"));
        assert_eq!(check(&sign(&c)).unwrap(), EMAIL);
    }

    #[test]
    fn refuses_a_bad_signature() {
        // The header and signature of one assertion with the claims of another.
        let good = sign(&claims(AUD, NOW));
        let mut other = claims(AUD, NOW);
        other["scope"] = json!(format!(
            "{CLOUD_PLATFORM} https://www.googleapis.com/auth/drive"
        ));
        let other = sign(&other);
        let g: Vec<&str> = good.split('.').collect();
        let o: Vec<&str> = other.split('.').collect();
        let forged = format!("{}.{}.{}", g[0], o[1], g[2]);
        let r = check(&forged).unwrap_err();
        assert_eq!(r.error, "invalid_grant");
        assert_eq!(r.description, "Invalid JWT Signature.");
        // Signed with a secret instead of the account's key.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(AUD, NOW),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(check(&hs).unwrap_err().description.contains("RS256"));
        assert!(check("not-a-jwt").is_err());
    }

    #[test]
    fn refuses_expired_or_long_lived_assertions() {
        let expired = check(&sign(&claims(AUD, NOW - 4000))).unwrap_err();
        assert_eq!(expired.error, "invalid_grant");
        assert!(expired.description.contains("short-lived"));
        let mut long = claims(AUD, NOW);
        long["exp"] = json!(NOW + 7200);
        assert!(check(&sign(&long)).is_err());
        let mut no_exp = claims(AUD, NOW);
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(check(&sign(&no_exp))
            .unwrap_err()
            .description
            .contains("exp"));
        let future = claims(AUD, NOW + 600);
        assert!(check(&sign(&future)).is_err());
    }

    #[test]
    fn refuses_the_wrong_audience_scope_or_account() {
        let aud = check(&sign(&claims("https://oauth2.googleapis.com/token", NOW))).unwrap_err();
        assert_eq!(aud.error, "invalid_grant");
        assert!(aud.description.contains(AUD), "{}", aud.description);
        let mut scope = claims(AUD, NOW);
        scope["scope"] = json!("https://www.googleapis.com/auth/drive");
        assert_eq!(check(&sign(&scope)).unwrap_err().error, "invalid_scope");
        let mut stranger = claims(AUD, NOW);
        stranger["iss"] = json!("someone@else.iam.gserviceaccount.com");
        assert!(check(&sign(&stranger))
            .unwrap_err()
            .description
            .contains("account not found"));
    }

    async fn body_json(r: Response) -> Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Registers the test account on `state`, tokens living `lifetime` seconds.
    pub async fn register_test_account(state: &State, lifetime: Option<u64>) {
        let r = register(
            AxumState(state.clone()),
            Json(ServiceAccount {
                client_email: EMAIL.into(),
                public_key_pem: TEST_PUBLIC_KEY_PEM.into(),
                token_lifetime_secs: lifetime,
            }),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    /// Trades a freshly signed assertion for an access token at `/token`.
    pub async fn grant(state: &State) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:9199".parse().unwrap());
        let form = HashMap::from([
            ("grant_type".to_owned(), JWT_BEARER.to_owned()),
            ("assertion".to_owned(), sign(&claims(AUD, unix_now()))),
        ]);
        token(AxumState(state.clone()), headers, Ok(Form(form))).await
    }

    #[tokio::test]
    async fn grants_tokens_that_expire() {
        let state = State::default();
        // Unknown account first.
        assert_eq!(grant(&state).await.status(), StatusCode::BAD_REQUEST);
        register_test_account(&state, None).await;
        let r = grant(&state).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = body_json(r).await;
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["token_type"], "Bearer");
        let token = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(state.oauth.check(&token), TokenCheck::Valid);
        assert_eq!(state.oauth.check("ya29.forged"), TokenCheck::Unknown);

        register_test_account(&state, Some(0)).await;
        let body = body_json(grant(&state).await).await;
        assert_eq!(body["expires_in"], 0);
        let short = body["access_token"].as_str().unwrap();
        assert_eq!(state.oauth.check(short), TokenCheck::Expired);
        assert_eq!(stats(AxumState(state)).await.0["tokens_issued"], 2);
    }

    #[tokio::test]
    async fn refuses_other_grant_types() {
        let state = State::default();
        let form = HashMap::from([("grant_type".to_owned(), "client_credentials".to_owned())]);
        let r = token(AxumState(state), HeaderMap::new(), Ok(Form(form))).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body_json(r).await["error"], "unsupported_grant_type");
    }
}
