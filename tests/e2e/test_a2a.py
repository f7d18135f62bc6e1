"""The A2A gateway, with the official `a2a-sdk` (1.3.0, unmodified) as the client, in front
of agents written with the same SDK's server classes (tests/e2e/a2a_agent.py): one that
speaks A2A 1.0 and one whose card offers only 0.3, so that callers speak 0.3 to it.
Covered: the card with its interfaces pointing at the gateway, a streamed task (status
updates, an artifact, completion), a non-streamed send, GetTask through a second data
plane, CancelTask, the agent's configured credential in place of the caller's key, the
trace context continued under an `invoke_agent` span, the protocol headers relayed, an agent that dies mid-stream, and the errors
(no key, wrong key, unknown agent, malformed JSON-RPC, an internal address not allowed)."""

import asyncio
import json
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers import new_text_message
from a2a.types import CancelTaskRequest, GetTaskRequest, Role, SendMessageRequest, TaskState
from google.protobuf.json_format import MessageToDict

from conftest import Process, free_port
from test_mcp import start_gateway, wait_port

MASTER = "sk-a2a-master"
HERE = Path(__file__).resolve().parent
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

pytestmark = pytest.mark.timeout(120)

CONFIG = """
model_list:
  - model_name: m
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi"}}
agents:
  - agent_name: echo10
    agent_card_params: {{url: "{echo10}"}}
    litellm_params: {{api_key: agent-secret, headers: {{X-Team: blue}}}}
  - agent_name: echo03
    agent_card_params: {{url: "{echo03}"}}
  - agent_name: dying
    agent_card_params: {{url: "{dying}"}}
  - agent_name: gone
    agent_card_params: {{url: "http://127.0.0.1:{gone}/"}}
  - agent_name: inline
    agent_card_params:
      name: Inline card
      description: A card given in the config
      url: "{echo10}"
      protocolVersion: "0.3"
      capabilities: {{streaming: true}}
      skills: []
      defaultInputModes: [text/plain]
      defaultOutputModes: [text/plain]
      version: "1"
general_settings:
  master_key: {master}
  allowed_egress: {egress}
"""


class Agent:
    def __init__(self, name: str, version: str, d: Path):
        self.port = free_port()
        self.requests = d / f"{name}-requests.jsonl"
        self.requests.touch()
        self.proc = Process([sys.executable, str(HERE / "a2a_agent.py"), str(self.port), version,
                             str(self.requests)], d / f"{name}.log")
        wait_port(self.port, self.proc.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def seen(self) -> list[dict]:
        return [json.loads(line) for line in self.requests.read_text().splitlines()]

    def stop(self):
        self.proc.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("a2a")
    agents, gateways = {}, []
    try:
        for name, version in (("echo10", "1.0"), ("echo03", "0.3"), ("dying", "1.0")):
            agents[name] = Agent(name, version, d)
        urls = {n: a.url for n, a in agents.items()} | {"gone": free_port()}
        config = CONFIG.format(master=MASTER, egress='["127.0.0.1/32"]', **urls)
        for name in ("dp1", "dp2"):
            gateways.append(start_gateway(d, config, name))
        # No allowed_egress: agents at internal addresses are refused.
        gateways.append(start_gateway(d, CONFIG.format(master=MASTER, egress="null", **urls), "dp-strict"))
        yield type("Env", (), {"url": gateways[0][0], "url2": gateways[1][0], "strict": gateways[2][0],
                               "agents": agents, "dir": d})
    finally:
        for _, p in gateways:
            p.stop()
        for a in agents.values():
            a.stop()


def http(key: str = MASTER, **headers) -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {key}", **headers}, timeout=60)


async def _client(base: str, hc: httpx.AsyncClient, streaming: bool = True):
    card = await A2ACardResolver(hc, base).get_agent_card()
    return card, ClientFactory(ClientConfig(streaming=streaming, httpx_client=hc)).create(card)


def message(text: str):
    m = new_text_message(text, role=Role.ROLE_USER)
    m.message_id = str(uuid.uuid4())
    return m


async def _stream(base: str, text: str):
    async with http(traceparent=TRACEPARENT) as hc:
        card, client = await _client(base, hc)
        events = [e async for e in client.send_message(SendMessageRequest(message=message(text)))]
        return card, events


def kinds(events) -> list[str]:
    out = []
    for e in events:
        kind = e.WhichOneof("payload")
        if kind == "status_update":
            kind = TaskState.Name(e.status_update.status.state)
        out.append(kind)
    return out


def test_the_card_points_at_the_gateway(env):
    for name, version in (("echo10", "1.0"), ("echo03", "0.3")):
        r = httpx.get(f"{env.url}/a2a/{name}/.well-known/agent-card.json",
                      headers={"Authorization": f"Bearer {MASTER}"})
        assert r.status_code == 200, r.text
        card = r.json()
        assert card["name"] == f"Echo {version}"
        assert str(env.agents[name].port) not in r.text, r.text
        interfaces = card["supportedInterfaces"]
        assert [i["url"] for i in interfaces] == [f"{env.url}/a2a/{name}"]
        assert interfaces[0]["protocolVersion"] == version
        if version == "0.3":
            assert card["url"] == f"{env.url}/a2a/{name}" and card["preferredTransport"] == "JSONRPC"
    # A card given in the config is served as given, its URL the gateway's.
    card = httpx.get(f"{env.url}/a2a/inline/.well-known/agent.json",
                     headers={"Authorization": f"Bearer {MASTER}"}).json()
    assert card["name"] == "Inline card" and card["url"] == f"{env.url}/a2a/inline"


def test_a_streamed_task_through_the_gateway_on_1_0(env):
    card, events = asyncio.run(_stream(f"{env.url}/a2a/echo10", "hello gateway"))
    assert kinds(events) == ["task", "TASK_STATE_WORKING", "TASK_STATE_WORKING", "artifact_update",
                             "TASK_STATE_COMPLETED"], events
    artifact = [e for e in events if e.WhichOneof("payload") == "artifact_update"][0]
    assert artifact.artifact_update.artifact.parts[0].text == "echo: hello gateway"
    rpc = [s for s in env.agents["echo10"].seen() if s["method"] == "POST"][-1]
    assert rpc["rpc"] == "SendStreamingMessage" and rpc["headers"]["a2a-version"] == "1.0"
    # The agent's own credential and headers, never the caller's key; the trace continues.
    assert rpc["headers"]["authorization"] == "Bearer agent-secret"
    assert rpc["headers"]["x-team"] == "blue"
    assert MASTER not in json.dumps(rpc)
    # The caller's trace continues under the gateway's span.
    version, trace, parent, flags = rpc["headers"]["traceparent"].split("-")
    assert (version, trace, flags) == ("00", TRACEPARENT.split("-")[1], "01")
    assert parent != TRACEPARENT.split("-")[2] and len(parent) == 16


def test_an_agent_speaking_0_3_is_spoken_to_in_0_3(env):
    card, events = asyncio.run(_stream(f"{env.url}/a2a/echo03", "hello old agent"))
    assert kinds(events)[-1] == "TASK_STATE_COMPLETED", events
    artifact = [e for e in events if e.WhichOneof("payload") == "artifact_update"][0]
    assert artifact.artifact_update.artifact.parts[0].text == "echo: hello old agent"
    rpc = [s for s in env.agents["echo03"].seen() if s["method"] == "POST"][-1]
    assert rpc["rpc"] == "message/stream", rpc
    assert "authorization" not in rpc["headers"]


async def _send_then_get(base: str, base2: str, text: str):
    async with http() as hc:
        _, client = await _client(base, hc, streaming=False)
        [sent] = [e async for e in client.send_message(SendMessageRequest(message=message(text)))]
        _, client2 = await _client(base2, hc, streaming=False)
        got = await client2.get_task(GetTaskRequest(id=sent.task.id, history_length=10))
        return sent, got


@pytest.mark.parametrize("agent", ["echo10", "echo03"])
def test_get_task_through_a_second_data_plane(env, agent):
    sent, got = asyncio.run(_send_then_get(f"{env.url}/a2a/{agent}", f"{env.url2}/a2a/{agent}", "remember me"))
    assert sent.task.status.state == TaskState.TASK_STATE_COMPLETED, MessageToDict(sent)
    assert got.id == sent.task.id
    assert got.status.state == TaskState.TASK_STATE_COMPLETED
    assert got.artifacts[0].parts[0].text == "echo: remember me"


async def _start_and_cancel(base: str):
    async with http() as hc:
        _, client = await _client(base, hc, streaming=False)
        req = SendMessageRequest(message=message("slow task"))
        req.configuration.return_immediately = True
        [started] = [e async for e in client.send_message(req)]
        return await client.cancel_task(CancelTaskRequest(id=started.task.id))


def test_cancel_a_task(env):
    task = asyncio.run(_start_and_cancel(f"{env.url}/a2a/echo10"))
    assert task.status.state == TaskState.TASK_STATE_CANCELED, MessageToDict(task)


def test_an_agent_that_dies_mid_stream_ends_the_stream_with_an_error(env):
    body = {"jsonrpc": "2.0", "id": "s1", "method": "SendStreamingMessage",
            "params": {"message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": "die now"}]}}}
    with httpx.stream("POST", f"{env.url}/a2a/dying", json=body, timeout=60, headers={
            "Authorization": f"Bearer {MASTER}", "A2A-Version": "1.0", "Accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = [e for e in text.replace("\r\n", "\n").split("\n\n") if e.strip()]
    assert '"task"' in events[0], text
    last = events[-1]
    assert last.startswith("event: error\n"), text
    error = json.loads(last.split("data: ", 1)[1])
    assert error["id"] == "s1" and error["error"]["code"] == -32603
    assert "dying" in error["error"]["message"] and "127.0.0.1" not in error["error"]["message"]


def rpc(url: str, body, key: str | None = MASTER) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url, json=body, headers=headers, timeout=30)


GET = {"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": {"id": "no-such-task"}}


@pytest.mark.parametrize("key,status", [(None, 401), ("sk-wrong", 401)])
def test_a_caller_without_a_valid_key_is_refused(env, key, status):
    r = rpc(f"{env.url}/a2a/echo10", GET, key=key)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == -32600 and r.json()["jsonrpc"] == "2.0"
    r = httpx.get(f"{env.url}/a2a/echo10/.well-known/agent-card.json")
    assert r.status_code == 401 and "error" in r.json()


def test_errors_are_json_rpc_with_the_right_status(env):
    r = rpc(f"{env.url}/a2a/nobody", GET)
    assert r.status_code == 404 and "no agent named `nobody`" in r.json()["error"]["message"]
    r = httpx.post(f"{env.url}/a2a/echo10", content=b"{not json", timeout=30,
                   headers={"Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    # The agent's own JSON-RPC errors pass through: a task it does not know.
    r = httpx.post(f"{env.url}/a2a/echo10", json=GET, timeout=30,
                   headers={"Authorization": f"Bearer {MASTER}", "A2A-Version": "1.0"})
    assert r.status_code == 200 and r.json()["error"]["code"] == -32001 and r.json()["id"] == 7, r.text
    r = httpx.get(f"{env.url}/a2a/echo10", headers={"Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 405
    # An agent that does not answer: 502, naming the agent, not its address.
    for r in (httpx.get(f"{env.url}/a2a/gone/.well-known/agent-card.json",
                        headers={"Authorization": f"Bearer {MASTER}"}, timeout=30),
              rpc(f"{env.url}/a2a/gone", GET)):
        assert r.status_code == 502, r.text
        message = r.json()["error"]["message"]
        assert "agent `gone`" in message and "127.0.0.1" not in message, message


def test_each_call_is_an_invoke_agent_span_in_the_callers_trace(env):
    import time

    from otlp import OtlpReceiver

    receiver = OtlpReceiver()
    config = CONFIG.format(master=MASTER, egress='["127.0.0.1/32"]', gone=free_port(),
                           **{n: a.url for n, a in env.agents.items()})
    url, p = start_gateway(env.dir, config, "dp-otel", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
                           OTEL_BSP_SCHEDULE_DELAY="100")
    try:
        r = httpx.post(f"{url}/a2a/echo10", json=GET, timeout=30, headers={
            "Authorization": f"Bearer {MASTER}", "A2A-Version": "1.0", "traceparent": TRACEPARENT,
            "tracestate": "rojo=00f067aa0ba902b7"})
        assert r.json()["error"]["code"] == -32001, r.text
        agent_headers = [s for s in env.agents["echo10"].seen() if s["method"] == "POST"][-1]["headers"]
        sent = agent_headers["traceparent"]
        assert agent_headers["tracestate"] == "rojo=00f067aa0ba902b7"
        deadline = time.time() + 15
        while not receiver.spans("invoke_agent echo10") and time.time() < deadline:
            time.sleep(0.05)
        [span] = receiver.spans("invoke_agent echo10")
        assert span.trace_id.hex() == TRACEPARENT.split("-")[1]
        # Under the request's span, itself under the caller's; the agent is told of the
        # gateway's span, sampled as the caller's trace is.
        deadline = time.time() + 15
        while not [s for s in receiver.spans() if s.span_id == span.parent_span_id] and time.time() < deadline:
            time.sleep(0.05)
        [route] = [s for s in receiver.spans() if s.span_id == span.parent_span_id]
        assert route.parent_span_id.hex() == TRACEPARENT.split("-")[2]
        assert span.span_id.hex() == sent.split("-")[2]
        assert sent.split("-")[3] == TRACEPARENT.split("-")[3]
        attrs = {a.key: a.value for a in span.attributes}
        assert attrs["gen_ai.operation.name"].string_value == "invoke_agent"
        assert attrs["gen_ai.agent.name"].string_value == "echo10"
        assert attrs["routeiq.request_id"].string_value == r.headers["x-litellm-call-id"]
    finally:
        p.stop()
        receiver.stop()


def test_agents_at_internal_addresses_need_allowed_egress(env):
    r = httpx.post(f"{env.strict}/a2a/echo10", json=GET, timeout=30,
                   headers={"Authorization": f"Bearer {MASTER}", "A2A-Version": "1.0"})
    assert r.status_code == 403, r.text
    assert "allowed_egress" in r.json()["error"]["message"]
    before = len(env.agents["echo10"].seen())
    r = httpx.get(f"{env.strict}/a2a/echo10/.well-known/agent-card.json",
                  headers={"Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 403
    assert len(env.agents["echo10"].seen()) == before
