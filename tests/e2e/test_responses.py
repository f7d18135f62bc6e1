"""OpenAI's Responses API with the official openai SDK: native to OpenAI and Azure
deployments (streams, function tools and `previous_response_id` included), through the
same keys, fallbacks, usage and cost as chat; other providers refuse it with a clear 400."""

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
                                "api_key": "k"},
             "model_info": {"id": "claude-sonnet-4-5"}},
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
    assert last(mock)["body"]["previous_response_id"] == first.id
    # A streamed tool call: the arguments arrive as deltas.
    events = list(c.responses.create(model="gpt", input="now call the tool", tools=tools,
                                     stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == '{"location":"Paris"}'
    # An unknown previous response: the provider's 404, passed on as OpenAI's error.
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="gpt", input="hi", previous_response_id="resp_unknown")


def test_azure_fallbacks_and_providers_without_the_api(mock, gateway):
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

    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="claude", input="hi")
    assert e.value.body["code"] == "unsupported" and "responses" in e.value.body["message"]
    r = httpx.post(f"{g.url}/v1/responses", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                   json={"model": "gpt"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input", r.text
