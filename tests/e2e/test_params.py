"""Request parameters and the OpenAI-compatible family's quirks (LiteLLM's `drop_params`),
with the official openai SDK: a parameter the provider refuses is a clear 400 unless
`drop_params` is on (request, deployment or `litellm_settings`), then it is left out;
`additional_drop_params` are always left out; renames (Mistral's `random_seed`) apply;
`drop_params` itself never goes upstream."""

import httpx
import openai
import pytest

from test_routing import MASTER_KEY, gateway, mock  # noqa: F401  (the module's fixtures)


def compatible(mock, group: str, prefix: str, upstream: str, **params) -> dict:
    return {
        "model_name": group,
        "litellm_params": {"model": f"{prefix}/{upstream}", "api_base": f"{mock.url}/v1",
                           "api_key": "sk-upstream", **params},
        "model_info": {"id": upstream},
    }


def last(mock):
    return httpx.get(f"{mock.url}/__last_request").json()


def sent(mock) -> dict:
    return last(mock)["body"]


def client(g) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_refused_parameters_are_a_400_unless_dropped(mock, gateway):
    g = gateway({"model_list": [
        compatible(mock, "groq", "groq", "llama-3.1-8b-instant"),
        compatible(mock, "gpt", "openai", "gpt-4o-mini"),
    ]})
    c = client(g)
    before = last(mock)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="groq", messages=[{"role": "user", "content": "hi"}],
                                  logprobs=True, top_logprobs=2, temperature=0.2)
    err = e.value.body
    assert e.value.status_code == 400
    assert err["param"] == "logprobs" and err["code"] == "unsupported_params", err
    assert "`groq` does not support the parameters `logprobs`, `top_logprobs`" in err["message"]
    assert "drop_params" in err["message"]
    assert last(mock) == before, "nothing was sent upstream"

    # The request's own drop_params: left out, the rest (provider extensions too) kept.
    r = c.chat.completions.create(model="groq", messages=[{"role": "user", "content": "hi"}],
                                  logprobs=True, top_logprobs=2, temperature=0.2,
                                  extra_body={"drop_params": True, "top_k": 5})
    assert r.choices[0].message.content
    body = sent(mock)
    assert body["model"] == "llama-3.1-8b-instant"
    assert body["temperature"] == 0.2 and body["top_k"] == 5
    for gone in ("logprobs", "top_logprobs", "drop_params"):
        assert gone not in body, body

    # OpenAI takes them; drop_params still never goes upstream.
    c.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}],
                              logprobs=True, extra_body={"drop_params": True})
    body = sent(mock)
    assert body["logprobs"] is True and "drop_params" not in body


def test_deployment_drop_params_renames_and_additional_drops(mock, gateway):
    g = gateway({"model_list": [
        compatible(mock, "mistral", "mistral", "mistral-small-latest", drop_params=True,
                   additional_drop_params=["temperature"]),
    ]})
    c = client(g)
    r = c.chat.completions.create(
        model="mistral", messages=[{"role": "user", "content": "hi"}], seed=7, user="u-1",
        logit_bias={"50256": -100}, temperature=0.5, max_completion_tokens=20,
        extra_body={"safe_prompt": True})
    assert r.choices[0].message.content
    body = sent(mock)
    assert body["random_seed"] == 7 and body["max_tokens"] == 20 and body["safe_prompt"] is True
    for gone in ("seed", "user", "logit_bias", "temperature", "max_completion_tokens"):
        assert gone not in body, body

    # A stream: Mistral's row has no stream_options, so the gateway does not ask for it.
    chunks = list(c.chat.completions.create(
        model="mistral", messages=[{"role": "user", "content": "stream please"}], stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.startswith("mock reply to:")
    body = sent(mock)
    assert body["stream"] is True and "stream_options" not in body


def test_litellm_settings_drop_params_applies_to_every_deployment(mock, gateway):
    g = gateway({
        "model_list": [compatible(mock, "perplexity", "perplexity", "sonar"),
                       compatible(mock, "strict", "perplexity", "sonar-pro", drop_params=False)],
        "litellm_settings": {"drop_params": True},
    })
    c = client(g)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    c.chat.completions.create(model="perplexity", messages=[{"role": "user", "content": "hi"}],
                              tools=tools, n=1, stop=["x"], temperature=0.1)
    body = sent(mock)
    assert body["temperature"] == 0.1
    for gone in ("tools", "n", "stop"):
        assert gone not in body, body
    # A deployment's own `drop_params: false` wins over litellm_settings.
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="strict", messages=[{"role": "user", "content": "hi"}],
                                  tools=tools)
    assert e.value.body["param"] == "tools"
