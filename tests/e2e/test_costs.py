"""Request cost: prompt tokens read from the provider's cache are priced at the cached
price (the built-in table's, or `model_info.cache_read_input_token_cost`)."""

import json

import pytest

from test_routing import Gateway, deployment, mock  # noqa: F401  (the module's fixture)


@pytest.fixture
def gateway(tmp_path):
    started = []

    def start(config: dict, extra=()):
        g = Gateway(tmp_path, config, extra)
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


def test_a_price_file_prices_models_the_table_does_not_know(mock, gateway, tmp_path):
    """`--model-prices` reads LiteLLM's model_prices_and_context_window.json format: a
    deployment without prices of its own is priced from it (`<provider>/<model>` or
    `<model>`) before the built-in table; a deployment's own prices still come first; a
    file that is not the format stops the data plane at startup, naming it."""
    import subprocess

    from test_routing import BIN_DIR

    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({
        "sample_spec": {"max_tokens": "set to max_output_tokens if provider specifies it"},
        # Overrides the built-in gpt-4o-mini price.
        "gpt-4o-mini": {"input_cost_per_token": 3e-6, "output_cost_per_token": 7e-6,
                        "litellm_provider": "openai", "mode": "chat"},
        "private-model-x": {"input_cost_per_token": 2e-6, "output_cost_per_token": 5e-6},
        "dall-e-3": {"output_cost_per_image": 0.04},
    }))
    g = gateway({"model_list": [
        deployment(mock, "file", "price-file", model_info={"base_model": "gpt-4o-mini"}),
        deployment(mock, "private", "price-private", model_info={"base_model": "private-model-x"}),
        deployment(mock, "own", "price-own", input_cost_per_token=1e-6, output_cost_per_token=1e-6,
                   model_info={"base_model": "gpt-4o-mini"}),
        deployment(mock, "unpriced", "price-unpriced", model_info={"base_model": "no-such-model"}),
    ]}, extra=("--model-prices", str(prices)))
    for model, (input_, output) in {"file": (3e-6, 7e-6), "private": (2e-6, 5e-6),
                                    "own": (1e-6, 1e-6), "unpriced": (0, 0)}.items():
        r = g.chat(model, "price me")
        assert r.status_code == 200, r.text
        u = r.json()["usage"]
        expected = u["prompt_tokens"] * input_ + u["completion_tokens"] * output
        assert float(r.headers["x-litellm-response-cost"]) == pytest.approx(expected, rel=1e-9), model

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    cfg = tmp_path / "check.yaml"
    cfg.write_text(json.dumps({"model_list": [deployment(mock, "file", "price-file")]}))
    out = subprocess.run([str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg),
                          "--listen", "127.0.0.1:1", "--model-prices", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out
    assert "bad.json" in out.stderr and "model price JSON" in out.stderr, out.stderr


def metric(text: str, name: str, **labels) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_cache_writes_and_reasoning_are_priced_counted_and_reported(mock, gateway):
    """Anthropic's cache writes cost 1.25 times its input price and its cache reads the
    cached price, streamed or not, through either API; reasoning tokens are reported.
    Both go into LiteLLM's token-detail counters. Each deployment's rpm and tpm are
    gauges of their own."""
    import httpx

    mock.faults(**{"claude-sonnet-4-5-cachetest": {"cached_tokens": 100, "cache_write_tokens": 200},
                   "reasoner": {"reasoning_tokens": 3}})
    g = gateway({"model_list": [
        {"model_name": "claude", "model_info": {"id": "claude-dep"},
         "litellm_params": {"model": "anthropic/claude-sonnet-4-5-cachetest", "api_base": mock.url,
                            "api_key": "sk-upstream", "rpm": 600, "tpm": 90000}},
        deployment(mock, "thinker", "reasoner", input_cost_per_token=1e-6, output_cost_per_token=2e-6),
    ]})
    # Built-in claude-sonnet-4-5: 3 in, 0.30 cached, 3.75 written, 15 out per 1M tokens.
    price = lambda u: ((u["prompt_tokens"] - 300) * 3 + 100 * 0.30 + 200 * 3.75
                       + u["completion_tokens"] * 15) / 1e6
    prompt = "word " * 400  # 500 prompt tokens by the mock's count
    r = g.chat("claude", prompt)
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    assert u["prompt_tokens"] == 500 and u["prompt_tokens_details"]["cached_tokens"] == 100
    assert u["cache_creation_input_tokens"] == 200
    assert float(r.headers["x-litellm-response-cost"]) == pytest.approx(price(u), rel=1e-9)
    # Streamed: the delta restates the prompt's usage; the cache figures stay.
    with httpx.stream("POST", f"{g.url}/v1/chat/completions", timeout=10,
                      headers={"Authorization": "Bearer sk-e2e-master"},
                      json={"model": "claude", "stream": True, "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": prompt}]}) as s:
        chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    su = chunks[-1]["usage"]
    assert (su["prompt_tokens"], su["cache_creation_input_tokens"]) == (500, 200)
    assert su["cost"] == pytest.approx(price(su), rel=1e-9)
    # Through the Anthropic API, the client sees Anthropic's own split.
    a = httpx.post(f"{g.url}/v1/messages", timeout=10, headers={"x-api-key": "sk-e2e-master"},
                   json={"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": prompt}]})
    assert a.status_code == 200, a.text
    au = a.json()["usage"]
    assert (au["input_tokens"], au["cache_read_input_tokens"], au["cache_creation_input_tokens"]) == (200, 100, 200)

    r = g.chat("thinker", "think about it", reasoning_effort="low")
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3

    m = g.metrics()
    assert metric(m, "litellm_input_cache_creation_tokens_metric_total", model_id="claude-dep") == 600
    assert metric(m, "litellm_input_cached_tokens_metric_total", model_id="claude-dep") == 300
    assert metric(m, "litellm_output_reasoning_tokens_metric_total", model_id="reasoner") == 3
    assert metric(m, "litellm_provider_cache_creation_input_tokens_metric_total", model_id="claude-dep") == 600
    assert metric(m, "litellm_provider_cache_read_input_tokens_metric_total",
                  model="claude-sonnet-4-5-cachetest", api_provider="anthropic") == 300
    assert metric(m, "litellm_deployment_rpm_limit", model_id="claude-dep", model_group="claude") == 600
    assert metric(m, "litellm_deployment_tpm_limit", model_id="claude-dep") == 90000
    # A deployment without limits has no limit series.
    limits = [line for line in m.splitlines() if line.startswith("litellm_deployment_rpm_limit{")]
    assert len(limits) == 1 and 'model_id="claude-dep"' in limits[0], limits
