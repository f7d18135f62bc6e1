"""Health, metrics, and the binary's command line."""

import subprocess

import httpx
from conftest import BIN_DIR, ROOT
from stack import samples, total


def test_health(gateway):
    r = httpx.get(f"{gateway.url}/health/liveliness")
    assert r.status_code == 200
    r = httpx.get(f"{gateway.url}/health/readiness")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["snapshot_version"] == 0
    assert body["models"] >= 5


# LiteLLM's label sets (litellm 1.110.2), in its order; the exposition sorts them.
PROXY_TOTAL = {"end_user", "hashed_api_key", "api_key_alias", "requested_model", "team", "team_alias", "user",
               "status_code", "user_email", "route", "client_ip", "user_agent", "model_id", "api_provider",
               "org_id", "org_alias"}
TOKENS = {"end_user", "hashed_api_key", "api_key_alias", "model", "team", "team_alias", "user", "user_email",
          "requested_model", "model_id", "api_provider", "org_id", "org_alias"}
TOTAL_LATENCY = {"model_group", "end_user", "hashed_api_key", "api_key_alias", "requested_model", "team",
                 "team_alias", "user", "model", "model_id", "api_provider", "service_tier", "org_id", "org_alias"}
LITELLM_BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2", "5", "10", "30", "60",
                   "120", "300", "420", "600", "+Inf"]


def test_metrics_count_requests_tokens_and_latency_with_litellms_labels(gateway, openai_client):
    openai_client.chat.completions.create(model="fixed-mock", messages=[{"role": "user", "content": "count me"}])
    text = httpx.get(f"{gateway.url}/metrics").text
    requests = samples(text, "litellm_proxy_total_requests_metric_total")
    assert requests and all(set(l) == PROXY_TOTAL for l, _ in requests)
    assert total(text, "litellm_proxy_total_requests_metric_total", api_provider="mock",
                 requested_model="fixed-mock", status_code="200", route="chat", end_user="None") >= 1
    tokens = samples(text, "litellm_output_tokens_metric_total")
    assert tokens and all(set(l) == TOKENS for l, _ in tokens)
    assert total(text, "litellm_output_tokens_metric_total", api_provider="mock", requested_model="fixed-mock") >= 2
    assert [v for l, v in samples(text, "litellm_spend_metric_total") if l["requested_model"] == "fixed-mock"]
    buckets = samples(text, "litellm_request_total_latency_metric_bucket")
    assert buckets and all(set(l) - {"le"} == TOTAL_LATENCY for l, _ in buckets)
    mine = [l for l, _ in buckets if l["requested_model"] == "fixed-mock"]
    assert [l["le"] for l in mine][:len(LITELLM_BUCKETS)] == LITELLM_BUCKETS
    assert total(text, "litellm_request_total_latency_metric_count", requested_model="fixed-mock") >= 1
    for name in ("litellm_llm_api_latency_metric_count", "litellm_overhead_latency_metric_count",
                 "litellm_deployment_success_responses_total", "litellm_deployment_total_requests_total",
                 "litellm_requests_metric_total", "litellm_deployment_latency_per_output_token_count"):
        assert total(text, name) >= 1, name
    # This scrape is itself in flight.
    assert total(text, "litellm_in_flight_requests") >= 1
    assert "routeiq_snapshot_version 0" in text


def test_failed_requests_are_counted(gateway):
    httpx.post(f"{gateway.url}/v1/chat/completions", json={})
    text = httpx.get(f"{gateway.url}/metrics").text
    assert total(text, "litellm_proxy_failed_requests_metric_total", exception_class="authentication_error",
                 exception_status="401", hashed_api_key="None") >= 1


def run_binary(*args, env=None):
    return subprocess.run([str(BIN_DIR / "routeiq-dataplane"), *args], capture_output=True, text=True, timeout=30, env=env)


def test_example_config_checks_ok():
    r = run_binary("--config", str(ROOT / "config" / "example.yaml"), "--check")
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_malformed_config_exits_nonzero_with_yaml_path(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      rpm: many\n")
    r = run_binary("--config", str(cfg), "--check")
    assert r.returncode == 2
    assert "model_list[0].litellm_params.rpm" in r.stderr
    assert str(cfg) in r.stderr


def test_missing_env_var_exits_naming_it(tmp_path):
    cfg = tmp_path / "env.yaml"
    cfg.write_text("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      api_key: os.environ/ROUTEIQ_TEST_UNSET_VAR\n")
    r = run_binary("--config", str(cfg), "--check", env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2
    assert "ROUTEIQ_TEST_UNSET_VAR" in r.stderr
    assert "model_list[0].litellm_params.api_key" in r.stderr


def start_example(**env) -> subprocess.Popen:
    """The example config's gateway, with `env` added, once its API listener answers."""
    import os
    import time

    p = subprocess.Popen(
        [str(BIN_DIR / "routeiq-dataplane"), "--config", str(ROOT / "config" / "example.yaml")],
        env=dict(os.environ, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{env['ROUTEIQ_LISTEN']}"
    for _ in range(200):
        try:
            assert httpx.get(f"{url}/health/liveliness", timeout=0.5).status_code == 200
            return p
        except httpx.HTTPError:
            time.sleep(0.05)
    p.terminate()
    p.wait(timeout=10)
    raise AssertionError("gateway did not listen on ROUTEIQ_LISTEN")


def test_listen_env_var():
    from conftest import free_port

    p = start_example(ROUTEIQ_LISTEN=f"127.0.0.1:{free_port()}")
    p.terminate()
    p.wait(timeout=10)


def test_metrics_listener_serves_the_api_listeners_metrics_and_nothing_else():
    """LiteLLM's PROMETHEUS_METRICS_PORT: a second listener for the scraper. It reports the
    API listener's requests, is not itself counted, and answers nothing but /metrics."""
    import time

    from conftest import free_port

    api, scrape = free_port(), free_port()
    p = start_example(ROUTEIQ_LISTEN=f"127.0.0.1:{api}", PROMETHEUS_METRICS_PORT=str(scrape))
    try:
        metrics = f"http://127.0.0.1:{scrape}/metrics"
        for _ in range(200):
            try:
                httpx.get(metrics, timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        assert httpx.post(f"http://127.0.0.1:{api}/v1/chat/completions", json={}).status_code == 401
        # The failed request is reported once its logging ran; no scrape is ever in flight.
        for _ in range(100):
            text = httpx.get(metrics).text
            if total(text, "litellm_proxy_failed_requests_metric_total", exception_status="401") >= 1:
                break
            time.sleep(0.05)
        assert total(text, "litellm_proxy_failed_requests_metric_total", exception_status="401") == 1
        assert total(text, "litellm_proxy_total_requests_metric_total") == 1
        assert total(text, "litellm_in_flight_requests") == 0
        assert httpx.get(f"{metrics}/").status_code == 200
        r = httpx.get(f"http://127.0.0.1:{scrape}/v1/models")
        assert r.status_code == 404 and "no route for GET /v1/models" in r.json()["error"]["message"]
        assert httpx.post(metrics).status_code == 405
        # The API listener keeps its own /metrics.
        assert "litellm_proxy_failed_requests_metric_total" in httpx.get(f"http://127.0.0.1:{api}/metrics").text
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_a_metrics_port_that_is_not_a_free_port_exits_naming_it():
    import os

    example = str(ROOT / "config" / "example.yaml")
    r = run_binary("--config", example, "--check", env=dict(os.environ, PROMETHEUS_METRICS_PORT="metrics"))
    assert r.returncode == 2
    assert "PROMETHEUS_METRICS_PORT" in r.stderr
    # The API's own port: refused at once, not a bind failure later.
    r = run_binary("--config", example, "--check", "--listen", "127.0.0.1:4555",
                   env=dict(os.environ, PROMETHEUS_METRICS_PORT="4555"))
    assert r.returncode == 2 and "port of its own" in r.stderr
    # Empty is unset, as for the other variables.
    r = run_binary("--config", example, "--check", env=dict(os.environ, PROMETHEUS_METRICS_PORT=""))
    assert r.returncode == 0, r.stderr


UNKNOWN_PROVIDER = """model_list:
  - model_name: ok
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: sk-test
  - model_name: on-sagemaker
    litellm_params:
      model: sagemaker/my-endpoint
      aws_region_name: us-east-1
      api_key: sk-not-for-openai
"""


def test_unknown_provider_prefix_fails_the_check_naming_the_entry(tmp_path):
    """A prefix the gateway does not speak is refused, never sent to OpenAI with the
    deployment's key."""
    cfg = tmp_path / "unknown.yaml"
    cfg.write_text(UNKNOWN_PROVIDER)
    r = run_binary("--config", str(cfg), "--check")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "model_list[1].litellm_params.model" in r.stderr, r.stderr
    assert "unknown provider `sagemaker`" in r.stderr, r.stderr
    assert "sk-not-for-openai" not in r.stderr
