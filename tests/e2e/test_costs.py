"""Request cost: prompt tokens read from the provider's cache are priced at the cached
price (the built-in table's, or `model_info.cache_read_input_token_cost`)."""

import pytest

from test_routing import Gateway, deployment, mock  # noqa: F401  (the module's fixture)


@pytest.fixture
def gateway(tmp_path):
    started = []

    def start(config: dict):
        g = Gateway(tmp_path, config)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


def test_cached_prompt_tokens_are_priced_lower(mock, gateway):
    mock.faults(cache_table={"cached_tokens": 100}, cache_own={"cached_tokens": 100})
    g = gateway({"model_list": [
        # Built-in gpt-4o-mini prices: 0.15 / 0.60 per 1M, 0.075 cached.
        deployment(mock, "table", "cache_table", model_info={"base_model": "gpt-4o-mini"}),
        deployment(mock, "own", "cache_own", input_cost_per_token=1e-6, output_cost_per_token=2e-6,
                   model_info={"cache_read_input_token_cost": 1e-7}),
    ]})
    prompt = "word " * 400  # 500 prompt tokens by the mock's count
    for model, (input_, cached, output) in {"table": (0.15e-6, 0.075e-6, 0.60e-6),
                                             "own": (1e-6, 1e-7, 2e-6)}.items():
        r = g.chat(model, prompt)
        assert r.status_code == 200, r.text
        u = r.json()["usage"]
        assert u["prompt_tokens_details"]["cached_tokens"] == 100
        expected = (u["prompt_tokens"] - 100) * input_ + 100 * cached + u["completion_tokens"] * output
        assert float(r.headers["x-litellm-response-cost"]) == pytest.approx(expected, rel=1e-9)


def test_streams_carry_their_cost_in_the_usage_chunk(mock, gateway):
    """A stream's headers go out before its cost is known: as LiteLLM does, the final
    usage chunk (stream_options.include_usage) carries `usage.cost`."""
    import json

    import httpx

    mock.faults(cache_own={"cached_tokens": 100})
    g = gateway({"model_list": [
        deployment(mock, "own", "cache_own", input_cost_per_token=1e-6, output_cost_per_token=2e-6,
                   model_info={"cache_read_input_token_cost": 1e-7}),
    ]})
    with httpx.stream("POST", f"{g.url}/v1/chat/completions", timeout=10,
                      headers={"Authorization": "Bearer sk-e2e-master"},
                      json={"model": "own", "stream": True, "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": "word " * 400}]}) as r:
        chunks = [json.loads(l[6:]) for l in r.iter_lines() if l.startswith("data: {")]
    u = chunks[-1]["usage"]
    expected = (u["prompt_tokens"] - 100) * 1e-6 + 100 * 1e-7 + u["completion_tokens"] * 2e-6
    assert u["cost"] == pytest.approx(expected, rel=1e-9), u
