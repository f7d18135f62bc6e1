//! `routeiq-healthcheck http://127.0.0.1:4000/health/liveliness`: exits 0 when the URL
//! answers 2xx within two seconds, 1 otherwise. It is the `HEALTHCHECK` of the container
//! images, whose distroless base has no shell, curl or wget. Plain HTTP on an address
//! only (the probe runs next to the service); the standard library only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: routeiq-healthcheck http://HOST:PORT/PATH");
        return ExitCode::from(2);
    };
    match probe(&url) {
        Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("routeiq-healthcheck: {url} answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("routeiq-healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The status code `url` answers a GET with.
fn probe(url: &str) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are probed")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .map_err(|_| format!("{authority:?} is not an IP address and port"))?;
    let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: routeiq-healthcheck\r\n\r\n"
    );
    conn.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    // The status line fits in the first bytes; the body is not needed.
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match conn.read(&mut head[n..]).map_err(|e| e.to_string())? {
            0 => break,
            read => n += read,
        }
    }
    status_of(&head[..n]).ok_or_else(|| "no HTTP status line in the answer".to_string())
}

/// The code of an `HTTP/1.x NNN ...` status line.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_code() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_of(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(status_of(b"HTTP/1.1"), None);
    }

    #[test]
    fn probes_a_live_listener_and_refuses_what_it_cannot_reach() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 503 No\r\n\r\n"] {
                let (mut c, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 256];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0, "the probe closed before its request ended");
                    request.extend_from_slice(&buf[..n]);
                }
                assert!(request.starts_with(b"GET /health/liveliness HTTP/1.0\r\n"));
                c.write_all(answer.as_bytes()).unwrap();
            }
        });
        let url = format!("http://{addr}/health/liveliness");
        assert_eq!(probe(&url), Ok(200));
        assert_eq!(probe(&url), Ok(503));
        server.join().unwrap();
        assert!(probe(&url).is_err(), "nothing listens any more");
        assert!(probe("https://127.0.0.1:1/").is_err());
        assert!(probe("http://localhost:4000/").is_err(), "addresses only");
    }
}
