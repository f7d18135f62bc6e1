"""OpenAI's Responses API with the official openai SDK: native to OpenAI and Azure
deployments, through chat for every other provider (streams, function tools,
`previous_response_id`, and `GET`/`DELETE /v1/responses/{id}` included), with the same keys,
fallbacks, usage and cost as chat."""

import base64
import json

import httpx
import openai
import pytest

from test_routing import MASTER_KEY, gateway, mock  # noqa: F401  (the module's fixtures)

PRICE_IN, PRICE_OUT = 2e-6, 8e-6


def config(mock) -> dict:
    return {
        "model_list": [
            {"model_name": "gpt",
             "litellm_params": {"model": "openai/gpt-4.1", "api_base": f"{mock.url}/v1",
                                "api_key": "sk-up", "input_cost_per_token": PRICE_IN,
                                "output_cost_per_token": PRICE_OUT},
             "model_info": {"id": "gpt-4.1"}},
            {"model_name": "azure-gpt",
             "litellm_params": {"model": "azure/my-gpt-deployment", "api_base": mock.url,
                                "api_key": "az-key", "api_version": "2025-04-01-preview"},
             "model_info": {"id": "my-gpt-deployment"}},
            {"model_name": "flaky",
             "litellm_params": {"model": "openai/flaky-model", "api_base": f"{mock.url}/v1",
                                "api_key": "sk-up"},
             "model_info": {"id": "flaky-model"}},
            {"model_name": "claude",
             "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_base": mock.url,
                                "api_key": "k", "input_cost_per_token": PRICE_IN,
                                "output_cost_per_token": PRICE_OUT},
             "model_info": {"id": "claude-sonnet-4-5"}},
            {"model_name": "pair",
             "litellm_params": {"model": "openai/pair-a", "api_base": f"{mock.url}/v1",
                                "api_key": "sk-up"},
             "model_info": {"id": "pair-a"}},
            {"model_name": "pair",
             "litellm_params": {"model": "openai/pair-b", "api_base": f"{mock.url}/v1",
                                "api_key": "sk-up"},
             "model_info": {"id": "pair-b"}},
            {"model_name": "gemini",
             "litellm_params": {"model": "gemini/gemini-2.0-flash",
                                "api_base": f"{mock.url}/v1beta", "api_key": "g-key"},
             "model_info": {"id": "gemini-2.0-flash"}},
        ],
        "router_settings": {"num_retries": 0, "fallbacks": [{"flaky": ["gpt"]}]},
    }


def last(mock) -> dict:
    return httpx.get(f"{mock.url}/__last_request").json()


def client(g) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_create_with_usage_and_cost(mock, gateway):
    g = gateway(config(mock))
    raw = client(g).responses.with_raw_response.create(
        model="gpt", input="hello there", instructions="be brief", max_output_tokens=50)
    r = raw.parse()
    assert r.output_text == "mock reply to: hello there"
    assert r.usage.output_tokens == len(r.output_text.split())
    cost = r.usage.input_tokens * PRICE_IN + r.usage.output_tokens * PRICE_OUT
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(cost, rel=1e-9)
    assert raw.headers["x-litellm-model-id"] == "gpt-4.1"
    sent = last(mock)
    assert sent["path"] == "/v1/responses"
    assert sent["body"]["model"] == "gpt-4.1" and sent["body"]["instructions"] == "be brief"
    assert sent["headers"]["authorization"] == "Bearer sk-up"


def test_stream_passes_the_typed_events(mock, gateway):
    g = gateway(config(mock))
    events = list(client(g).responses.create(model="gpt", input="stream this please", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert "response.output_text.delta" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "mock reply to: stream this please"
    assert events[-1].response.usage.output_tokens == len(text.split())
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_function_tools_and_previous_response_id(mock, gateway):
    g = gateway(config(mock))
    c = client(g)
    tools = [{"type": "function", "name": "get_weather", "description": "weather",
              "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]
    first = c.responses.create(model="gpt", input="please call the tool", tools=tools)
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"location":"Paris"}'
    second = c.responses.create(
        model="gpt", previous_response_id=first.id, tools=tools,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.status == "completed"
    # The client's ids name the deployment; the provider gets its own id back.
    upstream_id = last(mock)["body"]["previous_response_id"]
    assert upstream_id.startswith("resp_mock_") and first.id != upstream_id
    # A streamed tool call: the arguments arrive as deltas.
    events = list(c.responses.create(model="gpt", input="now call the tool", tools=tools,
                                     stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == '{"location":"Paris"}'
    # An unknown previous response: the provider's 404, passed on as OpenAI's error.
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="gpt", input="hi", previous_response_id="resp_unknown")


def test_azure_and_fallbacks(mock, gateway):
    g = gateway(config(mock))
    c = client(g)
    r = c.responses.create(model="azure-gpt", input="hi azure")
    assert r.output_text == "mock reply to: hi azure"
    sent = last(mock)
    assert sent["path"] == "/openai/responses?api-version=2025-04-01-preview"
    assert sent["body"]["model"] == "my-gpt-deployment" and sent["headers"]["api-key"] == "az-key"

    mock.faults(**{"flaky-model": {"status": 500}})
    try:
        raw = c.responses.with_raw_response.create(model="flaky", input="fall back")
        assert raw.headers["x-litellm-model-id"] == "gpt-4.1"
        assert raw.parse().output_text == "mock reply to: fall back"
    finally:
        mock.faults()

    r = httpx.post(f"{g.url}/v1/responses", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                   json={"model": "gpt"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input", r.text


TOOLS = [{"type": "function", "name": "get_weather", "description": "weather",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]


def test_through_chat_continues_conversations(mock, gateway):
    g = gateway(config(mock))
    c = client(g)
    raw = c.responses.with_raw_response.create(
        model="claude", input="hello claude", instructions="be brief", max_output_tokens=100)
    first = raw.parse()
    assert first.output_text == "mock reply to: hello claude"
    assert first.id.startswith("resp_") and first.model == "claude"
    assert first.status == "completed" and first.instructions == "be brief"
    cost = first.usage.input_tokens * PRICE_IN + first.usage.output_tokens * PRICE_OUT
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(cost, rel=1e-9)
    sent = last(mock)
    assert sent["path"] == "/v1/messages" and sent["body"]["max_tokens"] == 100
    assert "be brief" in str(sent["body"]["system"])

    second = c.responses.create(model="claude", input="and again",
                                previous_response_id=first.id)
    assert second.output_text == "mock reply to: and again"
    assert second.previous_response_id == first.id
    sent = last(mock)["body"]
    # The earlier turns, without the earlier instructions (as OpenAI does).
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert "system" not in sent
    assert "mock reply to: hello claude" in str(sent["messages"][1]["content"])

    # Function tools: a call, then its output in the next turn.
    call_turn = c.responses.create(model="claude", input="weather in Paris?", tools=TOOLS)
    call = call_turn.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"location": "Paris"}
    answer = c.responses.create(
        model="claude", previous_response_id=call_turn.id, tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert answer.output_text == "tool result received: sunny"

    # Retrieve, list the input items, delete.
    assert c.responses.retrieve(answer.id).output_text == answer.output_text
    items = c.responses.input_items.list(answer.id)
    assert [i.type for i in items.data] == ["function_call_output"]
    c.responses.delete(answer.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(answer.id)
    with pytest.raises(openai.NotFoundError) as e:
        c.responses.create(model="claude", input="x", previous_response_id=answer.id)
    assert e.value.body["code"] == "previous_response_not_found"

    # A conversation the gateway holds continues on a deployment with the API: the
    # earlier turns go up as input items.
    native = c.responses.create(model="gpt", input="over to you", previous_response_id=second.id)
    assert native.output_text == "mock reply to: over to you"
    sent = last(mock)["body"]
    assert "previous_response_id" not in sent
    assert [i.get("role") for i in sent["input"]] == ["user", "assistant", "user", "assistant",
                                                      "user"]


@pytest.mark.parametrize("model", ["claude", "gemini"])
def test_stream_through_chat(mock, gateway, model):
    g = gateway(config(mock))
    c = client(g)
    events = list(c.responses.create(model=model, input="stream this please", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "mock reply to: stream this please"
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens > 0
    # Stored before the client heard it was complete: a follow-up may name it at once.
    follow = c.responses.create(model=model, input="more", previous_response_id=final.id)
    assert follow.output_text == "mock reply to: more"

    # The SDK's stream helper rebuilds the response from the events; a tool call too.
    with c.responses.stream(model=model, input="weather in Paris?", tools=TOOLS) as s:
        for _ in s:
            pass
        done = s.get_final_response()
    call = [o for o in done.output if o.type == "function_call"][0]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"location": "Paris"}


def test_bad_input_through_chat(mock, gateway):
    g = gateway(config(mock))
    c = client(g)
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="claude", input="x", tools=[{"type": "web_search"}])
    assert e.value.body["param"] == "tools" and "web_search" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="claude", input=[{"type": "item_reference", "id": "x"}])
    assert e.value.body["param"] == "input"
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve("resp_does_not_exist")
    r = httpx.delete(f"{g.url}/v1/responses/resp_x")
    assert r.status_code == 401


def test_conversations_are_shared_through_redis(mock, gateway, tmp_path):
    from stack import Redis

    redis = Redis(tmp_path)
    redis.start()
    try:
        a = gateway(config(mock), extra=["--redis-url", redis.url])
        b = gateway(config(mock), extra=["--redis-url", redis.url])
        first = client(a).responses.create(model="claude", input="hello from a")
        second = client(b).responses.create(model="claude", input="hello from b",
                                            previous_response_id=first.id)
        assert second.output_text == "mock reply to: hello from b"
        assert len(last(mock)["body"]["messages"]) == 3
        assert client(b).responses.retrieve(first.id).output_text == first.output_text
    finally:
        redis.stop()


def test_native_ids_reach_the_deployment_that_holds_them(mock, gateway):
    g = gateway(config(mock))
    c = client(g)
    for model in ("gpt", "azure-gpt"):
        r = c.responses.create(model=model, input="remember this")
        got = c.responses.retrieve(r.id)
        assert got.id == r.id and got.output_text == "mock reply to: remember this"
        sent = last(mock)
        assert sent["path"].startswith("GET /openai/responses/resp_mock_" if model == "azure-gpt"
                                       else "GET /v1/responses/resp_mock_"), sent["path"]
        items = c.responses.input_items.list(r.id)
        assert items.data[0].content[0].text == "remember this"
        c.responses.delete(r.id)
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(r.id)

    # A streamed response's id is the client's in every event that carries it.
    events = list(c.responses.create(model="gpt", input="stream it", stream=True))
    ids = {e.response.id for e in events if hasattr(e, "response")}
    assert len(ids) == 1
    (sid,) = ids
    assert c.responses.retrieve(sid).output_text == "mock reply to: stream it"

    # In a group of two, a conversation stays on the deployment that holds it.
    first = c.responses.with_raw_response.create(model="pair", input="start")
    holder = first.headers["x-litellm-model-id"]
    prev = first.parse().id
    for i in range(8):
        raw = c.responses.with_raw_response.create(model="pair", input=f"turn {i}",
                                                   previous_response_id=prev)
        assert raw.headers["x-litellm-model-id"] == holder
        prev = raw.parse().id

    # An id naming no deployment of this gateway: 404, nothing sent upstream.
    forged = "resp_" + base64.urlsafe_b64encode(b"routeiq;nope;resp_mock_1").decode().rstrip("=")
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(forged)
