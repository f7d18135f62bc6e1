"""Priced MCP tool calls (LiteLLM's `mcp_info.mcp_server_cost_info`) through the attached
stack, with the official `mcp` SDK as the client: each call the server answers is charged to
the caller's key (and its team) at its tool's price, held against their budgets first, so a
spent budget refuses the call before it is forwarded (a JSON-RPC error on `/mcp`, 429
`budget_exceeded` on the REST face). The charge reaches the control plane as a usage event
(model `mcp/<server>`, provider `mcp`): the key's spend and the spend logs show it. A price
set through the admin API reaches the data plane as a delta."""

import asyncio

import httpx
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from stack import STACK_CONFIG, STACK_MASTER_KEY, Stack, wait_until
from test_mcp import McpServerProcess

pytestmark = pytest.mark.timeout(180)

ADD, DEFAULT = 0.02, 0.005


def config(math) -> str:
    return (STACK_CONFIG + '  allowed_egress: ["127.0.0.1/32"]\n' + "mcp_servers:\n"
            f"  math:\n    url: {math.url}\n    allow_all_keys: true\n"
            "    mcp_info:\n      mcp_server_cost_info:\n"
            f"        default_cost_per_query: {DEFAULT}\n"
            f"        tool_name_to_cost_per_query: {{add: {ADD}}}\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcp-billing")
    markers = d / "markers"
    markers.mkdir()
    math = McpServerProcess("math", markers, d)
    s = None
    try:
        math.start()
        s = Stack(d, start=False)
        (d / "config.yaml").write_text(config(math))
        s.cp.start()
        dp = s.dataplane("dp-billing")
        admin = s.admin()
        yield type("Env", (), {"stack": s, "dp": dp, "admin": admin})
    except BaseException:
        if s:
            print(s.logs())
        raise
    finally:
        if s:
            s.close()
        math.stop()


def new_key(env, **body) -> str:
    key = env.admin.ok("POST", "/key/generate", json=body)["key"]
    wait_until(lambda: httpx.get(f"{env.dp.url}/v1/models", timeout=5,
                                 headers={"Authorization": f"Bearer {key}"}).status_code == 200,
               timeout=15, what="the key")
    return key


async def _calls(url: str, key: str, calls: list[tuple[str, dict]]) -> list:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=60))
    out = []
    async with http, Client(streamable_http_client(url, http_client=http)) as c:
        for tool, args in calls:
            try:
                out.append((await c.call_tool(tool, args)).content[0].text)
            except MCPError as e:
                out.append(e)
    return out


def calls(env, key: str, calls: list[tuple[str, dict]]) -> list:
    return asyncio.run(_calls(f"{env.dp.url}/mcp", key, calls))


def add_calls(env) -> float:
    for line in httpx.get(f"{env.dp.url}/metrics").text.splitlines():
        if line.startswith('litellm_mcp_tool_calls_total{server="math",status="ok",tool="add"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def spend_of(env, key: str) -> float:
    return env.admin.ok("GET", "/key/info", params={"key": key})["info"]["spend"]


def test_each_call_is_charged_at_its_tools_price(env):
    key = new_key(env)
    out = calls(env, key, [("math-add", {"a": 1, "b": 2}), ("math-search", {"q": "x"})])
    assert out[0] == "3" and isinstance(out[1], str), out
    want = ADD + DEFAULT
    wait_until(lambda: abs(spend_of(env, key) - want) < 1e-9, timeout=15, what="the key's spend")
    logs = env.admin.ok("GET", "/spend/logs", params={"api_key": key})
    assert sorted(round(log["spend"], 9) for log in logs) == [DEFAULT, ADD], logs
    assert {(log["model_group"], log["custom_llm_provider"]) for log in logs} == {("mcp/math", "mcp")}, logs
    # The REST face charges the same.
    r = httpx.post(f"{env.dp.url}/mcp-rest/tools/call", headers={"Authorization": f"Bearer {key}"},
                   json={"name": "math-add", "arguments": {"a": 2, "b": 2}}, timeout=30)
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "4", r.text
    wait_until(lambda: abs(spend_of(env, key) - (want + ADD)) < 1e-9, timeout=15,
               what="the REST call's charge")


def test_a_spent_budget_refuses_the_call_before_it_is_forwarded(env):
    # 0.05 USD: three calls of `add` (0.02 each) are admitted while spend is under it.
    key = new_key(env, max_budget=0.05)
    before = add_calls(env)
    out = calls(env, key, [("math-add", {"a": 1, "b": 1})] * 4)
    assert out[:3] == ["2", "2", "2"], out
    assert isinstance(out[3], MCPError) and "Budget has been exceeded" in str(out[3]), out
    assert add_calls(env) == before + 3, "a refused call reached the server"
    r = httpx.post(f"{env.dp.url}/mcp-rest/tools/call", headers={"Authorization": f"Bearer {key}"},
                   json={"name": "math-add", "arguments": {"a": 1, "b": 1}}, timeout=30)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "budget_exceeded", r.text
    assert add_calls(env) == before + 3
    wait_until(lambda: abs(spend_of(env, key) - 3 * ADD) < 1e-9, timeout=15, what="the spend")
    # Every priced tool is refused now, those at the default price too.
    out = calls(env, key, [("math-whoami", {})])
    assert isinstance(out[0], MCPError) and "Budget has been exceeded" in str(out[0]), out


def test_a_team_budget_holds_its_keys_calls(env):
    env.admin.ok("POST", "/team/new", json={"team_id": "t-mcp-billing", "max_budget": 0.03})
    key = new_key(env, team_id="t-mcp-billing")
    out = calls(env, key, [("math-add", {"a": 1, "b": 1})] * 3)
    assert out[:2] == ["2", "2"], out
    assert isinstance(out[2], MCPError) and "t-mcp-billing" in str(out[2]), out


def test_a_price_set_through_the_admin_api_reaches_the_data_plane(env):
    key = new_key(env)
    r = env.admin.call("PUT", "/v1/mcp/server", json={
        "server_id": "math",
        "mcp_info": {"mcp_server_cost_info": {"default_cost_per_query": 0.001,
                                              "tool_name_to_cost_per_query": {"add": 0.1}}}})
    assert r.status_code == 202, r.text
    got = env.admin.ok("GET", "/v1/mcp/server/math")
    assert got["mcp_info"]["mcp_server_cost_info"]["tool_name_to_cost_per_query"] == {"add": 0.1}, got

    def charged() -> bool:
        calls(env, key, [("math-add", {"a": 0, "b": 0})])
        return any(abs(log["spend"] - 0.1) < 1e-9
                   for log in env.admin.ok("GET", "/spend/logs", params={"api_key": key}))

    wait_until(charged, timeout=20, interval=0.5, what="the new price")
    r = env.admin.call("PUT", "/v1/mcp/server", json={
        "server_id": "math", "mcp_info": {"mcp_server_cost_info": {"default_cost_per_query": -1}}})
    assert r.status_code in (400, 422), r.text
    assert "default_cost_per_query" in r.text
    # Back to the config's prices for the other tests.
    r = env.admin.call("PUT", "/v1/mcp/server", json={
        "server_id": "math",
        "mcp_info": {"mcp_server_cost_info": {"default_cost_per_query": DEFAULT,
                                              "tool_name_to_cost_per_query": {"add": ADD}}}})
    assert r.status_code == 202, r.text

