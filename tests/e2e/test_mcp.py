"""The MCP gateway, with the official `mcp` SDK (2.3.0, unmodified) as the client, in front
of two MCP servers written with the same SDK (tests/e2e/mcp_server.py) over streamable
HTTP. Covered: both protocol eras (2026-07-28, stateless, which the SDK picks on its own,
and the session-based 2025-11-25), aggregation with `<server>-` prefixes, `x-mcp-servers`,
the single-server routes, `allowed_tools` / `disallowed_tools` (hidden and never
forwarded), upstream auth and static headers, a server that dies mid-call and comes back,
a session continued on a second data plane, and malformed JSON-RPC."""

import asyncio
import os
import sys
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

from conftest import BIN_DIR, Process, free_port, wait_http

MASTER = "sk-mcp-master"
HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(120)


class McpServerProcess:
    def __init__(self, name: str, markers: Path, logs: Path):
        self.name, self.markers, self.logs = name, markers, logs
        self.port = free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self):
        self.proc = Process([sys.executable, str(HERE / "mcp_server.py"), self.name, str(self.port), str(self.markers)],
                            self.logs / f"{self.name}-{os.urandom(2).hex()}.log")
        wait_port(self.port, self.proc.proc)

    def stop(self):
        if self.proc:
            self.proc.stop()


def wait_port(port: int, proc, timeout: float = 30.0):
    import socket
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the MCP server exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"port {port} did not open")


CONFIG = """
model_list:
  - model_name: m
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi"}}
mcp_servers:
  math:
    url: {math}
    auth_type: bearer_token
    auth_value: os.environ/MATH_MCP_TOKEN
    static_headers: {{X-Team: blue}}
    disallowed_tools: [delete_everything]
  docs:
    url: {docs}
    description: the docs
    allowed_tools: [search]
general_settings:
  master_key: {master}
  # The servers are on loopback, which MCP reaches only when listed (SSRF guard).
  allowed_egress: ["127.0.0.1/32"]
"""


def start_gateway(path: Path, config: str, name: str, **env):
    cfg = path / f"{name}.yaml"
    cfg.write_text(config)
    port = free_port()
    p = Process([str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
                path / f"{name}.log", env=dict(os.environ, MATH_MCP_TOKEN="math-token", **env))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health/liveliness", p.proc)
    return url, p


@pytest.fixture(scope="module")
def mcp_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcp")
    markers = d / "markers"
    markers.mkdir()
    math = McpServerProcess("math", markers, d)
    docs = McpServerProcess("docs", markers, d)
    gateways = []
    try:
        math.start()
        docs.start()
        config = CONFIG.format(math=math.url, docs=docs.url, master=MASTER)
        for name in ("dp1", "dp2"):
            gateways.append(start_gateway(d, config, name))
        yield type("Env", (), {"math": math, "docs": docs, "markers": markers,
                               "url": gateways[0][0], "url2": gateways[1][0], "dir": d})
    finally:
        for _, p in gateways:
            p.stop()
        math.stop()
        docs.stop()


def run(coro):
    return asyncio.run(coro)


async def session(url: str, mode: str, headers: dict | None = None):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {MASTER}", **(headers or {})},
                              timeout=httpx2.Timeout(30, read=60))
    return http, Client(streamable_http_client(url, http_client=http), mode=mode)


async def tool_names(url: str, mode: str = "auto", headers: dict | None = None):
    http, client = await session(url, mode, headers)
    async with http, client as c:
        return c.protocol_version, sorted(t.name for t in (await c.list_tools()).tools)


async def call(url: str, tool: str, args: dict, mode: str = "auto"):
    http, client = await session(url, mode)
    async with http, client as c:
        r = await c.call_tool(tool, args)
        return r.is_error, "".join(b.text for b in r.content if isinstance(b, TextContent))


async def call_error(url: str, tool: str, args: dict, mode: str = "auto") -> MCPError:
    http, client = await session(url, mode)
    async with http, client as c:
        try:
            await c.call_tool(tool, args)
        except MCPError as e:
            return e
    raise AssertionError(f"{tool} did not fail")


@pytest.mark.parametrize("mode, version", [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
def test_the_aggregate_lists_every_servers_tools_prefixed(mcp_env, mode, version):
    negotiated, names = run(tool_names(f"{mcp_env.url}/mcp", mode))
    assert negotiated == version
    assert names == ["docs-search", "math-add", "math-die", "math-getenv", "math-search", "math-whoami"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_tools_are_called_through_the_aggregate(mcp_env, mode):
    assert run(call(f"{mcp_env.url}/mcp", "math-add", {"a": 2, "b": 3}, mode)) == (False, "5")
    assert run(call(f"{mcp_env.url}/mcp", "docs-search", {"q": "limits"}, mode)) == (False, "docs found: limits")
    # The server's credential and static header, not the client's key.
    _, who = run(call(f"{mcp_env.url}/mcp", "math-whoami", {}, mode))
    assert who == "Bearer math-token team=blue server=math"


def test_x_mcp_servers_narrows_the_aggregate(mcp_env):
    _, names = run(tool_names(f"{mcp_env.url}/mcp", headers={"x-mcp-servers": "docs"}))
    assert names == ["docs-search"]
    _, names = run(tool_names(f"{mcp_env.url}/mcp", headers={"x-mcp-servers": "math, docs"}))
    assert len(names) == 6


@pytest.mark.parametrize("path", ["/mcp/math", "/math/mcp"])
def test_a_servers_own_endpoint_uses_its_own_names(mcp_env, path):
    _, names = run(tool_names(f"{mcp_env.url}{path}"))
    assert names == ["add", "die", "getenv", "search", "whoami"]
    assert run(call(f"{mcp_env.url}{path}", "add", {"a": 40, "b": 2})) == (False, "42")


@pytest.mark.parametrize("url_path, tool", [("/mcp", "math-delete_everything"), ("/mcp/math", "delete_everything"),
                                            ("/mcp/docs", "add"), ("/mcp", "nosuch-tool")])
def test_hidden_and_unknown_tools_are_refused_and_never_forwarded(mcp_env, url_path, tool):
    e = run(call_error(f"{mcp_env.url}{url_path}", tool, {"a": 1, "b": 1}, "legacy"))
    assert e.code == -32602 and tool in e.message, (e.code, e.message)
    assert not list(mcp_env.markers.iterdir()), "a hidden tool was called"


def test_a_server_dying_mid_call_is_a_clean_error_and_its_return_is_picked_up(mcp_env):
    e = run(call_error(f"{mcp_env.url}/mcp", "math-die", {}))
    assert e.code == -32603 and "math" in e.message, (e.code, e.message)
    e = run(call_error(f"{mcp_env.url}/mcp", "math-add", {"a": 1, "b": 2}))
    assert e.code == -32603, (e.code, e.message)
    # The other server is unaffected, and the aggregate lists what it can.
    assert run(call(f"{mcp_env.url}/mcp", "docs-search", {"q": "x"}))[0] is False
    _, names = run(tool_names(f"{mcp_env.url}/mcp"))
    assert names == ["docs-search"]
    # Back on the same port: the old session is unknown to it, a new one is opened.
    mcp_env.math.stop()
    mcp_env.math.start()
    assert run(call(f"{mcp_env.url}/mcp", "math-add", {"a": 1, "b": 2})) == (False, "3")


def rpc(url: str, body, headers: dict | None = None, method: str = "POST") -> httpx.Response:
    h = {"Authorization": f"Bearer {MASTER}", "Accept": "application/json, text/event-stream"}
    h.update(headers or {})
    content = body if isinstance(body, (bytes, str)) else None
    return httpx.request(method, url, headers=h, content=content,
                         json=None if content is not None else body, timeout=30)


def test_a_session_continues_on_another_data_plane(mcp_env):
    init = rpc(f"{mcp_env.url}/mcp", {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert init.status_code == 200, init.text
    assert init.json()["result"]["protocolVersion"] == "2025-06-18"
    sid = init.headers["mcp-session-id"]
    headers = {"mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}
    r = rpc(f"{mcp_env.url2}/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
    assert r.status_code == 202
    r = rpc(f"{mcp_env.url2}/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                    "params": {"name": "math-add", "arguments": {"a": 5, "b": 6}}}, headers)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["content"][0]["text"] == "11"
    assert rpc(f"{mcp_env.url2}/mcp", None, headers, method="DELETE").status_code == 204


@pytest.mark.parametrize("body, headers, status, code", [
    (b"{not json", {}, 400, -32700),
    (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', {}, 400, -32600),
    (b'{"jsonrpc":"2.0","id":1}', {}, 400, -32600),
    (b'{"jsonrpc":"2.0","id":1,"method":"resources/list"}', {}, 200, -32601),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}', {}, 200, -32602),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', {"mcp-protocol-version": "1999-01-01"}, 400, -32022),
    # 2026-07-28: the routing header must repeat the body's method, `_meta` must be there.
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{}}}',
     {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call"}, 400, -32020),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}',
     {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}, 400, -32602),
    (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"_meta":{}}}',
     {"mcp-protocol-version": "2026-07-28", "mcp-method": "initialize"}, 400, -32602),
])
def test_bad_json_rpc_gets_json_rpc_errors(mcp_env, body, headers, status, code):
    r = rpc(f"{mcp_env.url}/mcp", body, headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text
    assert r.json()["jsonrpc"] == "2.0"


def test_keys_and_methods(mcp_env):
    r = httpx.post(f"{mcp_env.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == -32600
    r = rpc(f"{mcp_env.url}/mcp", None, method="GET")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = rpc(f"{mcp_env.url}/mcp/nosuch", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 404 and "nosuch" in r.json()["error"]["message"]
    r = rpc(f"{mcp_env.url}/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"x-mcp-servers": "nosuch"})
    assert r.status_code == 400


def test_stateless_discover_answers_what_the_2026_revision_requires(mcp_env):
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    r = rpc(f"{mcp_env.url}/mcp", {"jsonrpc": "2.0", "id": "d", "method": "server/discover", "params": {"_meta": meta}},
            {"mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover"})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["supportedVersions"] == ["2026-07-28"] and result["resultType"] == "complete"
    assert result["ttlMs"] == 0 and result["cacheScope"] == "private" and "tools" in result["capabilities"]
    assert "mcp-session-id" not in r.headers


def test_the_rest_routes_list_and_call(mcp_env):
    h = {"Authorization": f"Bearer {MASTER}"}
    r = httpx.get(f"{mcp_env.url}/mcp-rest/tools/list", headers=h, timeout=30)
    assert r.status_code == 200, r.text
    assert sorted(t["name"] for t in r.json()["tools"]) == [
        "docs-search", "math-add", "math-die", "math-getenv", "math-search", "math-whoami"]
    r = httpx.get(f"{mcp_env.url}/mcp-rest/tools/list?server_name=docs", headers=h, timeout=30)
    assert [t["name"] for t in r.json()["tools"]] == ["docs-search"]
    assert httpx.get(f"{mcp_env.url}/mcp-rest/tools/list?server_name=nosuch", headers=h,
                     timeout=30).status_code == 404
    r = httpx.post(f"{mcp_env.url}/mcp-rest/tools/call", headers=h, timeout=30,
                   json={"name": "math-add", "arguments": {"a": 20, "b": 22}})
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == "42"
    r = httpx.post(f"{mcp_env.url}/mcp-rest/tools/call", headers=h, timeout=30,
                   json={"name": "math-delete_everything", "arguments": {}})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    assert not list(mcp_env.markers.iterdir())
    assert httpx.post(f"{mcp_env.url}/mcp-rest/tools/call", timeout=30, json={}).status_code == 401


def test_tool_calls_are_counted_by_server_and_tool(mcp_env):
    def count() -> float:
        for line in httpx.get(f"{mcp_env.url}/metrics", timeout=5).text.splitlines():
            if line.startswith('litellm_mcp_tool_calls_total{server="docs",status="ok",tool="search"}'):
                return float(line.split()[1])
        return 0.0

    before = count()
    assert run(call(f"{mcp_env.url}/mcp", "docs-search", {"q": "metrics"}))[0] is False
    assert count() == before + 1
    text = httpx.get(f"{mcp_env.url}/metrics", timeout=5).text
    assert 'litellm_mcp_tool_call_duration_seconds_count{server="docs",tool="search"}' in text


def test_attached_data_planes_serve_the_imported_servers_and_follow_changes(mcp_env, tmp_path):
    """The control plane imports `mcp_servers` (credentials sealed in PostgreSQL), publishes
    them in the snapshot, and a later import that drops one reaches the data plane as a
    delta."""
    from stack import STACK_CONFIG, STACK_MASTER_KEY, Stack, wait_until

    math = f"  math:\n    url: {mcp_env.math.url}\n    auth_type: bearer_token\n    auth_value: attached-token\n"
    docs = f"  docs:\n    url: {mcp_env.docs.url}\n    allowed_tools: [search]\n"
    s = Stack(tmp_path, start=False)
    try:
        cfg = tmp_path / "config.yaml"
        listed = '  allowed_egress: ["127.0.0.1/32"]\n'
        cfg.write_text(STACK_CONFIG + listed + "mcp_servers:\n" + math + docs)
        s.cp.start()
        dp = s.dataplane("dp-mcp")
        h = {"Authorization": f"Bearer {STACK_MASTER_KEY}"}

        def names():
            r = httpx.get(f"{dp.url}/mcp-rest/tools/list", headers=h, timeout=30)
            assert r.status_code == 200, r.text
            return sorted(t["name"] for t in r.json()["tools"])

        assert names() == ["docs-search", "math-add", "math-delete_everything", "math-die", "math-getenv",
                           "math-search", "math-whoami"]
        r = httpx.post(f"{dp.url}/mcp-rest/tools/call", headers=h, timeout=30,
                       json={"name": "math-whoami", "arguments": {}})
        assert r.json()["content"][0]["text"] == "Bearer attached-token team=- server=math", r.text
        assert not any(b"attached-token" in bytes(row[0]) for row in s.sql("SELECT auth FROM mcp_servers"))

        version = dp.version()
        cfg.write_text(STACK_CONFIG + listed + "mcp_servers:\n" + math)
        s.cp.stop()
        s.cp.start()
        wait_until(lambda: dp.version() > version, timeout=15, interval=0.1, what="the import's delta")
        assert names() == ["math-add", "math-delete_everything", "math-die", "math-getenv", "math-search",
                           "math-whoami"]
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.close()


def test_loopback_and_metadata_servers_need_listing(tmp_path):
    """An MCP server's URL on a loopback (or link-local, metadata) address is refused
    before any connection unless `allowed_egress` lists it."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen(4)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    config = f"""
model_list:
  - model_name: m
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi"}}
mcp_servers:
  inside:
    url: http://127.0.0.2:{port}/mcp
  metadata:
    url: http://169.254.169.254/mcp
general_settings:
  master_key: {MASTER}
"""
    url, p = start_gateway(tmp_path, config, "ssrf")
    try:
        for server in ("inside", "metadata"):
            r = rpc(f"{url}/mcp/{server}", {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                             "params": {"name": "add", "arguments": {}}})
            assert r.status_code == 200, r.text
            err = r.json()["error"]
            assert err["code"] == -32603 and "allowed_egress" in err["message"], err
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        p.stop()
        listener.close()


def test_without_exported_spans_a_callers_traceparent_reaches_the_server_as_it_came(mcp_env):
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    state = "rojo=00f067aa0ba902b7"
    for q, headers in (("passed-on", {"traceparent": caller, "tracestate": state}), ("no-trace", {})):
        r = rpc(f"{mcp_env.url}/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                       "params": {"name": "docs-search", "arguments": {"q": q}}}, headers=headers)
        assert r.json()["result"]["content"][0]["text"] == f"docs found: {q}", r.text
    log = mcp_env.docs.proc.output()
    assert f"q=passed-on traceparent={caller} tracestate={state}" in log
    assert "q=no-trace traceparent=- tracestate=-" in log


def test_each_tool_call_is_an_execute_tool_span_in_the_requests_trace(mcp_env, tmp_path):
    import time

    from otlp import OtlpReceiver

    receiver = OtlpReceiver()
    config = CONFIG.format(math=mcp_env.math.url, docs=mcp_env.docs.url, master=MASTER)
    url, p = start_gateway(tmp_path, config, "otel", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
                           OTEL_BSP_SCHEDULE_DELAY="100")
    try:
        r = rpc(f"{url}/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                               "params": {"name": "docs-search", "arguments": {"q": "spans"}}})
        assert r.json()["result"]["content"][0]["text"] == "docs found: spans", r.text
        call_id = r.headers["x-litellm-call-id"]
        deadline = time.time() + 15
        while not receiver.spans("execute_tool search") and time.time() < deadline:
            time.sleep(0.05)
        [span] = receiver.spans("execute_tool search")
        assert span.trace_id.hex() == call_id
        attrs = {a.key: a.value for a in span.attributes}
        assert attrs["gen_ai.operation.name"].string_value == "execute_tool"
        assert attrs["gen_ai.tool.name"].string_value == "search"
        assert attrs["mcp.server.name"].string_value == "docs"
        assert attrs["routeiq.tool.ok"].bool_value is True
        assert attrs["mcp.method.name"].string_value == "tools/call"
        assert span.kind == span.SPAN_KIND_CLIENT
        # The server is told of the span in the call's `_meta`, its flags the sampler's.
        assert f"q=spans traceparent=00-{call_id}-{span.span_id.hex()}-01" in mcp_env.docs.proc.output()
        # A caller's trace: the span joins it, under the caller's span.
        caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        r = rpc(f"{url}/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                               "params": {"name": "docs-search", "arguments": {"q": "traces"}}},
                headers={"traceparent": caller})
        assert r.json()["result"]["content"][0]["text"] == "docs found: traces", r.text
        while len(receiver.spans("execute_tool search")) < 2 and time.time() < deadline + 15:
            time.sleep(0.05)
        [joined] = [s for s in receiver.spans("execute_tool search") if s.trace_id.hex() != call_id]
        assert joined.trace_id.hex() == caller.split("-")[1]
        assert f"q=traces traceparent=00-{joined.trace_id.hex()}-{joined.span_id.hex()}-01" in mcp_env.docs.proc.output()
        # Under the request's span, itself under the caller's.
        [route] = [s for s in receiver.spans() if s.span_id == joined.parent_span_id]
        assert route.parent_span_id.hex() == caller.split("-")[2]
        assert {a.key: a.value for a in route.attributes}["routeiq.request_id"].string_value == \
            r.headers["x-litellm-call-id"]
    finally:
        p.stop()
        receiver.stop()
