"""Router versions under evaluation, end to end (issue 23): a shadow version decides
beside the serving one, off the request path, and its choice is recorded but never acted
on; an A/B version decides for a sticky share of the clients. Standalone data planes from
`config.yaml`, then the control plane's registry: spend logs, feedback by call id, the
per-version report, promotion and roll back."""

import hashlib
import json
import time
from pathlib import Path

import httpx

from otlp import OtlpReceiver
from test_learned_routing import ARTIFACTS, artifacts_present, candidates, clear_choices, metric  # noqa: F401
from test_routing import deployment, gateway, mock  # noqa: F401 (fixtures)

SERVING, CHALLENGER = "mlp", "knn"


def sha(dir: Path) -> str:
    return hashlib.sha256((dir / "manifest.json").read_bytes()).hexdigest()


def routers(g) -> list[dict]:
    return httpx.get(f"{g.url}/hot-reload/status").json()["routers"]


def wait_all_loaded(g, n: int, timeout: float = 30) -> list[dict]:
    deadline = time.time() + timeout
    rs = []
    while time.time() < deadline:
        rs = routers(g)
        if len(rs) == n and all(r["loaded"] for r in rs):
            return rs
        time.sleep(0.05)
    raise AssertionError(f"models not loaded: {rs}")


def experiment_config(mock, **experiments) -> dict:
    names = candidates(ARTIFACTS / SERVING)
    return {
        "model_list": [deployment(mock, "auto", n) for n in names],
        "router_settings": {"routing_strategy": f"llmrouter-{SERVING}",
                            "routing_strategy_args": {
                                "model_path": str(ARTIFACTS / SERVING), "reload_interval": 0.2,
                                **experiments}},
    }


def challenger(**more) -> dict:
    return {"strategy": f"llmrouter-{CHALLENGER}", "model_path": str(ARTIFACTS / CHALLENGER), **more}


def distinct_queries() -> list[tuple[str, str, str]]:
    """(query, serving's choice, challenger's choice) for queries both decide clearly."""
    serving = dict(clear_choices(ARTIFACTS / SERVING))
    return [(q, serving[q], c) for q, c in clear_choices(ARTIFACTS / CHALLENGER) if q in serving]


def test_a_shadow_version_decides_beside_and_is_never_acted_on(mock, gateway):
    mock.faults()
    g = gateway(experiment_config(mock, shadow=challenger()))
    rs = wait_all_loaded(g, 2)
    assert sorted(r["challenger"] for r in rs) == [False, True]
    queries = distinct_queries()
    assert len(queries) >= 10 and any(s != c for _, s, c in queries), "fixture has no disagreement"
    for q, serving, _ in queries:
        r = g.chat("auto", content=q)
        assert r.status_code == 200, r.text
        # The serving version decides; the shadow's choice changes nothing.
        assert r.headers["x-routeiq-router-candidate"] == serving
        assert r.headers["x-routeiq-router-arm"] == "serving"
        assert r.headers["x-litellm-model-id"] == serving
    deadline = time.time() + 5
    while metric(g, "routeiq_learned_shadow_decisions_total", outcome="scored") < len(queries):
        assert time.time() < deadline, g.metrics()
        time.sleep(0.05)
    assert metric(g, "routeiq_learned_shadow_decisions_total", outcome="scored") == len(queries)
    assert metric(g, "routeiq_learned_shadow_decisions_total", outcome="dropped") == 0


def test_the_shadow_choice_is_on_the_route_span(mock, gateway, monkeypatch):
    """The shadow's decision is on the request's `routeiq.route` span (the upstream answers
    in 150 ms here, so the shadow worker, which looks for work at least every 16 ms, is
    done before the request ends)."""
    queries = distinct_queries()[:6]
    mock.faults(**{n: {"delay_ms": 150} for n in candidates(ARTIFACTS / SERVING)})
    receiver = OtlpReceiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        g = gateway(experiment_config(mock, shadow=challenger()))
        wait_all_loaded(g, 2)
        sent = {}
        for q, serving, other in queries:
            r = g.chat("auto", content=q)
            assert r.status_code == 200, r.text
            sent[r.headers["x-litellm-call-id"]] = (serving, other)
        deadline = time.time() + 15
        spans = lambda: {s.trace_id.hex(): s for s in receiver.spans() if s.trace_id.hex() in sent}  # noqa: E731
        while len(spans()) < len(sent) and time.time() < deadline:
            time.sleep(0.05)
        got = spans()
        assert set(got) == set(sent)
        shadow_sha = sha(ARTIFACTS / CHALLENGER)
        for call, (serving, other) in sent.items():
            attrs = {a.key: a.value for a in got[call].attributes}
            assert attrs["routeiq.route.candidate"].string_value == serving
            assert attrs["routeiq.route.arm"].string_value == "serving"
            assert attrs["routeiq.route.shadow.candidate"].string_value == other
            assert attrs["routeiq.route.shadow.sha256"].string_value == shadow_sha
            assert attrs["routeiq.route.shadow.version"].string_value == \
                json.loads((ARTIFACTS / CHALLENGER / "manifest.json").read_text())["version"]
    finally:
        mock.faults()
        receiver.stop()


def test_a_request_that_falls_back_to_another_group_keeps_no_learned_decision(mock, gateway):
    """The learned group's decision (and its shadow) belong to that group: the fallback
    group, whose deployments are no candidates of the model, routes with the fallback
    strategy, and the response says so, not what the first group decided."""
    names = candidates(ARTIFACTS / SERVING)
    mock.faults(**{n: {"status": 503} for n in names})
    config = experiment_config(mock, shadow=challenger())
    config["model_list"].append(deployment(mock, "plain", "fb-plain"))
    config["router_settings"].update({"num_retries": 0, "fallbacks": [{"auto": ["plain"]}]})
    try:
        g = gateway(config)
        wait_all_loaded(g, 2)
        q, _, _ = distinct_queries()[0]
        r = g.chat("auto", content=q)
        assert r.status_code == 200, r.text
        assert r.headers["x-litellm-model-group"] == "plain"
        assert r.headers["x-routeiq-router-version"] == "fallback", dict(r.headers)
        assert "x-routeiq-router-candidate" not in r.headers and "x-routeiq-router-arm" not in r.headers
    finally:
        mock.faults()


def test_an_ab_version_decides_for_a_sticky_share_the_same_on_every_data_plane(mock, gateway):
    mock.faults()
    config = experiment_config(mock, ab=challenger(share=0.3, sticky="user"))
    planes = [gateway(config), gateway(config)]
    for g in planes:
        wait_all_loaded(g, 2)
    queries = distinct_queries()
    users = [f"user-{i}" for i in range(120)]
    arms: dict[str, set] = {u: set() for u in users}
    for i, u in enumerate(users):
        for j, g in enumerate(planes):
            q, serving, other = queries[(i + j) % len(queries)]
            r = g.chat("auto", content=q, user=u)
            assert r.status_code == 200, r.text
            arm = r.headers["x-routeiq-router-arm"]
            arms[u].add(arm)
            # Each arm decides with its own model.
            assert r.headers["x-routeiq-router-candidate"] == (other if arm == "ab" else serving), (u, arm)
    # Sticky: one arm per user, on both data planes.
    assert all(len(a) == 1 for a in arms.values()), arms
    taken = sum(a == {"ab"} for a in arms.values())
    # Binomial(120, 0.3): sd 5.0; 4 sd either side.
    assert 16 <= taken <= 56, taken


def test_the_registry_shadows_ab_tests_reports_promotes_and_rolls_back(tmp_path, pb, mock):
    """Through the admin API, as an operator runs it: the shadow's choices land in the spend
    log beside the serving version's, feedback by call id joins them, the report gives
    each version's agreement, quality and cost, and promotion and roll back are
    activations."""
    from stack import STACK_MASTER_KEY, Stack, wait_until

    mock.faults()
    names = candidates(ARTIFACTS / SERVING)
    serving_sha, challenger_sha = sha(ARTIFACTS / SERVING), sha(ARTIFACTS / CHALLENGER)
    s = Stack(tmp_path, pb, start=False)
    try:
        (tmp_path / "config.yaml").write_text(json.dumps({
            "model_list": [deployment(mock, "auto", n) for n in names],
            "router_settings": {"routing_strategy": "simple-shuffle",
                                "routing_strategy_args": {"reload_interval": 0.2}},
            "general_settings": {"master_key": STACK_MASTER_KEY},
        }))
        s.cp.start()
        dp = s.dataplane("dp-experiments")
        admin = s.admin()
        register = lambda strategy, **more: admin.ok("POST", "/routing_model/new", json={  # noqa: E731
            "strategy": strategy, "artifact_uri": str(ARTIFACTS / strategy),
            "sha256": sha(ARTIFACTS / strategy), **more})
        v1 = register(SERVING, activate=True)
        v2 = register(CHALLENGER)
        bad = admin.call("POST", "/routing_model/shadow", json={"id": v1["id"]})
        assert bad.status_code == 409 and "serving" in bad.json()["error"]["message"], bad.text
        shadowed = admin.ok("POST", "/routing_model/shadow", json={"id": v2["id"]})
        assert shadowed["mode"] == "shadow" and not shadowed["active"]
        wait_all_loaded(dp, 2)

        # A key of an internal user: feedback on its own requests only.
        admin.ok("POST", "/user/new", json={"user_id": "rater", "user_role": "internal_user"})
        rater = admin.ok("POST", "/key/generate", json={"user_id": "rater"})["key"]

        queries = distinct_queries()
        calls = []
        for i, (q, serving, other) in enumerate(queries):
            r = dp.chat(rater if i == 0 else STACK_MASTER_KEY, model="auto", content=q)
            assert r.status_code == 200, r.text
            assert r.headers["x-routeiq-router-candidate"] == serving
            calls.append((r.headers["x-litellm-call-id"], serving, other))
        ids = [c for c, _, _ in calls]
        rows = wait_until(lambda: (lambda rs: rs if len(rs) == len(ids) else None)(s.sql(
            "SELECT request_id, router_sha256, router_arm, router_candidate, shadow_sha256, "
            "shadow_candidate FROM spend_logs WHERE request_id = ANY(%s)", ids)),
            what="spend logs")
        logged = {r[0]: r[1:] for r in rows}
        for call, serving, other in calls:
            assert logged[call] == (serving_sha, "serving", serving, challenger_sha, other), call
        # The same through LiteLLM's /spend/logs.
        listed = {l["request_id"]: l for l in admin.ok("GET", "/spend/logs", params={"model": "auto", "page_size": 1000})}
        assert (listed[ids[1]]["router_sha256"], listed[ids[1]]["router_arm"],
                listed[ids[1]]["router_candidate"], listed[ids[1]]["shadow_sha256"],
                listed[ids[1]]["shadow_candidate"]) == (serving_sha, "serving", calls[1][1],
                                                        challenger_sha, calls[1][2])

        # Feedback by call id: thumbs up where the serving version chose the first half's
        # candidates, a score elsewhere; a later one replaces an earlier one.
        scores = {}
        for i, (call, _, _) in enumerate(calls):
            body = {"litellm_call_id": call, "rating": True} if i % 3 == 0 else {"call_id": call, "score": 0.25}
            if i == 0:
                other_user = admin.call("POST", "/feedback", key=STACK_MASTER_KEY, json={"call_id": call, "score": 0.0})
                assert other_user.status_code == 200, other_user.text
                mine = admin.call("POST", "/feedback", key=rater, json=body)
                assert mine.status_code == 200, mine.text
            else:
                admin.ok("POST", "/feedback", json=body)
            scores[call] = 1.0 if "rating" in body else 0.25
        # The rater's key may not rate a request it did not make.
        theirs = admin.call("POST", "/feedback", key=rater, json={"call_id": calls[1][0], "score": 1})
        assert theirs.status_code == 404, theirs.text
        for bad_body in ({"call_id": ids[0], "score": 1.5}, {"call_id": ids[0]},
                         {"call_id": ids[0], "score": 1, "rating": True}, {"score": 1}):
            r = admin.call("POST", "/feedback", json=bad_body)
            assert r.status_code in (400, 422), (bad_body, r.status_code, r.text)

        report = {row["model"]["id"]: row for row in admin.ok("GET", "/routing_model/report")["data"]}
        n = len(calls)
        agreed = sum(serving == other for _, serving, other in calls)
        served = report[v1["id"]]["served"]
        assert served["requests"] == n and served["ab_requests"] == 0
        assert served["feedback"]["n"] == n
        assert abs(served["feedback"]["mean"] - sum(scores.values()) / n) < 1e-9
        low, high = served["feedback"]["interval"]["low"], served["feedback"]["interval"]["high"]
        assert low <= served["feedback"]["mean"] <= high
        shadow = report[v2["id"]]["shadow"]
        assert (shadow["requests"], shadow["compared"], shadow["agreed"]) == (n, n, agreed)
        assert abs(shadow["agreement"] - agreed / n) < 1e-9
        assert report[v2["id"]]["served"]["requests"] == 0

        # Promote the shadow version: it serves, its experiment ends.
        promoted = admin.ok("POST", "/routing_model/activate", json={"id": v2["id"]})
        assert promoted["active"] and promoted["mode"] is None
        wait_until(lambda: [r["strategy"] for r in routers(dp) if r["loaded"]] == [f"llmrouter-{CHALLENGER}"],
                   what="the promoted version alone")
        q, _, other = queries[0]
        assert dp.chat(STACK_MASTER_KEY, model="auto", content=q).headers["x-routeiq-router-candidate"] == other

        # Roll back, then A/B the challenger on half of the end users.
        admin.ok("POST", "/routing_model/activate", json={"id": v1["id"]})
        ab = admin.ok("POST", "/routing_model/ab", json={"id": v2["id"], "share": 0.5})
        assert (ab["mode"], ab["share"], ab["sticky"]) == ("ab", 0.5, "user")
        wait_all_loaded(dp, 2)
        arms = {}
        for i in range(40):
            q, serving, other = queries[i % len(queries)]
            r = httpx.post(f"{dp.url}/v1/chat/completions", timeout=5,
                           headers={"Authorization": f"Bearer {STACK_MASTER_KEY}"},
                           json={"model": "auto", "user": f"u{i}",
                                 "messages": [{"role": "user", "content": q}]})
            assert r.status_code == 200, r.text
            arm = r.headers["x-routeiq-router-arm"]
            assert r.headers["x-routeiq-router-candidate"] == (other if arm == "ab" else serving)
            arms[r.headers["x-litellm-call-id"]] = arm
        assert set(arms.values()) == {"serving", "ab"}, arms
        ab_ids = [c for c, a in arms.items() if a == "ab"]
        wait_until(lambda: s.sql("SELECT count(*) FROM spend_logs WHERE request_id = ANY(%s) "
                                 "AND router_arm = 'ab' AND router_sha256 = %s",
                                 ab_ids, challenger_sha)[0][0] == len(ab_ids), what="A/B rows")
        report = {row["model"]["id"]: row for row in admin.ok("GET", "/routing_model/report")["data"]}
        assert report[v2["id"]]["served"]["ab_requests"] == len(ab_ids)

        stopped = admin.ok("POST", "/routing_model/stop", json={"mode": "ab"})
        assert stopped["id"] == v2["id"] and stopped["mode"] is None
        listed = {m["id"]: m for m in admin.ok("GET", "/routing_model/list")}
        assert listed[v1["id"]]["active"] and listed[v2["id"]]["mode"] is None
        wait_until(lambda: len(routers(dp)) == 1, what="the A/B version unloaded")
    finally:
        s.close()
