"""The response cache (`litellm_settings.cache`), end to end with real Redis servers: exact
hits with byte-identical bodies, streams replayed event for event through the official
openai and anthropic SDKs (tool calls and reasoning included, and across deliveries),
tenant scoping, TTL and the per-request controls, two data planes sharing Redis, Redis
killed and restarted mid-run, and hits in the spend logs at cost 0."""

import json
import time

import anthropic
import httpx
import openai
import pytest

from stack import STACK_MASTER_KEY, Redis, wait_until
from test_routing import MASTER_KEY, gateway, mock  # noqa: F401  (the module's fixtures)

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}


def config(mock, **cache_params) -> dict:
    return {
        "model_list": [
            {"model_name": "gpt",
             "litellm_params": {"model": "openai/cache-gpt", "api_base": f"{mock.url}/v1",
                                "api_key": "sk-up", "input_cost_per_token": 1e-6,
                                "output_cost_per_token": 2e-6},
             "model_info": {"id": "cache-gpt"}},
            {"model_name": "broken",
             "litellm_params": {"model": "openai/cache-broken", "api_base": f"{mock.url}/v1",
                                "api_key": "sk-up"},
             "model_info": {"id": "cache-broken"}},
            {"model_name": "claude",
             "litellm_params": {"model": "anthropic/cache-claude", "api_base": mock.url,
                                "api_key": "k"},
             "model_info": {"id": "cache-claude"}},
        ],
        "router_settings": {"num_retries": 0},
        "litellm_settings": {"cache": True, "cache_params": cache_params},
    }


def upstream_calls(mock, model: str) -> int:
    return mock.stats().get(model, {}).get("requests", 0)


def post(g, body: dict, headers=None) -> httpx.Response:
    return httpx.post(f"{g.url}/v1/chat/completions", headers={**AUTH, **(headers or {})},
                      json=body, timeout=10)


def unique(text: str) -> str:
    """A prompt no other test sends (the mock is shared by the module)."""
    return f"{text} #{time.monotonic_ns()}"


def test_identical_request_hits_with_the_same_bytes(mock, gateway):
    g = gateway(config(mock))
    body = {"model": "gpt", "messages": [{"role": "user", "content": unique("hello cache")}],
            "temperature": 0.2}
    before = upstream_calls(mock, "cache-gpt")
    first = post(g, body)
    assert first.status_code == 200, first.text
    assert first.headers["x-routeiq-cache"] == "miss"
    key = first.headers["x-litellm-cache-key"]
    assert len(key) == 64
    assert float(first.headers["x-litellm-response-cost"]) > 0
    # Key order, spacing, `user` and `metadata` do not change the answer.
    same = {"temperature": 0.2, "metadata": {"run": 2}, "user": "someone",
            "messages": body["messages"], "model": "gpt"}
    second = post(g, same)
    assert second.status_code == 200, second.text
    assert second.headers["x-routeiq-cache"] == "hit"
    assert second.headers["x-litellm-cache-key"] == key
    assert second.headers["x-litellm-response-cost"] == "0"
    assert second.content == first.content
    assert upstream_calls(mock, "cache-gpt") == before + 1
    # What changes the answer is a different entry.
    other = post(g, {**body, "temperature": 0.9})
    assert other.headers["x-routeiq-cache"] == "miss"
    assert other.headers["x-litellm-cache-key"] != key
    metrics = httpx.get(f"{g.url}/metrics").text
    assert 'litellm_cache_hits_metric_total{model="gpt"} 1' in metrics
    assert 'litellm_cache_misses_metric_total{model="gpt"} 2' in metrics


def test_openai_stream_hit_replays_every_chunk(mock, gateway):
    g = gateway(config(mock))
    c = openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)
    messages = [{"role": "user", "content": unique("weather in Paris?")}]
    kw = dict(model="gpt", messages=messages, tools=[WEATHER_TOOL], reasoning_effort="low",
              stream=True, stream_options={"include_usage": True})
    before = upstream_calls(mock, "cache-gpt")
    raw = c.chat.completions.with_raw_response.create(**kw)
    assert raw.headers["x-routeiq-cache"] == "miss"
    first = [ch.model_dump() for ch in raw.parse()]
    raw = c.chat.completions.with_raw_response.create(**kw)
    assert raw.headers["x-routeiq-cache"] == "hit"
    again = [ch.model_dump() for ch in raw.parse()]
    # The same chunks; the usage chunk's cost is the hit's: 0.
    assert first[-1]["usage"]["cost"] > 0 and again[-1]["usage"]["cost"] == 0
    for ch in (first[-1], again[-1]):
        ch["usage"].pop("cost")
    assert again == first
    # The tool call's arguments arrive in the pieces the provider sent, and the reasoning too.
    args = [tc["function"]["arguments"] for ch in first if ch["choices"]
            for tc in (ch["choices"][0]["delta"].get("tool_calls") or [])]
    assert len(args) == 3 and "".join(args) == '{"location":"Paris"}'
    reasoning = "".join(ch["choices"][0]["delta"].get("reasoning_content") or ""
                        for ch in first if ch["choices"])
    assert reasoning == "Thinking it over first."
    assert first[-1]["usage"]["completion_tokens"] > 0
    # Without include_usage the replay has no usage chunk, as a live stream would not.
    plain = dict(kw)
    plain.pop("stream_options")
    chunks = [ch.model_dump() for ch in c.chat.completions.create(**plain)]
    assert all(ch["choices"] for ch in chunks)
    assert len(chunks) == len(first) - 1
    # A non-streamed request gets the same answer as one response.
    full = c.chat.completions.with_raw_response.create(
        model="gpt", messages=messages, tools=[WEATHER_TOOL], reasoning_effort="low")
    assert full.headers["x-routeiq-cache"] == "hit"
    m = full.parse().choices[0].message
    assert m.tool_calls[0].function.arguments == '{"location":"Paris"}'
    assert m.model_extra.get("reasoning_content") == "Thinking it over first."
    assert upstream_calls(mock, "cache-gpt") == before + 1


def test_full_answer_serves_a_later_stream(mock, gateway):
    g = gateway(config(mock))
    c = openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)
    messages = [{"role": "user", "content": unique("tell me something")}]
    full = c.chat.completions.create(model="gpt", messages=messages)
    raw = c.chat.completions.with_raw_response.create(
        model="gpt", messages=messages, stream=True, stream_options={"include_usage": True})
    assert raw.headers["x-routeiq-cache"] == "hit"
    chunks = list(raw.parse())
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.total_tokens == full.usage.total_tokens


def test_anthropic_stream_hit_replays_every_event(mock, gateway):
    g = gateway(config(mock))
    c = anthropic.Anthropic(base_url=g.url, api_key=MASTER_KEY, max_retries=0)
    kw = dict(model="claude", max_tokens=200,
              messages=[{"role": "user", "content": unique("weather in Paris?")}],
              tools=[{"name": "get_weather", "description": "Weather of a city",
                      "input_schema": {"type": "object",
                                       "properties": {"location": {"type": "string"}}}}])
    before = upstream_calls(mock, "cache-claude")
    raw = c.messages.with_raw_response.create(**kw, stream=True)
    assert raw.headers["x-routeiq-cache"] == "miss"
    first = [e.model_dump() for e in raw.parse()]
    raw = c.messages.with_raw_response.create(**kw, stream=True)
    assert raw.headers["x-routeiq-cache"] == "hit"
    again = [e.model_dump() for e in raw.parse()]
    assert again == first
    deltas = [e["delta"] for e in first if e["type"] == "content_block_delta"]
    assert any(d["type"] == "input_json_delta" for d in deltas)
    assert upstream_calls(mock, "cache-claude") == before + 1
    # The SDK's stream helper assembles the replay like any stream.
    with c.messages.stream(**kw) as s:
        first_message = s.get_final_message()
    assert first_message.content[-1].input == {"location": "Paris"}
    # The non-streamed answer from the stream: the same blocks, the tool input whole.
    full = c.messages.with_raw_response.create(**kw)
    assert full.headers["x-routeiq-cache"] == "hit"
    msg = full.parse()
    assert [b.model_dump() for b in msg.content] == [b.model_dump() for b in first_message.content]
    assert msg.stop_reason == first_message.stop_reason == "tool_use"
    assert msg.usage.output_tokens == first_message.usage.output_tokens
    assert upstream_calls(mock, "cache-claude") == before + 1


def test_ttl_and_request_controls(mock, gateway):
    g = gateway(config(mock, ttl=60))
    body = {"model": "gpt", "messages": [{"role": "user", "content": unique("controls")}]}
    before = upstream_calls(mock, "cache-gpt")
    # no-store: answered, not kept.
    r = post(g, {**body, "cache": {"no-store": True}})
    assert r.status_code == 200 and r.headers["x-routeiq-cache"] == "miss"
    assert post(g, body).headers["x-routeiq-cache"] == "miss", "no-store kept nothing"
    assert post(g, body).headers["x-routeiq-cache"] == "hit"
    # no-cache (body or header): a fresh answer, stored again.
    for extra, headers in [({"cache": {"no-cache": True}}, None), ({}, {"Cache-Control": "no-cache"})]:
        r = post(g, {**body, **extra}, headers)
        assert r.status_code == 200 and r.headers["x-routeiq-cache"] == "bypass"
    assert upstream_calls(mock, "cache-gpt") == before + 4
    # s-maxage: only younger answers.
    time.sleep(1.1)
    assert post(g, {**body, "cache": {"s-maxage": 1}}).headers["x-routeiq-cache"] == "miss"
    # A request's own ttl.
    short = {"model": "gpt", "messages": [{"role": "user", "content": unique("short ttl")}]}
    assert post(g, {**short, "cache": {"ttl": 2}}).headers["x-routeiq-cache"] == "miss"
    assert post(g, short).headers["x-routeiq-cache"] == "hit"
    time.sleep(2.2)
    assert post(g, short).headers["x-routeiq-cache"] == "miss", "expired"
    # Malformed controls are a 400 naming the field; the cache field never goes upstream.
    bad = post(g, {**body, "cache": {"no_cache": True}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "cache"
    post(g, {**body, "cache": {"no-cache": True}})
    assert "cache" not in httpx.get(f"{mock.url}/__last_request").json()["body"]


def test_truncated_answers_are_not_kept(mock, gateway):
    g = gateway(config(mock))
    body = {"model": "gpt", "max_tokens": 2,
            "messages": [{"role": "user", "content": unique("a long answer please")}]}
    r = post(g, body)
    assert r.json()["choices"][0]["finish_reason"] == "length"
    assert post(g, body).headers["x-routeiq-cache"] == "miss"
    # The operator may keep them.
    g2 = gateway(config(mock, cache_truncated=True))
    post(g2, body)
    assert post(g2, body).headers["x-routeiq-cache"] == "hit"


def test_broken_streams_are_not_kept(mock, gateway):
    g = gateway(config(mock))
    body = {"model": "broken", "stream": True,
            "messages": [{"role": "user", "content": unique("a stream that breaks")}]}
    mock.faults(**{"cache-broken": {"reset_after_chunks": 3}})
    try:
        with httpx.stream("POST", f"{g.url}/v1/chat/completions", headers=AUTH, json=body,
                          timeout=10) as r:
            assert r.headers["x-routeiq-cache"] == "miss"
            text = r.read().decode()
        assert '"error"' in text and "[DONE]" not in text
    finally:
        mock.faults()
    again = post(g, body)
    assert again.headers["x-routeiq-cache"] == "miss", "the broken stream was not kept"
    assert post(g, body).headers["x-routeiq-cache"] == "hit", "the whole one was"


def test_default_off_caches_only_requests_that_ask(mock, gateway):
    g = gateway(config(mock, mode="default_off"))
    body = {"model": "gpt", "messages": [{"role": "user", "content": unique("opt in")}]}
    assert post(g, body).headers["x-routeiq-cache"] == "bypass"
    assert post(g, body).headers["x-routeiq-cache"] == "bypass"
    ask = {**body, "cache": {"use-cache": True}}
    assert post(g, ask).headers["x-routeiq-cache"] == "miss"
    assert post(g, ask).headers["x-routeiq-cache"] == "hit"


def test_namespaces_separate_entries(mock, gateway):
    g = gateway(config(mock, namespace="prod"))
    body = {"model": "gpt", "messages": [{"role": "user", "content": unique("ns")}]}
    post(g, body)
    assert post(g, body).headers["x-routeiq-cache"] == "hit"
    assert post(g, {**body, "cache": {"namespace": "a"}}).headers["x-routeiq-cache"] == "miss"
    assert post(g, {**body, "cache": {"namespace": "a"}}).headers["x-routeiq-cache"] == "hit"


def test_two_dataplanes_share_redis_and_survive_its_loss_and_restart(mock, gateway, tmp_path):
    redis = Redis(tmp_path)
    redis.start()
    try:
        cfg = config(mock, type="redis")
        a = gateway(cfg, extra=["--redis-url", redis.url])
        b = gateway(json.loads(json.dumps(cfg)), extra=["--redis-url", redis.url])
        body = {"model": "gpt", "messages": [{"role": "user", "content": unique("shared")}]}
        before = upstream_calls(mock, "cache-gpt")
        first = post(a, body)
        assert first.headers["x-routeiq-cache"] == "miss"
        # Written off the request path: it reaches Redis within moments. The probes store
        # nothing, so b's hit can only come from Redis.
        probe = {**body, "cache": {"no-store": True}}
        wait_until(lambda: post(b, probe).headers["x-routeiq-cache"] == "hit", timeout=5,
                   what="the other data plane hits")
        assert post(b, probe).json()["choices"] == first.json()["choices"]
        assert upstream_calls(mock, "cache-gpt") == before + 1

        # Redis hung (SIGSTOP): a request that misses memory waits at most 100 ms for it
        # (`cache::REDIS_TIMEOUT`) and for a second after (the back-off) none asks it.
        def latencies(tag):
            out = []
            for i in range(10):
                started = time.monotonic()
                r = post(a, {"model": "gpt", "messages": [{"role": "user", "content": unique(f"{tag} {i}")}]})
                assert r.status_code == 200 and r.headers["x-routeiq-cache"] == "miss"
                out.append(time.monotonic() - started)
            return out

        before = latencies("before the hang")
        redis.process.freeze(True)
        try:
            hung = time.monotonic()
            during = latencies("hung")
            hung = time.monotonic() - hung
        finally:
            redis.process.freeze(False)
        typical = sorted(before)[len(before) // 2]
        waited = [t for t in during if t > typical + 0.08]
        print(f"misses: median {typical * 1000:.1f} ms, slowest {max(before) * 1000:.1f} ms; while Redis "
              f"hung slowest {max(during) * 1000:.1f} ms, {len(waited)} of 10 in {hung:.1f} s more than "
              f"80 ms over the median")
        assert max(during) <= max(before) + 0.2  # the 100 ms wait, and a loaded machine's noise
        assert len(waited) <= int(hung) + 3, waited  # one a back-off, not one a request

        # Redis killed mid-run: every request is answered (misses), none fails.
        redis.stop()
        statuses = []
        for i in range(40):
            r = post(a if i % 2 else b,
                     {"model": "gpt", "messages": [{"role": "user", "content": unique(f"down {i}")}]})
            statuses.append(r.status_code)
        assert statuses == [200] * 40
        assert post(a, body).headers["x-routeiq-cache"] == "hit", "memory still serves"
        errors = [line for line in httpx.get(f"{a.url}/metrics").text.splitlines()
                  if line.startswith("routeiq_cache_redis_errors_total ")]
        assert errors and float(errors[0].split()[1]) > 0

        # Restarted (empty): sharing resumes once the back-off is over.
        redis.start()
        again = {"model": "gpt", "messages": [{"role": "user", "content": unique("back")}]}

        def shared_again():
            post(a, {**again, "cache": {"no-cache": True}})
            return post(b, {**again, "cache": {"no-store": True}}).headers["x-routeiq-cache"] == "hit"

        started = time.monotonic()
        wait_until(shared_again, timeout=3, interval=0.1, what="sharing resumes")
        print(f"sharing resumed {time.monotonic() - started:.3f} s after Redis restarted")
    finally:
        redis.stop()


def test_a_local_cache_stays_local_beside_a_shared_redis(mock, gateway, tmp_path):
    redis = Redis(tmp_path)
    redis.start()
    try:
        cfg = config(mock, type="local")
        a = gateway(cfg, extra=["--redis-url", redis.url])
        b = gateway(json.loads(json.dumps(cfg)), extra=["--redis-url", redis.url])
        body = {"model": "gpt", "messages": [{"role": "user", "content": unique("local")}]}
        assert post(a, body).headers["x-routeiq-cache"] == "miss"
        assert post(a, body).headers["x-routeiq-cache"] == "hit"
        time.sleep(0.3)
        assert post(b, body).headers["x-routeiq-cache"] == "miss", "b has its own memory only"
        assert redis_keys(redis) == []
    finally:
        redis.stop()


CACHE_STACK_CONFIG = f"""
model_list:
  - model_name: priced
    litellm_params:
      model: mock/priced
    model_info:
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
general_settings:
  master_key: {STACK_MASTER_KEY}
litellm_settings:
  cache: true
  cache_params:
    type: local
"""


def test_teams_never_share_answers_and_hits_cost_nothing(make_stack):
    s = make_stack(config=CACHE_STACK_CONFIG)
    dp = s.dataplane("dp-cache")
    admin = s.admin()
    keys = {}
    for team in ("t-red", "t-blue"):
        admin.ok("POST", "/team/new", json={"team_id": team})
        keys[team] = [admin.ok("POST", "/key/generate", json={"team_id": team})["key"]
                      for _ in range(2)]
    every = [k for ks in keys.values() for k in ks]
    wait_until(lambda: all(dp.chat(k, content="warm up").status_code == 200 for k in every),
               what="the keys reach the data plane")

    def ask(key):
        return dp.chat(key, content="the same prompt for everyone")

    red = ask(keys["t-red"][0])
    assert red.headers["x-routeiq-cache"] == "miss"
    blue = ask(keys["t-blue"][0])
    assert blue.headers["x-routeiq-cache"] == "miss", "another team never gets red's answer"
    assert blue.headers["x-litellm-cache-key"] != red.headers["x-litellm-cache-key"]
    hit = ask(keys["t-red"][1])
    assert hit.headers["x-routeiq-cache"] == "hit", "a team shares its answers"
    assert hit.content == red.content
    rid = hit.headers["x-litellm-call-id"]
    rows = []
    wait_until(lambda: rows.extend(s.sql(
        "SELECT cost, cache_hit, saved_cost, provider FROM spend_logs WHERE request_id = %s",
        rid)) or rows, what="the hit's spend log")
    cost, cache_hit, saved, provider = rows[0]
    assert (cost, cache_hit, provider) == (0.0, True, "cache")
    assert saved == pytest.approx(float(red.headers["x-litellm-response-cost"]), rel=1e-9)
    # A team that keeps its traffic out of the cache; its requests cannot opt back in.
    admin.ok("POST", "/team/new", json={"team_id": "t-private", "metadata": {"cache": False}})
    private = admin.ok("POST", "/key/generate", json={"team_id": "t-private"})["key"]
    wait_until(lambda: dp.chat(private, content="warm up").status_code == 200,
               what="the private key reaches the data plane")
    for _ in range(2):
        r = httpx.post(f"{dp.url}/v1/chat/completions", timeout=5,
                       headers={"Authorization": f"Bearer {private}"},
                       json={"model": "priced", "cache": {"use-cache": True},
                             "messages": [{"role": "user", "content": "the same prompt for everyone"}]})
        assert r.headers["x-routeiq-cache"] == "bypass"
    # A team's policy change reaches its keys: red stops storing, still reads.
    admin.ok("POST", "/team/update", json={"team_id": "t-red", "metadata": {"cache": {"no-store": True}}})

    def stops_storing():
        fresh = unique("a prompt red asks after the change")
        return [dp.chat(keys["t-red"][0], content=fresh).headers["x-routeiq-cache"]
                for _ in range(2)] == ["miss", "miss"]

    wait_until(stops_storing, what="red's new policy")
    assert ask(keys["t-red"][1]).headers["x-routeiq-cache"] == "hit"
    bad = admin.call("POST", "/key/generate", json={"metadata": {"cache": "yes"}})
    assert bad.status_code == 400 and "metadata.cache" in bad.json()["error"]["message"], bad.text
    # A memory-only cache has no Redis to show.
    ping = admin.ok("GET", "/cache/ping")
    assert (ping["cache_type"], ping["ping_response"]) == ("local", None)
    info = admin.call("GET", "/cache/redis/info")
    assert info.status_code == 409 and "local" in info.json()["error"]["message"], info.text
    logs = admin.ok("GET", "/spend/logs", params={"team_id": "t-red"})
    entry = next(log for log in logs if log["request_id"] == rid)
    assert entry["cache_hit"] is True and entry["spend"] == 0
    assert entry["saved_cost"] == pytest.approx(saved, rel=1e-9)


def test_flush_and_delete_reach_redis_and_every_dataplane(make_stack, tmp_path):
    redis = Redis(tmp_path)
    redis.start()
    try:
        s = make_stack(cp_args=["--redis-url", redis.url],
                       config=CACHE_STACK_CONFIG.replace("type: local", "type: redis"))
        dps = [s.dataplane("dp-a", redis=redis), s.dataplane("dp-b", redis=redis)]
        admin = s.admin()
        ping = admin.ok("GET", "/cache/ping")
        assert (ping["status"], ping["cache_type"], ping["ping_response"]) == ("healthy", "redis", True)
        assert ping["litellm_cache_params"]["scope"] == "team"
        assert "redis_version" in admin.ok("GET", "/cache/redis/info")["info"]

        def ask(dp, prompt, **extra):
            return httpx.post(f"{dp.url}/v1/chat/completions", timeout=5,
                              headers={"Authorization": f"Bearer {STACK_MASTER_KEY}"},
                              json={"model": "priced", **extra,
                                    "messages": [{"role": "user", "content": prompt}]})

        keys = {}
        for prompt in ("prompt x", "prompt y"):
            keys[prompt] = ask(dps[0], prompt).headers["x-litellm-cache-key"]
            wait_until(lambda: ask(dps[1], prompt).headers["x-routeiq-cache"] == "hit",
                       what="the other data plane has it")
        # Lookups that store nothing: a hit is an answer still in the data plane's memory or
        # in Redis, so a miss after a deletion shows it gone from both.
        probe = {"cache": {"no-store": True}}
        assert all(ask(dp, p, **probe).headers["x-routeiq-cache"] == "hit"
                   for dp in dps for p in keys)

        gone = admin.ok("POST", "/cache/delete", json={"keys": [keys["prompt x"]]})
        assert (gone["status"], gone["redis_deleted"]) == ("success", 1)
        for dp in dps:
            wait_until(lambda: dp.version() >= gone["snapshot_version"], what="the delete's delta")
            assert ask(dp, "prompt x", **probe).headers["x-routeiq-cache"] == "miss"
            assert ask(dp, "prompt y", **probe).headers["x-routeiq-cache"] == "hit"

        flushed = admin.ok("POST", "/cache/flushall")
        assert flushed["redis_deleted"] >= 1
        for dp in dps:
            wait_until(lambda: dp.version() >= flushed["snapshot_version"], what="the flush's delta")
            assert ask(dp, "prompt y", **probe).headers["x-routeiq-cache"] == "miss"
        assert redis_keys(redis) == []
        bad = admin.call("POST", "/cache/delete", json={"keys": ["not-a-key"]})
        assert bad.status_code == 400 and "not-a-key" in bad.json()["error"]["message"], bad.text
        actions = {e["action"] for e in admin.ok("GET", "/audit")["entries"]}
        assert {"cache.delete", "cache.flush"} <= actions
    finally:
        redis.stop()


def redis_keys(redis: Redis) -> list[str]:
    import socket

    with socket.create_connection(("127.0.0.1", redis.port), timeout=2) as sock:
        sock.sendall(b"KEYS routeiq:cache:*\r\n")
        reply = sock.recv(65536).decode()
    return [] if reply.startswith("*0") else reply.split("\r\n")[2::2][:-1]


def test_a_flush_made_while_nats_is_down_reaches_the_data_planes_when_it_is_back(make_stack):
    s = make_stack(config=CACHE_STACK_CONFIG)
    dps = [s.dataplane("dp-a"), s.dataplane("dp-b")]
    admin = s.admin()
    for dp in dps:
        dp.chat(STACK_MASTER_KEY, content="kept across the outage")
        assert dp.chat(STACK_MASTER_KEY, content="kept across the outage").headers["x-routeiq-cache"] == "hit"

    s.nats.stop()
    flushed = admin.ok("POST", "/cache/flushall")
    # Not delivered yet: the data planes still answer from memory.
    for dp in dps:
        assert dp.chat(STACK_MASTER_KEY, content="kept across the outage").headers["x-routeiq-cache"] == "hit"

    s.nats.start()
    for dp in dps:
        wait_until(lambda: dp.version() >= flushed["snapshot_version"], timeout=30,
                   what="the flush after NATS came back")
        probe = httpx.post(f"{dp.url}/v1/chat/completions", timeout=5,
                           headers={"Authorization": f"Bearer {STACK_MASTER_KEY}"},
                           json={"model": "priced", "cache": {"no-store": True},
                                 "messages": [{"role": "user", "content": "kept across the outage"}]})
        assert probe.headers["x-routeiq-cache"] == "miss"


RESPONSE_TOOLS = [{"type": "function", "name": "get_weather", "description": "weather",
                   "parameters": {"type": "object",
                                  "properties": {"location": {"type": "string"}}}}]
# A deployment with the Responses API (OpenAI), and one served through chat (Anthropic).
RESPONSES_MODELS = [("gpt", "cache-gpt"), ("claude", "cache-claude")]


def last_sent(mock) -> dict:
    return httpx.get(f"{mock.url}/__last_request").json()["body"]


@pytest.mark.parametrize("model,upstream", RESPONSES_MODELS)
def test_responses_hits_are_responses_of_their_own(mock, gateway, model, upstream):
    g = gateway(config(mock))
    c = openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)
    kw = dict(model=model, input=unique("what does a response cache keep?"),
              instructions="be brief")
    before = upstream_calls(mock, upstream)
    raw = c.responses.with_raw_response.create(**kw, user="first-caller",
                                               metadata={"caller": "first"})
    assert raw.headers["x-routeiq-cache"] == "miss"
    key = raw.headers["x-litellm-cache-key"]
    first = raw.parse()
    # Another caller: who asked is not in the key, and the hit shows its own fields, not
    # the first caller's.
    raw = c.responses.with_raw_response.create(**kw, user="second-caller")
    assert raw.headers["x-routeiq-cache"] == "hit"
    assert raw.headers["x-litellm-cache-key"] == key
    assert raw.headers["x-litellm-response-cost"] == "0"
    hit = raw.parse()
    assert hit.output_text == first.output_text and hit.usage == first.usage
    assert hit.id != first.id and hit.id.startswith("resp_")
    assert hit.user == "second-caller" and not hit.metadata
    assert hit.created_at >= first.created_at
    # The stored response as a stream: the SDK's helper rebuilds the same answer from it.
    with c.responses.stream(**kw) as s:
        kinds = [e.type for e in s]
        streamed = s.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed", kinds
    assert streamed.output_text == first.output_text
    assert streamed.id not in (first.id, hit.id)
    assert upstream_calls(mock, upstream) == before + 1
    # A hit is kept as the gateway's own response: read back, and continued (a turn of a
    # conversation is not answered from the cache).
    assert c.responses.retrieve(hit.id).output_text == hit.output_text
    follow = c.responses.with_raw_response.create(model=model, input="and then?",
                                                  previous_response_id=hit.id)
    assert follow.headers["x-routeiq-cache"] == "bypass"
    assert follow.parse().output_text == "mock reply to: and then?"
    sent = json.dumps(last_sent(mock))
    assert kw["input"] in sent and first.output_text in sent, sent
    assert upstream_calls(mock, upstream) == before + 2
    # `store: false`: answered from the cache, but not kept.
    unkept = c.responses.create(**kw, store=False)
    assert unkept.output_text == first.output_text
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(unkept.id)


@pytest.mark.parametrize("model,upstream", RESPONSES_MODELS)
def test_responses_streams_replay_their_events(mock, gateway, model, upstream):
    g = gateway(config(mock))
    c = openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)
    kw = dict(model=model, input=unique("please call the tool: weather in Paris?"),
              tools=RESPONSE_TOOLS)
    before = upstream_calls(mock, upstream)
    raw = c.responses.with_raw_response.create(**kw, stream=True)
    assert raw.headers["x-routeiq-cache"] == "miss"
    first = [e.model_dump() for e in raw.parse()]
    raw = c.responses.with_raw_response.create(**kw, stream=True)
    assert raw.headers["x-routeiq-cache"] == "hit"
    again = [e.model_dump() for e in raw.parse()]

    def normalized(events):
        """The events with their response's id (wherever it appears: item ids of responses
        made through chat are built from it) and creation time taken out."""
        (rid,) = {e["response"]["id"] for e in events if e.get("response")}
        out = json.loads(json.dumps(events).replace(rid, "RESPONSE_ID"))
        created = {e["response"].pop("created_at") for e in out if e.get("response")}
        return rid, created, out

    first_id, first_created, first_events = normalized(first)
    again_id, again_created, again_events = normalized(again)
    # The same events, under a response id of the hit's own, made now.
    assert first_id != again_id
    assert len(again_created) == 1 and min(again_created) >= max(first_created)
    assert again_events == first_events
    args = "".join(e["delta"] for e in again
                   if e["type"] == "response.function_call_arguments.delta")
    assert args == '{"location":"Paris"}'
    # A non-streamed request gets the stored stream as one response.
    raw = c.responses.with_raw_response.create(**kw)
    assert raw.headers["x-routeiq-cache"] == "hit"
    call = [o for o in raw.parse().output if o.type == "function_call"][0]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"location": "Paris"}
    assert upstream_calls(mock, upstream) == before + 1


def test_responses_cut_short_or_not_cached_are_not_kept(mock, gateway):
    g = gateway(config(mock))
    c = openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)
    # Cut short by `max_output_tokens`: status `incomplete`, not kept.
    kw = dict(model="claude", input=unique("a long answer please"), max_output_tokens=2)
    cut = c.responses.create(**kw)
    assert cut.status == "incomplete", cut
    raw = c.responses.with_raw_response.create(**kw)
    assert raw.headers["x-routeiq-cache"] == "miss"
    raw = c.responses.with_raw_response.create(**kw, stream=True)
    assert raw.headers["x-routeiq-cache"] == "miss"
    assert [e.type for e in raw.parse()][-1] == "response.incomplete"
    # Background responses are not answered from the cache.
    r = httpx.post(f"{g.url}/v1/responses", headers=AUTH, timeout=10,
                   json={"model": "gpt", "input": "in the background", "background": True})
    assert r.headers["x-routeiq-cache"] == "bypass", r.text
    # An operator who caches chat only.
    g2 = gateway(config(mock, supported_call_types=["acompletion"]))
    c2 = openai.OpenAI(base_url=f"{g2.url}/v1", api_key=MASTER_KEY, max_retries=0)
    for _ in range(2):
        raw = c2.responses.with_raw_response.create(model="gpt", input="chat only")
        assert raw.headers["x-routeiq-cache"] == "bypass"
