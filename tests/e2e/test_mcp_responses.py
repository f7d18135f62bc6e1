"""MCP tools in the Responses API, with the official `openai` SDK (unmodified) as the client:
`tools: [{"type": "mcp", "server_label": ..., "server_url": "litellm_proxy", ...}]`, LiteLLM's
form. The gateway serves such a request through chat on every deployment (OpenAI's, which
has the Responses API, included): it offers the caller's MCP tools as functions, runs the
calls the model makes when `require_approval` is `never`, and answers with a `response`
made from the last round, whole or as the Responses API's event stream, with every round's
usage. The environment (mock provider, two MCP servers, one gateway) is test_mcp_chat's."""

import json

import httpx
import openai
import pytest

from test_mcp_chat import (ANSWER, IN, MASTER, OUT, TOOL_PRICE, client, env,  # noqa: F401
                           forecast_calls, last_upstream)

pytestmark = pytest.mark.timeout(120)


def mcp_tool(**extra) -> dict:
    return {"type": "mcp", "server_label": "litellm", "server_url": "litellm_proxy",
            "allowed_tools": ["weather-forecast"], **extra}


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_the_gateway_runs_the_tool_and_the_response_is_the_answer(env, model):
    before = forecast_calls(env)
    raw = client(env).responses.with_raw_response.create(
        model=model, input="weather in Paris?", tools=[mcp_tool(require_approval="never")])
    r = raw.parse()
    assert r.status == "completed"
    assert r.output_text == ANSWER[model]
    assert [item.type for item in r.output] == ["message"], "the gateway's calls stay its own"
    assert forecast_calls(env) == before + 1
    # The last round went up as chat, with the tool's result and the tool as a function.
    body = last_upstream(env)
    assert "sunny in Paris" in json.dumps(body)
    assert "weather-forecast" in json.dumps(body.get("tools"))
    u = r.usage
    assert u.input_tokens > 0 and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens
    cost = float(raw.headers["x-litellm-response-cost"])
    assert cost == pytest.approx(u.input_tokens * IN + u.output_tokens * OUT + TOOL_PRICE,
                                 rel=1e-9)


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_the_usage_is_every_rounds(env, model):
    # The same rounds through chat: the response's usage is theirs.
    chat = client(env).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[mcp_tool(require_approval="never")])
    r = client(env).responses.create(
        model=model, input="weather in Paris?", tools=[mcp_tool(require_approval="never")])
    assert (r.usage.input_tokens, r.usage.output_tokens) == (
        chat.usage.prompt_tokens, chat.usage.completion_tokens)


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_a_stream_is_the_responses_event_stream_of_the_answer(env, model):
    before = forecast_calls(env)
    events = list(client(env).responses.create(
        model=model, input="weather in Paris?", tools=[mcp_tool(require_approval="never")],
        stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert kinds.count("response.created") == 1 and kinds.count("response.completed") == 1
    assert "response.function_call_arguments.delta" not in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == ANSWER[model]
    done = events[-1].response
    assert done.output_text == ANSWER[model]
    whole = client(env).responses.create(
        model=model, input="weather in Paris?", tools=[mcp_tool(require_approval="never")])
    assert (done.usage.input_tokens, done.usage.output_tokens) == (
        whole.usage.input_tokens, whole.usage.output_tokens)
    assert forecast_calls(env) == before + 2


def test_without_approval_never_the_call_is_the_clients(env):
    before = forecast_calls(env)
    r = client(env).responses.create(model="gpt", input="weather in Paris?", tools=[mcp_tool()])
    calls = [item for item in r.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["weather-forecast"]
    assert json.loads(calls[0].arguments) == {"location": "Paris"}
    assert forecast_calls(env) == before


def test_a_follow_up_continues_the_conversation(env):
    c = client(env)
    first = c.responses.create(model="gpt", input="weather in Paris?",
                               tools=[mcp_tool(require_approval="never")])
    c.responses.create(model="gpt", input="and tomorrow?", previous_response_id=first.id,
                       tools=[mcp_tool(require_approval="never")])
    messages = json.dumps(last_upstream(env)["messages"])
    assert "weather in Paris?" in messages and ANSWER["gpt"] in messages
    assert "and tomorrow?" in messages
    stored = c.responses.retrieve(first.id)
    assert stored.output_text == ANSWER["gpt"]


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_bad_mcp_tools_are_openai_shaped_errors(env, model):
    for tool, status, words in [
        ({"type": "mcp", "server_url": "litellm_proxy/mcp/nosuch"}, 404, "nosuch"),
        ({"type": "mcp", "server_url": "litellm_proxy", "allowed_tools": "search"}, 400,
         "allowed_tools"),
    ]:
        r = httpx.post(f"{env.url}/v1/responses", headers={"Authorization": f"Bearer {MASTER}"},
                       json={"model": model, "input": "hi", "tools": [tool]})
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert words in err["message"] and err["type"], err


def test_a_remote_mcp_server_needs_a_deployment_with_the_responses_api(env):
    # The Anthropic deployment answers through chat, which cannot call a remote server.
    r = httpx.post(f"{env.url}/v1/responses", headers={"Authorization": f"Bearer {MASTER}"},
                   json={"model": "claude", "input": "hi",
                         "tools": [{"type": "mcp", "server_label": "x",
                                    "server_url": "https://mcp.example.com/mcp"}]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert "remote `server_url`" in err["message"] and err["param"] == "tools", err


def test_a_round_that_fails_ends_the_stream_with_an_error_event(env):
    c = client(env)
    first = c.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[mcp_tool()])
    # The second round's prompt, longer than the first's, is refused by the provider.
    faults = {"claude-sonnet-4-5": {"max_prompt_tokens": first.usage.prompt_tokens}}
    assert httpx.post(f"{env.mock}/__faults", json=faults).status_code == 200
    try:
        events = list(c.responses.create(model="claude", input="weather in Paris?",
                                         tools=[mcp_tool(require_approval="never")], stream=True))
        kinds = [e.type for e in events]
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == "Let me check.", kinds
        assert kinds[-1] == "error" and "response.completed" not in kinds, kinds
        assert "prompt is too long" in events[-1].message
    finally:
        httpx.post(f"{env.mock}/__faults", json={})
