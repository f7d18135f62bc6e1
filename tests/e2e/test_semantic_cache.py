"""The semantic cache (`cache_params.type: local-semantic` / `redis-semantic`), end to end:
the MiniLM encoder of a real routing-model artifact embeds each request's last message in
the data plane, a paraphrase is answered with the earlier answer (through the official
openai and anthropic SDKs, chat and Responses, streamed or not), and a different question, another system
prompt or sampling parameter, a longer conversation, tools or another namespace are not.
With no encoder loaded the exact cache still works."""

import json
import os
import subprocess
import time
from pathlib import Path

import anthropic
import httpx
import openai

from conftest import BIN_DIR
from test_cache import WEATHER_TOOL, config, post, upstream_calls
from test_routing import MASTER_KEY, gateway, mock  # noqa: F401  (the module's fixtures)

ENCODER = Path(os.environ.get("ROUTEIQ_TEST_ARTIFACTS", "")) / "knn-minilm"
THRESHOLD = 0.90
# Cosine similarities with the artifact's encoder (see docs/configuration.md):
QUESTION = "What is the capital of France?"
PARAPHRASE = "What's the capital city of France?"  # 0.952
OTHER_PARAPHRASE = "Which city is the capital of France?"  # 0.925
DIFFERENT = "What is the capital of Germany?"  # 0.658


def semantic(mock, **extra) -> dict:
    return config(mock, type="local-semantic", semantic_model_path=str(ENCODER),
                  similarity_threshold=THRESHOLD, **extra)


def wait_encoder(g, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    status = None
    while time.time() < deadline:
        routers = httpx.get(f"{g.url}/hot-reload/status").json()["routers"]
        status = next((r for r in routers if r["strategy"] == "semantic-cache-encoder"), None)
        if status and status["loaded"]:
            return status
        time.sleep(0.05)
    raise AssertionError(f"encoder not loaded: {status}")


def metric(g, name: str, **labels) -> float:
    for line in httpx.get(f"{g.url}/metrics", timeout=5).text.splitlines():
        if line.split("{")[0].split(" ")[0] == name and \
                all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_indexed(g, n: int, timeout: float = 5):
    """The index is written off the request path: waits for it to hold `n` entries."""
    deadline = time.time() + timeout
    while metric(g, "routeiq_cache_semantic_entries") < n:
        assert time.time() < deadline, f"fewer than {n} entries indexed"
        time.sleep(0.01)


def ask(g, content: str, **extra) -> httpx.Response:
    r = post(g, {"model": "gpt", "messages": [{"role": "user", "content": content}], **extra})
    assert r.status_code == 200, r.text
    return r


def test_a_paraphrase_hits_and_a_different_question_does_not(mock, gateway):
    g = gateway(semantic(mock))
    wait_encoder(g)
    before = upstream_calls(mock, "cache-gpt")
    first = ask(g, QUESTION)
    assert first.headers["x-routeiq-cache"] == "miss"
    assert "x-litellm-semantic-similarity" not in first.headers
    wait_indexed(g, 1)
    hit = ask(g, PARAPHRASE)
    assert hit.headers["x-routeiq-cache"] == "hit", hit.headers
    similarity = float(hit.headers["x-litellm-semantic-similarity"])
    assert THRESHOLD <= similarity <= 1.0, similarity
    assert abs(similarity - 0.952) < 0.02, similarity
    # The stored answer, byte for byte, under the key it was stored with; it cost nothing.
    assert hit.content == first.content
    assert hit.headers["x-litellm-cache-key"] == first.headers["x-litellm-cache-key"]
    assert hit.headers["x-litellm-response-cost"] == "0"
    other = ask(g, DIFFERENT)
    assert other.headers["x-routeiq-cache"] == "miss"
    assert "x-litellm-semantic-similarity" not in other.headers
    assert upstream_calls(mock, "cache-gpt") == before + 2
    assert metric(g, "routeiq_cache_semantic_similarity_count") >= 2
    assert metric(g, "litellm_cache_hits_metric_total", model="gpt") == 1


def test_semantic_hits_stream_through_the_sdks(mock, gateway):
    g = gateway(semantic(mock))
    wait_encoder(g)
    c = openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)
    full = c.chat.completions.create(model="gpt", messages=[{"role": "user", "content": QUESTION}])
    wait_indexed(g, 1)
    raw = c.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": OTHER_PARAPHRASE}], stream=True)
    assert raw.headers["x-routeiq-cache"] == "hit"
    assert float(raw.headers["x-litellm-semantic-similarity"]) >= THRESHOLD
    text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
    assert text == full.choices[0].message.content

    a = anthropic.Anthropic(base_url=g.url, api_key=MASTER_KEY, max_retries=0)
    kw = dict(model="claude", max_tokens=100)
    first = a.messages.create(**kw, messages=[{"role": "user", "content": "Who wrote Pride and Prejudice?"}])
    wait_indexed(g, 2)
    raw = a.messages.with_raw_response.create(
        **kw, messages=[{"role": "user", "content": "Who is the author of Pride and Prejudice?"}])
    assert raw.headers["x-routeiq-cache"] == "hit"
    assert raw.parse().content[0].text == first.content[0].text
    missed = a.messages.with_raw_response.create(
        **kw, messages=[{"role": "user", "content": "Who wrote War and Peace?"}])
    assert missed.headers["x-routeiq-cache"] == "miss"

    # The Responses API: its `input` is the message matched, its instructions are the rest.
    first = c.responses.create(model="gpt", input=QUESTION, instructions="be brief")
    wait_indexed(g, 4)  # with the three chat and messages answers stored above
    raw = c.responses.with_raw_response.create(model="gpt", input=PARAPHRASE,
                                               instructions="be brief", stream=True)
    assert raw.headers["x-routeiq-cache"] == "hit"
    events = list(raw.parse())
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == first.output_text
    assert events[-1].response.id != first.id
    for kw in (dict(input=DIFFERENT, instructions="be brief"),
               dict(input=PARAPHRASE, instructions="be verbose")):
        raw = c.responses.with_raw_response.create(model="gpt", **kw)
        assert raw.headers["x-routeiq-cache"] == "miss", kw


def test_only_requests_alike_in_all_but_the_last_message_match(mock, gateway):
    g = gateway(semantic(mock))
    wait_encoder(g)
    system = {"role": "system", "content": "Answer in one word."}
    r = post(g, {"model": "gpt", "messages": [system, {"role": "user", "content": QUESTION}],
                 "temperature": 0.1})
    assert r.headers["x-routeiq-cache"] == "miss"
    wait_indexed(g, 1)
    hit = post(g, {"model": "gpt", "messages": [system, {"role": "user", "content": PARAPHRASE}],
                   "temperature": 0.1})
    assert hit.headers["x-routeiq-cache"] == "hit"
    before = upstream_calls(mock, "cache-gpt")
    misses = [
        # Another system prompt, another temperature, no system prompt.
        {"messages": [{"role": "system", "content": "Answer at length."},
                      {"role": "user", "content": PARAPHRASE}], "temperature": 0.1},
        {"messages": [system, {"role": "user", "content": PARAPHRASE}], "temperature": 0.7},
        {"messages": [{"role": "user", "content": PARAPHRASE}], "temperature": 0.1},
        # Another namespace.
        {"messages": [system, {"role": "user", "content": PARAPHRASE}], "temperature": 0.1,
         "cache": {"namespace": "elsewhere"}},
        # A longer conversation: never matched semantically (semantic_max_messages: 1).
        {"messages": [system, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": PARAPHRASE}], "temperature": 0.1},
        # Tools: never matched semantically.
        {"messages": [system, {"role": "user", "content": PARAPHRASE}], "temperature": 0.1,
         "tools": [WEATHER_TOOL]},
    ]
    for body in misses:
        r = post(g, {"model": "gpt", **body})
        assert r.status_code == 200, r.text
        assert r.headers["x-routeiq-cache"] == "miss", body
        assert "x-litellm-semantic-similarity" not in r.headers
    assert upstream_calls(mock, "cache-gpt") == before + len(misses)


def test_no_cache_and_no_store_hold_for_semantic_matches(mock, gateway):
    g = gateway(semantic(mock))
    wait_encoder(g)
    # Not stored: nothing to match later.
    ask(g, QUESTION, cache={"no-store": True})
    time.sleep(0.2)
    assert metric(g, "routeiq_cache_semantic_entries") == 0
    assert ask(g, PARAPHRASE).headers["x-routeiq-cache"] == "miss"
    wait_indexed(g, 1)
    # Now stored (the paraphrase's answer): a no-cache request is not answered from it...
    assert ask(g, OTHER_PARAPHRASE, cache={"no-cache": True}).headers["x-routeiq-cache"] == "bypass"
    # ...but an ordinary one is.
    assert ask(g, QUESTION).headers["x-routeiq-cache"] == "hit"


def test_without_its_encoder_the_exact_cache_still_answers(mock, gateway):
    g = gateway(config(mock, type="local-semantic", semantic_model_path="/nonexistent/encoder"))
    status = None
    deadline = time.time() + 10
    while time.time() < deadline:
        routers = httpx.get(f"{g.url}/hot-reload/status").json()["routers"]
        status = next((r for r in routers if r["strategy"] == "semantic-cache-encoder"), None)
        if status and status.get("last_error"):
            break
        time.sleep(0.05)
    assert status and "nonexistent" in status["last_error"], status
    assert ask(g, QUESTION).headers["x-routeiq-cache"] == "miss"
    assert ask(g, QUESTION).headers["x-routeiq-cache"] == "hit"
    assert ask(g, PARAPHRASE).headers["x-routeiq-cache"] == "miss"


def test_a_semantic_type_without_an_encoder_loads_as_the_exact_cache(mock, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps(config(mock, type="redis-semantic")))
    r = subprocess.run([str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--check"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "semantic_model_path" in r.stderr and "exact cache only" in r.stderr, r.stderr


def embedding_deployment(mock, **cache_params) -> dict:
    """LiteLLM's way: a model group of model_list embeds (the mock's bag-of-words model,
    which puts texts that share most words close together)."""
    cfg = config(mock, type="local-semantic", redis_semantic_cache_embedding_model="embedder",
                 **cache_params)
    cfg["model_list"].append(
        {"model_name": "embedder",
         "litellm_params": {"model": "openai/mock-bow-embed", "api_base": f"{mock.url}/v1",
                            "api_key": "sk-up", "input_cost_per_token": 1e-3},
         "model_info": {"id": "mock-bow-embed", "mode": "embedding"}})
    return cfg


def test_an_embedding_deployment_embeds_for_the_cache(mock, gateway):
    g = gateway(embedding_deployment(mock, similarity_threshold=0.85))
    calls = lambda: upstream_calls(mock, "mock-bow-embed")  # noqa: E731
    before, chats = calls(), upstream_calls(mock, "cache-gpt")
    first = ask(g, "What is the capital of France?")
    assert first.headers["x-routeiq-cache"] == "miss"
    assert calls() == before + 1
    # The request pays for its embedding (1e-3 per token here: more than the chat).
    assert float(first.headers["x-litellm-response-cost"]) >= 1e-3
    wait_indexed(g, 1)
    for text, least in [("what is the capital of france", 0.999),
                        ("What is the capital city of France?", 0.9)]:
        hit = ask(g, text)
        assert hit.headers["x-routeiq-cache"] == "hit", (text, hit.headers)
        assert float(hit.headers["x-litellm-semantic-similarity"]) >= least
        assert hit.json()["choices"] == first.json()["choices"]
    assert ask(g, "Who painted the Mona Lisa?").headers["x-routeiq-cache"] == "miss"
    assert calls() == before + 4
    assert upstream_calls(mock, "cache-gpt") == chats + 2
    # The embedding deployment failing leaves the exact cache: no error, no semantic hit.
    mock.faults(**{"mock-bow-embed": {"status": 500}})
    try:
        assert ask(g, "What is the capital of France?").headers["x-routeiq-cache"] == "hit"
        other = ask(g, "WHAT is the capital of France")
        assert other.headers["x-routeiq-cache"] == "miss"
        assert "x-litellm-semantic-similarity" not in other.headers
    finally:
        mock.faults()
    assert metric(g, "routeiq_cache_semantic_embedding_errors_total") >= 1


def test_the_embedding_model_must_be_a_model_group(mock, tmp_path):
    cfg = tmp_path / "config.yaml"
    bad = embedding_deployment(mock)
    bad["litellm_settings"]["cache_params"]["redis_semantic_cache_embedding_model"] = "nope"
    cfg.write_text(json.dumps(bad))
    r = subprocess.run([str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--check"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "redis_semantic_cache_embedding_model" in r.stderr and "`nope`" in r.stderr, r.stderr


def test_messages_longer_than_the_encoder_reads_are_matched_exactly_only(mock, gateway):
    g = gateway(semantic(mock))
    wait_encoder(g)
    # Past the encoder's 256 tokens, two messages alike at the start would embed the same.
    document = "The quarterly report lists revenue, costs and staff numbers. " * 40
    first = ask(g, document + "What was the revenue?")
    assert first.headers["x-routeiq-cache"] == "miss"
    ask(g, QUESTION)
    wait_indexed(g, 1)
    time.sleep(0.3)
    assert metric(g, "routeiq_cache_semantic_entries") == 1, "the long message is not indexed"
    other = ask(g, document + "What were the costs?")
    assert other.headers["x-routeiq-cache"] == "miss"
    assert "x-litellm-semantic-similarity" not in other.headers
    assert ask(g, document + "What was the revenue?").headers["x-routeiq-cache"] == "hit"


def test_attached_data_planes_share_semantic_entries_over_nats(make_stack, tmp_path):
    from stack import STACK_MASTER_KEY, Redis, wait_until
    from test_cache import CACHE_STACK_CONFIG

    redis = Redis(tmp_path)
    redis.start()
    try:
        cfg = CACHE_STACK_CONFIG.replace("type: local", f"""type: redis-semantic
    similarity_threshold: {THRESHOLD}
    semantic_model_path: {ENCODER}""")
        s = make_stack(cp_args=["--redis-url", redis.url], config=cfg)
        dps = [s.dataplane("dp-a", redis=redis), s.dataplane("dp-b", redis=redis)]
        for dp in dps:
            wait_encoder(dp)

        def ask_as(dp, key, prompt, **extra):
            r = httpx.post(f"{dp.url}/v1/chat/completions", timeout=10,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": "priced", **extra,
                                 "messages": [{"role": "user", "content": prompt}]})
            assert r.status_code == 200, r.text
            return r

        def ask_dp(dp, prompt, **extra):
            return ask_as(dp, STACK_MASTER_KEY, prompt, **extra)

        first = ask_dp(dps[0], QUESTION)
        assert first.headers["x-routeiq-cache"] == "miss"
        # dp-b indexes the entry dp-a shared, and reads the answer from Redis.
        wait_indexed(dps[1], 1)
        hit = ask_dp(dps[1], PARAPHRASE)
        assert hit.headers["x-routeiq-cache"] == "hit", hit.headers
        assert float(hit.headers["x-litellm-semantic-similarity"]) >= THRESHOLD
        assert hit.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
        # And the other way round.
        ask_dp(dps[1], "Who wrote Pride and Prejudice?")
        wait_indexed(dps[0], 2)
        back = ask_dp(dps[0], "Who is the author of Pride and Prejudice?")
        assert back.headers["x-routeiq-cache"] == "hit"
        # Teams: a paraphrase from another team misses, from the same team hits, on
        # either data plane.
        admin = s.admin()
        keys = {}
        for team in ("t-red", "t-blue"):
            admin.ok("POST", "/team/new", json={"team_id": team})
            keys[team] = [admin.ok("POST", "/key/generate", json={"team_id": team})["key"]
                          for _ in range(2)]
        every = [k for ks in keys.values() for k in ks]
        wait_until(lambda: all(dp.chat(k, content="warm up").status_code == 200
                               for dp in dps for k in every), what="the keys reach the data planes")

        red = ask_as(dps[0], keys["t-red"][0], "Explain photosynthesis in simple terms.")
        assert red.headers["x-routeiq-cache"] == "miss"
        paraphrase = "Can you explain photosynthesis simply?"
        probe = {"cache": {"no-store": True}}
        wait_until(lambda: ask_as(dps[1], keys["t-red"][1], paraphrase, **probe)
                   .headers["x-routeiq-cache"] == "hit", what="red's entry on dp-b")
        same = ask_as(dps[1], keys["t-red"][1], paraphrase, **probe)
        assert same.headers["x-litellm-cache-key"] == red.headers["x-litellm-cache-key"]
        blue = ask_as(dps[1], keys["t-blue"][0], paraphrase, **probe)
        assert blue.headers["x-routeiq-cache"] == "miss", "another team never gets red's answer"
        assert "x-litellm-semantic-similarity" not in blue.headers
        # A deleted answer is not served through its index entry.
        gone = admin.ok("POST", "/cache/delete", json={"keys": [red.headers["x-litellm-cache-key"]]})
        for dp in dps:
            wait_until(lambda: dp.version() >= gone["snapshot_version"], what="the delete")
        for dp in dps:
            r = ask_as(dp, keys["t-red"][1], "Could you explain photosynthesis in simple words?", **probe)
            assert r.headers["x-routeiq-cache"] == "miss"
        # A flush empties every data plane's index as well as Redis.
        flushed = s.admin().ok("POST", "/cache/flushall")
        for dp in dps:
            wait_until(lambda: dp.version() >= flushed["snapshot_version"], what="the flush")
            assert metric(dp, "routeiq_cache_semantic_entries") == 0
            assert ask_dp(dp, OTHER_PARAPHRASE, cache={"no-store": True}).headers["x-routeiq-cache"] == "miss"
    finally:
        redis.stop()
