"""Legacy text completions (`/v1/completions`) with the official openai SDK: native to
OpenAI's completion models and to deployments whose `model_info.mode` is `completion`,
through chat for every other provider (streams included), with the same keys, fallbacks,
usage and cost as chat."""

import httpx
import openai
import pytest

from test_routing import MASTER_KEY, gateway, mock  # noqa: F401  (the module's fixtures)

PRICE_IN, PRICE_OUT = 1e-6, 2e-6


def config(mock) -> dict:
    return {
        "model_list": [
            {"model_name": "instruct",
             "litellm_params": {"model": "openai/gpt-3.5-turbo-instruct",
                                "api_base": f"{mock.url}/v1", "api_key": "sk-up",
                                "input_cost_per_token": PRICE_IN,
                                "output_cost_per_token": PRICE_OUT},
             "model_info": {"id": "gpt-3.5-turbo-instruct"}},
            {"model_name": "base",
             "litellm_params": {"model": "hosted_vllm/llama-base",
                                "api_base": f"{mock.url}/v1", "api_key": "k"},
             "model_info": {"id": "llama-base", "mode": "completion"}},
            {"model_name": "gpt",
             "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": f"{mock.url}/v1",
                                "api_key": "sk-up", "input_cost_per_token": PRICE_IN,
                                "output_cost_per_token": PRICE_OUT},
             "model_info": {"id": "gpt-4o-mini"}},
            {"model_name": "claude",
             "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_base": mock.url,
                                "api_key": "k"},
             "model_info": {"id": "claude-sonnet-4-5"}},
            {"model_name": "gemini",
             "litellm_params": {"model": "gemini/gemini-2.0-flash",
                                "api_base": f"{mock.url}/v1beta", "api_key": "g-key"},
             "model_info": {"id": "gemini-2.0-flash"}},
            {"model_name": "flaky",
             "litellm_params": {"model": "openai/gpt-3.5-turbo-instruct-flaky",
                                "api_base": f"{mock.url}/v1", "api_key": "sk-up"},
             "model_info": {"id": "instruct-flaky"}},
            {"model_name": "embedder",
             "litellm_params": {"model": "openai/text-embedding-3-small",
                                "api_base": f"{mock.url}/v1", "api_key": "k"},
             "model_info": {"id": "text-embedding-3-small", "mode": "embedding"}},
        ],
        "router_settings": {"num_retries": 0, "fallbacks": [{"flaky": ["claude"]}]},
    }


def last(mock) -> dict:
    return httpx.get(f"{mock.url}/__last_request").json()


def client(g) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_native_completions_with_usage_and_cost(mock, gateway):
    g = gateway(config(mock))
    raw = client(g).completions.with_raw_response.create(
        model="instruct", prompt="Say hello", max_tokens=3, echo=True)
    r = raw.parse()
    assert r.object == "text_completion"
    assert r.choices[0].text == "Say hello mock reply to:"
    assert r.choices[0].finish_reason == "length"
    cost = r.usage.prompt_tokens * PRICE_IN + r.usage.completion_tokens * PRICE_OUT
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(cost, rel=1e-9)
    sent = last(mock)
    assert sent["path"] == "/v1/completions"
    assert sent["body"]["model"] == "gpt-3.5-turbo-instruct" and sent["body"]["echo"] is True

    # Several prompts and token prompts go as they are to a native deployment.
    r = client(g).completions.create(model="base", prompt=["one", "two"], max_tokens=50)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[1].text == " mock reply to: two"
    assert last(mock)["body"]["model"] == "llama-base"
    r = client(g).completions.create(model="base", prompt=[1, 2, 3])
    assert r.choices[0].text.startswith(" mock reply to")


def test_native_stream_counts_usage(mock, gateway):
    g = gateway(config(mock))
    stream = client(g).completions.create(model="instruct", prompt="Say hello", stream=True,
                                          stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == " mock reply to: Say hello"
    assert chunks[-1].usage.completion_tokens == 5
    assert last(mock)["body"]["stream_options"] == {"include_usage": True}
    # Without the client asking, the gateway still asks for usage and drops the chunk.
    chunks = list(client(g).completions.create(model="instruct", prompt="Hi", stream=True))
    assert all(c.usage is None for c in chunks)
    assert last(mock)["body"]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("model,path", [
    ("gpt", "/v1/chat/completions"),
    ("claude", "/v1/messages"),
    ("gemini", "/v1beta/models/gemini-2.0-flash:generateContent"),
])
def test_through_chat(mock, gateway, model, path):
    g = gateway(config(mock))
    raw = client(g).completions.with_raw_response.create(
        model=model, prompt="Say hello", max_tokens=50, temperature=0.2)
    r = raw.parse()
    assert r.object == "text_completion"
    assert r.choices[0].text == "mock reply to: Say hello"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens > 0
    assert raw.headers["x-litellm-model-group"] == model
    sent = last(mock)
    assert sent["path"].startswith(path), sent["path"]
    assert "prompt" not in sent["body"]
    if model == "gpt":
        assert sent["body"]["messages"] == [{"role": "user", "content": "Say hello"}]
        assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(
            r.usage.prompt_tokens * PRICE_IN + r.usage.completion_tokens * PRICE_OUT)


@pytest.mark.parametrize("model", ["gpt", "claude", "gemini"])
def test_stream_through_chat(mock, gateway, model):
    g = gateway(config(mock))
    stream = client(g).completions.create(model=model, prompt="Say hello", stream=True,
                                          max_tokens=50, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "mock reply to: Say hello"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_fallback_and_errors(mock, gateway):
    g = gateway(config(mock))
    mock.faults(**{"gpt-3.5-turbo-instruct-flaky": {"status": 503}})
    try:
        raw = client(g).completions.with_raw_response.create(model="flaky", prompt="Say hi")
        assert raw.headers["x-litellm-model-id"] == "claude-sonnet-4-5"
        assert raw.parse().choices[0].text == "mock reply to: Say hi"
    finally:
        mock.faults()
    c = client(g)
    # Chat takes one prompt string; completion-only parameters need drop_params.
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="claude", prompt=["a", "b"])
    assert e.value.body["param"] == "prompt", e.value.body
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="claude", prompt="a", echo=True)
    assert (e.value.body["param"], e.value.body["code"]) == ("echo", "unsupported_params")
    r = c.completions.create(model="claude", prompt="a", echo=True,
                             extra_body={"drop_params": True})
    assert r.choices[0].text == "mock reply to: a"
    assert "echo" not in last(mock)["body"] and "drop_params" not in last(mock)["body"]
    for body, param in [({"model": "gpt"}, "prompt"), ({"model": "gpt", "prompt": []}, "prompt"),
                        ({"model": "gpt", "prompt": 7}, "prompt"),
                        ({"model": "gpt", "prompt": "a", "stream": "yes"}, "stream")]:
        r = httpx.post(f"{g.url}/v1/completions", json=body, timeout=10,
                       headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="embedder", prompt="a")
    assert e.value.body["code"] == "wrong_endpoint"
    for path in ("/completions", "/openai/v1/completions"):
        r = httpx.post(f"{g.url}{path}", json={"model": "gpt", "prompt": "x"}, timeout=10,
                       headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert r.status_code == 200 and r.json()["object"] == "text_completion"
    assert httpx.post(f"{g.url}/v1/completions", json={"model": "gpt", "prompt": "x"},
                      timeout=10).status_code == 401
