"""Routing and resilience, end to end: standalone data planes (config.yaml) in front of a
mock provider whose deployments misbehave on request (`POST /__faults`, keyed by upstream
model name): HTTP errors with a given rate, 429 with retry-after, delays, broken streams,
context-window overflows. Connection refused is a deployment on a closed port."""

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import BIN_DIR, MASTER_KEY, Process, free_port, wait_http
from stack import samples

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    """A mock provider of this module's own, so its faults touch no other test."""
    port = free_port()
    p = Process([str(BIN_DIR / "routeiq-mock-provider"), "--listen", f"127.0.0.1:{port}"],
                tmp_path_factory.mktemp("rmock") / "mock.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", p.proc)
    yield Mock(url)
    p.stop()


class Mock:
    def __init__(self, url: str):
        self.url = url

    def faults(self, **by_model):
        httpx.post(f"{self.url}/__faults", json=by_model).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/__stats").json()


def deployment(mock: Mock, group: str, upstream: str, **params) -> dict:
    """A deployment of `group` whose upstream model (and id) is `upstream`."""
    model_info = params.pop("model_info", {})
    return {
        "model_name": group,
        "litellm_params": {"model": f"openai/{upstream}", "api_base": f"{mock.url}/v1",
                           "api_key": "sk-upstream", **params},
        "model_info": {"id": upstream, **model_info},
    }


class Gateway:
    def __init__(self, dir, config: dict, extra=()):
        cfg = dir / f"config-{free_port()}.yaml"
        config.setdefault("general_settings", {})["master_key"] = MASTER_KEY
        cfg.write_text(json.dumps(config))  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, ROUTEIQ_LOG="info")
        self.process = Process(
            [str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg),
             "--listen", f"127.0.0.1:{self.port}", *extra],
            dir / f"gateway-{self.port}.log", env=env)
        wait_http(f"{self.url}/health/liveliness", self.process.proc)

    def chat(self, model: str, content: str = "hello", timeout: float = 10, **body) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions", headers=AUTH, timeout=timeout,
                          json={"model": model, "messages": [{"role": "user", "content": content}], **body})

    def served_by(self, r: httpx.Response) -> str:
        assert r.status_code == 200, r.text
        return r.headers["x-litellm-model-id"]

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics").text

    def stop(self):
        self.process.stop()


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


def within_one_minute(seconds: float):
    """Waits for the next calendar minute when fewer than `seconds` are left in this one:
    failures and usage are counted per minute."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.1)


def shares(g: Gateway, model: str, n: int, workers: int = 1, **body) -> Counter:
    with ThreadPoolExecutor(workers) as pool:
        return Counter(pool.map(lambda _: g.served_by(g.chat(model, **body)), range(n)))


# ---- strategies ----


def test_simple_shuffle_follows_weights(mock, gateway):
    mock.faults()
    g = gateway({"model_list": [deployment(mock, "m", "w1", weight=1), deployment(mock, "m", "w3", weight=3)]})
    c = shares(g, "m", 400, workers=8)
    assert 0.65 < c["w3"] / 400 < 0.85, c


def test_least_busy_avoids_the_deployment_with_requests_in_flight(mock, gateway):
    mock.faults(lb_slow={"delay_ms": 400})
    g = gateway({"model_list": [deployment(mock, "m", "lb_slow"), deployment(mock, "m", "lb_fast")],
                 "router_settings": {"routing_strategy": "least-busy"}})
    started = time.monotonic()
    c = shares(g, "m", 120, workers=6)
    elapsed = time.monotonic() - started
    # The slow deployment holds each request 400 ms; the fast one frees up at once. Least-busy
    # sends to the slow one only while it has no more requests in flight than the fast one:
    # of 6 clients' requests, at most 3 at a time, one more when the data plane's two
    # threads decide at once on a tie. So over the run it can start at most 4 per 400 ms
    # (a random choice would give it about half of the 120).
    assert c["lb_slow"] <= 4 * (elapsed / 0.4 + 1), (c, elapsed)
    assert c["lb_fast"] > 2 * c["lb_slow"], c


def test_latency_based_routing_prefers_the_faster_deployment(mock, gateway):
    mock.faults(lat_slow={"delay_ms": 300}, lat_mid={"delay_ms": 100},
                bl_slow={"delay_ms": 400}, bl_mid={"delay_ms": 140}, bl_fast={"delay_ms": 100})
    g = gateway({"model_list": [deployment(mock, "m", "lat_slow"), deployment(mock, "m", "lat_mid"),
                                deployment(mock, "m", "lat_fast")],
                 "router_settings": {"routing_strategy": "latency-based-routing"}})
    c = shares(g, "m", 40)
    # Each is measured once (unmeasured go first), then the fastest takes the rest.
    assert c["lat_fast"] >= 37 and c["lat_slow"] == 1, c
    # With a buffer wide enough for `bl_mid` (100 ms + 60 %) and not `bl_slow`, both share.
    g2 = gateway({"model_list": [deployment(mock, "m", "bl_slow"), deployment(mock, "m", "bl_mid"),
                                 deployment(mock, "m", "bl_fast")],
                  "router_settings": {"routing_strategy": "latency-based-routing",
                                      "routing_strategy_args": {"lowest_latency_buffer": 0.6}}})
    c2 = shares(g2, "m", 40)
    assert c2["bl_mid"] > 5 and c2["bl_fast"] > 5 and c2["bl_slow"] == 1, c2


def test_cost_based_routing_picks_the_cheapest(mock, gateway):
    mock.faults()
    g = gateway({"model_list": [
        deployment(mock, "m", "pricey", input_cost_per_token=1e-5, output_cost_per_token=3e-5),
        deployment(mock, "m", "cheap", input_cost_per_token=1e-7, output_cost_per_token=2e-7),
    ], "router_settings": {"routing_strategy": "cost-based-routing"}})
    assert shares(g, "m", 30) == Counter({"cheap": 30})


def test_usage_based_routing_balances_tokens_and_respects_tpm(mock, gateway):
    mock.faults()
    g = gateway({"model_list": [deployment(mock, "m", "ub_a", tpm=100_000), deployment(mock, "m", "ub_b", tpm=100_000),
                                deployment(mock, "m", "ub_small", tpm=1000)],
                 "router_settings": {"routing_strategy": "usage-based-routing-v2"}})
    # Each request uses about 505 tokens (a 500-token prompt): the small deployment has
    # room for one; the other two take turns, the less used first.
    within_one_minute(20)
    c = shares(g, "m", 40, content="word " * 400, max_tokens=5)
    assert c["ub_small"] <= 1, c
    assert abs(c["ub_a"] - c["ub_b"]) <= 2, c


def test_tag_filtering(mock, gateway):
    mock.faults()
    g = gateway({"model_list": [deployment(mock, "m", "tag_fast", tags=["fast"]),
                                deployment(mock, "m", "tag_default", tags=["default"]),
                                deployment(mock, "m", "tag_other", tags=["batch"])],
                 "router_settings": {"enable_tag_filtering": True}})
    assert set(shares(g, "m", 20, tags=["fast"])) == {"tag_fast"}
    assert set(shares(g, "m", 20)) == {"tag_default"}
    assert set(shares(g, "m", 20, tags=["nope"])) == {"tag_default"}
    # The tags are the gateway's: the provider never sees them.
    assert "tags" not in httpx.get(f"{mock.url}/__last_request").json()["body"]
    r = g.chat("m", tags="fast")
    assert r.status_code == 400 and r.json()["error"]["param"] == "tags"


# ---- retries, fallbacks, cooldowns ----


def test_a_retry_lands_on_the_other_deployment(mock, gateway):
    mock.faults(rt_bad={"status": 500})
    g = gateway({"model_list": [deployment(mock, "m", "rt_bad"), deployment(mock, "m", "rt_good")],
                 "router_settings": {"num_retries": 1, "disable_cooldowns": True}})
    retried = 0
    for _ in range(20):
        r = g.chat("m")
        assert g.served_by(r) == "rt_good"
        retried += int(r.headers["x-litellm-attempted-retries"])
    assert retried == mock.stats()["rt_bad"]["requests"] > 0
    assert 'routeiq_retries_total{exception_class="internal_server",model_group="m"}' in g.metrics()


def test_connection_refused_and_429_are_retried_elsewhere(mock, gateway):
    mock.faults(rl_limited={"status": 429, "retry_after": 30})
    dead = {"model_name": "m", "litellm_params": {"model": "openai/dead", "api_base": f"http://127.0.0.1:{free_port()}/v1",
                                                  "api_key": "k"}, "model_info": {"id": "dead"}}
    g = gateway({"model_list": [dead, deployment(mock, "m", "rl_limited"), deployment(mock, "m", "rl_ok")],
                 "router_settings": {"num_retries": 2}})
    started = time.monotonic()
    assert set(shares(g, "m", 30)) == {"rl_ok"}
    # No waiting for retry-after: the retry went to another deployment.
    assert time.monotonic() - started < 5
    # A 429 cools its deployment down at once: it was tried once, then skipped.
    assert mock.stats()["rl_limited"]["requests"] == 1


# LiteLLM's label sets (litellm 1.110.2), in its order; the exposition sorts them.
FALLBACK_LABELS = {"requested_model", "fallback_model", "hashed_api_key", "api_key_alias", "team", "team_alias",
                   "exception_status", "exception_class", "model_id"}
FAILURE_LABELS = {"model_group", "requested_model", "litellm_model_name", "model_id", "api_base", "api_provider",
                  "exception_status", "exception_class", "hashed_api_key", "api_key_alias", "team", "team_alias",
                  "client_ip", "user_agent"}


def test_fallbacks_are_followed_in_order(mock, gateway):
    mock.faults(fb_primary={"status": 503}, fb_second={"status": 500})
    g = gateway({"model_list": [deployment(mock, "primary", "fb_primary"), deployment(mock, "second", "fb_second"),
                                deployment(mock, "third", "fb_third")],
                 "router_settings": {"num_retries": 0, "fallbacks": [{"primary": ["second", "third"]}]}})
    r = g.chat("primary")
    assert g.served_by(r) == "fb_third"
    assert r.headers["x-litellm-model-group"] == "third"
    assert r.headers["x-litellm-attempted-fallbacks"] == "2"
    s = mock.stats()
    assert s["fb_primary"]["requests"] == s["fb_second"]["requests"] == s["fb_third"]["requests"] == 1
    # LiteLLM's labels: the cause is the failure that started the fallbacks (the first
    # group's 503).
    [(labels, n)] = samples(g.metrics(), "litellm_deployment_successful_fallbacks_total")
    assert n == 1 and set(labels) == FALLBACK_LABELS
    assert (labels["requested_model"], labels["fallback_model"]) == ("primary", "third")
    assert (labels["exception_status"], labels["exception_class"]) == ("503", "internal_server")


def test_when_everything_fails_one_error_names_every_attempt(mock, gateway):
    mock.faults(ex_a={"status": 500}, ex_b={"status": 503})
    g = gateway({"model_list": [deployment(mock, "m", "ex_a"), deployment(mock, "backup", "ex_b")],
                 "router_settings": {"num_retries": 1, "fallbacks": [{"m": ["backup"]}]}})
    r = g.chat("m")
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["type"] == "overloaded_error"
    msg = err["message"]
    assert "all 4 attempts failed (2 retries, 1 fallbacks)" in msg, msg
    assert "deployment `ex_a` of model group `m`" in msg and "deployment `ex_b` of model group `backup`" in msg
    assert "mock fault 503 for ex_b" in msg


def test_bad_requests_are_neither_retried_nor_sent_elsewhere(mock, gateway):
    mock.faults(br_a={"status": 400})
    g = gateway({"model_list": [deployment(mock, "m", "br_a"), deployment(mock, "other", "br_b")],
                 "router_settings": {"num_retries": 3, "fallbacks": [{"m": ["other"]}]}})
    assert g.chat("m").status_code == 400
    assert mock.stats() == {"br_a": {"requests": 1, "failures": 1}}


def test_context_window_fallbacks(mock, gateway):
    mock.faults(cw_provider_small={"max_prompt_tokens": 50})
    g = gateway({"model_list": [
        deployment(mock, "small", "cw_small", model_info={"max_input_tokens": 50}),
        deployment(mock, "provider-small", "cw_provider_small"),
        deployment(mock, "big", "cw_big"),
    ], "router_settings": {"enable_pre_call_checks": True,
                           "context_window_fallbacks": [{"small": ["big"]}, {"provider-small": ["big"]}]}})
    long_prompt = "word " * 400
    # Pre-call check: the small deployment is never called.
    r = g.chat("small", long_prompt)
    assert g.served_by(r) == "cw_big"
    assert "cw_small" not in mock.stats()
    assert g.served_by(g.chat("small", "short")) == "cw_small"
    # The provider says the prompt is too long (OpenAI's context_length_exceeded).
    r = g.chat("provider-small", long_prompt)
    assert g.served_by(r) == "cw_big"
    assert mock.stats()["cw_provider_small"]["failures"] == 1
    # Without a fallback, the client gets the provider's 400.
    g2 = gateway({"model_list": [deployment(mock, "provider-small", "cw_provider_small")]})
    r = g2.chat("provider-small", long_prompt)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_content_policy_fallbacks(mock, gateway):
    mock.faults(cp_strict={"status": 400, "code": "content_policy_violation"})
    g = gateway({"model_list": [deployment(mock, "strict", "cp_strict"), deployment(mock, "lenient", "cp_lenient")],
                 "router_settings": {"content_policy_fallbacks": [{"strict": ["lenient"]}]}})
    assert g.served_by(g.chat("strict")) == "cp_lenient"


def test_cooldown_skips_a_failing_deployment_and_the_breaker_recovers(mock, gateway):
    mock.faults(cd_bad={"status": 500})
    g = gateway({"model_list": [deployment(mock, "m", "cd_bad"), deployment(mock, "m", "cd_good")],
                 "router_settings": {"num_retries": 1, "allowed_fails": 1, "cooldown_time": 1.5}})
    within_one_minute(10)
    for _ in range(20):
        g.served_by(g.chat("m"))
    # Two failures in the minute (more than allowed_fails) opened the breaker.
    assert mock.stats()["cd_bad"]["requests"] == 2
    base = f"{mock.url}/v1"
    state = f'litellm_deployment_state{{api_base="{base}",api_provider="openai",litellm_model_name="cd_bad",model_id="cd_bad"}}'
    assert f"{state} 2" in g.metrics()
    # LiteLLM names the deployment by its group on the cooldown counter.
    # exception_status is the status the attempt's error carries (the provider's 500 is
    # the gateway's 502).
    [(labels, n)] = samples(g.metrics(), "litellm_deployment_cooled_down_total")
    assert (labels, n) == ({"api_base": base, "api_provider": "openai", "exception_status": "502",
                            "litellm_model_name": "m", "model_id": "cd_bad"}, 1)
    [(labels, n)] = samples(g.metrics(), "litellm_deployment_failure_responses_total")
    assert n == 2 and set(labels) == FAILURE_LABELS
    assert (labels["model_group"], labels["requested_model"], labels["litellm_model_name"]) == ("m", "m", "cd_bad")
    assert (labels["exception_status"], labels["exception_class"]) == ("502", "internal_server")
    # Healthy again: after the cooldown one probe goes through, succeeds, and closes it.
    mock.faults()
    time.sleep(1.6)
    c = shares(g, "m", 40)
    assert c["cd_bad"] > 5, c
    assert f"{state} 0" in g.metrics()


def test_a_failed_probe_reopens_the_breaker(mock, gateway):
    mock.faults(pr_bad={"status": 500})
    g = gateway({"model_list": [deployment(mock, "m", "pr_bad"), deployment(mock, "m", "pr_good")],
                 "router_settings": {"num_retries": 1, "allowed_fails": 0, "cooldown_time": 2.5}})
    for _ in range(12):
        g.served_by(g.chat("m"))
    assert mock.stats()["pr_bad"]["requests"] == 1
    time.sleep(2.6)
    for _ in range(12):
        g.served_by(g.chat("m"))
    # Half-open: exactly one probe, which failed and reopened the breaker.
    assert mock.stats()["pr_bad"]["requests"] == 2


# ---- streams and timeouts ----


def stream_events(g: Gateway, model: str, timeout: float = 10) -> tuple[httpx.Response, list]:
    with httpx.stream("POST", f"{g.url}/v1/chat/completions", headers=AUTH, timeout=timeout,
                      json={"model": model, "stream": True, "messages": [{"role": "user", "content": "one two three four five six"}]}) as r:
        lines = [l for l in r.iter_lines() if l.startswith("data: ")]
    return r, [l[6:] for l in lines]


def test_a_mid_stream_failure_is_not_retried_and_ends_with_an_error_event(mock, gateway):
    mock.faults(ms_reset={"reset_after_chunks": 3, "chunk_delay_ms": 100})
    g = gateway({"model_list": [deployment(mock, "m", "ms_reset"), deployment(mock, "other", "ms_other")],
                 "router_settings": {"num_retries": 3, "fallbacks": [{"m": ["other"]}]}})
    r, events = stream_events(g, "m")
    assert r.status_code == 200
    assert r.headers["x-litellm-model-id"] == "ms_reset"
    contents = [json.loads(e) for e in events if e != "[DONE]"]
    assert any(c.get("choices") and c["choices"][0]["delta"].get("content") for c in contents)
    assert "error" in contents[-1], contents[-1]
    assert mock.stats() == {"ms_reset": {"requests": 1, "failures": 0}}


def test_a_stream_failing_before_its_first_chunk_is_retried(mock, gateway):
    mock.faults(sf_broken={"reset_after_chunks": 0})
    g = gateway({"model_list": [deployment(mock, "m", "sf_broken"), deployment(mock, "m", "sf_ok")],
                 "router_settings": {"num_retries": 2, "disable_cooldowns": True}})
    retries = 0
    for _ in range(12):
        r, events = stream_events(g, "m")
        assert r.headers["x-litellm-model-id"] == "sf_ok"
        assert events[-1] == "[DONE]"
        retries += int(r.headers["x-litellm-attempted-retries"])
    assert retries == mock.stats()["sf_broken"]["requests"] > 0


def test_timeouts_give_504_and_stream_timeout_bounds_each_chunk(mock, gateway):
    mock.faults(to_slow={"delay_ms": 3000}, to_drip={"chunk_delay_ms": 2000})
    g = gateway({"model_list": [deployment(mock, "slow", "to_slow", timeout=0.3),
                                deployment(mock, "drip", "to_drip")],
                 "router_settings": {"num_retries": 0, "stream_timeout": 0.5}})
    address = mock.url.removeprefix("http://")
    # One timer per attempt: the same message every time, naming the deployment and its
    # group, never the upstream's address.
    messages = set()
    for _ in range(8):
        started = time.monotonic()
        r = g.chat("slow")
        assert r.status_code == 504
        assert r.json()["error"]["type"] == "timeout_error"
        assert time.monotonic() - started < 2
        messages.add(r.json()["error"]["message"])
    assert len(messages) == 1, messages
    message = messages.pop()
    assert message.startswith("deployment `") and "` of model group `slow` did not answer within 0.3s" in message, message
    assert address not in message and "127.0.0.1" not in message, message
    # The first chunk comes at once; the next is 2 s away, past the 0.5 s stream_timeout.
    started = time.monotonic()
    r, events = stream_events(g, "drip")
    assert r.status_code == 200
    assert "error" in json.loads(events[-1])
    assert "timeout" in events[-1]
    assert "of model group `drip` sent nothing for 0.5s" in events[-1] and address not in events[-1]
    assert time.monotonic() - started < 2
    # A stream whose first chunk is late is a 504 before anything was sent.
    r = httpx.post(f"{g.url}/v1/chat/completions", headers=AUTH, timeout=10,
                   json={"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 504
    message = r.json()["error"]["message"]
    assert "of model group `slow` sent nothing for 0.5s" in message and address not in message, message


def test_load_with_one_deployment_failing_half_the_time_shows_clients_no_errors(mock, gateway):
    mock.faults(ld_flaky={"status": 500, "fail_rate": 0.5})
    g = gateway({"model_list": [deployment(mock, "m", "ld_flaky"), deployment(mock, "m", "ld_a"),
                                deployment(mock, "m", "ld_b")],
                 "router_settings": {"num_retries": 2, "cooldown_time": 1}}, extra=("--threads", "2"))
    with ThreadPoolExecutor(16) as pool:
        statuses = Counter(pool.map(lambda _: g.chat("m").status_code, range(600)))
    assert statuses == Counter({200: 600}), statuses
    assert mock.stats()["ld_flaky"]["failures"] > 0


def test_cooldowns_are_shared_through_redis(mock, gateway, tmp_path):
    from stack import Redis

    redis = Redis(tmp_path)
    redis.start()
    try:
        mock.faults(sh_bad={"status": 500})
        config = {"model_list": [deployment(mock, "m", "sh_bad"), deployment(mock, "m", "sh_good")],
                  "router_settings": {"num_retries": 1, "allowed_fails": 0, "cooldown_time": 30}}
        one = gateway(dict(config), extra=("--redis-url", redis.url))
        two = gateway(json.loads(json.dumps(config)), extra=("--redis-url", redis.url))
        for _ in range(12):
            one.served_by(one.chat("m"))
        assert mock.stats()["sh_bad"]["requests"] == 1
        time.sleep(0.6)  # two syncs
        for _ in range(20):
            assert two.served_by(two.chat("m")) == "sh_good"
        # The second data plane never called the failing deployment.
        assert mock.stats()["sh_bad"]["requests"] == 1
    finally:
        redis.stop()


def test_router_settings_reach_attached_data_planes(tmp_path, pb, mock):
    """The control plane stores router settings from its config and ships them in the
    snapshot: an attached data plane follows the fallbacks and retry settings."""
    from stack import STACK_MASTER_KEY, Stack

    mock.faults(at_primary={"status": 500})
    s = Stack(tmp_path, pb, start=False)
    try:
        (tmp_path / "config.yaml").write_text(json.dumps({
            "model_list": [deployment(mock, "primary", "at_primary"), deployment(mock, "backup", "at_backup")],
            "router_settings": {"num_retries": 1, "fallbacks": [{"primary": ["backup"]}],
                                "routing_strategy": "least-busy"},
            "general_settings": {"master_key": STACK_MASTER_KEY},
        }))
        s.cp.start()
        dp = s.dataplane("dp-routing")
        r = dp.chat(STACK_MASTER_KEY, model="primary")
        assert r.status_code == 200, r.text
        assert r.headers["x-litellm-model-id"] == "at_backup"
        assert (r.headers["x-litellm-attempted-retries"], r.headers["x-litellm-attempted-fallbacks"]) == ("1", "1")
        assert mock.stats()["at_primary"]["requests"] == 2
    finally:
        s.close()
