"""The shipped Grafana dashboards (`deploy/grafana/dashboards/*.json`) against a running
stack: every metric any of their queries uses is exported by the control plane or a data
plane once traffic has gone through (successes, a stream, retries, fallbacks that serve and
that fail, a cooldown, Redis, a cache miss and hit, a learned strategy's fallback, a key
whose team and user have budgets and rate limits)."""

import re
import sys
import time

import httpx
from conftest import ROOT
from stack import STACK_MASTER_KEY, Redis, wait_until

sys.path.insert(0, str(ROOT / "tests"))
from promql import dashboard_queries, promql_labels, promql_metrics  # noqa: E402

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))


def exported(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M)}


def labels_of(text: str) -> dict[str, set[str]]:
    """Each exported metric's label names."""
    out: dict[str, set[str]] = {}
    for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", text, re.M):
        out.setdefault(m.group(1), set()).update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2)))
    return out


def test_the_extractor_reads_names_not_labels():
    expr = ('sum by (litellm_model_name, model_id) (rate(litellm_deployment_failure_responses_total'
            '{model_id=~"$m"}[5m])) / sum(litellm_proxy_total_requests_metric_total)')
    assert promql_metrics(expr) == {"litellm_deployment_failure_responses_total",
                                    "litellm_proxy_total_requests_metric_total"}
    assert promql_labels(expr, "{{model_id}}") == {"litellm_model_name", "model_id"}


def test_every_metric_a_dashboard_queries_is_exported(make_stack, mock_provider, tmp_path):
    assert DASHBOARDS, "no dashboards shipped"
    queries = [(d.name, expr, legend) for d in DASHBOARDS for _, expr, legend in dashboard_queries(d)]
    wanted = {}
    for board, expr, _ in queries:
        for name in promql_metrics(expr):
            wanted.setdefault(name, board)
    assert wanted

    base = f"{mock_provider}/v1"
    config = f"""
model_list:
  - model_name: good
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{base}", api_key: sk-k, rpm: 10000, tpm: 10000000}}
  - model_name: flaky
    litellm_params: {{model: openai/gpt-4o-dash-flaky, api_base: "{base}", api_key: sk-k}}
  - model_name: broken
    litellm_params: {{model: openai/gpt-4o-dash-broken, api_base: "{base}", api_key: sk-k}}
  - model_name: pair
    litellm_params: {{model: openai/gpt-4o-dash-pair-bad, api_base: "{base}", api_key: sk-k}}
  - model_name: pair
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{base}", api_key: sk-k}}
router_settings:
  num_retries: 1
  allowed_fails: 1
  cooldown_time: 30
  fallbacks: [{{flaky: [good]}}, {{broken: [flaky]}}]
  # A learned strategy without its model: its fallback (the default strategy) routes, and
  # the decisions and the failed load are counted.
  routing_strategy: llmrouter-knn
  routing_strategy_args: {{model_path: {tmp_path / "no-router-model"}, fallback_strategy: simple-shuffle}}
litellm_settings:
  cache: true
  cache_params: {{type: local, mode: default_off}}
general_settings:
  master_key: {STACK_MASTER_KEY}
"""
    httpx.post(f"{mock_provider}/__faults", json={"gpt-4o-dash-flaky": {"status": 500},
                                                 "gpt-4o-dash-broken": {"status": 500},
                                                 "gpt-4o-dash-pair-bad": {"status": 500}}).raise_for_status()
    redis = Redis(tmp_path)
    redis.start()
    try:
        s = make_stack(config=config)
        dp = s.dataplane("dp-dash", redis=redis)
        # A key, its team and its user with budgets and rate limits: their gauges.
        admin = s.admin()
        admin.ok("POST", "/team/new", json={"team_id": "t-dash", "max_budget": 100,
                                           "rpm_limit": 1000, "tpm_limit": 1000000})
        admin.ok("POST", "/user/new", json={"user_id": "u-dash", "max_budget": 50})
        key = admin.ok("POST", "/key/generate", json={
            "key_alias": "dash", "team_id": "t-dash", "user_id": "u-dash", "max_budget": 10,
            "rpm_limit": 1000, "tpm_limit": 1000000})["key"]
        wait_until(lambda: dp.chat(key, model="good").status_code == 200, what="key accepted")
        headers = {"Authorization": f"Bearer {key}"}
        ask = [{"role": "user", "content": "hi"}]
        with httpx.Client(timeout=10, headers=headers) as c:
            assert c.post(f"{dp.url}/v1/chat/completions", json={"model": "flaky", "messages": ask}).status_code == 200
            assert c.post(f"{dp.url}/v1/chat/completions", json={"model": "broken", "messages": ask}).status_code >= 500
            with c.stream("POST", f"{dp.url}/v1/chat/completions",
                          json={"model": "good", "messages": ask, "stream": True}) as r:
                assert r.status_code == 200 and "[DONE]" in r.read().decode()
            assert c.post(f"{dp.url}/v1/chat/completions", json={"model": "good", "messages": "x"}).status_code == 400
            # The cache is asked for: a miss, then a hit.
            for _ in range(2):
                assert c.post(f"{dp.url}/v1/chat/completions", json={
                    "model": "good", "messages": [{"role": "user", "content": "cache me"}],
                    "cache": {"use-cache": True}}).status_code == 200
            # Two failures of one deployment of a pair (more than allowed_fails) cool it down.
            for _ in range(10):
                assert c.post(f"{dp.url}/v1/chat/completions", json={"model": "pair", "messages": ask}).status_code == 200
        # The control plane has ingested the usage.
        wait_until(lambda: s.sql("SELECT count(*) FROM spend_logs")[0][0] >= 3, what="usage ingested")
        time.sleep(0.2)
        text = httpx.get(f"{dp.url}/metrics", timeout=5).text + httpx.get(f"{s.cp.http}/metrics", timeout=5).text
    finally:
        httpx.post(f"{mock_provider}/__faults", json={}).raise_for_status()
        redis.stop()
    missing = {name: board for name, board in wanted.items() if name not in exported(text)}
    assert not missing, f"queried by a dashboard, not exported: {missing}"
    # Every label a query matches on, groups by or names in its legend is on the metrics it
    # reads (`le` aside, and the target labels Prometheus adds when it scrapes).
    have = labels_of(text)
    unlabelled = []
    for board, expr, legend in queries:
        names = promql_metrics(expr)
        on = set().union(*(have.get(n, set()) for n in names))
        for label in promql_labels(expr, legend) - on - {"le", "instance", "job"}:
            unlabelled.append((board, label, sorted(names)))
    assert not unlabelled, f"labels the metrics do not have: {unlabelled}"
