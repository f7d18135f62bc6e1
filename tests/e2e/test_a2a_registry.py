"""The A2A agent registry on the full stack (PostgreSQL, nats-server, control plane, admin API,
an attached data plane), with agents written with `a2a-sdk`'s server classes and the SDK's
client: agents from `config.yaml` imported, LiteLLM's `/v1/agents` CRUD reaching the data
plane (by name and by id), the agent's credential stored sealed and shown as `***`, key,
team and organization `object_permission` (`agents`, `agent_access_groups`) allowing and
refusing, `agent_access_default_deny`, and a key blocked while its stream runs."""

import asyncio
import uuid

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers import new_text_message
from a2a.types import Role, SendMessageRequest

from conftest import free_port
from stack import STACK_CONFIG, STACK_MASTER_KEY, Stack, wait_until
from test_a2a import Agent

pytestmark = pytest.mark.timeout(240)

GET = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "no-such-task"}}


def config(cfg_url: str, default_deny: bool) -> str:
    return (STACK_CONFIG + '  allowed_egress: ["127.0.0.1/32"]\n'
            + f"  agent_access_default_deny: {str(default_deny).lower()}\n"
            + "agents:\n"
            + f"  - agent_name: cfg\n    agent_card_params: {{url: \"{cfg_url}\"}}\n"
            + "    agent_access_groups: [ops]\n"
            + f"  - agent_name: open\n    agent_card_params: {{url: \"{cfg_url}\"}}\n"
            + "    litellm_params: {make_public: true}\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("a2a-registry")
    agents = {n: Agent(n, v, d) for n, v in (("one", "1.0"), ("three", "0.3"))}
    s = None
    try:
        s = Stack(d, start=False)
        (d / "config.yaml").write_text(config(agents["one"].url, default_deny=False))
        s.cp.start()
        dp = s.dataplane("dp-agents")
        admin = s.admin()
        yield type("Env", (), {"stack": s, "dp": dp, "admin": admin, "agents": agents, "dir": d})
    except BaseException:
        if s:
            print(s.logs())
        raise
    finally:
        if s:
            s.close()
        for a in agents.values():
            a.stop()


def rpc(dp, agent: str, key: str = STACK_MASTER_KEY, body=GET) -> httpx.Response:
    return httpx.post(f"{dp.url}/a2a/{agent}", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}", "A2A-Version": "1.0"})


def reaches(dp, agent: str, key: str = STACK_MASTER_KEY) -> int:
    """The status of a call (200: the agent answered; its own JSON-RPC error is fine)."""
    return rpc(dp, agent, key).status_code


def key_for(env, body: dict) -> str:
    key = env.admin.ok("POST", "/key/generate", json=body)["key"]
    wait_until(lambda: httpx.get(f"{env.dp.url}/v1/models", timeout=5,
                                 headers={"Authorization": f"Bearer {key}"}).status_code == 200,
               timeout=15, what="the key")
    return key


def create(env, body: dict) -> dict:
    r = env.admin.call("POST", "/v1/agents", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_config_agents_are_imported_and_not_changed_through_the_api(env):
    listed = {a["agent_name"]: a for a in env.admin.ok("GET", "/v1/agents")["agents"]}
    assert listed["cfg"]["source"] == "config" and listed["cfg"]["agent_id"] == "cfg"
    assert listed["cfg"]["agent_access_groups"] == ["ops"]
    assert listed["open"]["litellm_params"]["make_public"] is True
    assert reaches(env.dp, "cfg") == 200
    r = env.admin.call("PATCH", "/v1/agents/cfg", json={"agent_access_groups": []})
    assert r.status_code == 409 and "config file" in r.text, r.text
    r = env.admin.call("DELETE", "/v1/agents/cfg")
    assert r.status_code == 409, r.text


def test_agents_are_managed_through_the_admin_api_and_reach_the_data_plane(env):
    three = env.agents["three"]
    made = create(env, {
        "agent_name": "reg",
        "agent_card_params": {"url": three.url},
        "litellm_params": {"api_key": "agent-token-1", "headers": {"X-Team": "blue"}},
        "agent_access_groups": ["support"],
        "unknown_field": 1,
    })
    agent_id = made["agent_id"]
    assert made["agent_name"] == "reg" and made["source"] == "api" and len(agent_id) == 32
    assert made["litellm_params"]["headers"] == {"authorization": "***", "x-team": "***"}
    assert made["created_at"].endswith("Z") and made["created_by"]
    assert any("unknown_field" in w for w in made["warnings"])
    assert "agent-token-1" not in env.admin.call("GET", f"/v1/agents/{agent_id}").text
    # Served by name and by id, with the stored credential, through the SDK's client.
    wait_until(lambda: reaches(env.dp, "reg") == 200, timeout=15, what="the new agent")
    assert reaches(env.dp, agent_id) == 200
    text = asyncio.run(_send(f"{env.dp.url}/a2a/reg", STACK_MASTER_KEY, "hello registry"))
    assert "echo: hello registry" in text
    seen = [r for r in three.seen() if r.get("rpc")]
    assert seen[-1]["headers"]["authorization"] == "Bearer agent-token-1"
    assert seen[-1]["headers"]["x-team"] == "blue"
    # The credential is not in the audit log.
    audit = env.admin.call("GET", "/audit", params={"object_type": "agent"}).text
    assert "agent-token-1" not in audit and "agent.create" in audit
    # PATCH changes what it names and keeps the rest (the credential too).
    patched = env.admin.call("PATCH", f"/v1/agents/{agent_id}", json={"agent_access_groups": ["sales"]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["agent_access_groups"] == ["sales"]
    assert patched.json()["litellm_params"]["headers"] == {"authorization": "***", "x-team": "***"}
    # PUT replaces the whole entry: another URL, no credential.
    one = env.agents["one"]
    put = env.admin.call("PUT", f"/v1/agents/{agent_id}", json={
        "agent_name": "reg", "agent_card_params": {"url": one.url}})
    assert put.status_code == 200 and put.json()["litellm_params"]["headers"] == {}, put.text
    before = len(one.seen())
    wait_until(lambda: reaches(env.dp, "reg") == 200 and len(one.seen()) > before,
               timeout=15, what="the replaced URL")
    assert "authorization" not in one.seen()[-1]["headers"]
    # Bad input: 400 naming the field; unknown agent: 404; a taken name: 409.
    r = env.admin.call("POST", "/v1/agents", json={"agent_name": "x", "agent_card_params": {"url": "ftp://a"}})
    assert r.status_code == 400 and "agent_card_params.url" in r.text, r.text
    r = env.admin.call("POST", "/v1/agents", json={"agent_name": "a/b", "agent_card_params": {"url": one.url}})
    assert r.status_code in (400, 422) and "agent_name" in r.text, r.text
    assert env.admin.call("GET", "/v1/agents/nope").status_code == 404
    r = env.admin.call("POST", "/v1/agents", json={"agent_name": "cfg", "agent_card_params": {"url": one.url}})
    assert r.status_code == 409, r.text
    # DELETE: LiteLLM's message, and the data plane no longer serves it.
    r = env.admin.call("DELETE", f"/v1/agents/{agent_id}")
    assert r.status_code == 200 and r.json() == {"message": f"Agent {agent_id} deleted successfully"}
    wait_until(lambda: reaches(env.dp, "reg") == 404, timeout=15, what="the deletion")
    assert env.admin.call("DELETE", f"/v1/agents/{agent_id}").status_code == 404


async def _send(url: str, key: str, text: str) -> str:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as hc:
        card = await A2ACardResolver(hc, url).get_agent_card()
        client = ClientFactory(ClientConfig(streaming=False, httpx_client=hc)).create(card)
        m = new_text_message(text, role=Role.ROLE_USER)
        m.message_id = str(uuid.uuid4())
        out = [str(e) async for e in client.send_message(SendMessageRequest(message=m))]
        return "\n".join(out)


def test_object_permissions_allow_and_refuse_agents(env):
    admin = env.admin
    sup = create(env, {"agent_name": "sup", "agent_card_params": {"url": env.agents["one"].url},
                       "agent_access_groups": ["support"]})
    admin.ok("POST", "/team/new", json={"team_id": "t-cfg", "object_permission": {"agents": ["cfg"]}})
    admin.ok("POST", "/organization/new", json={"organization_id": "o-sup",
                                                 "object_permission": {"agent_access_groups": ["support"]}})
    admin.ok("POST", "/team/new", json={"team_id": "t-in-org", "organization_id": "o-sup"})
    keys = {
        "none": {},
        "mcp_only": {"object_permission": {"mcp_servers": ["x"]}},
        "by_id": {"object_permission": {"agents": [sup["agent_id"]]}},
        "by_group": {"object_permission": {"agent_access_groups": ["ops"]}},
        "team": {"team_id": "t-cfg"},
        "disjoint": {"team_id": "t-cfg", "object_permission": {"agents": ["sup"]}},
        "org": {"team_id": "t-in-org"},
    }
    keys = {n: key_for(env, body) for n, body in keys.items()}
    wait_until(lambda: reaches(env.dp, "sup") == 200, timeout=15, what="the agent")
    expected = {
        # Nothing restricts agents: every agent (LiteLLM's default).
        "none": {"cfg": 200, "sup": 200, "open": 200},
        "mcp_only": {"cfg": 200, "sup": 200, "open": 200},
        "by_id": {"cfg": 403, "sup": 200, "open": 403},
        "by_group": {"cfg": 200, "sup": 403, "open": 403},
        "team": {"cfg": 200, "sup": 403, "open": 403},
        # Key within team: the intersection, here nothing.
        "disjoint": {"cfg": 403, "sup": 403, "open": 403},
        "org": {"cfg": 403, "sup": 200, "open": 403},
    }
    got = {who: {a: reaches(env.dp, a, keys[who]) for a in ("cfg", "sup", "open")} for who in keys}
    assert got == expected
    r = rpc(env.dp, "cfg", keys["by_id"])
    body = r.json()
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32600 and body["id"] == 1
    assert "may not call agent `cfg`" in body["error"]["message"]
    # A change to a key's permission reaches the data plane.
    admin.ok("POST", "/key/update", json={"key": keys["by_id"], "object_permission": {"agents": ["cfg"]}})
    wait_until(lambda: reaches(env.dp, "cfg", keys["by_id"]) == 200, timeout=15, what="the update")
    assert reaches(env.dp, "sup", keys["by_id"]) == 403


def test_agent_calls_are_priced_limited_and_logged(env):
    """A call the agent answers costs its `cost_per_query`, held against the key's budget
    (a spent budget refuses the next call, 429) and counted against its rpm limit; every
    call, priced or free, is a spend log row naming the agent (`model_id` = its id)."""
    priced = create(env, {"agent_name": "priced", "agent_card_params": {"url": env.agents["one"].url},
                          "litellm_params": {"cost_per_query": 0.25}})
    assert priced["litellm_params"]["cost_per_query"] == 0.25
    wait_until(lambda: reaches(env.dp, "priced") == 200, timeout=15, what="the priced agent")
    budget = key_for(env, {"max_budget": 0.5})
    assert [reaches(env.dp, "priced", budget) for _ in range(2)] == [200, 200]
    r = rpc(env.dp, "priced", budget)
    assert r.status_code == 429 and "Budget has been exceeded" in r.json()["error"]["message"], r.text
    assert r.json()["id"] == 1
    # A free agent is still refused once the key's budget is spent.
    assert reaches(env.dp, "cfg", budget) == 429
    limited = key_for(env, {"rpm_limit": 2})
    assert [reaches(env.dp, "cfg", limited) for _ in range(3)] == [200, 200, 429]

    def logged():
        logs = env.admin.ok("GET", "/spend/logs", params={"api_key": budget})
        info = env.admin.ok("GET", "/key/info", params={"key": budget})["info"]
        return (logs, info) if len(logs) >= 2 and info["spend"] >= 0.5 else None

    logs, info = wait_until(logged, timeout=20, what="the calls in the spend logs")
    assert info["spend"] == pytest.approx(0.5)
    answered = [l for l in logs if l["status"] == 200]
    assert len(answered) == 2 and len(logs) == 2, logs
    for l in answered:
        assert l["model_group"] == "a2a/priced" and l["model_id"] == priced["agent_id"]
        assert l["custom_llm_provider"] == "a2a" and l["spend"] == pytest.approx(0.25)
    free = wait_until(lambda: env.admin.ok("GET", "/spend/logs", params={"api_key": limited}) or None,
                      timeout=20, what="the free calls in the spend logs")
    assert {l["model_group"] for l in free} == {"a2a/cfg"} and all(l["spend"] == 0 for l in free)
    assert any(l["model_id"] == "cfg" for l in free)
    # An agent that does not answer: a failed call, logged, not charged.
    down = create(env, {"agent_name": "down", "agent_card_params": {"url": f"http://127.0.0.1:{free_port()}/"},
                        "litellm_params": {"cost_per_query": 1.0}})
    wait_until(lambda: reaches(env.dp, "down") == 502, timeout=15, what="the agent that is down")

    # Per-agent activity, LiteLLM's daily activity shape.
    def activity():
        ids = f"{priced['agent_id']},{down['agent_id']}"
        out = env.admin.ok("GET", "/agent/daily/activity", params={"agent_ids": ids})
        return out if out["metadata"]["total_api_requests"] >= 4 else None

    out = wait_until(activity, timeout=20, what="the activity")
    day = out["results"][-1]
    entities = day["breakdown"]["entities"]
    assert entities[priced["agent_id"]]["metadata"]["agent_name"] == "priced"
    # The key's two calls and the master key's first one, each charged.
    m = entities[priced["agent_id"]]["metrics"]
    assert (m["api_requests"], m["successful_requests"], m["failed_requests"]) == (3, 3, 0)
    assert m["spend"] == pytest.approx(0.75)
    m = entities[down["agent_id"]]["metrics"]
    assert m["api_requests"] == m["failed_requests"] >= 1 and m["spend"] == 0
    assert out["metadata"]["total_spend"] == pytest.approx(0.75)
    assert out["metadata"]["total_failed_requests"] == m["failed_requests"]
    assert out["metadata"]["page"] == 1
    # A range that holds no call: nothing.
    empty = env.admin.ok("GET", "/agent/daily/activity", params={"start_date": "2020-01-01", "end_date": "2020-01-02"})
    assert empty["results"] == [] and empty["metadata"]["total_api_requests"] == 0


def test_a_key_blocked_while_its_stream_runs(env, tmp_path):
    """The stream admitted before the block runs to its end; the key's next call is refused
    as soon as the block reaches the data plane (docs/configuration.md says so). The agent
    holds the task after its first update until the test has seen the block applied."""
    key = key_for(env, {})
    release = tmp_path / "release"

    async def stream_while_blocking():
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}",
                                                           "A2A-Version": "1.0"}) as hc:
            body = {"jsonrpc": "2.0", "id": "s", "method": "SendStreamingMessage", "params": {
                "message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER",
                            "parts": [{"text": f"hold:{release}"}]}}}
            events = []
            async with hc.stream("POST", f"{env.dp.url}/a2a/cfg", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    events.append(line)
                    if len(events) == 1:
                        assert env.admin.ok("POST", "/key/block", json={"key": key})["blocked"]
                        wait_until(lambda: reaches(env.dp, "cfg", key) == 401, timeout=15,
                                   what="the block")
                        release.touch()
            return events

    events = asyncio.run(stream_while_blocking())
    assert len(events) >= 4 and "TASK_STATE_COMPLETED" in events[-1], events
    assert reaches(env.dp, "cfg", key) == 401


def test_default_deny_leaves_unrestricted_keys_only_public_agents(env, tmp_path):
    """With `agent_access_default_deny`, a key nothing restricts calls only `make_public`
    agents; a granted key and the master key are unaffected."""
    s = env.stack
    (s.tmp / "config.yaml").write_text(config(env.agents["one"].url, default_deny=True))
    s.cp.stop()
    s.cp.start()
    plain = key_for(env, {})
    granted = key_for(env, {"object_permission": {"agents": ["cfg"]}})
    wait_until(lambda: reaches(env.dp, "cfg", plain) == 403, timeout=20, what="the setting")
    assert reaches(env.dp, "open", plain) == 200
    assert reaches(env.dp, "cfg", granted) == 200
    assert reaches(env.dp, "cfg") == 200
    r = rpc(env.dp, "cfg", plain)
    assert "agent_access_default_deny" in r.json()["error"]["message"]
