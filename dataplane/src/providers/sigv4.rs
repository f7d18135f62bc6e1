//! AWS Signature Version 4 for Bedrock's requests, in headers.
//!
//! Every Bedrock request the data plane sends has one shape: a `POST` of a JSON body (with a
//! query only on a pass-through route, when the client sent one), and `content-type`,
//! `host`, `x-amz-date` (and `x-amz-security-token` with session credentials) signed. So
//! the canonical request is written straight from those parts, and the signing key, which
//! depends only on the secret, the day, the region and the service, is derived once a day
//! instead of once a request (four HMACs). The key derivation is `aws-sigv4`'s own
//! function; the signature is `ring`'s HMAC-SHA256 under that key, kept with its inner and
//! outer pads already hashed, so a request hashes only the string to sign. A test signs the
//! same requests with `aws-sigv4`'s whole signer and compares every header, paths that need
//! normalising and encoding included.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::sign::v4;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use ring::{digest, hmac};

use crate::error::ApiError;

/// What the canonical query leaves as it is: RFC 3986's unreserved characters (also all a
/// Bedrock model id keeps in its request path, see `bedrock::encode_id`).
pub(super) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// What the canonical URI leaves as it is: the unreserved characters and `/` (a path's `%`
/// is encoded again: AWS services other than S3 sign the path encoded twice).
const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// The signed headers, in the canonical (sorted) order.
const SIGNED: &str = "content-type;host;x-amz-date";
const SIGNED_WITH_TOKEN: &str = "content-type;host;x-amz-date;x-amz-security-token";

/// Signs requests for one region and service.
pub struct Signer {
    region: String,
    service: &'static str,
    /// The credential scope after its date: `/<region>/<service>/aws4_request`.
    scope: String,
    /// The last signing key and what it was derived from.
    key: Mutex<Option<DayKey>>,
}

struct DayKey {
    /// Days since the Unix epoch (UTC).
    day: i64,
    /// The credentials it was derived from (shared, not copied: `Credentials` is an `Arc`).
    credentials: Credentials,
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(region: &str, service: &'static str) -> Self {
        Self {
            region: region.to_owned(),
            service,
            scope: format!("/{region}/{service}/aws4_request"),
            key: Mutex::new(None),
        }
    }

    /// The region it signs for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The SigV4 headers (`x-amz-date`, `authorization`, and `x-amz-security-token` for
    /// session credentials) of a `POST` of the JSON `body` to `path` (with its query, if
    /// any) at `host` (the request's authority, port included when it has one), signed at
    /// `now`.
    pub fn sign(
        &self,
        credentials: &Credentials,
        host: &str,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Vec<(&'static str, String)>, ApiError> {
        let token = credentials.session_token();
        if !is_header_value(host) || !token.is_none_or(is_header_value) {
            return Err(ApiError::internal(
                "SigV4: the host or session token is not a valid header value",
            ));
        }
        let secs = now
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .ok_or_else(|| ApiError::internal("SigV4: the clock is before 1970"))?;
        let date_time = amz_date(secs);
        let date = &date_time[..8];

        let mut canonical = String::with_capacity(256 + path.len() + token.map_or(0, str::len));
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        canonical.push_str("POST\n");
        canonical_uri(path, &mut canonical);
        canonical.push('\n');
        canonical_query(query, &mut canonical);
        canonical.push_str("\ncontent-type:application/json\nhost:");
        canonical.push_str(host);
        canonical.push_str("\nx-amz-date:");
        canonical.push_str(&date_time);
        if let Some(token) = token {
            canonical.push_str("\nx-amz-security-token:");
            canonical.push_str(token);
        }
        let signed = if token.is_some() {
            SIGNED_WITH_TOKEN
        } else {
            SIGNED
        };
        canonical.push_str("\n\n");
        canonical.push_str(signed);
        canonical.push('\n');
        push_hex_sha256(&mut canonical, body);

        // The string to sign goes straight into the HMAC: this runs for every request.
        let mut mac = self.hmac(credentials, secs.div_euclid(86_400), now);
        let mut canonical_hash = String::with_capacity(64);
        push_hex_sha256(&mut canonical_hash, canonical.as_bytes());
        for part in [
            "AWS4-HMAC-SHA256\n",
            &date_time,
            "\n",
            date,
            &self.scope,
            "\n",
            &canonical_hash,
        ] {
            mac.update(part.as_bytes());
        }
        let mut authorization = String::with_capacity(256);
        for part in [
            "AWS4-HMAC-SHA256 Credential=",
            credentials.access_key_id(),
            "/",
            date,
            &self.scope,
            ", SignedHeaders=",
            signed,
            ", Signature=",
        ] {
            authorization.push_str(part);
        }
        routeiq_proto::push_hex(&mut authorization, mac.sign().as_ref());
        let mut headers = Vec::with_capacity(3);
        headers.push(("x-amz-date", date_time));
        headers.push(("authorization", authorization));
        if let Some(token) = token {
            headers.push(("x-amz-security-token", token.to_owned()));
        }
        Ok(headers)
    }

    /// An HMAC under the signing key of `day` for `credentials`: the kept key, or one
    /// derived and kept.
    fn hmac(&self, credentials: &Credentials, day: i64, now: SystemTime) -> hmac::Context {
        let mut cached = self.key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cached.as_ref().filter(|k| {
            k.day == day
                && k.credentials.access_key_id() == credentials.access_key_id()
                && k.credentials.secret_access_key() == credentials.secret_access_key()
        }) {
            return hmac::Context::with_key(&k.key);
        }
        let derived = v4::generate_signing_key(
            credentials.secret_access_key(),
            now,
            &self.region,
            self.service,
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        let mac = hmac::Context::with_key(&key);
        *cached = Some(DayKey {
            key,
            day,
            credentials: credentials.clone(),
        });
        mac
    }
}

/// Visible ASCII and spaces, not starting or ending with a space and without two in a row
/// (what `aws-sigv4` would write unchanged into the canonical request).
fn is_header_value(v: &str) -> bool {
    v.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !v.starts_with(' ')
        && !v.ends_with(' ')
        && !v.contains("  ")
}

fn push_hex_sha256(out: &mut String, bytes: &[u8]) {
    routeiq_proto::push_hex(out, digest::digest(&digest::SHA256, bytes).as_ref());
}

/// Whether `path` is absolute, with no `.` or `..` segment and no empty one but the last:
/// what resolving its segments would leave as it is. (A model path such as
/// `/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse` is.)
fn is_normal(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    let mut segments = path.as_bytes().split(|&b| b == b'/').peekable();
    segments.next();
    while let Some(s) = segments.next() {
        if s == b"." || s == b".." || (s.is_empty() && segments.peek().is_some()) {
            return false;
        }
    }
    true
}

/// The path as SigV4 signs it: made absolute, its empty and dot segments resolved (RFC 3986
/// 5.2.4), then percent-encoded but for unreserved characters and `/`.
fn canonical_uri(path: &str, out: &mut String) {
    if is_normal(path) {
        out.extend(percent_encoding::utf8_percent_encode(path, PATH));
        return;
    }
    let mut segments: Vec<&str> = Vec::with_capacity(8);
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    for s in &segments {
        out.push('/');
        out.extend(percent_encoding::utf8_percent_encode(s, PATH));
    }
    let slash_ended = ["/", "/.", "/./", "/..", "/../"]
        .iter()
        .any(|e| path.ends_with(e))
        || path.is_empty();
    if segments.is_empty() || slash_ended {
        out.push('/');
    }
}

/// The query as SigV4 signs it: its parameters decoded, each name and value encoded again
/// (all but the unreserved characters), sorted, and joined as `name=value` by `&`.
fn canonical_query(query: &str, out: &mut String) {
    if query.is_empty() {
        return;
    }
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string();
    let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (encode(&k), encode(&v)))
        .collect();
    params.sort();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
}

/// `YYYYMMDD'T'HHMMSS'Z'` of a time in seconds since the Unix epoch (UTC).
fn amz_date(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = routeiq_proto::time::civil_from_days(days);
    // Written digit by digit rather than `format!`ed: this runs for every request.
    let mut out = String::with_capacity(16);
    // Four digits of year, more after 9999.
    let year_digits = y.checked_ilog10().map_or(1, |l| l + 1).max(4);
    push_digits(&mut out, y, year_digits);
    push_digits(&mut out, i64::from(m), 2);
    push_digits(&mut out, i64::from(d), 2);
    out.push('T');
    push_digits(&mut out, rem / 3600, 2);
    push_digits(&mut out, rem % 3600 / 60, 2);
    push_digits(&mut out, rem % 60, 2);
    out.push('Z');
    out
}

/// The last `width` decimal digits of `n` (`n` ≥ 0).
fn push_digits(out: &mut String, n: i64, width: u32) {
    for place in (0..width).rev() {
        let digit = n / 10_i64.pow(place) % 10;
        out.push(char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};

    use super::*;

    /// The headers `aws-sigv4`'s whole signer adds to the same request.
    fn reference(
        c: &Credentials,
        region: &str,
        host: &str,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let identity = c.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("bedrock")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let url = format!("https://{host}{path}");
        let headers = [("host", host), ("content-type", "application/json")];
        let req =
            SignableRequest::new("POST", &url, headers.into_iter(), SignableBody::Bytes(body))
                .unwrap();
        let (instructions, _) = sign(req, &params).unwrap().into_parts();
        let mut out: Vec<_> = instructions
            .into_parts()
            .0
            .into_iter()
            .map(|h| (h.name().to_owned(), h.value().to_owned()))
            .collect();
        out.sort();
        out
    }

    fn ours(
        s: &Signer,
        c: &Credentials,
        host: &str,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let mut out: Vec<_> = s
            .sign(c, host, path, body, now)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        out.sort();
        out
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn every_header_equals_aws_sigv4s_own_signer() {
        let with_token = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG",
            Some("FwoGZXIvYXdzEJr//token+/=".into()),
            None,
            "t",
        );
        let without = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "secret/with+chars=",
            None,
            None,
            "t",
        );
        let paths = [
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
            "/model/amazon.nova-lite-v1%3A0/converse-stream",
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude/invoke",
            "/vpce/prefix/model/m/invoke-with-response-stream",
            "/a//b/./c/../model/x/converse",
            "/../x",
            "/a/b/",
            "/a/b/.",
            "/a/b/..",
            "/a/b/../",
            "/",
            "//",
            "/x~y_z-1.2/%7E%20(a)!*'$&+,;=:@",
            "/model/m",
            "/.well-known/..x/y.",
            "/a/./b",
            "/a/../b/",
            "/a/b//",
            "",
            // Pass-through routes forward the client's query.
            "/model/m/converse?b=2&a=1&a=0",
            "/model/m/invoke?x=%20y&x=a+b&empty=&flag&k=v/w:z~%7E",
            "/model/m/invoke?",
            "/model/m/invoke?%E2%82%AC=%C3%A9&sp%20ace=1",
        ];
        let hosts = [
            "bedrock-runtime.us-east-1.amazonaws.com",
            "127.0.0.1:8080",
            "vpce-0a1b.bedrock-runtime.eu-west-3.vpce.amazonaws.com",
        ];
        let big = vec![b'x'; 5000];
        let bodies: [&[u8]; 3] = [b"", b"{\"messages\":[]}", &big];
        // Dates across leap days, years and centuries, and a spread of others.
        let mut times = vec![
            0,
            951_782_400,
            951_868_799,
            1_709_164_800,
            1_735_689_599,
            4_102_444_799,
            4_107_542_400,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            times.push(x % 8_000_000_000);
        }
        // One signer per region, kept across requests: its key is reused or replaced as the
        // dates and credentials change.
        let regions = ["us-east-1", "eu-west-3", "ap-southeast-2"];
        let signers = regions.map(|r| Signer::new(r, "bedrock"));
        for (i, &t) in times.iter().enumerate() {
            let c = if i % 2 == 0 { &with_token } else { &without };
            let (region, signer) = (regions[i % 3], &signers[i % 3]);
            let path = paths[i % paths.len()];
            let host = hosts[i / 3 % hosts.len()];
            let body = bodies[i / 9 % bodies.len()];
            assert_eq!(
                ours(signer, c, host, path, body, at(t)),
                reference(c, region, host, path, body, at(t)),
                "time {t}, path {path}"
            );
        }
        for path in paths {
            for host in hosts {
                let signer = Signer::new("us-west-2", "bedrock");
                let now = SystemTime::now();
                assert_eq!(
                    ours(&signer, &with_token, host, path, b"{}", now),
                    reference(&with_token, "us-west-2", host, path, b"{}", now),
                    "path {path}, host {host}"
                );
            }
        }
    }

    #[test]
    fn the_kept_key_follows_the_day_and_the_credentials() {
        let signer = Signer::new("us-east-1", "bedrock");
        let first = Credentials::new("AKID1", "secret-one", None, None, "t");
        let rotated = Credentials::new("AKID1", "secret-two", None, None, "t");
        let other = Credentials::new("AKID2", "secret-one", Some("tok".into()), None, "t");
        let day = 1_764_979_200; // 2025-12-06T00:00:00Z
        let path = "/model/m/converse";
        // Each sign may reuse or replace the key the one before kept.
        for (c, t) in [
            (&first, day + 10),
            (&first, day + 86_399),
            (&first, day + 86_400),
            (&rotated, day + 86_401),
            (&other, day + 86_402),
            (&first, day + 86_403),
            (&first, day - 1),
        ] {
            assert_eq!(
                ours(&signer, c, "h", path, b"{}", at(t)),
                reference(c, "us-east-1", "h", path, b"{}", at(t)),
                "{} at {t}",
                c.access_key_id()
            );
        }
    }

    #[test]
    fn a_header_value_aws_sigv4_would_change_or_refuse_is_refused() {
        let signer = Signer::new("us-east-1", "bedrock");
        let c = Credentials::new("AKID", "s", Some("bad\ntoken".into()), None, "t");
        assert!(signer.sign(&c, "h", "/", b"", SystemTime::now()).is_err());
        let c = Credentials::new("AKID", "s", None, None, "t");
        assert!(signer.sign(&c, " h", "/", b"", SystemTime::now()).is_err());
    }

    #[test]
    fn dates_are_the_proleptic_gregorian_calendars() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(1_709_251_199), "20240229T235959Z");
        assert_eq!(amz_date(4_102_444_800), "21000101T000000Z");
        assert_eq!(amz_date(4_107_542_400), "21000301T000000Z");
        assert_eq!(amz_date(253_402_300_799), "99991231T235959Z");
        assert_eq!(amz_date(253_402_300_800), "100000101T000000Z");
    }
}
