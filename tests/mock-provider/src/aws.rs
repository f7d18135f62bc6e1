//! AWS authentication for the Bedrock mock: Signature Version 4 verification of every
//! request against credentials a test registers, and the STS actions that turn them (or a
//! web identity token) into temporary credentials.
//!
//! - `POST /__aws_credentials` `[{"access_key_id", "secret_access_key", "session_token"}]`
//!   replaces every known credential (STS-issued ones included) and zeroes the counters;
//! - `POST /__aws_credentials/lifetime` `{"secs": N}` makes STS credentials expire after N
//!   seconds whatever `DurationSeconds` asks (`{"secs": null}` undoes it);
//! - `POST /sts` (and `POST /` when the form has an `Action`, where the AWS SDKs post):
//!   `AssumeRole` (SigV4-signed, service `sts`) and `AssumeRoleWithWebIdentity` (unsigned);
//! - `GET /__aws`: `{"verified_requests", "assumed_roles", "web_identity", "last_access_key_id",
//!   "last_region"}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SessionTokenMode, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_types::date_time::{DateTime, Format};
use axum::extract::{OriginalUri, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::common::State;

/// How far a request's `x-amz-date` may be from the mock's clock, either way.
const MAX_SKEW: Duration = Duration::from_secs(300);
/// STS credentials live this long when `DurationSeconds` is not given.
const DEFAULT_LIFETIME_SECS: u64 = 3600;
/// `DurationSeconds` bounds of `AssumeRole` and `AssumeRoleWithWebIdentity`.
const MIN_DURATION_SECS: u64 = 900;
const MAX_DURATION_SECS: u64 = 43_200;
/// The only algorithm the mock verifies.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// STS's XML namespace.
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// What AWS answers to a signature that does not match.
pub const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
    signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
    service documentation for details.";
/// What AWS answers to an access key or session token it does not know.
const INVALID_TOKEN: &str = "The security token included in the request is invalid.";

/// Known credentials and what was done with them.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Access key id → its secret.
    keys: HashMap<String, Key>,
    /// `POST /__aws_credentials/lifetime`.
    lifetime_secs: Option<u64>,
    verified: u64,
    assumed_roles: u64,
    web_identity: u64,
    last_signer: Option<Signer>,
}

/// The secret half of an access key.
#[derive(Debug, Clone)]
pub struct Key {
    pub secret_access_key: String,
    /// Temporary credentials must send this as `x-amz-security-token`.
    pub session_token: Option<String>,
    /// Temporary credentials stop working then.
    pub expires: Option<SystemTime>,
}

/// Who signed a request whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub access_key_id: String,
    pub region: String,
}

impl Registry {
    fn key(&self, access_key_id: &str) -> Option<Key> {
        self.inner
            .lock()
            .ok()
            .and_then(|inner| inner.keys.get(access_key_id).cloned())
    }

    /// Checks a request's SigV4 signature for `service` against the known credentials.
    pub fn verify(&self, request: &Signed<'_>, service: &str) -> Result<Signer, SigError> {
        verify(request, service, SystemTime::now(), |id| self.key(id))
    }

    /// Counts a Bedrock request whose signature verified.
    pub fn count_verified(&self, signer: &Signer) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.verified += 1;
            inner.last_signer = Some(signer.clone());
        }
    }

    /// Registers a key (as STS does when it gives one out).
    pub fn insert(&self, access_key_id: String, key: Key) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.keys.insert(access_key_id, key);
        }
    }

    fn lifetime_override(&self) -> Option<u64> {
        self.inner.lock().ok().and_then(|inner| inner.lifetime_secs)
    }
}

/// A request as it arrived, for signature checks.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path and query exactly as sent (still percent-encoded).
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Why a signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` or `x-amz-date` header AWS cannot read.
    Incomplete,
    /// An access key (or session token) AWS does not know.
    UnknownKey,
    /// Temporary credentials past their expiration.
    ExpiredToken,
    /// Signed more than 5 minutes away from now.
    Expired,
    /// The signature is not the one the secret gives.
    Mismatch,
}

/// A refused signature: why, and AWS's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigError {
    pub denial: Denial,
    pub message: String,
}

impl SigError {
    fn new(denial: Denial, message: impl Into<String>) -> Self {
        SigError {
            denial,
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self.denial {
            Denial::Incomplete => 400,
            _ => 403,
        }
    }

    /// `x-amzn-ErrorType` of a JSON service (Bedrock Runtime).
    pub fn json_type(&self) -> &'static str {
        match self.denial {
            Denial::Missing => "MissingAuthenticationTokenException",
            Denial::Incomplete => "IncompleteSignatureException",
            Denial::UnknownKey => "UnrecognizedClientException",
            Denial::ExpiredToken => "ExpiredTokenException",
            Denial::Expired | Denial::Mismatch => "InvalidSignatureException",
        }
    }

    /// The error code of a Query-protocol service (STS).
    pub fn query_code(&self) -> &'static str {
        match self.denial {
            Denial::Missing => "MissingAuthenticationToken",
            Denial::Incomplete => "IncompleteSignature",
            Denial::UnknownKey => "InvalidClientTokenId",
            Denial::ExpiredToken => "ExpiredToken",
            Denial::Expired | Denial::Mismatch => "SignatureDoesNotMatch",
        }
    }
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
/// Signature=...`.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, SigError> {
    let incomplete = |m: String| SigError::new(Denial::Incomplete, m);
    let (algorithm, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}' (expected '{ALGORITHM}')"
        )));
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let missing: Vec<String> = [
        ("Credential", credential.is_none()),
        ("Signature", signature.is_none()),
        ("SignedHeaders", signed.is_none()),
    ]
    .iter()
    .filter(|(_, missing)| *missing)
    .map(|(name, _)| format!("Authorization header requires '{name}' parameter."))
    .collect();
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(incomplete(format!(
            "{} Authorization={value}",
            missing.join(" ")
        )));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
        return Err(incomplete(format!(
            "Credential should be scoped to a valid region, service and date, and end in \
             aws4_request: '{credential}'"
        )));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// `20240101T123456Z` (SigV4's "basic format" time) as a time.
pub fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !digits(0..8) || !digits(9..15) {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &value[0..4],
        &value[4..6],
        &value[6..8],
        &value[9..11],
        &value[11..13],
        &value[13..15]
    );
    let parsed = DateTime::from_str(&iso, Format::DateTime).ok()?;
    SystemTime::try_from(parsed).ok()
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `t` as ISO 8601 to the second, `2024-01-01T12:34:56Z` (STS's `Expiration`).
pub fn iso8601(t: SystemTime) -> String {
    DateTime::from_secs(secs(t))
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

/// `t` in SigV4's basic format, `20240101T123456Z`.
pub fn amz_date(t: SystemTime) -> String {
    iso8601(t).replace(['-', ':'], "")
}

/// Verifies a SigV4 `Authorization` header the way AWS does: the key is known (and, for
/// temporary credentials, unexpired and sent with its `x-amz-security-token`), the scope names
/// `service`, `x-amz-date` is within 5 minutes of `now`, and the signature recomputed over
/// the request as received (method, URI-encoded path, query, the signed headers, the body's
/// hash) matches. The canonical request is rebuilt by `aws-sigv4` with the settings of every
/// service but S3: the path encoded once more (`%3A` → `%253A`) and normalized.
pub fn verify(
    request: &Signed<'_>,
    service: &str,
    now: SystemTime,
    key_of: impl Fn(&str) -> Option<Key>,
) -> Result<Signer, SigError> {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    let Some(authorization) = header("authorization") else {
        return Err(SigError::new(
            Denial::Missing,
            "Missing Authentication Token",
        ));
    };
    let auth = parse_authorization(authorization)?;
    if auth.service != service {
        return Err(SigError::new(
            Denial::Mismatch,
            format!("Credential should be scoped to correct service: '{service}'. "),
        ));
    }
    let Some(date) = header("x-amz-date") else {
        return Err(SigError::new(
            Denial::Incomplete,
            format!(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
                 header. Authorization={authorization}"
            ),
        ));
    };
    let Some(signed_at) = parse_amz_date(date) else {
        return Err(SigError::new(
            Denial::Incomplete,
            format!(
                "Date must be in ISO-8601 'basic format'. Got '{date}'. See \
                 http://en.wikipedia.org/wiki/ISO_8601"
            ),
        ));
    };
    if date.get(..8) != Some(auth.date) {
        return Err(SigError::new(
            Denial::Mismatch,
            format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{}' != '{}', from '{date}'.",
                auth.date,
                date.get(..8).unwrap_or(date)
            ),
        ));
    }
    if signed_at + MAX_SKEW < now {
        return Err(SigError::new(
            Denial::Expired,
            format!(
                "Signature expired: {date} is now earlier than {} ({} - 5 min.)",
                amz_date(now - MAX_SKEW),
                amz_date(now)
            ),
        ));
    }
    if signed_at > now + MAX_SKEW {
        return Err(SigError::new(
            Denial::Expired,
            format!(
                "Signature not yet current: {date} is still later than {} ({} + 5 min.)",
                amz_date(now + MAX_SKEW),
                amz_date(now)
            ),
        ));
    }
    let Some(key) = key_of(auth.access_key_id) else {
        return Err(SigError::new(Denial::UnknownKey, INVALID_TOKEN));
    };
    if key.expires.is_some_and(|at| now >= at) {
        return Err(SigError::new(
            Denial::ExpiredToken,
            "The security token included in the request is expired",
        ));
    }
    if key.session_token.as_deref() != header("x-amz-security-token") {
        return Err(SigError::new(Denial::UnknownKey, INVALID_TOKEN));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.contains(&required) {
            return Err(SigError::new(
                Denial::Mismatch,
                format!("'{required}' must be a 'SignedHeader' in the AWS Authorization."),
            ));
        }
    }
    let mut headers = Vec::new();
    for name in &auth.signed_headers {
        let values = request.headers.get_all(*name);
        if values.iter().next().is_none() {
            return Err(SigError::new(Denial::Mismatch, SIGNATURE_MISMATCH));
        }
        for v in values {
            let v = v
                .to_str()
                .map_err(|_| SigError::new(Denial::Mismatch, SIGNATURE_MISMATCH))?;
            headers.push((*name, v));
        }
    }

    // Recompute the signature with the secret, over exactly what the client signed.
    let identity = Credentials::new(
        auth.access_key_id,
        key.secret_access_key.clone(),
        key.session_token.clone(),
        None,
        "routeiq-mock-provider",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    settings.session_token_mode = if auth.signed_headers.contains(&"x-amz-security-token") {
        SessionTokenMode::Include
    } else {
        SessionTokenMode::Exclude
    };
    let mismatch = |_| SigError::new(Denial::Mismatch, SIGNATURE_MISMATCH);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(service)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|_| SigError::new(Denial::Mismatch, SIGNATURE_MISMATCH))?
        .into();
    let signable = SignableRequest::new(
        request.method,
        format!("http://mock{}", request.path_and_query),
        headers.into_iter(),
        SignableBody::Bytes(request.body),
    )
    .map_err(mismatch)?;
    let (_, signature) = sign(signable, &params).map_err(mismatch)?.into_parts();
    if signature != auth.signature {
        return Err(SigError::new(Denial::Mismatch, SIGNATURE_MISMATCH));
    }
    Ok(Signer {
        access_key_id: auth.access_key_id.to_owned(),
        region: auth.region.to_owned(),
    })
}

/// A credential as `POST /__aws_credentials` registers it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
}

/// `POST /__aws_credentials`: replaces every known credential and zeroes the counters.
pub async fn register(
    AxumState(state): AxumState<State>,
    Json(credentials): Json<Vec<Credential>>,
) -> Response {
    if credentials
        .iter()
        .any(|c| c.access_key_id.trim().is_empty() || c.secret_access_key.is_empty())
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "access_key_id and secret_access_key must not be empty"})),
        )
            .into_response();
    }
    if let Ok(mut inner) = state.aws.inner.lock() {
        inner.keys = credentials
            .into_iter()
            .map(|c| {
                (
                    c.access_key_id,
                    Key {
                        secret_access_key: c.secret_access_key,
                        session_token: c.session_token,
                        expires: None,
                    },
                )
            })
            .collect();
        inner.verified = 0;
        inner.assumed_roles = 0;
        inner.web_identity = 0;
        inner.last_signer = None;
    }
    Json(json!({"ok": true})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetime {
    pub secs: Option<u64>,
}

/// `POST /__aws_credentials/lifetime`: STS credentials given out from now on expire after
/// `secs` seconds, whatever `DurationSeconds` says (`null`: as it says).
pub async fn set_lifetime(
    AxumState(state): AxumState<State>,
    Json(lifetime): Json<Lifetime>,
) -> Json<Value> {
    if let Ok(mut inner) = state.aws.inner.lock() {
        inner.lifetime_secs = lifetime.secs;
    }
    Json(json!({"ok": true}))
}

/// `GET /__aws`.
pub async fn stats(AxumState(state): AxumState<State>) -> Json<Value> {
    let Ok(inner) = state.aws.inner.lock() else {
        return Json(Value::Null);
    };
    Json(json!({
        "verified_requests": inner.verified,
        "assumed_roles": inner.assumed_roles,
        "web_identity": inner.web_identity,
        "last_access_key_id": inner.last_signer.as_ref().map(|s| s.access_key_id.clone()),
        "last_region": inner.last_signer.as_ref().map(|s| s.region.clone()),
    }))
}

/// A random AWS-style request id (a UUID).
pub fn request_id() -> String {
    let hex = |n: usize| -> String {
        std::iter::repeat_with(|| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
            .take(n)
            .collect()
    };
    format!("{}-{}-4{}-a{}-{}", hex(8), hex(4), hex(3), hex(3), hex(12))
}

fn random(alphabet: &[u8], n: usize) -> String {
    std::iter::repeat_with(|| char::from(alphabet[fastrand::usize(..alphabet.len())]))
        .take(n)
        .collect()
}

const UPPER_BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn parse_form(body: &[u8]) -> HashMap<String, String> {
    fn decode(s: &[u8]) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let byte = s
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match byte {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut kv = pair.splitn(2, |b| *b == b'=');
            let k = decode(kv.next().unwrap_or_default());
            let v = decode(kv.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/xml"));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

/// STS's (Query protocol) error document.
pub fn sts_error(status: u16, code: &str, message: &str) -> Response {
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    let body = format!(
        "<ErrorResponse xmlns=\"{STS_NS}\">\n  <Error>\n    <Type>{kind}</Type>\n    \
         <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{}</RequestId>\n\
         </ErrorResponse>\n",
        xml_escape(code),
        xml_escape(message),
        request_id()
    );
    xml(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body,
    )
}

fn validation(message: impl Into<String>) -> Response {
    sts_error(400, "ValidationError", &message.into())
}

/// A role ARN's account and name: `arn:aws:iam::123456789012:role/path/name`.
fn role_of(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:")?;
    let mut parts = rest.splitn(5, ':');
    let (_partition, service, _region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let path = resource.strip_prefix("role/")?;
    let name = path.rsplit('/').next()?;
    (service == "iam"
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty())
    .then_some((account, name))
}

/// The checks and answer both STS actions share: the role and session, the lifetime, the
/// fresh credentials (registered, so Bedrock requests signed with them verify) and the
/// `<AssumedRoleUser>` and `<Credentials>` elements.
struct Grant {
    xml: String,
}

/// `Err` is the ValidationError's message.
fn grant(state: &State, form: &HashMap<String, String>) -> Result<Grant, String> {
    let Some(role_arn) = form.get("RoleArn") else {
        return Err(String::from(
            "1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: \
             Member must not be null",
        ));
    };
    let Some((account, role)) = role_of(role_arn) else {
        return Err(format!("{role_arn} is invalid"));
    };
    let session = form
        .get("RoleSessionName")
        .map(String::as_str)
        .unwrap_or("");
    let session_ok = (2..=64).contains(&session.len())
        && session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if !session_ok {
        return Err(format!(
            "1 validation error detected: Value '{session}' at 'roleSessionName' failed to \
             satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* \
             and have length between 2 and 64"
        ));
    }
    let duration = match form.get("DurationSeconds").map(|d| d.parse::<u64>()) {
        None => DEFAULT_LIFETIME_SECS,
        Some(Ok(d)) if d < MIN_DURATION_SECS => {
            return Err(format!(
                "1 validation error detected: Value '{d}' at 'durationSeconds' failed to satisfy \
                 constraint: Member must have value greater than or equal to {MIN_DURATION_SECS}"
            ))
        }
        Some(Ok(d)) if d > MAX_DURATION_SECS => {
            return Err(format!(
                "1 validation error detected: Value '{d}' at 'durationSeconds' failed to satisfy \
                 constraint: Member must have value less than or equal to {MAX_DURATION_SECS}"
            ))
        }
        Some(Ok(d)) => d,
        Some(Err(_)) => return Err("DurationSeconds must be an integer".into()),
    };
    let lifetime = state.aws.lifetime_override().unwrap_or(duration);
    let expires = SystemTime::now() + Duration::from_secs(lifetime);

    let access_key_id = format!("ASIA{}", random(UPPER_BASE32, 16));
    let secret_access_key = random(ALNUM, 40);
    let session_token = format!("IQoJb3JpZ2luX2VjE{}", random(ALNUM, 280));
    state.aws.insert(
        access_key_id.clone(),
        Key {
            secret_access_key: secret_access_key.clone(),
            session_token: Some(session_token.clone()),
            expires: Some(expires),
        },
    );
    let role_id = format!("AROA{}", random(UPPER_BASE32, 17));
    let xml = format!(
        "    <AssumedRoleUser>\n      <AssumedRoleId>{role_id}:{session}</AssumedRoleId>\n      \
         <Arn>arn:aws:sts::{account}:assumed-role/{role}/{session}</Arn>\n    \
         </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>{access_key_id}</AccessKeyId>\n      \
         <SecretAccessKey>{secret_access_key}</SecretAccessKey>\n      \
         <SessionToken>{session_token}</SessionToken>\n      \
         <Expiration>{}</Expiration>\n    </Credentials>\n",
        iso8601(expires),
        session = xml_escape(session),
        role = xml_escape(role),
    );
    Ok(Grant { xml })
}

/// The claims of a JWT, unverified (`None` if it is not one).
fn jwt_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let mut b64: String = payload
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    let bytes = aws_smithy_types::base64::decode(b64).ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn assume_role(
    state: &State,
    signed: &Signed<'_>,
    form: &HashMap<String, String>,
) -> Response {
    if let Err(e) = state.aws.verify(signed, "sts") {
        return sts_error(e.status(), e.query_code(), &e.message);
    }
    let grant = match grant(state, form) {
        Ok(g) => g,
        Err(message) => return validation(message),
    };
    if let Ok(mut inner) = state.aws.inner.lock() {
        inner.assumed_roles += 1;
    }
    xml(
        StatusCode::OK,
        format!(
            "<AssumeRoleResponse xmlns=\"{STS_NS}\">\n  <AssumeRoleResult>\n{}    \
             <PackedPolicySize>0</PackedPolicySize>\n  </AssumeRoleResult>\n  \
             <ResponseMetadata>\n    <RequestId>{}</RequestId>\n  </ResponseMetadata>\n\
             </AssumeRoleResponse>\n",
            grant.xml,
            request_id()
        ),
    )
}

async fn assume_role_with_web_identity(state: &State, form: &HashMap<String, String>) -> Response {
    let token = form
        .get("WebIdentityToken")
        .map(String::as_str)
        .unwrap_or("");
    if token.trim().is_empty() {
        return validation(
            "1 validation error detected: Value at 'webIdentityToken' failed to satisfy \
             constraint: Member must have length greater than or equal to 4",
        );
    }
    let grant = match grant(state, form) {
        Ok(g) => g,
        Err(message) => return validation(message),
    };
    let claims = jwt_claims(token).unwrap_or(Value::Null);
    let claim = |name: &str, default: &str| -> String {
        match claims.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a
                .first()
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_owned(),
            _ => default.to_owned(),
        }
    };
    let subject = claim("sub", "mock-subject");
    let audience = claim("aud", "sts.amazonaws.com");
    let issuer = claim("iss", "https://oidc.mock.invalid");
    let provider = issuer
        .strip_prefix("https://")
        .unwrap_or(&issuer)
        .to_owned();
    if let Ok(mut inner) = state.aws.inner.lock() {
        inner.web_identity += 1;
    }
    xml(
        StatusCode::OK,
        format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"{STS_NS}\">\n  \
             <AssumeRoleWithWebIdentityResult>\n    \
             <SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken>\n    \
             <Audience>{}</Audience>\n{}    <Provider>{}</Provider>\n  \
             </AssumeRoleWithWebIdentityResult>\n  <ResponseMetadata>\n    \
             <RequestId>{}</RequestId>\n  </ResponseMetadata>\n\
             </AssumeRoleWithWebIdentityResponse>\n",
            xml_escape(&subject),
            xml_escape(&audience),
            grant.xml,
            xml_escape(&provider),
            request_id()
        ),
    )
}

/// An STS request, `Action=...` in a form body.
async fn sts_request(
    state: &State,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    at_root: bool,
) -> Response {
    let form = parse_form(body);
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let Some(action) = form.get("Action") else {
        if at_root {
            return (
                StatusCode::NOT_FOUND,
                "not found: POST / is STS, with an Action",
            )
                .into_response();
        }
        return sts_error(400, "MissingAction", "Missing Action");
    };
    let recorded: serde_json::Map<String, Value> = form
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    state.record(&path_and_query, headers, &Value::Object(recorded));
    let signed = Signed {
        method: "POST",
        path_and_query: &path_and_query,
        headers,
        body,
    };
    match action.as_str() {
        "AssumeRole" => assume_role(state, &signed, &form).await,
        "AssumeRoleWithWebIdentity" => assume_role_with_web_identity(state, &form).await,
        other => sts_error(
            400,
            "InvalidAction",
            &format!("Could not find operation {other} for version 2011-06-15"),
        ),
    }
}

/// `POST /sts`.
pub async fn sts(
    AxumState(state): AxumState<State>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sts_request(&state, &uri, &headers, &body, false).await
}

/// `POST /`: STS, where the AWS SDKs post when the endpoint is the mock.
pub async fn root(
    AxumState(state): AxumState<State>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sts_request(&state, &uri, &headers, &body, true).await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_sigv4::http_request::SigningParams;

    pub const ACCESS_KEY: &str = "AKIDMOCKPROVIDER0001";
    pub const SECRET: &str = "mock/secret/key/for/tests/only/0123456789";

    /// Signs a JSON request as an AWS SDK would, returning its headers.
    pub fn signed_headers(
        method: &str,
        path_and_query: &str,
        body: &[u8],
        service: &str,
        creds: (&str, &str, Option<&str>),
        at: SystemTime,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        sign_into(headers, method, path_and_query, body, service, creds, at)
    }

    /// Adds `host`, `x-amz-date`, the token and `authorization` to `headers`, signed.
    pub fn sign_into(
        mut headers: HeaderMap,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        service: &str,
        (key, secret, token): (&str, &str, Option<&str>),
        at: SystemTime,
    ) -> HeaderMap {
        let identity = Credentials::new(key, secret, token.map(str::to_owned), None, "test").into();
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(service)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        headers.insert("host", "127.0.0.1:9198".parse().unwrap());
        headers.insert("user-agent", "test/1.0".parse().unwrap());
        let uri = format!("http://127.0.0.1:9198{path_and_query}");
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        let signable =
            SignableRequest::new(method, uri, pairs.into_iter(), SignableBody::Bytes(body))
                .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut out = headers.clone();
        for (name, value) in instructions.headers() {
            out.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        out
    }

    fn known(id: &str) -> Option<Key> {
        (id == ACCESS_KEY).then(|| Key {
            secret_access_key: SECRET.into(),
            session_token: None,
            expires: None,
        })
    }

    const PATH: &str = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";
    const BODY: &[u8] = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;

    fn check(headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<Signer, SigError> {
        let signed = Signed {
            method: "POST",
            path_and_query: PATH,
            headers,
            body,
        };
        verify(&signed, "bedrock", now, known)
    }

    #[test]
    fn accepts_a_request_signed_with_aws_sigv4() {
        let now = SystemTime::now();
        let creds = (ACCESS_KEY, SECRET, None);
        let headers = signed_headers("POST", PATH, BODY, "bedrock", creds, now);
        let signer = check(&headers, BODY, now).unwrap();
        assert_eq!(signer.access_key_id, ACCESS_KEY);
        assert_eq!(signer.region, "us-east-1");
        // Signed a minute ago, or by a clock a minute ahead.
        assert!(check(&headers, BODY, now + Duration::from_secs(60)).is_ok());
        assert!(check(&headers, BODY, now - Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn refuses_tampering_wrong_secrets_and_stale_dates() {
        let now = SystemTime::now();
        let headers = signed_headers(
            "POST",
            PATH,
            BODY,
            "bedrock",
            (ACCESS_KEY, SECRET, None),
            now,
        );
        let tampered = check(&headers, br#"{"messages":[]}"#, now).unwrap_err();
        assert_eq!(tampered.denial, Denial::Mismatch);
        assert_eq!(tampered.json_type(), "InvalidSignatureException");
        assert_eq!(tampered.message, SIGNATURE_MISMATCH);

        let wrong = signed_headers(
            "POST",
            PATH,
            BODY,
            "bedrock",
            (ACCESS_KEY, "not-the-secret", None),
            now,
        );
        assert_eq!(
            check(&wrong, BODY, now).unwrap_err().denial,
            Denial::Mismatch
        );

        let stranger = signed_headers(
            "POST",
            PATH,
            BODY,
            "bedrock",
            ("AKIDSTRANGER", SECRET, None),
            now,
        );
        let e = check(&stranger, BODY, now).unwrap_err();
        assert_eq!(e.json_type(), "UnrecognizedClientException");
        assert_eq!(e.status(), 403);

        let old = now - Duration::from_secs(600);
        let stale = signed_headers(
            "POST",
            PATH,
            BODY,
            "bedrock",
            (ACCESS_KEY, SECRET, None),
            old,
        );
        let e = check(&stale, BODY, now).unwrap_err();
        assert_eq!(e.denial, Denial::Expired);
        assert!(
            e.message.starts_with("Signature expired: "),
            "{}",
            e.message
        );
        let future = now + Duration::from_secs(600);
        let ahead = signed_headers(
            "POST",
            PATH,
            BODY,
            "bedrock",
            (ACCESS_KEY, SECRET, None),
            future,
        );
        assert_eq!(
            check(&ahead, BODY, now).unwrap_err().denial,
            Denial::Expired
        );

        let sts = signed_headers("POST", PATH, BODY, "sts", (ACCESS_KEY, SECRET, None), now);
        let e = check(&sts, BODY, now).unwrap_err();
        assert!(
            e.message.contains("correct service: 'bedrock'"),
            "{}",
            e.message
        );

        // A signed header changed on the way.
        let mut changed = headers.clone();
        changed.insert("content-type", "text/plain".parse().unwrap());
        assert_eq!(
            check(&changed, BODY, now).unwrap_err().denial,
            Denial::Mismatch
        );
        // The path signed once-encoded, not as AWS's double encoding wants.
        let signed = Signed {
            method: "POST",
            path_and_query: "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse",
            headers: &headers,
            body: BODY,
        };
        assert_eq!(
            verify(&signed, "bedrock", now, known).unwrap_err().denial,
            Denial::Mismatch
        );

        let mut none = headers.clone();
        none.remove("authorization");
        let e = check(&none, BODY, now).unwrap_err();
        assert_eq!(
            (e.denial, e.json_type()),
            (Denial::Missing, "MissingAuthenticationTokenException")
        );
        let mut garbled = headers;
        garbled.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=x".parse().unwrap(),
        );
        let e = check(&garbled, BODY, now).unwrap_err();
        assert_eq!((e.denial, e.status()), (Denial::Incomplete, 400));
    }

    #[test]
    fn session_keys_need_their_token() {
        let now = SystemTime::now();
        let key_of = |id: &str| {
            (id == "ASIAMOCK").then(|| Key {
                secret_access_key: SECRET.into(),
                session_token: Some("session-token".into()),
                expires: Some(now + Duration::from_secs(60)),
            })
        };
        let run = |headers: &HeaderMap, at: SystemTime| {
            let signed = Signed {
                method: "POST",
                path_and_query: PATH,
                headers,
                body: BODY,
            };
            verify(&signed, "bedrock", at, key_of)
        };
        let good = signed_headers(
            "POST",
            PATH,
            BODY,
            "bedrock",
            ("ASIAMOCK", SECRET, Some("session-token")),
            now,
        );
        assert!(good.contains_key("x-amz-security-token"));
        assert!(run(&good, now).is_ok());
        let e = run(&good, now + Duration::from_secs(120)).unwrap_err();
        assert_eq!(e.json_type(), "ExpiredTokenException");
        let other = signed_headers(
            "POST",
            PATH,
            BODY,
            "bedrock",
            ("ASIAMOCK", SECRET, Some("other-token")),
            now,
        );
        assert_eq!(run(&other, now).unwrap_err().denial, Denial::UnknownKey);
        let without = signed_headers(
            "POST",
            PATH,
            BODY,
            "bedrock",
            ("ASIAMOCK", SECRET, None),
            now,
        );
        assert_eq!(run(&without, now).unwrap_err().denial, Denial::UnknownKey);
    }

    /// The `get-vanilla` case of AWS's SigV4 test suite, a signature computed by AWS.
    #[test]
    fn matches_the_aws_test_suite() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                .parse()
                .unwrap(),
        );
        let signed = Signed {
            method: "GET",
            path_and_query: "/",
            headers: &headers,
            body: b"",
        };
        let now = parse_amz_date("20150830T123600Z").unwrap();
        let key_of = |id: &str| {
            (id == "AKIDEXAMPLE").then(|| Key {
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
                expires: None,
            })
        };
        assert!(verify(&signed, "service", now, key_of).is_ok());
    }

    #[test]
    fn dates_and_forms() {
        let t = parse_amz_date("20240229T235959Z").unwrap();
        assert_eq!(amz_date(t), "20240229T235959Z");
        assert_eq!(iso8601(t), "2024-02-29T23:59:59Z");
        assert!(parse_amz_date("2024-02-29T23:59:59Z").is_none());
        assert!(parse_amz_date("20241340T000000Z").is_none());
        let form = parse_form(b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fr&Name=a+b&Empty=");
        assert_eq!(form["Action"], "AssumeRole");
        assert_eq!(form["RoleArn"], "arn:aws:iam::123456789012:role/r");
        assert_eq!(form["Name"], "a b");
        assert_eq!(form["Empty"], "");
        assert_eq!(
            role_of("arn:aws:iam::123456789012:role/a/b/name"),
            Some(("123456789012", "name"))
        );
        assert_eq!(role_of("arn:aws:iam::123:role/name"), None);
        assert_eq!(role_of("arn:aws:s3:::bucket"), None);
        assert_eq!(xml_escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
    }

    async fn body_text(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// The text of `<name>` in an XML document.
    pub fn element<'a>(xml: &'a str, name: &str) -> &'a str {
        let open = format!("<{name}>");
        let start = xml.find(&open).unwrap() + open.len();
        let end = xml[start..].find(&format!("</{name}>")).unwrap() + start;
        &xml[start..end]
    }

    pub async fn register_test_key(state: &State) {
        let r = register(
            AxumState(state.clone()),
            Json(vec![Credential {
                access_key_id: ACCESS_KEY.into(),
                secret_access_key: SECRET.into(),
                session_token: None,
            }]),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    async fn post_sts(
        state: &State,
        body: &str,
        creds: Option<(&str, &str, Option<&str>)>,
    ) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        if let Some(creds) = creds {
            let at = SystemTime::now();
            headers = sign_into(headers, "POST", "/", body.as_bytes(), "sts", creds, at);
        }
        root(
            AxumState(state.clone()),
            OriginalUri("/".parse().unwrap()),
            headers,
            Bytes::from(body.to_owned()),
        )
        .await
    }

    const ASSUME: &str = "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fbedrock-caller&RoleSessionName=routeiq&DurationSeconds=900";

    #[tokio::test]
    async fn assume_role_gives_credentials_that_sign() {
        let state = State::default();
        let r = post_sts(&state, ASSUME, Some((ACCESS_KEY, SECRET, None))).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(body_text(r)
            .await
            .contains("<Code>InvalidClientTokenId</Code>"));

        register_test_key(&state).await;
        let r = post_sts(&state, ASSUME, Some((ACCESS_KEY, SECRET, None))).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "text/xml");
        let xml = body_text(r).await;
        assert!(xml.starts_with(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
        ));
        let key = element(&xml, "AccessKeyId").to_owned();
        let secret = element(&xml, "SecretAccessKey").to_owned();
        let token = element(&xml, "SessionToken").to_owned();
        assert!(key.starts_with("ASIA") && key.len() == 20, "{key}");
        assert_eq!(
            element(&xml, "Arn"),
            "arn:aws:sts::123456789012:assumed-role/bedrock-caller/routeiq"
        );
        assert!(element(&xml, "AssumedRoleId").ends_with(":routeiq"));
        let expiration = element(&xml, "Expiration");
        let expires = DateTime::from_str(expiration, Format::DateTime).unwrap();
        let in_secs = expires.secs() - secs(SystemTime::now());
        assert!((890..=900).contains(&in_secs), "{in_secs}");
        assert!(!element(&xml, "RequestId").is_empty());

        // The temporary credentials sign Bedrock requests (with their token only).
        let now = SystemTime::now();
        let h = signed_headers(
            "POST",
            PATH,
            BODY,
            "bedrock",
            (&key, &secret, Some(&token)),
            now,
        );
        let signed = Signed {
            method: "POST",
            path_and_query: PATH,
            headers: &h,
            body: BODY,
        };
        assert_eq!(
            state.aws.verify(&signed, "bedrock").unwrap().access_key_id,
            key
        );
        let h = signed_headers("POST", PATH, BODY, "bedrock", (&key, &secret, None), now);
        let signed = Signed {
            method: "POST",
            path_and_query: PATH,
            headers: &h,
            body: BODY,
        };
        assert!(state.aws.verify(&signed, "bedrock").is_err());

        // Role chaining: the temporary credentials may assume a role in turn.
        let r = post_sts(&state, ASSUME, Some((&key, &secret, Some(&token)))).await;
        assert_eq!(r.status(), StatusCode::OK);

        let _ = set_lifetime(AxumState(state.clone()), Json(Lifetime { secs: Some(0) })).await;
        let xml = body_text(post_sts(&state, ASSUME, Some((ACCESS_KEY, SECRET, None))).await).await;
        let (key, secret, token) = (
            element(&xml, "AccessKeyId"),
            element(&xml, "SecretAccessKey"),
            element(&xml, "SessionToken"),
        );
        let h = signed_headers(
            "POST",
            PATH,
            BODY,
            "bedrock",
            (key, secret, Some(token)),
            now,
        );
        let signed = Signed {
            method: "POST",
            path_and_query: PATH,
            headers: &h,
            body: BODY,
        };
        assert_eq!(
            state.aws.verify(&signed, "bedrock").unwrap_err().denial,
            Denial::ExpiredToken
        );

        let stats = stats(AxumState(state.clone())).await.0;
        assert_eq!(stats["assumed_roles"], 3);
        assert_eq!(stats["web_identity"], 0);

        // Bad parameters.
        let short = ASSUME.replace("DurationSeconds=900", "DurationSeconds=60");
        let r = post_sts(&state, &short, Some((ACCESS_KEY, SECRET, None))).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body_text(r).await.contains("<Code>ValidationError</Code>"));
        let r = post_sts(
            &state,
            "Action=GetSessionToken",
            Some((ACCESS_KEY, SECRET, None)),
        )
        .await;
        assert!(body_text(r).await.contains("<Code>InvalidAction</Code>"));
        let r = post_sts(&state, ASSUME, Some((ACCESS_KEY, "wrong", None))).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(body_text(r)
            .await
            .contains("<Code>SignatureDoesNotMatch</Code>"));
        let r = post_sts(&state, "", None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn web_identity_needs_only_a_token() {
        let state = State::default();
        let claims = r#"{"iss":"https://oidc.eks.us-east-1.amazonaws.com/id/ABC","sub":"system:serviceaccount:ns:gw","aud":["sts.amazonaws.com"]}"#;
        let jwt = format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            crate::common::base64(claims.as_bytes())
                .trim_end_matches('=')
                .replace('+', "-")
                .replace('/', "_")
        );
        let body = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fweb&RoleSessionName=gw-1&WebIdentityToken={jwt}"
        );
        let r = post_sts(&state, &body, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let xml = body_text(r).await;
        assert!(xml.starts_with("<AssumeRoleWithWebIdentityResponse"));
        assert_eq!(
            element(&xml, "SubjectFromWebIdentityToken"),
            "system:serviceaccount:ns:gw"
        );
        assert_eq!(element(&xml, "Audience"), "sts.amazonaws.com");
        assert_eq!(
            element(&xml, "Provider"),
            "oidc.eks.us-east-1.amazonaws.com/id/ABC"
        );
        assert!(element(&xml, "AccessKeyId").starts_with("ASIA"));
        let expires = DateTime::from_str(element(&xml, "Expiration"), Format::DateTime).unwrap();
        assert!((3590..=3600).contains(&(expires.secs() - secs(SystemTime::now()))));

        let empty = body.replace(&jwt, "");
        let r = post_sts(&state, &empty, None).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body_text(r).await.contains("webIdentityToken"));
        assert_eq!(stats(AxumState(state)).await.0["web_identity"], 1);
    }
}
