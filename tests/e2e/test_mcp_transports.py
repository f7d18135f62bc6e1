"""The MCP gateway in front of a stdio server (a process each data plane runs) and a legacy
HTTP+SSE server, both written with the official `mcp` SDK (tests/e2e/mcp_server.py), with
the same SDK as the client: their tools are aggregated and called; the stdio process gets
its configured environment and nothing else of the gateway's; its stderr reaches the log;
concurrent calls on one channel each get their own answer; a stdio server that dies
mid-call is a clean error and is restarted; an SSE server that goes away and comes back
is reconnected."""

import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from test_mcp import MASTER, McpServerProcess, call, call_error, run, start_gateway, tool_names, wait_port

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.timeout(180)


def config(sse_url: str, markers: Path) -> str:
    return f"""
model_list:
  - model_name: m
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi"}}
mcp_servers:
  files:
    transport: stdio
    command: {sys.executable}
    args: ["{HERE / 'mcp_server.py'}", files, "0", "{markers}", stdio]
    env: {{FILES_SECRET: os.environ/FILES_SECRET}}
  legacy:
    transport: sse
    url: {sse_url}
    auth_type: bearer_token
    auth_value: legacy-token
general_settings:
  master_key: {MASTER}
  allowed_egress: ["127.0.0.1/32"]
"""


class SseServer(McpServerProcess):
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sse"

    def start(self):
        from conftest import Process
        self.proc = Process([sys.executable, str(HERE / "mcp_server.py"), self.name, str(self.port),
                             str(self.markers), "sse"], self.logs / f"{self.name}-{os.urandom(2).hex()}.log")
        wait_port(self.port, self.proc.proc)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcp-transports")
    markers = d / "markers"
    markers.mkdir()
    legacy = SseServer("legacy", markers, d)
    gateway = None
    try:
        legacy.start()
        gateway = start_gateway(d, config(legacy.url, markers), "dp", FILES_SECRET="files-secret-1",
                                GATEWAY_ONLY_SECRET="must-not-leak")
        yield type("Env", (), {"url": gateway[0], "log": d / "dp.log", "legacy": legacy})
    finally:
        if gateway:
            gateway[1].stop()
        legacy.stop()


def test_stdio_and_sse_servers_are_aggregated_and_called(env):
    _, names = run(tool_names(f"{env.url}/mcp"))
    tools = ["add", "delete_everything", "die", "getenv", "search", "whoami"]
    assert names == sorted([f"files-{t}" for t in tools] + [f"legacy-{t}" for t in tools])
    assert run(call(f"{env.url}/mcp", "files-add", {"a": 40, "b": 2})) == (False, "42")
    assert run(call(f"{env.url}/mcp", "legacy-add", {"a": 1, "b": 2})) == (False, "3")
    # The SSE server's messages carry the configured credential.
    assert run(call(f"{env.url}/mcp/legacy", "whoami", {})) == (False, "Bearer legacy-token team=- server=legacy")


def test_the_stdio_process_gets_its_env_and_nothing_else_and_logs_its_stderr(env):
    url = f"{env.url}/mcp/files"
    assert run(call(url, "getenv", {"var": "FILES_SECRET"})) == (False, "files-secret-1")
    assert run(call(url, "getenv", {"var": "GATEWAY_ONLY_SECRET"})) == (False, "")
    assert run(call(url, "getenv", {"var": "PATH"}))[1] != ""
    assert "files: serving over stdio" in env.log.read_text()


@pytest.mark.parametrize("server", ["files", "legacy"])
def test_concurrent_calls_on_one_channel_each_get_their_own_answer(env, server):
    def one(i: int):
        r = httpx.post(f"{env.url}/mcp-rest/tools/call", headers={"Authorization": f"Bearer {MASTER}"},
                       json={"name": f"{server}-add", "arguments": {"a": i, "b": 1000}}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["content"][0]["text"]

    for _ in range(5):
        with ThreadPoolExecutor(24) as pool:
            got = list(pool.map(one, range(48)))
        assert got == [str(i + 1000) for i in range(48)]


def test_a_stdio_server_dying_mid_call_is_a_clean_error_and_it_is_restarted(env):
    url = f"{env.url}/mcp"
    for round in range(3):
        e = run(call_error(url, "files-die", {}))
        assert e.code == -32603 and "files" in e.message and "exited" in e.message, (e.code, e.message)
        started = time.monotonic()
        assert run(call(url, "files-add", {"a": round, "b": 1})) == (False, str(round + 1))
        # Restarted after a backoff that grows while it keeps dying young (0.25 s, 0.5 s, 1 s).
        assert time.monotonic() - started < 10
    log = env.log.read_text()
    assert log.count("MCP server process started") >= 4
    assert "files: serving over stdio" in log


def test_an_sse_server_that_goes_away_is_a_clean_error_and_is_reconnected(env):
    url = f"{env.url}/mcp/legacy"
    assert run(call(url, "add", {"a": 2, "b": 2})) == (False, "4")
    env.legacy.stop()
    e = run(call_error(url, "add", {"a": 2, "b": 2}))
    assert e.code == -32603 and "legacy" in e.message, (e.code, e.message)
    env.legacy.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            assert run(call(url, "add", {"a": 3, "b": 3})) == (False, "6")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
