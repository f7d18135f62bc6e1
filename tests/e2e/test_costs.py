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
