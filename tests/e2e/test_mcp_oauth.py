"""MCP servers behind OAuth 2.0 client credentials (`auth_type: oauth2`): the gateway gets a
token from the token endpoint (a real HTTP server here, checking the client and the grant),
sends it to the MCP server (behind a guard that accepts only tokens the endpoint issued and
has not revoked), reuses it, renews it before it expires, replaces it once when the server
refuses it, and reports a client the endpoint refuses as a clean JSON-RPC error without the
secret."""

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import free_port
from test_mcp import MASTER, McpServerProcess, call, call_error, run, start_gateway

pytestmark = pytest.mark.timeout(120)


class Authority:
    """The token endpoint's state: issued tokens, the valid ones, the requests it got."""

    def __init__(self):
        self.lock = threading.Lock()
        self.issued = 0
        self.valid = set()
        self.requests = []
        self.lifetime = 3600
        self.initializes = 0

    def issue(self) -> dict:
        with self.lock:
            self.issued += 1
            token = f"tok-{self.issued}"
            self.valid.add(token)
            return {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}

    def revoke_all(self):
        with self.lock:
            self.valid.clear()


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 resets a burst of connections


def serve(handler) -> tuple[ThreadingHTTPServer, int]:
    port = free_port()
    server = Server(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcp-oauth")
    markers = d / "markers"
    markers.mkdir()
    authority = Authority()

    class TokenEndpoint(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

        def log_message(self, *args):
            pass

        def do_POST(self):
            form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["content-length"])).decode()))
            authority.requests.append(form)
            ok = (form.get("grant_type") == "client_credentials" and form.get("client_id") == "gw"
                  and form.get("client_secret") == "s3cret")
            body = json.dumps(authority.issue() if ok else {"error": "invalid_client"}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    math = McpServerProcess("math", markers, d)
    math.start()

    class Guard(BaseHTTPRequestHandler):
        """Lets through only requests with a valid token, to the MCP server."""

        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if json.loads(body or b"{}").get("method") == "initialize":
                with authority.lock:
                    authority.initializes += 1
            token = (self.headers.get("authorization") or "").removeprefix("Bearer ")
            if token not in authority.valid:
                self.send_response(401)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            forwarded = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            r = httpx.post(f"http://127.0.0.1:{math.port}{self.path}", content=body, headers=forwarded, timeout=30)
            self.send_response(r.status_code)
            for k in ("content-type", "mcp-session-id"):
                if k in r.headers:
                    self.send_header(k, r.headers[k])
            self.send_header("content-length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

    token_server, token_port = serve(TokenEndpoint)
    guard, guard_port = serve(Guard)
    config = f"""
model_list:
  - model_name: m
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi"}}
mcp_servers:
  m2m:
    url: http://127.0.0.1:{guard_port}/mcp
    auth_type: oauth2
    oauth2_flow: client_credentials
    client_id: gw
    client_secret: os.environ/M2M_SECRET
    token_url: http://127.0.0.1:{token_port}/token
    scopes: ["tools:read", "tools:call"]
  stranger:
    url: http://127.0.0.1:{guard_port}/mcp
    auth_type: oauth2
    client_id: gw
    client_secret: not-the-secret
    token_url: http://127.0.0.1:{token_port}/token
general_settings:
  master_key: {MASTER}
  allowed_egress: ["127.0.0.1/32"]
"""
    gateway = start_gateway(d, config, "dp", M2M_SECRET="s3cret")
    try:
        yield type("Env", (), {"url": gateway[0], "authority": authority, "log": d / "dp.log"})
    finally:
        gateway[1].stop()
        token_server.shutdown()
        guard.shutdown()
        math.stop()


def whoami(env) -> str:
    ok, text = run(call(f"{env.url}/mcp/m2m", "whoami", {}))
    assert ok is False, text
    return text.split()[1]


def test_the_token_is_fetched_once_sent_and_reused(env):
    # The server's first use, by 16 calls at once: one token fetched, one session opened.
    with ThreadPoolExecutor(16) as pool:
        tokens = list(pool.map(lambda _: whoami(env), range(16)))
    assert tokens == ["tok-1"] * 16
    assert env.authority.initializes == 1
    for _ in range(5):
        assert whoami(env) == "tok-1"
    assert [r["client_id"] for r in env.authority.requests] == ["gw"]
    assert env.authority.requests[0]["scope"] == "tools:read tools:call"


def test_a_refused_token_is_replaced_once_and_the_call_goes_through(env):
    before = env.authority.issued
    env.authority.revoke_all()
    assert whoami(env) == f"tok-{before + 1}"


def test_a_token_is_renewed_before_it_expires(env):
    env.authority.lifetime = 2
    env.authority.revoke_all()
    first = whoami(env)  # refused, then a 2-second token
    time.sleep(1.8)  # renewed a quarter of its life early: no refusal needed
    refusals_before = len(env.authority.requests)
    second = whoami(env)
    assert second != first and len(env.authority.requests) == refusals_before + 1
    env.authority.lifetime = 3600


def test_a_client_the_endpoint_refuses_is_a_clean_error_without_the_secret(env):
    e = run(call_error(f"{env.url}/mcp/stranger", "add", {"a": 1, "b": 1}))
    assert e.code == -32603 and "OAuth token" in e.message and "invalid_client" in e.message, e.message
    assert "not-the-secret" not in e.message
    assert "not-the-secret" not in env.log.read_text() and "s3cret" not in env.log.read_text()
