"""The official `anthropic` SDK against `/v1/messages`: Anthropic deployments pass through,
OpenAI-format deployments are translated both ways."""

import anthropic
import pytest

TOOL = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
}


@pytest.mark.parametrize("model", ["claude-upstream", "gpt-upstream", "builtin-mock"])
def test_messages_create(anthropic_client, model):
    m = anthropic_client.messages.create(
        model=model, max_tokens=200, messages=[{"role": "user", "content": "hi claude"}]
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text"
    assert "hi claude" in m.content[0].text
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


def test_passthrough_keeps_anthropic_body(anthropic_client, gateway, mock_provider):
    anthropic_client.messages.create(
        model="claude-upstream",
        max_tokens=64,
        system="sys prompt",
        messages=[{"role": "user", "content": "x"}],
        extra_body={"top_k": 5},
    )
    sent = gateway.last_upstream_request(mock_provider)
    assert sent["path"] == "/v1/messages"
    assert sent["body"]["model"] == "claude-sonnet-4-5"
    assert sent["body"]["system"] == "sys prompt"
    assert sent["body"]["top_k"] == 5  # untouched fields survive


def test_anthropic_client_to_openai_is_translated(anthropic_client, gateway, mock_provider):
    anthropic_client.messages.create(
        model="gpt-upstream",
        max_tokens=64,
        system="sys prompt",
        messages=[{"role": "user", "content": "to openai"}],
        stop_sequences=["STOP"],
    )
    sent = gateway.last_upstream_request(mock_provider)
    assert sent["path"] == "/v1/chat/completions"
    body = sent["body"]
    assert body["messages"][0] == {"role": "system", "content": "sys prompt"}
    assert body["messages"][1] == {"role": "user", "content": "to openai"}
    assert body["max_tokens"] == 64
    assert body["stop"] == ["STOP"]


@pytest.mark.parametrize("model", ["claude-upstream", "gpt-upstream"])
def test_max_tokens_stop_reason(anthropic_client, model):
    m = anthropic_client.messages.create(
        model=model, max_tokens=2, messages=[{"role": "user", "content": "a long enough prompt here"}]
    )
    if model == "claude-upstream":
        assert m.stop_reason == "max_tokens"
    else:
        assert m.stop_reason in ("max_tokens", "end_turn")


@pytest.mark.parametrize("model", ["claude-upstream", "gpt-upstream", "builtin-mock"])
def test_streaming(anthropic_client, model):
    with anthropic_client.messages.stream(
        model=model, max_tokens=200, messages=[{"role": "user", "content": "stream to me"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "stream to me" in text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["claude-upstream", "gpt-upstream"])
def test_tool_use_round_trip(anthropic_client, model):
    messages = [{"role": "user", "content": "weather in Paris?"}]
    m = anthropic_client.messages.create(model=model, max_tokens=200, messages=messages, tools=[TOOL])
    assert m.stop_reason == "tool_use"
    tool = next(b for b in m.content if b.type == "tool_use")
    assert tool.name == "get_weather"
    assert tool.input == {"location": "Paris"}
    messages.append({"role": "assistant", "content": [b.model_dump() for b in m.content]})
    messages.append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "rainy"}]}
    )
    m2 = anthropic_client.messages.create(model=model, max_tokens=200, messages=messages, tools=[TOOL])
    assert m2.content[0].text == "tool result received: rainy"


@pytest.mark.parametrize("model", ["claude-upstream", "gpt-upstream"])
def test_streamed_tool_use(anthropic_client, model):
    with anthropic_client.messages.stream(
        model=model, max_tokens=200, messages=[{"role": "user", "content": "weather?"}], tools=[TOOL]
    ) as stream:
        final = stream.get_final_message()
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.input == {"location": "Paris"}
    assert final.stop_reason == "tool_use"


def test_bearer_auth_also_works(gateway):
    from conftest import MASTER_KEY

    client = anthropic.Anthropic(base_url=gateway.url, auth_token=MASTER_KEY, api_key=None, max_retries=0)
    m = client.messages.create(model="builtin-mock", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert m.content[0].text


def test_wrong_key_is_401_anthropic_shaped(gateway):
    client = anthropic.Anthropic(base_url=gateway.url, api_key="sk-nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        client.messages.create(model="builtin-mock", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "authentication_error"


def test_missing_max_tokens_to_openai_model_is_400(gateway):
    import httpx
    from conftest import MASTER_KEY

    r = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": MASTER_KEY},
        json={"model": "gpt-upstream", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "max_tokens"
