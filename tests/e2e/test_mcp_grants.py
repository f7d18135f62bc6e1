"""MCP grants (LiteLLM's `object_permission`) on keys, teams and organizations, set through
the admin API and enforced by an attached data plane, with the official `mcp` SDK as the
client. The matrix: a key without grants reaches only `allow_all_keys` servers; a key's own
grant (servers, tools); a team's grant inherited (by access group); key within team
(intersection); an organization standing in when neither key nor team has one; a server
refused by path and in `x-mcp-servers`; tools left out by `mcp_tool_permissions` are absent
and refused without being forwarded; the REST face; and changes reaching the data plane as
deltas (an update merges field by field)."""

import asyncio

import httpx
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from stack import STACK_CONFIG, STACK_MASTER_KEY, Stack, wait_until
from test_mcp import McpServerProcess

pytestmark = pytest.mark.timeout(180)


def servers_config(math, docs, pub) -> str:
    return (STACK_CONFIG + '  allowed_egress: ["127.0.0.1/32"]\n' + "mcp_servers:\n"
            f"  math:\n    url: {math.url}\n    disallowed_tools: [delete_everything]\n"
            f"  docs:\n    url: {docs.url}\n    access_groups: [dev]\n    allowed_tools: [search]\n"
            f"  pub:\n    url: {pub.url}\n    allow_all_keys: true\n    allowed_tools: [search]\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcp-grants")
    markers = d / "markers"
    markers.mkdir()
    procs = {n: McpServerProcess(n, markers, d) for n in ("math", "docs", "pub")}
    s = None
    try:
        for p in procs.values():
            p.start()
        s = Stack(d, start=False)
        (d / "config.yaml").write_text(servers_config(procs["math"], procs["docs"], procs["pub"]))
        s.cp.start()
        dp = s.dataplane("dp-grants")
        admin = s.admin()
        admin.ok("POST", "/organization/new", json={
            "organization_id": "o1", "object_permission": {"mcp_servers": ["math", "docs"]}})
        admin.ok("POST", "/team/new", json={
            "team_id": "t-docs", "organization_id": "o1",
            "object_permission": {"mcp_access_groups": ["dev"], "vector_stores": ["ignored"]}})
        admin.ok("POST", "/team/new", json={"team_id": "t-plain", "organization_id": "o1"})
        keys = {
            "none": {},
            "math": {"object_permission": {"mcp_servers": ["math"], "mcp_tool_permissions": {"math": ["add"]}}},
            "team": {"team_id": "t-docs"},
            "team_math": {"team_id": "t-docs", "object_permission": {"mcp_servers": ["math"]}},
            "org": {"team_id": "t-plain"},
        }
        keys = {name: admin.ok("POST", "/key/generate", json=body)["key"] for name, body in keys.items()}
        wait_until(lambda: all(dp_accepts(dp, k) for k in keys.values()), timeout=15, what="the keys")
        yield type("Env", (), {"stack": s, "dp": dp, "admin": admin, "keys": keys})
    except BaseException:
        if s:
            print(s.logs())
        raise
    finally:
        if s:
            s.close()
        for p in procs.values():
            p.stop()


def dp_accepts(dp, key: str) -> bool:
    r = httpx.get(f"{dp.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    return r.status_code == 200


async def _names(url: str, key: str, headers: dict | None = None) -> list[str]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}", **(headers or {})},
                              timeout=httpx2.Timeout(30, read=60))
    async with http, Client(streamable_http_client(url, http_client=http)) as c:
        return sorted(t.name for t in (await c.list_tools()).tools)


def names(url: str, key: str, headers: dict | None = None) -> list[str]:
    return asyncio.run(_names(url, key, headers))


async def _call(url: str, key: str, tool: str, args: dict):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=60))
    async with http, Client(streamable_http_client(url, http_client=http)) as c:
        try:
            r = await c.call_tool(tool, args)
            return r.content[0].text
        except MCPError as e:
            return e


def call(url: str, key: str, tool: str, args: dict):
    return asyncio.run(_call(url, key, tool, args))


MATH = ["math-add", "math-die", "math-search", "math-whoami"]


@pytest.mark.parametrize("who, expected", [
    ("master", sorted(["docs-search", "pub-search", *MATH])),
    ("none", ["pub-search"]),
    ("math", ["math-add", "pub-search"]),
    ("team", ["docs-search", "pub-search"]),
    ("team_math", ["pub-search"]),
    ("org", sorted(["docs-search", "pub-search", *MATH])),
])
def test_each_caller_lists_what_its_grants_allow(env, who, expected):
    key = STACK_MASTER_KEY if who == "master" else env.keys[who]
    assert names(f"{env.dp.url}/mcp", key) == expected
    r = httpx.get(f"{env.dp.url}/mcp-rest/tools/list", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert sorted(t["name"] for t in r.json()["tools"]) == expected


def test_granted_tools_are_called_and_others_refused_without_being_forwarded(env):
    url, key = f"{env.dp.url}/mcp", env.keys["math"]
    assert call(url, key, "math-add", {"a": 2, "b": 40}) == "42"

    def whoami_calls() -> float:
        return env.dp.metric('litellm_mcp_tool_calls_total{server="math",status="ok",tool="whoami"}')

    before = whoami_calls()
    refused = call(url, key, "math-whoami", {})
    assert isinstance(refused, MCPError) and refused.error.code == -32602, refused
    assert "may not call tool `math-whoami`" in refused.error.message
    unknown = call(url, key, "docs-search", {"q": "x"})
    assert isinstance(unknown, MCPError) and "Unknown tool" in unknown.error.message
    assert whoami_calls() == before, "a refused call reached the server"
    # The master key is not bound by grants.
    assert "server=math" in call(url, STACK_MASTER_KEY, "math-whoami", {})

    h = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{env.dp.url}/mcp-rest/tools/call", headers=h, timeout=30,
                   json={"name": "math-whoami", "arguments": {}})
    assert r.status_code == 403 and "math-whoami" in r.json()["error"]["message"], r.text
    r = httpx.post(f"{env.dp.url}/mcp-rest/tools/call", headers=h, timeout=30,
                   json={"name": "math-add", "arguments": {"a": 1, "b": 1}})
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "2", r.text


def test_a_server_the_key_may_not_use_is_refused_by_path_and_header(env):
    key = env.keys["team"]
    assert names(f"{env.dp.url}/mcp/docs", key) == ["search"]
    assert names(f"{env.dp.url}/mcp", key, {"x-mcp-servers": "docs"}) == ["docs-search"]
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    h = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"}
    for url, extra in [(f"{env.dp.url}/mcp/math", {}), (f"{env.dp.url}/math/mcp", {}),
                       (f"{env.dp.url}/mcp", {"x-mcp-servers": "docs,math"})]:
        r = httpx.post(url, json=body, headers={**h, **extra}, timeout=30)
        assert r.status_code == 403, (url, r.text)
        assert r.json()["error"]["code"] == -32600 and "`math`" in r.json()["error"]["message"]
    r = httpx.get(f"{env.dp.url}/mcp-rest/tools/list?server_name=math", headers=h, timeout=30)
    assert r.status_code == 403 and "`math`" in r.json()["error"]["message"], r.text


def test_grant_changes_reach_the_data_plane_and_updates_merge(env):
    admin, dp, url = env.admin, env.dp, f"{env.dp.url}/mcp"
    # A key gains a server.
    admin.ok("POST", "/key/update", json={"key": env.keys["none"], "object_permission": {"mcp_servers": ["docs"]}})
    wait_until(lambda: names(url, env.keys["none"]) == ["docs-search", "pub-search"], timeout=15, interval=0.2,
               what="the key's new grant")
    info = admin.ok("GET", "/key/info", params={"key": env.keys["none"]})["info"]
    assert info["object_permission"] == {"mcp_servers": ["docs"]}, info
    # A team update sets one field and keeps the other: the access group stays, and the
    # tools of docs are now none.
    admin.ok("POST", "/team/update", json={"team_id": "t-docs", "object_permission": {
        "mcp_tool_permissions": {"docs": []}}})
    wait_until(lambda: names(url, env.keys["team"]) == ["pub-search"], timeout=15, interval=0.2,
               what="the team's merged grant")
    team = admin.ok("GET", "/team/info", params={"team_id": "t-docs"})["team_info"]
    assert team["object_permission"] == {"mcp_access_groups": ["dev"], "mcp_tool_permissions": {"docs": []}}, team
    # The organization narrows: math goes, so the key that relied on it keeps only docs.
    admin.ok("PATCH", "/organization/update", json={
        "organization_id": "o1", "object_permission": {"mcp_servers": ["docs"]}})
    wait_until(lambda: names(url, env.keys["org"]) == ["docs-search", "pub-search"], timeout=15, interval=0.2,
               what="the organization's grant")
    # A malformed grant is a 422 that names the field, and changes nothing.
    r = admin.call("POST", "/key/update", json={"key": env.keys["math"],
                                                "object_permission": {"mcp_servers": "math"}})
    assert r.status_code == 422 and r.json()["error"]["param"] == "object_permission", r.text
    assert names(url, env.keys["math"]) == ["math-add", "pub-search"]
    assert dp.version() > 0
