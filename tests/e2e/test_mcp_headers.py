"""A caller's own headers for one MCP server (LiteLLM's `x-mcp-{server}-{header}`), with the
official `mcp` SDK and `openai` SDK as clients: `x-mcp-gh-authorization: Bearer <mine>`
reaches the server `gh` as `authorization`, in place of the configured credential, over
streamable HTTP and the legacy SSE transport, on `/mcp`, the REST face and MCP tools in
chat. Each caller's headers get their own upstream session, so callers never see each
other's credential; headers the gateway sets itself cannot be forwarded."""

import asyncio
import sys
from pathlib import Path

import httpx
import httpx2
import openai
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from test_mcp import McpServerProcess, start_gateway
from test_mcp_transports import SseServer

MASTER = "sk-mcp-headers"
pytestmark = pytest.mark.timeout(120)

CONFIG = """
model_list:
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {upstream}/v1
      api_key: sk-upstream
mcp_servers:
  gh:
    url: {gh}
    auth_type: bearer_token
    auth_value: configured
  gh-enterprise:
    url: {ghe}
  legacy:
    transport: sse
    url: {legacy}
  local:
    transport: stdio
    command: {python}
    args: ["{script}", local, "0", "{markers}", stdio]
    env: {{ACCOUNT: "acct-${{X-Account}}", FIXED: fixed}}
general_settings:
  master_key: {master}
  allowed_egress: ["127.0.0.1/32"]
"""


@pytest.fixture(scope="module")
def env(mock_provider, tmp_path_factory):
    d = tmp_path_factory.mktemp("mcp-headers")
    markers = d / "markers"
    markers.mkdir()
    servers = [McpServerProcess("gh", markers, d), McpServerProcess("gh-enterprise", markers, d),
               SseServer("legacy", markers, d)]
    gw = None
    try:
        for s in servers:
            s.start()
        config = CONFIG.format(upstream=mock_provider, gh=servers[0].url, ghe=servers[1].url,
                               legacy=servers[2].url, master=MASTER, python=sys.executable,
                               script=Path(__file__).resolve().parent / "mcp_server.py",
                               markers=markers)
        url, gw = start_gateway(d, config, "dp-headers")
        yield type("Env", (), {"url": url, "log": d / "dp-headers.log"})
    finally:
        if gw:
            gw.stop()
        for s in servers:
            s.stop()


async def _call(url: str, tool: str, args: dict, headers: dict) -> str:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {MASTER}", **headers},
                              timeout=httpx2.Timeout(30, read=60))
    async with http, Client(streamable_http_client(f"{url}/mcp", http_client=http)) as c:
        r = await c.call_tool(tool, args)
        return r.content[0].text


def whoami(env, tool: str, **headers) -> str:
    return asyncio.run(_call(env.url, tool, {}, headers))


def getenv(env, var: str, **headers) -> str:
    return asyncio.run(_call(env.url, "local-getenv", {"var": var}, headers))


def test_a_callers_header_replaces_the_configured_one(env):
    assert whoami(env, "gh-whoami") == "Bearer configured team=- server=gh"
    mine = {"x-mcp-gh-authorization": "Bearer user-1", "x-mcp-gh-x-team": "red"}
    assert whoami(env, "gh-whoami", **mine) == "Bearer user-1 team=red server=gh"
    # Another caller, and one without headers, each with their own session.
    assert whoami(env, "gh-whoami", **{"x-mcp-gh-authorization": "Bearer user-2"}) == (
        "Bearer user-2 team=- server=gh")
    assert whoami(env, "gh-whoami") == "Bearer configured team=- server=gh"
    assert whoami(env, "gh-whoami", **mine) == "Bearer user-1 team=red server=gh"


def test_headers_go_to_the_server_they_name_only(env):
    # `gh-enterprise` is the longer name: its header is not `gh`'s `enterprise-...`.
    headers = {"x-mcp-gh-enterprise-authorization": "Bearer e-1"}
    assert whoami(env, "gh-enterprise-whoami", **headers) == "Bearer e-1 team=- server=gh-enterprise"
    assert whoami(env, "gh-whoami", **headers) == "Bearer configured team=- server=gh"


def test_the_legacy_sse_transport_carries_them(env):
    assert whoami(env, "legacy-whoami", **{"x-mcp-legacy-x-team": "blue"}) == "- team=blue server=legacy"
    assert whoami(env, "legacy-whoami") == "- team=- server=legacy"


def test_the_rest_face_forwards_them(env):
    r = httpx.post(f"{env.url}/mcp-rest/tools/call", timeout=30,
                   headers={"Authorization": f"Bearer {MASTER}", "x-mcp-gh-authorization": "Bearer rest-1"},
                   json={"name": "gh-whoami", "arguments": {}})
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "Bearer rest-1 team=- server=gh", r.text


def test_mcp_tools_in_chat_forward_them(env):
    c = openai.OpenAI(base_url=f"{env.url}/v1", api_key=MASTER, max_retries=0,
                      default_headers={"x-mcp-gh-authorization": "Bearer chat-1"})
    r = c.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "who am I?"}],
        tools=[{"type": "mcp", "server_url": "litellm_proxy/mcp/gh", "allowed_tools": ["whoami"],
                "require_approval": "never"}])
    assert "Bearer chat-1 team=- server=gh" in r.choices[0].message.content, r


@pytest.mark.parametrize("header", ["x-mcp-gh-mcp-session-id", "x-mcp-gh-host", "x-mcp-gh-content-length"])
def test_headers_the_gateway_sets_cannot_be_forwarded(env, header):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    r = httpx.post(f"{env.url}/mcp", json=body, timeout=30, headers={
        "Authorization": f"Bearer {MASTER}", "MCP-Protocol-Version": "2025-06-18",
        "Accept": "application/json, text/event-stream", header: "x"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == -32600 and "cannot be forwarded" in r.json()["error"]["message"]
    r = httpx.get(f"{env.url}/mcp-rest/tools/list", timeout=30,
                  headers={"Authorization": f"Bearer {MASTER}", header: "x"})
    assert r.status_code == 400 and "cannot be forwarded" in r.json()["error"]["message"], r.text


def test_a_stdio_servers_env_takes_the_callers_headers(env):
    assert getenv(env, "ACCOUNT", **{"X-Account": "a1"}) == "acct-a1"
    assert getenv(env, "ACCOUNT", **{"X-Account": "a2"}) == "acct-a2"
    assert getenv(env, "FIXED", **{"X-Account": "a1"}) == "fixed"
    # One process per distinct value: a1's is used again.
    started = env.log.read_text().count("MCP server process started")
    assert started == 2, env.log.read_text()[-3000:]
    # Without the header the server cannot be used: a clean error naming it.
    r = httpx.post(f"{env.url}/mcp-rest/tools/call", timeout=30,
                   headers={"Authorization": f"Bearer {MASTER}"},
                   json={"name": "local-getenv", "arguments": {"var": "ACCOUNT"}})
    assert r.status_code == 400 and "X-Account" in r.json()["error"]["message"], r.text
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "local-getenv", "arguments": {"var": "ACCOUNT"}}}
    r = httpx.post(f"{env.url}/mcp", json=body, timeout=30,
                   headers={"Authorization": f"Bearer {MASTER}", "MCP-Protocol-Version": "2025-06-18",
                            "Accept": "application/json, text/event-stream"})
    assert r.json()["error"]["code"] == -32600 and "X-Account" in r.json()["error"]["message"], r.text
    names = [t["name"] for t in httpx.get(f"{env.url}/mcp-rest/tools/list", timeout=30,
                                          headers={"Authorization": f"Bearer {MASTER}"}).json()["tools"]]
    assert "gh-whoami" in names and "local-getenv" not in names
