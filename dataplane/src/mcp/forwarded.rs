//! A caller's own headers for a server (LiteLLM's `x-mcp-{server}-{header}`): a request
//! header `x-mcp-github-authorization: Bearer ...` is sent to the server `github` as
//! `authorization: Bearer ...`, in place of a configured header of that name. So each user
//! reaches a server with their own credential.
//!
//! - The server is the longest registered name the header starts with (`x-mcp-a-b-x` is
//!   `x` for a server `a-b`, `b-x` for a server `a` when there is no `a-b`); a header that
//!   names no server is not forwarded.
//! - Headers the gateway itself sets (the MCP session and version, framing, `host`,
//!   hop-by-hop ones) cannot be forwarded: the request is refused.
//! - Header names are kept for the life of the process, one copy per name (the upstream
//!   client takes `'static` names): at most [`MAX_NAMES`] distinct names, after which a new
//!   one is refused.
//! - A `stdio` server's env values may name request headers (`${X-HEADER}`, see
//!   `McpServer::env_placeholders`): its process gets them filled in from the request; a
//!   request without such a header cannot use the server.
//! - A server session (or process) opened with forwarded headers or env is the caller's
//!   alone (`client::Sessions` keys it by their hash), so one user's credential never
//!   carries another's calls.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock};

use pingora::http::RequestHeader;

use super::Registry;

/// Distinct forwarded header names a data plane keeps.
pub const MAX_NAMES: usize = 512;
/// The longest header name forwarded.
const MAX_NAME_LEN: usize = 64;
const PREFIX: &str = "x-mcp-";

/// Headers the gateway sets itself.
const RESERVED: [&str; 15] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

/// The caller's headers for each server, and the env of `stdio` servers that take it
/// from the request (or the header the request lacks), by server name.
#[derive(Debug, Default, Clone)]
pub struct Forwarded {
    headers: Vec<(String, Headers)>,
    env: Vec<(String, Result<Env, String>)>,
}

/// Headers for one server.
type Headers = Vec<(&'static str, String)>;
/// Env variables for one process.
type Env = Vec<(String, String)>;

impl Forwarded {
    /// The `x-mcp-{server}-{header}` headers of `req` for the servers of `registry`, and
    /// the env values its `stdio` servers take from `req`.
    pub fn of(req: &RequestHeader, registry: &Registry) -> Result<Self, String> {
        let headers = Self::headers(req, registry)?;
        let env = registry
            .servers
            .iter()
            .filter(|s| s.config.env.iter().any(|(_, v)| v.expose().contains("${")))
            .map(|s| (s.config.name.clone(), env(req, &s.config.env)))
            .collect();
        Ok(Self { headers, env })
    }

    fn headers(req: &RequestHeader, registry: &Registry) -> Result<Vec<(String, Headers)>, String> {
        let mut out: Vec<(String, Headers)> = Vec::new();
        for (name, value) in req.headers.iter() {
            let Some(rest) = name.as_str().strip_prefix(PREFIX) else {
                continue;
            };
            if rest == "servers" {
                continue;
            }
            let server = registry
                .servers
                .iter()
                .map(|s| s.config.name.as_str())
                .filter(|n| {
                    rest.len() > n.len() + 1
                        && rest.as_bytes()[n.len()] == b'-'
                        && rest[..n.len()].eq_ignore_ascii_case(n)
                })
                .max_by_key(|n| n.len());
            let Some(server) = server else {
                continue;
            };
            let header = &rest[server.len() + 1..];
            if RESERVED.contains(&header) || header.starts_with("proxy-") {
                return Err(format!(
                    "`{name}`: `{header}` is set by the gateway and cannot be forwarded"
                ));
            }
            let value = value
                .to_str()
                .map_err(|_| format!("`{name}`: its value is not visible ASCII"))?;
            let header = intern(header)?;
            match out.iter_mut().find(|(s, _)| s == server) {
                Some((_, headers)) => headers.push((header, value.to_owned())),
                None => out.push((server.to_owned(), vec![(header, value.to_owned())])),
            }
        }
        Ok(out)
    }

    /// The headers for `server`.
    pub fn for_server(&self, server: &str) -> &[(&'static str, String)] {
        self.headers
            .iter()
            .find(|(s, _)| s == server)
            .map_or(&[], |(_, h)| h.as_slice())
    }

    /// The env values `server` (`stdio`) takes from the request; `Err`: the header the
    /// request lacks.
    pub fn env(&self, server: &str) -> Result<&[(String, String)], &str> {
        match self.env.iter().find(|(s, _)| s == server) {
            None => Ok(&[]),
            Some((_, Ok(vars))) => Ok(vars),
            Some((_, Err(missing))) => Err(missing),
        }
    }

    /// A hash of the headers and env for `server` (0: none), which keeps their sessions
    /// and processes apart.
    pub fn key(&self, server: &str) -> u64 {
        let headers = self.for_server(server);
        let env = self.env(server).unwrap_or_default();
        if headers.is_empty() && env.is_empty() {
            return 0;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (headers, env).hash(&mut h);
        h.finish() | 1
    }

    /// `headers` with the caller's for `server` in place of those of the same names.
    pub fn apply(&self, server: &str, headers: &mut Vec<(&'static str, String)>) {
        let mine = self.for_server(server);
        if mine.is_empty() {
            return;
        }
        headers.retain(|(k, _)| !mine.iter().any(|(m, _)| m.eq_ignore_ascii_case(k)));
        headers.extend(mine.iter().cloned());
    }
}

/// `env` with its `${X-HEADER}`s filled from `req`; `Err`: a header `req` lacks.
fn env(req: &RequestHeader, env: &[(String, routeiq_proto::Secret)]) -> Result<Env, String> {
    let mut out = Vec::new();
    for (k, v) in env {
        let v = v.expose();
        let names = routeiq_proto::McpServer::env_placeholders(v).unwrap_or_default();
        if names.is_empty() {
            continue;
        }
        let mut value = v.to_owned();
        for name in names {
            let given = req.headers.get(name).and_then(|h| h.to_str().ok());
            let Some(given) = given else {
                return Err(name.to_owned());
            };
            value = value.replace(&format!("${{{name}}}"), given);
        }
        out.push((k.clone(), value));
    }
    Ok(out)
}

/// The one copy of a forwarded header name (lowercase, as HTTP/2 and pingora give it).
fn intern(name: &str) -> Result<&'static str, String> {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{PREFIX}...-{name}`: a forwarded header name has at most {MAX_NAME_LEN} characters"
        ));
    }
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .map_err(|_| "forwarded header names are unavailable".to_owned())?;
    if let Some(n) = names.get(name) {
        return Ok(n);
    }
    if names.len() >= MAX_NAMES {
        return Err(format!(
            "`{name}`: this data plane already forwards {MAX_NAMES} distinct header names"
        ));
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    Ok(leaked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use routeiq_proto::McpServer;

    fn registry(names: &[&str]) -> Registry {
        let servers: Vec<McpServer> = names
            .iter()
            .map(|n| McpServer {
                name: (*n).into(),
                url: "http://127.0.0.1:1/mcp".into(),
                ..McpServer::default()
            })
            .collect();
        Registry::compile(&servers, false)
    }

    fn request(headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        for (k, v) in headers {
            req.insert_header(*k, *v).unwrap();
        }
        req
    }

    #[test]
    fn headers_go_to_the_longest_server_name_they_start_with() {
        let reg = registry(&["a", "a-b", "gh"]);
        let req = request(&[
            ("x-mcp-a-b-token", "1"),
            ("x-mcp-a-token", "2"),
            ("x-mcp-gh-authorization", "Bearer u1"),
            ("x-mcp-servers", "a,gh"),
            ("x-mcp-nosuch-token", "3"),
        ]);
        let f = Forwarded::of(&req, &reg).unwrap();
        assert_eq!(f.for_server("a-b"), [("token", "1".to_owned())]);
        assert_eq!(f.for_server("a"), [("token", "2".to_owned())]);
        assert_eq!(
            f.for_server("gh"),
            [("authorization", "Bearer u1".to_owned())]
        );
        assert!(f.for_server("nosuch").is_empty());
        assert_eq!(f.key("nosuch"), 0);
        assert_ne!(f.key("a"), f.key("a-b"));
        let mut headers = vec![
            ("authorization", "Bearer configured".to_owned()),
            ("x-org", "acme".to_owned()),
        ];
        f.apply("gh", &mut headers);
        assert_eq!(
            headers,
            [
                ("x-org", "acme".to_owned()),
                ("authorization", "Bearer u1".to_owned())
            ]
        );
    }

    #[test]
    fn a_stdio_servers_env_is_filled_from_the_request() {
        let servers = [McpServer {
            name: "local".into(),
            transport: routeiq_proto::McpTransport::Stdio,
            command: "true".into(),
            env: vec![
                ("TOKEN".into(), routeiq_proto::Secret::new("tok-${X-Token}")),
                ("PLAIN".into(), routeiq_proto::Secret::new("p")),
            ],
            ..McpServer::default()
        }];
        let reg = Registry::compile(&servers, true);
        let f = Forwarded::of(&request(&[("x-token", "u1")]), &reg).unwrap();
        assert_eq!(
            f.env("local"),
            Ok(&[("TOKEN".to_owned(), "tok-u1".to_owned())][..])
        );
        let other = Forwarded::of(&request(&[("x-token", "u2")]), &reg).unwrap();
        assert_ne!(f.key("local"), other.key("local"));
        let none = Forwarded::of(&request(&[]), &reg).unwrap();
        assert_eq!(none.env("local"), Err("X-Token"));
    }

    #[test]
    fn the_gateways_own_headers_are_refused() {
        let reg = registry(&["gh"]);
        for h in [
            "x-mcp-gh-host",
            "x-mcp-gh-mcp-session-id",
            "x-mcp-gh-proxy-authorization",
        ] {
            let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
            req.insert_header(h.to_owned(), "x").unwrap();
            let e = Forwarded::of(&req, &reg).unwrap_err();
            assert!(e.contains("cannot be forwarded"), "{h}: {e}");
        }
        let long = format!("x-mcp-gh-{}", "a".repeat(MAX_NAME_LEN + 1));
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        req.insert_header(long, "x").unwrap();
        assert!(Forwarded::of(&req, &reg).is_err());
    }
}
