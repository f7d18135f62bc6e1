"""The shipped Grafana dashboards (`deploy/grafana/dashboards/*.json`) against a running
stack: every metric any of their queries uses is exported by the control plane or a data
plane once traffic has gone through (successes, a stream, retries, fallbacks that serve and
that fail, a cooldown, Redis)."""

import json
import re
import time
from pathlib import Path

import httpx
from conftest import ROOT
from stack import STACK_MASTER_KEY, Redis, wait_until

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))


def queries(dashboard: Path) -> list[str]:
    """Every PromQL expression and variable query of a dashboard."""
    out = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("expr", "query", "definition") and isinstance(v, str):
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for x in o:
                walk(x)

    walk(json.loads(dashboard.read_text()))
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names and matchers left out)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)                       # label matchers
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)      # grouping labels
    expr = re.sub(r"(label_values\(\s*[a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-zA-Z_]+\s*\)", r"\1)", expr)
    return set(re.findall(r"\b((?:litellm|routeiq)_[a-zA-Z0-9_:]+)", expr))


def exported(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M)}


def labels_of(text: str) -> dict[str, set[str]]:
    """Each exported metric's label names."""
    out: dict[str, set[str]] = {}
    for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", text, re.M):
        out.setdefault(m.group(1), set()).update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2)))
    return out


def grouping_labels(target: dict) -> set[str]:
    """The labels a panel target groups by or shows in its legend: `le` aside, and the
    target labels Prometheus adds when it scrapes (`instance`, `job`)."""
    expr = target.get("expr", "")
    found = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        found.update(x.strip() for x in group.split(",") if x.strip())
    found.update(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", target.get("legendFormat", "")))
    return found - {"le", "instance", "job"}


def targets(dashboard: Path) -> list[dict]:
    out = []

    def walk(o):
        if isinstance(o, dict):
            if isinstance(o.get("expr"), str):
                out.append(o)
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for x in o:
                walk(x)

    walk(json.loads(dashboard.read_text()))
    return out


def test_the_extractor_reads_names_not_labels():
    expr = ('sum by (litellm_model_name, model_id) (rate(litellm_deployment_failure_responses_total'
            '{model_id=~"$m"}[5m])) / label_values(litellm_proxy_total_requests_metric_total, requested_model)')
    assert metric_names(expr) == {"litellm_deployment_failure_responses_total",
                                  "litellm_proxy_total_requests_metric_total"}


def test_every_metric_a_dashboard_queries_is_exported(make_stack, mock_provider, tmp_path):
    assert DASHBOARDS, "no dashboards shipped"
    wanted = {}
    for d in DASHBOARDS:
        for expr in queries(d):
            for name in metric_names(expr):
                wanted.setdefault(name, d.name)
    assert wanted

    base = f"{mock_provider}/v1"
    config = f"""
model_list:
  - model_name: good
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{base}", api_key: sk-k}}
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
        key, _ = s.generate_key(key_alias="dash")
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
    # Every label a panel groups by or names in its legend is on the metrics it reads.
    have = labels_of(text)
    unlabelled = []
    for d in DASHBOARDS:
        for t in targets(d):
            names = metric_names(t["expr"])
            on = set().union(*(have.get(n, set()) for n in names)) if names else set()
            for label in grouping_labels(t) - on:
                unlabelled.append((d.name, label, sorted(names)))
    assert not unlabelled, f"grouped by labels the metrics do not have: {unlabelled}"
