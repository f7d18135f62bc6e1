"""MCP tools in chat completions, with the official `openai` SDK (unmodified) as the
client: `tools: [{"type": "mcp", "server_url": "litellm_proxy", ...}]` offers the caller's
MCP tools to the model as `<server>-<tool>` functions. The mock provider asks for the first
tool it is offered and then answers with the tool's result, so each request takes two
rounds. With `require_approval: "never"` the gateway runs the call on the real MCP server
(tests/e2e/mcp_server.py) and the client sees only the answer, streamed or not, from an
OpenAI and an Anthropic deployment; the usage and the cost are both rounds'. Without it, the
model's call goes back to the client and the tool is not run. A round that fails ends the
request (an error event once text has been streamed) and the rounds before it are
counted. Bad MCP tools are 4xx errors in OpenAI's shape."""

import json

import time

import httpx
import openai
import pytest

from conftest import free_port
from test_mcp import McpServerProcess, start_gateway

MASTER = "sk-mcp-chat"
pytestmark = pytest.mark.timeout(120)

# Every round's text: the Anthropic mock says something before it calls a tool.
ANSWER = {"gpt": "tool result received: sunny in Paris",
          "claude": "Let me check.\n\ntool result received: sunny in Paris"}

# USD per token, so the test can price the rounds itself; and per call of `forecast`.
IN, OUT = 0.000_001, 0.000_002
TOOL_PRICE = 0.25

CONFIG = """
model_list:
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {upstream}/v1
      api_key: sk-upstream
      input_cost_per_token: {inp}
      output_cost_per_token: {out}
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {upstream}
      api_key: sk-ant-upstream
      input_cost_per_token: {inp}
      output_cost_per_token: {out}
mcp_servers:
  weather:
    url: {weather}
    mcp_info:
      mcp_server_cost_info:
        default_cost_per_query: 0.5
        tool_name_to_cost_per_query: {{forecast: {tool_price}}}
  docs:
    url: {docs}
    allowed_tools: [search]
general_settings:
  master_key: {master}
  allowed_egress: ["127.0.0.1/32"]
"""


@pytest.fixture(scope="module")
def env(mock_provider, tmp_path_factory):
    d = tmp_path_factory.mktemp("mcp-chat")
    markers = d / "markers"
    markers.mkdir()
    weather = McpServerProcess("weather", markers, d)
    docs = McpServerProcess("docs", markers, d)
    gw = None
    try:
        weather.start()
        docs.start()
        config = CONFIG.format(upstream=mock_provider, weather=weather.url, docs=docs.url,
                               master=MASTER, inp=IN, out=OUT, tool_price=TOOL_PRICE)
        url, gw = start_gateway(d, config, "dp")
        yield type("Env", (), {"url": url, "mock": mock_provider, "gw": gw})
    finally:
        if gw:
            gw.stop()
        weather.stop()
        docs.stop()


def client(env) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{env.url}/v1", api_key=MASTER, max_retries=0)


def mcp_tool(**extra) -> dict:
    return {"type": "mcp", "server_label": "gw", "server_url": "litellm_proxy",
            "allowed_tools": ["weather-forecast"], **extra}


def forecast_calls(env) -> float:
    for line in httpx.get(f"{env.url}/metrics").text.splitlines():
        if line.startswith('litellm_mcp_tool_calls_total{server="weather",status="ok",tool="forecast"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def last_upstream(env) -> dict:
    return httpx.get(f"{env.mock}/__last_request").json()["body"]


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_the_gateway_runs_the_models_tool_call_and_returns_the_answer(env, model):
    before = forecast_calls(env)
    raw = client(env).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[mcp_tool(require_approval="never")])
    r = raw.parse()
    assert r.choices[0].message.content == ANSWER[model], r
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason == "stop"
    assert forecast_calls(env) == before + 1
    # The second round carried the call and its result, with the tool offered as a function.
    body = last_upstream(env)
    text = json.dumps(body)
    assert "sunny in Paris" in text
    assert "weather-forecast" in text and "docs-search" not in text, "allowed_tools narrows the offer"
    # Usage and cost are both rounds': the second round's prompt holds the first's. The
    # cost also holds the tool call's price.
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    cost = float(raw.headers["x-litellm-response-cost"])
    assert cost == pytest.approx(u.prompt_tokens * IN + u.completion_tokens * OUT + TOOL_PRICE,
                                 rel=1e-9)


def test_one_round_alone_uses_fewer_tokens_than_the_loop(env):
    c = client(env)
    # The same two rounds, driven by the client: their usages add up to the loop's.
    first = c.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[mcp_tool()])
    call = first.choices[0].message.tool_calls[0]
    second = c.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "weather in Paris?"},
                  first.choices[0].message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "sunny in Paris"}],
        tools=[mcp_tool()])
    looped = c.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[mcp_tool(require_approval="never")])
    assert looped.usage.prompt_tokens == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert looped.usage.completion_tokens == first.usage.completion_tokens + second.usage.completion_tokens


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_a_stream_carries_the_answer_and_never_the_gateways_tool_calls(env, model):
    before = forecast_calls(env)
    stream = client(env).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[mcp_tool(require_approval="never")], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER[model]
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1 and chunks[-1].usage is not None
    assert usage[0].total_tokens == usage[0].prompt_tokens + usage[0].completion_tokens
    assert forecast_calls(env) == before + 1


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_the_streamed_usage_matches_the_unstreamed(env, model):
    args = dict(model=model, messages=[{"role": "user", "content": "weather in Paris?"}],
                tools=[mcp_tool(require_approval="never")])
    raw = client(env).chat.completions.with_raw_response.create(**args)
    whole = raw.parse()
    chunks = list(client(env).chat.completions.create(**args, stream=True,
                                                      stream_options={"include_usage": True}))
    streamed = chunks[-1].usage
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        whole.usage.prompt_tokens, whole.usage.completion_tokens)
    # The streamed cost is the request's, the tool call's price included.
    assert streamed.model_extra["cost"] == pytest.approx(
        float(raw.headers["x-litellm-response-cost"]), rel=1e-9)
    assert streamed.model_extra["cost"] > TOOL_PRICE


def test_without_approval_never_the_call_goes_back_to_the_client(env):
    before = forecast_calls(env)
    r = client(env).chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[mcp_tool()])
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["weather-forecast"]
    assert json.loads(calls[0].function.arguments) == {"location": "Paris"}
    assert forecast_calls(env) == before, "the gateway ran a tool it was not allowed to run"
    # The client runs it through the REST face, with the same name.
    r = httpx.post(f"{env.url}/mcp-rest/tools/call", headers={"Authorization": f"Bearer {MASTER}"},
                   json={"name": calls[0].function.name, "arguments": {"location": "Paris"}})
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "sunny in Paris"


def test_a_clients_own_function_stays_the_clients(env):
    # The client's function comes first, so the mock calls it: the gateway may not run it.
    before = forecast_calls(env)
    own = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    r = client(env).chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[own, mcp_tool(require_approval="never")])
    assert [c.function.name for c in r.choices[0].message.tool_calls] == ["lookup"]
    assert forecast_calls(env) == before
    offered = [t["function"]["name"] for t in last_upstream(env)["tools"]]
    assert offered == ["lookup", "weather-forecast"]


def test_a_named_server_and_its_own_tool_names(env):
    r = client(env).chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "docs?"}],
        tools=[{"type": "mcp", "server_url": "litellm_proxy/mcp/docs", "allowed_tools": ["search"]}])
    assert [c.function.name for c in r.choices[0].message.tool_calls] == ["docs-search"]


@pytest.mark.parametrize("tool, status, words", [
    ({"type": "mcp", "server_url": "https://mcp.example.com/mcp"}, 400, "server_url"),
    ({"type": "mcp", "server_url": "litellm_proxy/mcp/nosuch"}, 404, "nosuch"),
    ({"type": "mcp", "server_url": "litellm_proxy", "allowed_tools": "search"}, 400, "allowed_tools"),
])
def test_bad_mcp_tools_are_openai_shaped_errors(env, tool, status, words):
    r = httpx.post(f"{env.url}/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                   json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and err["type"], err


def test_an_mcp_server_down_leaves_its_tools_out(env, tmp_path):
    # A gateway whose only MCP server is not listening: nothing to offer, the model answers.
    config = CONFIG.format(upstream=env.mock, weather=f"http://127.0.0.1:{free_port()}/mcp",
                           docs=f"http://127.0.0.1:{free_port()}/mcp", master=MASTER, inp=IN, out=OUT,
                           tool_price=TOOL_PRICE)
    url, gw = start_gateway(tmp_path, config, "dp-down")
    try:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER, max_retries=0)
        r = c.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}],
                                      tools=[mcp_tool(require_approval="never")])
        assert r.choices[0].message.content and not r.choices[0].message.tool_calls
        assert "tools" not in last_upstream(env)
    finally:
        gw.stop()


def tokens_counted(env) -> tuple[float, float]:
    total = {"input": 0.0, "output": 0.0}
    for line in httpx.get(f"{env.url}/metrics").text.splitlines():
        for kind in total:
            if line.startswith(f"litellm_{kind}_tokens_metric_total{{"):
                total[kind] += float(line.rsplit(" ", 1)[1])
    return total["input"], total["output"]


@pytest.mark.parametrize("model, upstream, stream", [("gpt", "gpt-4o-mini", False),
                                                     ("claude", "claude-sonnet-4-5", True)])
def test_a_round_that_fails_ends_the_request_and_the_rounds_before_are_counted(env, model, upstream, stream):
    c = client(env)
    question = [{"role": "user", "content": "weather in Paris?"}]
    first = c.chat.completions.create(model=model, messages=question, tools=[mcp_tool()])
    # The second round's prompt (with the tool's result) is longer than the first's: over
    # this bound the provider refuses it with its context-length error.
    faults = {upstream: {"max_prompt_tokens": first.usage.prompt_tokens}}
    assert httpx.post(f"{env.mock}/__faults", json=faults).status_code == 200
    try:
        before = tokens_counted(env)
        args = dict(model=model, messages=question, tools=[mcp_tool(require_approval="never")])
        if not stream:
            with pytest.raises(openai.BadRequestError) as e:
                c.chat.completions.create(**args)
            assert e.value.status_code == 400 and "context" in str(e.value).lower(), e.value
        else:
            # The first round's text has gone out: the failure ends the stream with an error.
            text = []
            with pytest.raises(openai.APIError) as e:
                for chunk in c.chat.completions.create(**args, stream=True):
                    text.extend(ch.delta.content or "" for ch in chunk.choices)
            assert "".join(text) == "Let me check."
            assert "prompt is too long" in str(e.value), e.value
        # Counted when the request is logged, just after its answer went out.
        deadline = time.time() + 5
        while (after := tokens_counted(env)) == before and time.time() < deadline:
            time.sleep(0.02)
        assert after[0] - before[0] == first.usage.prompt_tokens
        assert after[1] - before[1] == first.usage.completion_tokens
    finally:
        httpx.post(f"{env.mock}/__faults", json={})
