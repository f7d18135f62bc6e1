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


MATH = ["math-add", "math-die", "math-getenv", "math-search", "math-whoami"]


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


def test_the_registry_is_managed_through_the_admin_api_and_reaches_the_data_plane(env):
    """LiteLLM's `/v1/mcp/server` routes: a server added, changed and deleted through the
    admin API is served by the data plane; its credential is stored sealed, used upstream,
    never returned, and kept by an update that does not give it."""
    admin, dp, s = env.admin, env.dp, env.stack
    listed = {m["server_id"]: m for m in admin.ok("GET", "/v1/mcp/server")}
    assert sorted(listed) == ["docs", "math", "pub"] and listed["docs"]["source"] == "config"
    assert listed["docs"]["mcp_access_groups"] == ["dev"] and listed["pub"]["allow_all_keys"] is True

    docs_url = [m for m in listed.values() if m["server_id"] == "docs"][0]["url"]
    body = {"server_name": "docs2", "url": docs_url, "transport": "http", "auth_type": "bearer_token",
            "credentials": {"auth_value": "tok-docs2"}, "static_headers": {"X-Team": "red-7f3"},
            "mcp_access_groups": ["dev"], "description": "the docs, again"}
    r = admin.call("POST", "/v1/mcp/server", json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["server_id"] == "docs2" and made["credentials"] is None and made["source"] == "api"
    assert made["static_header_names"] == ["x-team"] and "tok-docs2" not in r.text and "red-7f3" not in r.text
    assert admin.call("POST", "/v1/mcp/server", json=body).status_code == 409
    assert not any(b"tok-docs2" in bytes(row[0]) for row in s.sql("SELECT auth FROM mcp_servers"))

    url = f"{dp.url}/mcp"
    wait_until(lambda: "docs2-whoami" in names(url, STACK_MASTER_KEY), timeout=15, interval=0.2,
               what="the new server on the data plane")
    assert call(url, STACK_MASTER_KEY, "docs2-whoami", {}) == "Bearer tok-docs2 team=red-7f3 server=docs"

    # An update without credentials keeps them; the access group grants the team's key.
    r = admin.call("PUT", "/v1/mcp/server", json={"server_id": "docs2", "allowed_tools": ["whoami"]})
    assert r.status_code == 202 and r.json()["allowed_tools"] == ["whoami"], r.text
    wait_until(lambda: [n for n in names(url, STACK_MASTER_KEY) if n.startswith("docs2-")] == ["docs2-whoami"],
               timeout=15, interval=0.2, what="the update")
    assert call(url, STACK_MASTER_KEY, "docs2-whoami", {}) == "Bearer tok-docs2 team=red-7f3 server=docs"
    assert admin.ok("GET", "/v1/mcp/access_groups") == {"access_groups": ["dev"]}

    # The data plane's own routes: the caller's tools, and each server checked live.
    h = {"Authorization": f"Bearer {STACK_MASTER_KEY}"}
    tools = httpx.get(f"{dp.url}/v1/mcp/tools?server_id=docs2", headers=h, timeout=30).json()["tools"]
    assert [t["name"] for t in tools] == ["docs2-whoami"]
    health = httpx.get(f"{dp.url}/v1/mcp/server/health", headers=h, timeout=30).json()
    by_id = {c["server_id"]: c for c in health}
    assert sorted(by_id) == ["docs", "docs2", "math", "pub"]
    assert all(c["status"] == "healthy" for c in health), health
    assert by_id["docs2"]["tools_count"] == 1 and by_id["math"]["tools_count"] == 5
    key_health = httpx.get(f"{dp.url}/v1/mcp/server/health",
                           headers={"Authorization": f"Bearer {env.keys['math']}"}, timeout=30).json()
    assert sorted(c["server_id"] for c in key_health) == ["math", "pub"]
    assert httpx.get(f"{dp.url}/v1/mcp/server/health?server_ids=docs",
                     headers={"Authorization": f"Bearer {env.keys['math']}"}, timeout=30).status_code == 403

    # Bad input is a clear 400 or 422, and nothing changes.
    r = admin.call("POST", "/v1/mcp/server", json={"server_name": "bad", "url": "ftp://x/mcp"})
    assert r.status_code == 400 and "url" in r.json()["error"]["message"], r.text
    r = admin.call("POST", "/v1/mcp/server", json={"server_name": "bad", "transport": "stdio", "url": "http://x"})
    assert r.status_code == 400 and "command" in r.json()["error"]["message"], r.text
    r = admin.call("POST", "/v1/mcp/server", json={"server_name": "bad", "transport": "grpc", "url": "http://x"})
    assert r.status_code == 422 and "grpc" in r.json()["error"]["message"], r.text
    r = admin.call("POST", "/v1/mcp/server", json={"server_name": "bad", "url": "http://x/mcp",
                                                   "static_headers": {"bad header": "v"}})
    assert r.status_code == 400 and "static_headers" in r.json()["error"]["message"], r.text
    r = admin.call("POST", "/v1/mcp/server", json={"server_name": "bad", "url": "http://x/mcp", "auth_type": "api_key"})
    assert r.status_code == 400 and "auth_value" in r.json()["error"]["message"], r.text
    # An empty credential is refused even where the server would not use it, as the spec says.
    r = admin.call("POST", "/v1/mcp/server", json={"server_name": "bad", "transport": "stdio", "command": "x",
                                                   "credentials": {"client_id": "", "client_secret": "s"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "credentials.client_id", r.text
    r = admin.call("PUT", "/v1/mcp/server", json={"server_id": "docs2", "spec_path": ""})
    assert r.status_code == 400 and r.json()["error"]["param"] == "spec_path", r.text
    r = admin.call("POST", "/v1/mcp/server", json={"server_name": "a b", "url": "http://x/mcp"})
    assert r.status_code in (400, 422), r.text
    assert admin.call("PUT", "/v1/mcp/server", json={"server_id": "nosuch", "url": "http://x/mcp"}).status_code == 404
    assert admin.call("POST", "/v1/mcp/server", key=env.keys["math"],
                      json={"server_name": "x", "url": "http://x/mcp"}).status_code in (401, 403)

    r = admin.call("DELETE", "/v1/mcp/server/docs2")
    assert r.status_code == 202, r.text
    assert admin.call("GET", "/v1/mcp/server/docs2").status_code == 404
    wait_until(lambda: not any(n.startswith("docs2-") for n in names(url, STACK_MASTER_KEY)), timeout=15,
               interval=0.2, what="the deletion")
    actions = [row[0] for row in s.sql(
        "SELECT action FROM audit_log WHERE object_type = 'mcp_server' ORDER BY id")]
    assert actions == ["mcp_server.create", "mcp_server.update", "mcp_server.delete"], actions
    audited = " ".join(str(row) for row in s.sql("SELECT before, after FROM audit_log WHERE object_type = 'mcp_server'"))
    assert "tok-docs2" not in audited


def test_an_attached_data_plane_runs_registry_stdio_servers_only_when_allowed(env, tmp_path):
    """A stdio server added through the API is a program data planes would run: one started
    without --mcp-stdio leaves it out (and says so); one started with it runs it."""
    import sys
    from pathlib import Path
    from stack import DataPlane

    server = Path(__file__).resolve().parent / "mcp_server.py"
    r = env.admin.call("POST", "/v1/mcp/server", json={
        "server_name": "proc", "transport": "stdio", "command": sys.executable,
        "args": [str(server), "proc", "0", str(tmp_path), "stdio"], "env": {"PROC_SECRET": "p-1"},
        "allow_all_keys": True})
    assert r.status_code == 201, r.text
    assert r.json()["env_names"] == ["PROC_SECRET"] and "p-1" not in r.text
    allowed = DataPlane(tmp_path, env.stack.nats.url, "dp-stdio", ["--mcp-stdio"])
    allowed.start()
    env.stack.dps.append(allowed)
    url = f"{allowed.url}/mcp/proc"
    def listed():
        try:
            return "getenv" in names(url, STACK_MASTER_KEY)
        except Exception:  # not there yet: the server is unknown (404)
            return False

    wait_until(listed, timeout=20, interval=0.3, what="the stdio server on the allowing data plane")
    assert call(url, STACK_MASTER_KEY, "getenv", {"var": "PROC_SECRET"}) == "p-1"
    assert call(url, env.keys["none"], "add", {"a": 1, "b": 2}) == "3", "allow_all_keys"
    # The data plane without the flag has the change but does not run it.
    wait_until(lambda: env.dp.version() >= allowed.version(), timeout=15, what="the same version")
    assert not any(n.startswith("proc-") for n in names(f"{env.dp.url}/mcp", STACK_MASTER_KEY))
    assert "only with --mcp-stdio" in (env.dp.dir / f"{env.dp.name}.log").read_text()
    # A caller who names it is told why it is not there.
    r = httpx.get(f"{env.dp.url}/v1/mcp/tools?server_name=proc",
                  headers={"Authorization": f"Bearer {STACK_MASTER_KEY}"}, timeout=30)
    assert r.status_code == 404 and "started with --mcp-stdio" in r.json()["error"]["message"], r.text
    env.admin.call("DELETE", "/v1/mcp/server/proc")
