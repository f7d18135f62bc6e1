"""Learned routing (`llmrouter-*`), end to end: a standalone data plane routes a model group
of nine deployments (one per candidate LLM of the fixture data) with artifacts the
pipeline trained (`scripts/test.sh` puts them in ROUTEIQ_TEST_ARTIFACTS, each with the
pipeline's own choices for a fixed query set in `expected.json`). Also hot reload from a
file and from a real S3-compatible server (s3s-fs) under load, and a corrupt or missing
artifact, which must never fail a request."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import Process, S3Server, free_port, wait_http
from otlp import OtlpReceiver
from test_routing import deployment, gateway, mock  # noqa: F401 (fixtures)

ARTIFACTS = Path(os.environ.get("ROUTEIQ_TEST_ARTIFACTS", ""))
TRAINING = Path(__file__).resolve().parents[2] / "models" / "training"
TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def artifacts_present():
    assert (ARTIFACTS / "knn" / "manifest.json").exists(), (
        "ROUTEIQ_TEST_ARTIFACTS must hold the fixture artifacts: run through scripts/test.sh")


def manifest(dir: Path) -> dict:
    return json.loads((dir / "manifest.json").read_text())


def candidates(dir: Path) -> list[str]:
    return [c["name"] for c in manifest(dir)["candidates"]]


def config(mock, strategy: str, **args) -> dict:
    names = candidates(ARTIFACTS / "knn")
    return {
        "model_list": [deployment(mock, "auto", n) for n in names],
        "router_settings": {"routing_strategy": f"llmrouter-{strategy}",
                            "routing_strategy_args": {"reload_interval": 0.2, **args}},
    }


def status(g) -> dict:
    r = httpx.get(f"{g.url}/hot-reload/status")
    assert r.status_code == 200, r.text
    (router,) = r.json()["routers"]
    return router


def wait_loaded(g, version: str | None = None, timeout: float = 30) -> dict:
    """Waits for the data plane's learned router (an attached one may not have received
    the router settings yet) to have loaded `version` (any, when None)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        routers = httpx.get(f"{g.url}/hot-reload/status").json()["routers"]
        if routers:
            (last,) = routers
            if last["loaded"] and (version is None or last["version"] == version):
                return last
        time.sleep(0.05)
    raise AssertionError(f"model not loaded: {last}")


def metric(g, name: str, **labels) -> float:
    for line in g.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def clear_choices(dir: Path) -> list[tuple[str, str]]:
    """(query, candidate) pairs of expected.json whose best score is not a near-tie."""
    names = candidates(dir)
    out = []
    for row in json.loads((dir / "expected.json").read_text()):
        scores = sorted((s for s in row["scores"] if s is not None), reverse=True)
        if len(scores) > 1 and scores[0] - scores[1] <= TOLERANCE:
            continue
        out.append((row["query"], names[row["choice"]]))
    return out


@pytest.mark.parametrize("strategy", ["knn", "svm", "mlp", "mf", "graph", "routerdc", "hybrid", "elo", "largest"])
def test_the_gateway_routes_as_the_pipeline_chose(mock, gateway, strategy):
    mock.faults()
    dir = ARTIFACTS / strategy
    g = gateway(config(mock, strategy, model_path=str(dir)))
    loaded = wait_loaded(g)
    assert loaded["version"] == manifest(dir)["version"]
    assert loaded["sha256"] == hashlib.sha256((dir / "manifest.json").read_bytes()).hexdigest()
    rows = clear_choices(dir)
    assert len(rows) >= 10
    for query, want in rows:
        r = g.chat("auto", content=query)
        assert r.status_code == 200, r.text
        assert r.headers["x-routeiq-router"] == f"llmrouter-{strategy}"
        assert r.headers["x-routeiq-router-version"] == loaded["version"]
        assert r.headers["x-routeiq-router-candidate"] == want, query
        assert r.headers["x-litellm-model-id"] == want
    # Every decision counted under the version that made it.
    assert metric(g, "routeiq_learned_routing_decisions_total", by="model", strategy=f"llmrouter-{strategy}",
                  version=loaded["version"]) == len(rows)


@pytest.mark.parametrize("strategy,artifact", [("knn", "knn-minilm"), ("mlp", "mlp-concat")])
def test_sentence_encoder_and_joined_featurizer_artifacts_route_too(mock, gateway, strategy, artifact):
    """knn on the MiniLM encoder, and mlp on hashed n-grams, MiniLM and the structure
    measures side by side (a `concat` featurizer: its encoder part is embedded before
    routing, like a lone encoder's)."""
    mock.faults()
    dir = ARTIFACTS / artifact
    g = gateway(config(mock, strategy, model_path=str(dir)))
    wait_loaded(g)
    rows = clear_choices(dir)[:15]
    assert len(rows) >= 10
    for query, want in rows:
        r = g.chat("auto", content=query)
        assert r.headers["x-routeiq-router-candidate"] == want, query
    assert metric(g, "routeiq_learned_routing_decisions_total", by="model", strategy=f"llmrouter-{strategy}") == len(rows)


def test_cost_weight_trades_quality_for_price(mock, gateway):
    mock.faults()
    dir = ARTIFACTS / "mlp"
    prices = {c["name"]: (c["input_price"] + c["output_price"]) / 2 for c in manifest(dir)["candidates"]}
    cheapest = min(prices, key=prices.get)
    g = gateway(config(mock, "mlp", model_path=str(dir), cost_weight=100.0))
    wait_loaded(g)
    picked = {g.chat("auto", content=q).headers["x-routeiq-router-candidate"]
              for q, _ in clear_choices(dir)[:10]}
    assert picked == {cheapest}


def test_a_missing_artifact_routes_with_the_fallback_strategy(mock, gateway):
    mock.faults()
    g = gateway(config(mock, "knn", model_path="/nonexistent/knn", fallback_strategy="simple-shuffle"))
    for _ in range(5):
        r = g.chat("auto")
        assert r.status_code == 200, r.text
        assert r.headers["x-routeiq-router-version"] == "fallback"
    s = status(g)
    assert not s["loaded"] and "/nonexistent/knn/manifest.json" in s["last_error"]
    assert metric(g, "routeiq_learned_routing_decisions_total", by="fallback", strategy="llmrouter-knn") == 5


def test_an_unserved_strategy_says_so_and_keeps_serving(mock, gateway):
    mock.faults()
    g = gateway(config(mock, "bert"))
    assert g.chat("auto").status_code == 200
    assert "not served by this version" in status(g)["last_error"]


def elo_version(src: Path, dst: Path, favourite: str, version: str):
    """An elo artifact whose ratings favour `favourite`, with the manifest rewritten (new
    version, new hash) and written last, as the pipeline does."""
    dst.mkdir(parents=True, exist_ok=True)
    m = manifest(src)
    names = [c["name"] for c in m["candidates"]]
    params = {"ratings": [2000.0 if n == favourite else 1000.0 for n in names]}
    raw = json.dumps(params).encode()
    (dst / "params.json").write_bytes(raw)
    m["files"] = {"params.json": hashlib.sha256(raw).hexdigest()}
    m["version"] = version
    tmp = dst / "manifest.json.tmp"
    tmp.write_text(json.dumps(m))
    tmp.replace(dst / "manifest.json")


class Load:
    """Requests in a loop on four threads until stopped; counts statuses and candidates."""

    def __init__(self, g):
        self.g, self.stop_flag, self.statuses, self.candidates = g, threading.Event(), [], []
        self.threads = [threading.Thread(target=self.run) for _ in range(4)]
        for t in self.threads:
            t.start()

    def run(self):
        with httpx.Client(timeout=10) as c:
            while not self.stop_flag.is_set():
                r = c.post(f"{self.g.url}/v1/chat/completions", headers=auth(),
                           json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
                self.statuses.append(r.status_code)
                self.candidates.append(r.headers.get("x-routeiq-router-candidate"))

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join()


def auth() -> dict:
    from conftest import MASTER_KEY
    return {"Authorization": f"Bearer {MASTER_KEY}"}


def test_hot_reload_from_a_file_under_load_and_a_corrupt_version_is_refused(mock, gateway, tmp_path):
    mock.faults()
    names = candidates(ARTIFACTS / "elo")
    a, b = names[0], names[-1]
    live = tmp_path / "elo"
    elo_version(ARTIFACTS / "elo", live, a, "elo-a")
    g = gateway(config(mock, "elo", model_path=str(live)))
    wait_loaded(g, "elo-a")
    load = Load(g)
    try:
        time.sleep(0.5)
        elo_version(ARTIFACTS / "elo", live, b, "elo-b")
        wait_loaded(g, "elo-b")
        time.sleep(0.5)
        # A corrupt version: the file changes after the manifest was written.
        elo_version(ARTIFACTS / "elo", live, a, "elo-corrupt")
        (live / "params.json").write_text(json.dumps({"ratings": [0.0] * len(names)}))
        os.utime(live / "manifest.json")
        deadline = time.time() + 10
        while "sha256" not in (status(g)["last_error"] or "") and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        load.stop()
    s = status(g)
    assert s["version"] == "elo-b" and "params.json" in s["last_error"], s
    assert s["failures"] >= 1 and s["reloads"] >= 2
    assert len(load.statuses) > 50
    assert set(load.statuses) == {200}, "requests failed during reloads"
    assert load.candidates[0] == a and load.candidates[-1] == b
    assert set(load.candidates) == {a, b}
    assert metric(g, "routeiq_router_model_reloads_total", result="error", strategy="llmrouter-elo") >= 1


@pytest.fixture
def s3(tmp_path):
    with S3Server(tmp_path, buckets=("models",)) as server:
        yield server.url, server.env


def publish(dir: Path, prefix: str, url: str, env: dict):
    subprocess.run([sys.executable, "-m", "routeiq_training", "publish", "--artifact", str(dir),
                    "--bucket", "models", "--prefix", prefix, "--endpoint-url", url],
                   cwd=TRAINING, env={**os.environ, **env}, check=True)


def test_hot_reload_from_s3_under_load(mock, gateway, s3, tmp_path, monkeypatch):
    mock.faults()
    url, env = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    names = candidates(ARTIFACTS / "elo")
    a, b = names[1], names[-2]
    elo_version(ARTIFACTS / "elo", tmp_path / "v1", a, "elo-s3-a")
    elo_version(ARTIFACTS / "elo", tmp_path / "v2", b, "elo-s3-b")
    publish(tmp_path / "v1", "routers/elo", url, env)
    g = gateway(config(mock, "elo", model_s3_bucket="models", model_s3_key="routers/elo"))
    s = wait_loaded(g, "elo-s3-a")
    assert s["source"] == "s3://models/routers/elo"
    load = Load(g)
    try:
        time.sleep(0.5)
        publish(tmp_path / "v2", "routers/elo", url, env)
        wait_loaded(g, "elo-s3-b")
        time.sleep(0.5)
    finally:
        load.stop()
    assert set(load.statuses) == {200}
    assert load.candidates[0] == a and load.candidates[-1] == b


def test_the_control_plane_registry_activates_versions_on_attached_data_planes(tmp_path, pb, mock):
    """Versions registered with the control plane (through the admin API, as
    `routeiq_training publish --register` does) are activated one after the other: the
    attached data plane switches to each, pinned by its manifest hash, with the previous
    version serving until the next has loaded; a version whose files no longer match its
    registered hash is refused while the last good one keeps serving."""
    from stack import STACK_MASTER_KEY, Stack

    mock.faults()
    names = candidates(ARTIFACTS / "elo")
    v1, v2, v3 = tmp_path / "v1", tmp_path / "v2", tmp_path / "v3"
    elo_version(ARTIFACTS / "elo", v1, names[0], "elo-reg-1")
    elo_version(ARTIFACTS / "elo", v2, names[-1], "elo-reg-2")
    elo_version(ARTIFACTS / "elo", v3, names[2], "elo-reg-3")
    sha = lambda d: hashlib.sha256((d / "manifest.json").read_bytes()).hexdigest()  # noqa: E731
    s = Stack(tmp_path, pb, start=False)
    try:
        (tmp_path / "config.yaml").write_text(json.dumps({
            "model_list": [deployment(mock, "auto", n) for n in names],
            "router_settings": {"routing_strategy": "simple-shuffle",
                                "routing_strategy_args": {"reload_interval": 0.2}},
            "general_settings": {"master_key": STACK_MASTER_KEY},
        }))
        s.cp.start()
        dp = s.dataplane("dp-learned")
        admin = s.admin()
        first = admin.ok("POST", "/routing_model/new", json={
            "strategy": "llmrouter-elo", "artifact_uri": f"file://{v1}", "sha256": sha(v1),
            "metrics": {"accuracy": 0.6}, "activate": True})
        assert first["active"] and first["strategy"] == "elo" and first["snapshot_version"]
        wait_loaded(dp, "elo-reg-1")
        assert dp.chat(STACK_MASTER_KEY, model="auto").headers["x-routeiq-router-candidate"] == names[0]

        second = admin.ok("POST", "/routing_model/new", json={
            "strategy": "elo", "artifact_uri": str(v2), "sha256": sha(v2)})
        assert not second["active"]
        admin.ok("POST", "/routing_model/activate", json={"id": second["id"]})
        wait_loaded(dp, "elo-reg-2")
        assert dp.chat(STACK_MASTER_KEY, model="auto").headers["x-routeiq-router-candidate"] == names[-1]
        listed = admin.ok("GET", "/routing_model/list", params={"strategy": "elo"})
        assert [(m["id"], m["active"]) for m in listed] == [(first["id"], False), (second["id"], True)]
        assert listed[0]["metrics"] == {"accuracy": 0.6}

        # Registered, then changed on disk: the pinned hash no longer matches.
        third = admin.ok("POST", "/routing_model/new", json={
            "strategy": "elo", "artifact_uri": str(v3), "sha256": sha(v3)})
        elo_version(ARTIFACTS / "elo", v3, names[3], "elo-reg-3-changed")
        admin.ok("POST", "/routing_model/activate", json={"id": third["id"]})
        deadline = time.time() + 15
        while "activated version" not in (status(dp)["last_error"] or "") and time.time() < deadline:
            time.sleep(0.05)
        st = status(dp)
        assert "activated version" in st["last_error"] and st["version"] == "elo-reg-2", st
        r = dp.chat(STACK_MASTER_KEY, model="auto")
        assert r.status_code == 200 and r.headers["x-routeiq-router-candidate"] == names[-1]

        bad = admin.call("POST", "/routing_model/new", json={
            "strategy": "causallm", "artifact_uri": str(v1), "sha256": sha(v1)})
        assert bad.status_code == 400 and "not a learned strategy" in bad.json()["error"]["message"]
        audit = s.sql("SELECT action FROM audit_log WHERE object_type = 'routing_model' ORDER BY id")
        assert [a for (a,) in audit].count("routing_model.activate") == 3
    finally:
        s.close()


def causallm_config(mock, router: dict, **args) -> dict:
    names = candidates(ARTIFACTS / "knn")
    return {
        "model_list": [deployment(mock, "auto", n) for n in names] + [{"model_name": "router", **router}],
        "router_settings": {"routing_strategy": "llmrouter-causallm",
                            "routing_strategy_args": {"router_model": "router", **args}},
    }


def test_causallm_asks_the_router_model_through_the_gateway(mock, gateway):
    """The router model is a deployment of the gateway's own (here the mock provider, which
    echoes the query, so a query naming a candidate makes the router model name it)."""
    mock.faults()
    names = candidates(ARTIFACTS / "knn")
    llm_data = Path(__file__).resolve().parents[1] / "fixtures" / "llmrouter" / "llm_candidates.json"
    g = gateway(causallm_config(
        mock, {"litellm_params": {"model": "openai/the-router", "api_base": f"{mock.url}/v1",
                                  "api_key": "sk-upstream"}},
        llm_data_path=str(llm_data)))
    before = mock.stats().get("the-router", {}).get("requests", 0)
    r = g.chat("auto", content=f"{names[4]} should answer: what is 2 + 2?")
    assert r.status_code == 200, r.text
    assert r.headers["x-routeiq-router"] == "llmrouter-causallm"
    assert r.headers["x-routeiq-router-version"] == "router"
    assert r.headers["x-routeiq-router-candidate"] == names[4]
    assert r.headers["x-litellm-model-id"] == names[4]
    assert mock.stats()["the-router"]["requests"] == before + 1


def test_causallm_falls_back_on_an_unusable_answer_or_a_slow_router(mock, gateway):
    mock.faults()
    g = gateway(causallm_config(mock, {"litellm_params": {"model": "mock/router", "mock_response": "no idea"}}))
    r = g.chat("auto")
    assert r.status_code == 200 and r.headers["x-routeiq-router-version"] == "fallback"
    slow = gateway(causallm_config(
        mock, {"litellm_params": {"model": "openai/slow-router", "api_base": f"{mock.url}/v1", "api_key": "k"}},
        router_timeout=0.3))
    mock.faults(**{"slow-router": {"delay_ms": 3000}})
    t = time.time()
    r = slow.chat("auto")
    assert r.status_code == 200 and r.headers["x-routeiq-router-version"] == "fallback"
    assert time.time() - t < 2.0


def test_publish_registers_and_activates_in_one_command(tmp_path, pb, mock, s3, monkeypatch):
    """The whole loop's last steps: `routeiq_training publish --register --activate`
    uploads to S3, registers the version (pinned by its manifest hash) and activates it;
    the attached data plane loads it from S3."""
    from stack import STACK_MASTER_KEY, Stack

    mock.faults()
    url, env = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    names = candidates(ARTIFACTS / "elo")
    elo_version(ARTIFACTS / "elo", tmp_path / "v1", names[3], "elo-published-1")
    s = Stack(tmp_path, pb, start=False)
    try:
        (tmp_path / "config.yaml").write_text(json.dumps({
            "model_list": [deployment(mock, "auto", n) for n in names],
            "router_settings": {"routing_strategy_args": {"reload_interval": 0.2}},
            "general_settings": {"master_key": STACK_MASTER_KEY},
        }))
        s.cp.start()
        dp = s.dataplane("dp-published")
        admin = s.admin()
        out = subprocess.run(
            [sys.executable, "-m", "routeiq_training", "publish", "--artifact", str(tmp_path / "v1"),
             "--bucket", "models", "--prefix", "routers/elo/1", "--endpoint-url", url,
             "--register", admin.url, "--admin-key", STACK_MASTER_KEY, "--activate"],
            cwd=TRAINING, env={**os.environ, **env}, check=True, capture_output=True, text=True).stdout
        version = json.loads(out.strip().splitlines()[-1])
        assert version["active"] and version["artifact_uri"] == "s3://models/routers/elo/1"
        st = wait_loaded(dp, "elo-published-1")
        assert st["source"] == "s3://models/routers/elo/1" and st["sha256"] == version["sha256"]
        assert dp.chat(STACK_MASTER_KEY, model="auto").headers["x-routeiq-router-candidate"] == names[3]
    finally:
        s.close()


def test_routing_spans_go_out_over_otlp_and_become_training_records(mock, gateway, tmp_path, monkeypatch):
    """traces → dataset: the data plane exports a `routeiq.route` span per request (its
    trace id is the request's x-litellm-call-id); the OTLP export plus feedback by call id
    becomes LLMRouter routing records through `routeiq_training traces`."""
    from google.protobuf.json_format import MessageToDict

    mock.faults()
    receiver = OtlpReceiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        dir = ARTIFACTS / "knn"
        # The query is prompt text: not on spans unless content capture is asked for.
        g = gateway(config(mock, "knn", model_path=str(dir)))
        wait_loaded(g)
        query, want = clear_choices(dir)[0]
        r = g.chat("auto", content=query)
        assert r.headers["x-routeiq-router-candidate"] == want
        deadline = time.time() + 15
        call_id = r.headers["x-litellm-call-id"]
        mine = lambda: [s for s in receiver.spans() if s.trace_id.hex() == call_id]  # noqa: E731
        while not mine() and time.time() < deadline:
            time.sleep(0.05)
        [plain] = mine()
        keys = {a.key for a in plain.attributes}
        assert "routeiq.route.candidate" in keys and "routeiq.route.query" not in keys
        g.stop()
        receiver.received.clear()
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
        g = gateway(config(mock, "knn", model_path=str(dir)))
        wait_loaded(g)
        sent = {}
        for query, want in clear_choices(dir)[:3]:
            r = g.chat("auto", content=query)
            assert r.headers["x-routeiq-router-candidate"] == want
            sent[r.headers["x-litellm-call-id"]] = (query, want, r.headers["x-litellm-model-id"])
        deadline = time.time() + 15
        chats = lambda: [s for s in receiver.spans() if s.trace_id.hex() in sent]  # noqa: E731
        while len(chats()) < len(sent) and time.time() < deadline:
            time.sleep(0.05)
        spans = {s.trace_id.hex(): s for s in chats()}
        assert set(spans) == set(sent)
        for call_id, (query, want, deployment_id) in sent.items():
            attrs = {a.key: a.value for a in spans[call_id].attributes}
            assert attrs["routeiq.route.strategy"].string_value == "llmrouter-knn"
            assert attrs["routeiq.route.candidate"].string_value == want
            assert attrs["routeiq.deployment.id"].string_value == deployment_id
            assert attrs["routeiq.route.query"].string_value == query
            assert attrs["gen_ai.usage.output_tokens"].int_value > 0
            # The routing step under it: every scored candidate with its score, the chosen
            # one the best.
            (step,) = [x for x in receiver.spans("routeiq.routing")
                       if x.trace_id.hex() == call_id and x.parent_span_id == spans[call_id].span_id]
            step_attrs = {a.key: a.value for a in step.attributes}
            names = [v.string_value for v in step_attrs["routeiq.route.candidates"].array_value.values]
            scores = [v.double_value for v in step_attrs["routeiq.route.scores"].array_value.values]
            assert len(names) == len(scores) >= 2 and want in names
            assert scores[names.index(want)] == max(scores)
            assert step_attrs["routeiq.route.version"].string_value == attrs["routeiq.route.version"].string_value
        export = tmp_path / "traces.jsonl"
        export.write_text("\n".join(json.dumps(MessageToDict(r)) for r in receiver.received))
        feedback = tmp_path / "feedback.json"
        feedback.write_text(json.dumps([{"trace_id": c, "score": 0.25 * (i + 1)}
                                        for i, c in enumerate(sent)]))
        out = tmp_path / "records.json"
        subprocess.run([sys.executable, "-m", "routeiq_training", "traces", "--otlp", str(export),
                        "--feedback", str(feedback), "--out", str(out)], cwd=TRAINING, check=True)
        rows = {r["query"]: r for r in json.loads(out.read_text())}
        for i, (query, want, _) in enumerate(sent.values()):
            assert rows[query]["model_name"] == want
            assert rows[query]["performance"] == 0.25 * (i + 1)
            assert rows[query]["latency"] > 0
    finally:
        receiver.stop()


def automix_config(mock, small: dict, large: str, **args) -> dict:
    return {
        "model_list": [{"model_name": "auto", "model_info": {"id": "small"}, **small},
                       deployment(mock, "auto", large)],
        "router_settings": {"routing_strategy": "llmrouter-automix",
                            "routing_strategy_args": {"large_model": large, **args}},
    }


def test_automix_keeps_a_verified_draft_and_escalates_a_doubtful_one(mock, gateway):
    """The small model answers; it then verifies its own answer (a second call). The mock
    provider's fixed "Yes" verifies; its echo ("mock reply to: Question: ...") does not, so
    the request goes to the large model, and the draft and the verification are paid for."""
    mock.faults()
    names = candidates(ARTIFACTS / "knn")
    large = names[-1]
    sure = gateway(automix_config(
        mock, {"litellm_params": {"model": "mock/small-model", "mock_response": "Yes"}}, large,
        small_model="small-model"))
    r = sure.chat("auto", content="Is the sky blue?")
    assert r.status_code == 200, r.text
    assert r.headers["x-litellm-model-id"] == "small"
    assert (r.headers["x-routeiq-automix-confidence"], r.headers["x-routeiq-automix-escalated"]) == ("1.000", "false")
    assert r.json()["choices"][0]["message"]["content"] == "Yes"

    small = names[0]
    unsure = gateway(automix_config(
        mock, {"litellm_params": {"model": f"openai/{small}", "api_base": f"{mock.url}/v1", "api_key": "k"},
               "model_info": {"id": "small", "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}},
        large, small_model=small, verify_samples=3))
    before = mock.stats()
    count = lambda stats, m: stats.get(m, {}).get("requests", 0)  # noqa: E731
    r = unsure.chat("auto", content="What is the capital of France?")
    assert r.status_code == 200, r.text
    assert r.headers["x-litellm-model-id"] == large
    assert r.headers["x-routeiq-router-candidate"] == large
    assert (r.headers["x-routeiq-automix-confidence"], r.headers["x-routeiq-automix-escalated"]) == ("0.000", "true")
    assert "capital of France" in r.json()["choices"][0]["message"]["content"]
    after = mock.stats()
    assert count(after, small) - count(before, small) == 1 + 3  # the draft and three verifications
    assert count(after, large) - count(before, large) == 1
    assert float(r.headers["x-litellm-response-cost"]) > 0

    # A stream cannot be verified before the client sees it: it goes to the large model.
    with httpx.stream("POST", f"{unsure.url}/v1/chat/completions", headers=auth(), timeout=10,
                      json={"model": "auto", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}) as s:
        assert s.status_code == 200 and s.headers["x-litellm-model-id"] == large
        s.read()


def multiround_config(mock, strategy: str, **args) -> dict:
    names = candidates(ARTIFACTS / "knn")
    return {
        "model_list": [deployment(mock, "auto", n) for n in names] + [
            {"model_name": "router", "litellm_params": {"model": "openai/the-router",
                                                        "api_base": f"{mock.url}/v1", "api_key": "k"}}],
        "router_settings": {"routing_strategy": f"llmrouter-{strategy}",
                            "routing_strategy_args": {"router_model": "router", **args}},
    }


def requests_to(mock, model: str) -> int:
    return mock.stats().get(model, {}).get("requests", 0)


def test_llm_multiround_decomposes_routes_answers_and_aggregates(mock, gateway):
    """The router model (the mock provider, which echoes) decomposes the question, routes
    the sub-question (its echo names a candidate), the candidate answers, and the router
    model writes the final answer from the notes: four calls besides the client's."""
    mock.faults()
    names = candidates(ARTIFACTS / "knn")
    g = gateway(multiround_config(mock, "llm-multiround"))
    router0, cand0 = requests_to(mock, "the-router"), requests_to(mock, names[2])
    r = g.chat("auto", content=f"{names[2]} knows: what is 2 + 2?")
    assert r.status_code == 200, r.text
    assert r.headers["x-routeiq-router"] == "llmrouter-llm-multiround"
    assert r.headers["x-routeiq-router-candidate"] == names[2]
    assert r.headers["x-litellm-model-id"] != names[2]  # the router model answered
    text = r.json()["choices"][0]["message"]["content"]
    assert f"Answer from {names[2]}" in text
    assert requests_to(mock, "the-router") - router0 == 3  # decompose, route, final
    assert requests_to(mock, names[2]) - cand0 == 1
    with httpx.stream("POST", f"{g.url}/v1/chat/completions", headers=auth(), timeout=10,
                      json={"model": "auto", "stream": True,
                            "messages": [{"role": "user", "content": f"{names[2]}: hi"}]}) as s:
        assert s.status_code == 200
        assert "data: [DONE]" in s.read().decode()


def test_knn_multiround_routes_sub_questions_with_the_artifact(mock, gateway):
    mock.faults()
    names = candidates(ARTIFACTS / "knn")
    g = gateway(multiround_config(mock, "knn-multiround", model_path=str(ARTIFACTS / "knn")))
    wait_loaded(g)
    before = {n: requests_to(mock, n) for n in names}
    r = g.chat("auto", content="Explain the causes of the French Revolution.")
    assert r.status_code == 200, r.text
    consulted = r.headers["x-routeiq-router-candidate"]
    assert consulted in names
    assert requests_to(mock, consulted) - before[consulted] == 1


def test_router_r1_consults_candidates_in_turns(mock, gateway):
    mock.faults()
    names = candidates(ARTIFACTS / "knn")
    g = gateway(multiround_config(mock, "router-r1", max_rounds=3))
    before = requests_to(mock, names[5])
    r = g.chat("auto", content=f"<search>{names[5]}: what is the capital of Peru?</search>")
    assert r.status_code == 200, r.text
    assert r.headers["x-routeiq-router"] == "llmrouter-router-r1"
    assert r.headers["x-routeiq-router-candidate"] == names[5]
    assert requests_to(mock, names[5]) - before == 1


@pytest.mark.parametrize("strategy", ["personalized", "gmt"])
def test_personalised_routing_follows_the_end_user(mock, gateway, strategy):
    """Artifacts trained with simulated users (scripts/train-fixture-artifacts.sh): the
    body's `user` picks the user's terms; an unknown user gets the base scores."""
    mock.faults()
    dir = ARTIFACTS / strategy
    g = gateway(config(mock, strategy, model_path=str(dir)))
    wait_loaded(g)
    names = candidates(dir)
    rows = json.loads((dir / "expected.json").read_text())
    checked = 0
    for row in rows:
        scores = sorted((s for s in row["scores"] if s is not None), reverse=True)
        if len(scores) > 1 and scores[0] - scores[1] <= TOLERANCE:
            continue
        body = {"user": row["user"]} if row.get("user") else {}
        r = g.chat("auto", content=row["query"], **body)
        assert r.status_code == 200, r.text
        assert r.headers["x-routeiq-router-candidate"] == names[row["choice"]], row
        checked += 1
    assert checked >= 8
    # The users' terms matter: without its user, some query is routed elsewhere.
    moved = 0
    for row in rows:
        if row.get("user") and row["user"].startswith("sim-"):
            base = g.chat("auto", content=row["query"]).headers["x-routeiq-router-candidate"]
            moved += base != names[row["choice"]]
    assert moved >= 1


def with_operating(src: Path, dst: Path, operating: dict) -> Path:
    """A copy of the artifact at `src` whose manifest carries `operating` (the files it
    lists are unchanged, so their hashes still hold)."""
    shutil.copytree(src, dst)
    m = manifest(src)
    m["operating"] = operating
    m["version"] += "-operating"
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def picks(g, queries: list[str]) -> list[str]:
    out = []
    for q in queries:
        r = g.chat("auto", content=q)
        assert r.status_code == 200, r.text
        out.append(r.headers["x-routeiq-router-candidate"])
    return out


def test_the_pipeline_calibrates_and_validates_operating_points(mock, gateway):
    """The pipeline's mf artifact carries its calibration and operating points (the parity
    test checks the others), and the gateway loads and routes by them: a price cap below
    the envelope's first vertex, the cheapest candidate, sends every request there."""
    mock.faults()
    dir = ARTIFACTS / "mf"
    m = manifest(dir)
    assert m["calibration"]["method"] == "platt"
    curve = m["operating"]["curve"]
    assert [v["price_per_m"] for v in curve] == sorted(v["price_per_m"] for v in curve)
    assert [v["quality"] for v in curve] == sorted(v["quality"] for v in curve)
    g = gateway(config(mock, "mf", model_path=str(dir),
                       max_price_per_m=curve[0]["price_per_m"] / 2))
    wait_loaded(g)
    got = set(picks(g, [q for q, _ in clear_choices(dir)[:12]]))
    prices = [(c["input_price"] + c["output_price"]) / 2 for c in m["candidates"]]
    assert curve[0]["price_per_m"] == min(prices)
    assert got == {m["candidates"][curve[0]["candidate"]]["name"]}


def test_conservative_mode_keeps_the_best_single_model_unless_the_gain_clears_the_margin(
        mock, gateway, tmp_path):
    mock.faults()
    src = ARTIFACTS / "mf"
    names = candidates(src)
    rows = clear_choices(src)[:20]
    chosen = {want for _, want in rows}
    assert len(chosen) > 1, "the fixture's mf must choose more than one candidate"
    best = max(chosen, key=lambda n: sum(w == n for _, w in rows))
    operating = lambda margin: {  # noqa: E731
        "best_single": names.index(best), "quality": 0.6, "price_per_m": 1.0,
        "margin": margin,
        "curve": [{"price_per_m": 1.0, "quality": 0.6, "cost_weight": 0.0}]}
    # Probabilities differ by less than 1: a margin of 1 never leaves the best single model.
    wide = with_operating(src, tmp_path / "wide", operating(1.0))
    g = gateway(config(mock, "mf", model_path=str(wide), conservative=True))
    wait_loaded(g)
    assert set(picks(g, [q for q, _ in rows])) == {best}
    # A margin of 0 leaves it for any gain: the pipeline's own choices.
    narrow = with_operating(src, tmp_path / "narrow", operating(0.0))
    g = gateway(config(mock, "mf", model_path=str(narrow), conservative=True))
    wait_loaded(g)
    assert picks(g, [q for q, _ in rows]) == [w for _, w in rows]
    # Queries shorter or longer than the training ones (`query_bytes`, in UTF-8 bytes)
    # keep the best single model whatever their gain; the others, the pipeline's choices.
    lengths = sorted(len(q.encode()) for q, _ in rows)
    low, high = lengths[len(lengths) // 4], lengths[3 * len(lengths) // 4]
    ranged = with_operating(src, tmp_path / "ranged",
                            {**operating(0.0), "query_bytes": {"min": low, "max": high}})
    g = gateway(config(mock, "mf", model_path=str(ranged), conservative=True))
    wait_loaded(g)
    inside = [low <= len(q.encode()) <= high for q, _ in rows]
    assert 0 < sum(inside) < len(rows)
    assert any(w != best for (_, w), i in zip(rows, inside) if not i), \
        "some query outside the range must have had another choice"
    assert picks(g, [q for q, _ in rows]) == [
        w if i else best for (_, w), i in zip(rows, inside)]


def test_the_dollar_knob_mixes_two_operating_points(mock, gateway, tmp_path):
    """`max_price_per_m` a quarter of the way from the cheap vertex to the dear one sends a
    quarter of the requests to the dear one; `quality_floor` does the same on quality."""
    mock.faults()
    src = ARTIFACTS / "mf"
    names = candidates(src)
    cheap, dear = names[0], names[-1]
    curve = [{"price_per_m": 0.2, "quality": 0.3, "candidate": 0},
             {"price_per_m": 1.0, "quality": 0.7, "candidate": len(names) - 1}]
    art = with_operating(src, tmp_path / "knob", {
        "best_single": len(names) - 1, "quality": 0.7, "price_per_m": 1.0, "margin": 0.0,
        "curve": curve})
    queries = [f"question {i}" for i in range(400)]
    for args in ({"max_price_per_m": 0.4}, {"quality_floor": 0.4 / 0.7}):
        g = gateway(config(mock, "mf", model_path=str(art), **args))
        wait_loaded(g)
        got = picks(g, queries)
        assert set(got) == {cheap, dear}, args
        share = got.count(dear) / len(got)
        # Binomial(400, 0.25): sd 0.022; 0.25 ± 0.09 is four of them.
        assert abs(share - 0.25) < 0.09, (args, share)
    for args, only in (({"max_price_per_m": 0.1}, cheap), ({"max_price_per_m": 5.0}, dear),
                       ({"quality_floor": 1.5}, dear)):
        g = gateway(config(mock, "mf", model_path=str(art), **args))
        wait_loaded(g)
        assert set(picks(g, queries[:30])) == {only}, args
