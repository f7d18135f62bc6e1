"""The official `openai` SDK against the gateway: every provider behind the OpenAI API."""

import base64
import json
import struct

import openai
import pytest

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("model", ["gpt-upstream", "claude-upstream", "azure-gpt", "vllm-model"])
def test_chat_completion_every_provider(openai_client, model):
    r = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello gateway"}]
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "mock reply to: hello gateway"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_openai_passthrough_rewrites_model_and_sends_key(openai_client, gateway, mock_provider):
    openai_client.chat.completions.create(
        model="gpt-upstream", messages=[{"role": "user", "content": "x"}], temperature=0.2
    )
    sent = gateway.last_upstream_request(mock_provider)
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["model"] == "gpt-4o-mini"
    assert sent["body"]["temperature"] == 0.2
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-secret"


def test_azure_request_shape(openai_client, gateway, mock_provider):
    r = openai_client.chat.completions.create(
        model="azure-gpt", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.model == "my-gpt-deployment"
    sent = gateway.last_upstream_request(mock_provider)
    assert sent["path"].startswith("/openai/deployments/my-gpt-deployment/chat/completions")
    assert "api-version=2024-10-21" in sent["path"]
    assert sent["headers"]["api-key"] == "azure-secret-key"
    assert "authorization" not in sent["headers"]


def test_openai_client_to_anthropic_is_translated(openai_client, gateway, mock_provider):
    r = openai_client.chat.completions.create(
        model="claude-upstream",
        messages=[
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "translate me"},
        ],
        max_tokens=50,
        stop=["END"],
    )
    assert r.choices[0].message.content == "mock reply to: translate me"
    sent = gateway.last_upstream_request(mock_provider)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-ant-upstream"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    body = sent["body"]
    assert body["model"] == "claude-sonnet-4-5"
    assert body["max_tokens"] == 50
    assert body["system"] == [{"type": "text", "text": "be terse"}]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "translate me"}]}]
    assert body["stop_sequences"] == ["END"]


@pytest.mark.parametrize("model", ["gpt-upstream", "claude-upstream", "builtin-mock"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_streaming(openai_client, model, include_usage):
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "stream this please"}], stream=True, **kwargs
    )
    text, finish, usage_chunks = "", None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage_chunks.append(chunk.usage)
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert "stream this please" in text
    assert finish == "stop"
    if include_usage:
        assert len(usage_chunks) == 1
        assert usage_chunks[0].completion_tokens > 0
    else:
        assert usage_chunks == []


@pytest.mark.parametrize("model", ["gpt-upstream", "claude-upstream"])
def test_tool_calls_round_trip(openai_client, model):
    messages = [{"role": "user", "content": "weather in Paris?"}]
    r = openai_client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"})
    r2 = openai_client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert r2.choices[0].message.content == "tool result received: sunny, 21C"


@pytest.mark.parametrize("model", ["gpt-upstream", "claude-upstream"])
def test_streamed_tool_call_arguments(openai_client, model):
    stream = openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL], stream=True
    )
    calls, finish = {}, None
    for chunk in stream:
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for tc in c.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
                entry["id"] = tc.id or entry["id"]
                if tc.function and tc.function.name:
                    entry["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    entry["args"] += tc.function.arguments
    assert finish == "tool_calls"
    assert len(calls) == 1
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert json.loads(calls[0]["args"]) == {"location": "Paris"}


def test_builtin_mock_is_deterministic(openai_client):
    r = openai_client.chat.completions.create(model="fixed-mock", messages=[{"role": "user", "content": "a"}])
    assert r.choices[0].message.content == "fixed answer"
    r = openai_client.chat.completions.create(model="builtin-mock", messages=[{"role": "user", "content": "abc"}])
    assert r.choices[0].message.content.endswith("You said: abc")


@pytest.mark.parametrize("model", ["embed-upstream", "builtin-mock"])
def test_embeddings_float_and_base64(openai_client, model):
    # The SDK asks for base64 by default and decodes it.
    r = openai_client.embeddings.create(model=model, input=["one", "two"])
    assert [d.index for d in r.data] == [0, 1]
    assert len(r.data[0].embedding) > 0
    assert r.usage.prompt_tokens > 0
    f = openai_client.embeddings.create(model=model, input="one", encoding_format="float")
    assert f.data[0].embedding == pytest.approx(r.data[0].embedding, rel=1e-6)


def test_embeddings_raw_base64_decodes_to_floats(openai_client):
    raw = openai_client.embeddings.with_raw_response.create(
        model="builtin-mock", input="x", encoding_format="base64"
    ).http_response.json()
    blob = base64.b64decode(raw["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(blob) // 4}f", blob)
    assert abs(sum(v * v for v in floats) - 1.0) < 1e-3


def test_models_list(openai_client):
    ids = {m.id for m in openai_client.models.list()}
    assert {"gpt-upstream", "claude-upstream", "azure-gpt", "builtin-mock"} <= ids


def test_response_headers_name_the_deployment(openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="gpt-upstream", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-litellm-model-group"] == "gpt-upstream"
    assert raw.headers["x-litellm-model-id"]
    assert raw.headers["x-litellm-call-id"]


def test_wrong_key_is_401(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model="gpt-upstream", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401
    assert e.value.body["type"] == "authentication_error"


def test_unknown_model_is_404_naming_it(openai_client):
    with pytest.raises(openai.NotFoundError) as e:
        openai_client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "no-such-model" in e.value.message
    assert "gpt-upstream" in e.value.message  # lists what exists


def test_missing_messages_is_400(openai_client):
    with pytest.raises(openai.BadRequestError) as e:
        openai_client.chat.completions.create(model="gpt-upstream", messages=None)  # type: ignore[arg-type]
    assert e.value.body["param"] == "messages"
