"""W3C trace context through the gateway: a caller's `traceparent` is honoured, and the
providers are sent one, so their spans join the caller's trace."""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from conftest import BIN_DIR, MASTER_KEY, Process, free_port, wait_http
from otlp import Blackhole, OtlpReceiver

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
STATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def ask(url: str, mock_url: str, traceparent: str | None,
        model: str = "gpt-upstream", tracestate: str | bytes | None = None) -> tuple[httpx.Response, dict]:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    if traceparent:
        headers["traceparent"] = traceparent
    if tracestate:
        headers["tracestate"] = tracestate
    r = httpx.post(f"{url}/v1/chat/completions", timeout=30, headers=headers,
                   json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    sent = httpx.get(f"{mock_url}/__last_request").json()["headers"]
    return r, sent


def test_without_exported_spans_the_callers_traceparent_goes_on_as_it_came(gateway, mock_provider):
    _, sent = ask(gateway.url, mock_provider, CALLER)
    assert sent["traceparent"] == CALLER
    _, sent = ask(gateway.url, mock_provider, None)
    assert "traceparent" not in sent
    # Not W3C's: neither honoured nor passed on.
    _, sent = ask(gateway.url, mock_provider, "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")
    assert "traceparent" not in sent
    # The caller's tracestate goes with its trace, as it came; not without a trace, and not
    # when it is not one a participant must pass on (over 512 bytes, not printable ASCII).
    _, sent = ask(gateway.url, mock_provider, CALLER, tracestate=STATE)
    assert (sent["traceparent"], sent["tracestate"]) == (CALLER, STATE)
    _, sent = ask(gateway.url, mock_provider, None, tracestate=STATE)
    assert "tracestate" not in sent
    for bad in (b"v=" + b"x" * 600, "v=caf\u00e9".encode()):
        _, sent = ask(gateway.url, mock_provider, CALLER, tracestate=bad)
        assert "tracestate" not in sent and sent["traceparent"] == CALLER


# A deployment that the tests make fail, and its fallback to gpt-upstream.
FLAKY = """  - model_name: flaky
    litellm_params: {{model: openai/gpt-4o-flaky, api_base: "{mock}/v1", api_key: k}}
router_settings:
  num_retries: 0
  fallbacks: [{{flaky: [gpt-upstream]}}]"""


def test_each_attempt_is_a_genai_client_span_under_the_requests_span(mock_provider, tmp_path):
    receiver = OtlpReceiver()
    url, p = start_gateway(tmp_path, mock_provider, receiver.port, FLAKY.format(mock=mock_provider))
    try:
        joined, joined_sent = ask(url, mock_provider, CALLER, tracestate=STATE)
        own, own_sent = ask(url, mock_provider, None)
        httpx.post(f"{mock_provider}/__faults", json={"gpt-4o-flaky": {"status": 500}}).raise_for_status()
        try:
            fell_back, _ = ask(url, mock_provider, CALLER, model="flaky")
        finally:
            httpx.post(f"{mock_provider}/__faults", json={}).raise_for_status()

        def spans_of(call_id: str) -> tuple:
            """The request's span and its attempts (client spans under it)."""
            route, children = tree_of(receiver, call_id)
            return route, [c for c in children if c.kind == c.SPAN_KIND_CLIENT]

        _, trace, parent, _ = CALLER.split("-")
        # In the caller's trace, under the caller's span; the provider's parent is the
        # attempt's span, a GenAI client span under the request's.
        route, [attempt] = spans_of(joined.headers["x-litellm-call-id"])
        assert route.trace_id.hex() == trace and route.parent_span_id.hex() == parent
        assert route.kind == route.SPAN_KIND_SERVER
        # The steps before the attempt are its siblings, each within the request's time.
        _, children = tree_of(receiver, joined.headers["x-litellm-call-id"])
        steps = {c.name: c for c in children if c.kind == c.SPAN_KIND_INTERNAL}
        assert {"routeiq.auth", "routeiq.routing", "routeiq.limits"} <= set(steps), steps.keys()
        for step in steps.values():
            assert route.start_time_unix_nano <= step.start_time_unix_nano <= step.end_time_unix_nano
            assert step.end_time_unix_nano <= attempt.start_time_unix_nano
        assert attr(steps["routeiq.routing"], "routeiq.deployment.id") == attr(attempt, "routeiq.deployment.id")
        assert attr(steps["routeiq.routing"], "routeiq.route.strategy") == "simple-shuffle"
        # No content by default.
        assert attr(route, "routeiq.route.query") is None
        assert joined_sent["traceparent"] == f"00-{trace}-{attempt.span_id.hex()}-01"
        # The caller's tracestate: on the spans of its trace, and on to the provider.
        assert route.trace_state == attempt.trace_state == STATE
        assert joined_sent["tracestate"] == STATE
        assert attempt.name == "chat gpt-4o-mini" and attempt.kind == attempt.SPAN_KIND_CLIENT
        assert attr(attempt, "gen_ai.operation.name") == "chat"
        assert attr(attempt, "gen_ai.provider.name") == "openai"
        assert attr(attempt, "gen_ai.request.model") == "gpt-4o-mini"
        assert attr(attempt, "gen_ai.usage.output_tokens") > 0
        # No caller's trace: the request's id names the trace.
        call_id = own.headers["x-litellm-call-id"]
        route, [attempt] = spans_of(call_id)
        assert route.trace_id.hex() == call_id
        assert own_sent["traceparent"] == f"00-{call_id}-{attempt.span_id.hex()}-01"
        # A fallback is a sibling of the attempt that failed.
        route, attempts = spans_of(fell_back.headers["x-litellm-call-id"])
        by_name = {a.name: a for a in attempts}
        assert set(by_name) == {"chat gpt-4o-flaky", "chat gpt-4o-mini"}, by_name
        failed = by_name["chat gpt-4o-flaky"]
        assert attr(failed, "error.type") and failed.status.code == failed.status.STATUS_CODE_ERROR
        assert "error.type" not in {a.key for a in by_name["chat gpt-4o-mini"].attributes}
        # A stream: the attempt that served it records its first chunk's delay.
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {MASTER_KEY}"},
                          json={"model": "gpt-upstream", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status_code == 200
            streamed = r.headers["x-litellm-call-id"]
            assert "[DONE]" in r.read().decode()
        route, [attempt] = spans_of(streamed)
        ttfc = attr(attempt, "gen_ai.response.time_to_first_chunk")
        assert ttfc is not None and 0 < ttfc * 1e9 <= attempt.end_time_unix_nano - attempt.start_time_unix_nano
        assert attr(attempt, "gen_ai.usage.output_tokens") > 0
    finally:
        p.stop()
        receiver.stop()


def tree_of(receiver: OtlpReceiver, call_id: str, timeout: float = 15) -> tuple:
    """The request's `routeiq.route` span and every span under it (waits until its
    attempts have arrived)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        routes = [s for s in receiver.spans() if attr(s, "routeiq.request_id") == call_id]
        if routes:
            (route,) = routes
            children = [s for s in receiver.received_spans()
                        if s.parent_span_id == route.span_id and s.trace_id == route.trace_id]
            if any(c.kind == c.SPAN_KIND_CLIENT for c in children):
                return route, children
        time.sleep(0.05)
    raise AssertionError(f"no spans for {call_id}")


def start_gateway(tmp_path, mock_provider, receiver_port: int | None, extra: str = "",
                  **env) -> tuple[str, Process]:
    """A standalone gateway with the `gpt-upstream` deployment and `extra` YAML (more
    deployments of the model list, `router_settings`), exporting to `receiver_port`."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: gpt-upstream
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock_provider}/v1", api_key: sk-provider-secret-9f2}}
{extra}
general_settings:
  master_key: {MASTER_KEY}
""")
    port = free_port()
    if receiver_port:
        env.setdefault("OTEL_BSP_SCHEDULE_DELAY", "100")
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver_port}"
    p = Process([str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
                tmp_path / "gw.log", env=dict(os.environ, **env))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health/liveliness", p.proc)
    return url, p


def test_the_sampler_decides_new_traces_and_follows_the_callers_flag(mock_provider, tmp_path):
    """`OTEL_TRACES_SAMPLER=parentbased_traceidratio` at 0: a request without a trace starts
    none that is exported (its id still names the trace the provider is told of, unsampled);
    a caller's sampled trace is followed, and a caller's unsampled one too."""
    receiver = OtlpReceiver()
    url, p = start_gateway(tmp_path, mock_provider, receiver.port,
                           OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
    try:
        own, own_sent = ask(url, mock_provider, None)
        call_id = own.headers["x-litellm-call-id"]
        version, trace, span, flags = own_sent["traceparent"].split("-")
        assert (version, trace, flags) == ("00", call_id, "00")
        unsampled = CALLER[:-2] + "00"
        off, off_sent = ask(url, mock_provider, unsampled)
        assert off_sent["traceparent"].endswith("-00") and off_sent["traceparent"].split("-")[1] == CALLER.split("-")[1]
        # The provider is told of the attempt as a span of its own (a new id, never the
        # caller's), though nothing is recorded for it.
        _, again_sent = ask(url, mock_provider, unsampled)
        ids = {sent["traceparent"].split("-")[2] for sent in (own_sent, off_sent, again_sent)}
        assert len(ids) == 3 and CALLER.split("-")[2] not in ids
        assert all(len(i) == 16 and int(i, 16) != 0 for i in ids)
        joined, _ = ask(url, mock_provider, CALLER)
        route, _ = tree_of(receiver, joined.headers["x-litellm-call-id"])
        assert route.trace_id.hex() == CALLER.split("-")[1]
        time.sleep(0.5)
        exported = {attr(s, "routeiq.request_id") for s in receiver.spans()}
        assert exported == {joined.headers["x-litellm-call-id"]}, exported
    finally:
        p.stop()
        receiver.stop()


def test_a_dead_collector_fails_no_request_and_memory_stays_bounded(mock_provider, tmp_path):
    """The collector goes away mid-run, then one that never answers takes its port: every
    request is still answered, and the span queue is bounded (spans past it are dropped).
    The logs are JSON lines carrying the request's trace and span ids, with no key, prompt
    or provider secret in them at any level."""
    receiver = OtlpReceiver()
    url, p = start_gateway(tmp_path, mock_provider, receiver.port, ROUTEIQ_LOG_FORMAT="json",
                           OTEL_EXPORTER_OTLP_TIMEOUT="30000",
                           ROUTEIQ_LOG="debug,pingora=warn,h2=info,tonic=info,tower=info,hyper=info")

    def run(n: int, content: str) -> list[int]:
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as c:
            def one(_):
                return c.post(f"{url}/v1/chat/completions", json={
                    "model": "gpt-upstream", "messages": [{"role": "user", "content": content}]}).status_code
            with ThreadPoolExecutor(8) as pool:
                return list(pool.map(one, range(n)))

    def rss_kb() -> int:
        for line in open(f"/proc/{p.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    hole = None
    try:
        first = ask(url, mock_provider, None)[0].headers["x-litellm-call-id"]
        route, _ = tree_of(receiver, first)
        receiver.stop()
        # The collector's own port, now held by one that never answers.
        hole = Blackhole(receiver.port)
        assert set(run(2000, "a secret prompt 7c1e")) == {200}
        settled = rss_kb()
        assert set(run(3000, "a secret prompt 7c1e")) == {200}
        grown = rss_kb() - settled
        # 15,000 more spans (about 1 kB each) could not be sent; the queue holds 2,048.
        assert grown < 6 * 1024, f"RSS grew {grown} kB over 3,000 requests with the collector hung"
    finally:
        p.stop()
        if hole:
            hole.stop()
    log = (tmp_path / "gw.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    requests = [line for line in lines if line.get("message") == "request"]
    assert len(requests) >= 5001
    (line,) = [r for r in requests if r["request_id"] == first]
    assert line["trace_id"] == first and line["span_id"] == route.span_id.hex()
    assert line["model_group"] == "gpt-upstream" and line["status"] == 200
    assert line["completion_tokens"] > 0 and line["llm_api_ms"] > 0 and line["total_ms"] >= line["llm_api_ms"]
    for secret in (MASTER_KEY, "sk-provider-secret-9f2", "a secret prompt 7c1e"):
        assert secret not in log


def test_one_trace_from_the_admin_api_and_from_a_request_into_postgres(make_stack, monkeypatch):
    """Every service exports to the same collector. An admin call joins its caller's trace
    and the control plane's gRPC span is its child; a chat request through an attached data
    plane joins its caller's trace, and the control plane's ingestion of its usage event
    (the event's `traceparent` on NATS) is a child of the request's span, ended once the
    event is in PostgreSQL."""
    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    try:
        s = make_stack()
        admin = s.admin()
        admin_caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        r = admin.call("POST", "/key/generate", json={"key_alias": "traced"},
                       headers={"traceparent": admin_caller})
        assert r.status_code == 200, r.text
        key = r.json()["key"]
        dp = s.dataplane("dp-traced")
        from stack import accepted, wait_until
        wait_until(lambda: accepted(dp, key), what="key accepted")
        r = httpx.post(f"{dp.url}/v1/chat/completions", timeout=10,
                       headers={"Authorization": f"Bearer {key}", "traceparent": CALLER},
                       json={"model": "priced", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        call_id = r.headers["x-litellm-call-id"]
        _, trace, caller_span, _ = CALLER.split("-")

        def find(predicate, what):
            deadline = time.time() + 15
            while time.time() < deadline:
                found = [(svc, sp) for svc, sp in receiver.service_spans() if predicate(svc, sp)]
                if found:
                    return found
                time.sleep(0.05)
            raise AssertionError(f"no {what}; got {[(svc, sp.name) for svc, sp in receiver.service_spans()]}")

        # The admin API's server span, under its caller; the control plane's gRPC span under it.
        _, admin_trace, admin_parent, _ = admin_caller.split("-")
        [(_, http_span)] = find(lambda svc, sp: svc == "routeiq-admin" and sp.name == "POST /key/generate",
                                "admin span")
        assert http_span.trace_id.hex() == admin_trace and http_span.parent_span_id.hex() == admin_parent
        assert attr(http_span, "http.response.status_code") == 200
        [(_, grpc_span)] = find(lambda svc, sp: svc == "routeiq-controlplane" and sp.parent_span_id == http_span.span_id
                                and sp.name == "routeiq.v1.ControlPlane/GenerateKey", "control-plane gRPC span")
        assert grpc_span.trace_id == http_span.trace_id and grpc_span.kind == grpc_span.SPAN_KIND_SERVER
        assert attr(grpc_span, "rpc.system") == "grpc" and attr(grpc_span, "rpc.grpc.status_code") == 0
        # A call the control plane refuses: its gRPC status is on its span.
        r = admin.call("GET", "/key/info", params={"key": "sk-no-such-key"})
        assert r.status_code == 404, r.text
        [(_, info)] = find(lambda svc, sp: svc == "routeiq-admin" and sp.name == "GET /key/info", "admin span")
        assert attr(info, "http.response.status_code") == 404
        [(_, refused)] = find(lambda svc, sp: svc == "routeiq-controlplane" and sp.parent_span_id == info.span_id
                              and attr(sp, "rpc.grpc.status_code") != 0, "refused gRPC span")
        assert attr(refused, "rpc.grpc.status_code") == 5  # NOT_FOUND

        # The request's span on the data plane, then its usage ingestion under it.
        [(_, route)] = find(lambda svc, sp: svc == "routeiq-dataplane" and sp.name == "routeiq.route"
                            and attr(sp, "routeiq.request_id") == call_id, "request span")
        assert route.trace_id.hex() == trace and route.parent_span_id.hex() == caller_span
        [(_, ingest)] = find(lambda svc, sp: svc == "routeiq-controlplane" and sp.name == "routeiq.usage.ingest"
                             and attr(sp, "routeiq.request_id") == call_id, "ingestion span")
        assert ingest.trace_id == route.trace_id and ingest.parent_span_id == route.span_id
        assert ingest.kind == ingest.SPAN_KIND_CONSUMER and attr(ingest, "messaging.system") == "nats"
        assert ingest.status.code != ingest.status.STATUS_CODE_ERROR
        # Ended after the commit: the row is there.
        assert s.sql("SELECT count(*) FROM spend_logs WHERE request_id = %s", call_id) == [(1,)]
    finally:
        receiver.stop()


def attr(span, key: str):
    for a in span.attributes:
        if a.key == key:
            v = a.value
            return getattr(v, v.WhichOneof("value"))
    return None


def strings(span, key: str) -> list[str] | None:
    v = attr(span, key)
    return None if v is None else [x.string_value for x in v.values]


def test_attempt_spans_carry_the_requests_parameters_and_the_answers_id_and_finish_reasons(mock_provider, tmp_path):
    """GenAI attributes read from the bodies: `gen_ai.request.*` from the client's request,
    `gen_ai.response.id` and `.finish_reasons` from the answer (whole, streamed, and in
    Anthropic's shape); prompt and completion text only with content capture, and never
    with LiteLLM's `litellm_settings.turn_off_message_logging`."""
    receiver = OtlpReceiver()
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    params = {"temperature": 0.25, "top_p": 0.5, "max_tokens": 40, "seed": 11, "stop": ["END"],
              "presence_penalty": 0.1, "n": 1}
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the secret prompt"}]

    def attempt_of(call_id: str):
        _, children = tree_of(receiver, call_id)
        (attempt,) = [c for c in children if c.kind == c.SPAN_KIND_CLIENT]
        return attempt

    try:
        # Content capture off, on but turned off by the config, on: the prompt must be on no
        # span before the last run.
        for env_on, turned_off in ((False, False), (True, True), (True, False)):
            capture = env_on and not turned_off
            env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"} if env_on else {}
            extra = "litellm_settings:\n  turn_off_message_logging: true\n" if turned_off else ""
            url, p = start_gateway(tmp_path, mock_provider, receiver.port, extra, **env)
            try:
                r = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=30,
                               json={"model": "gpt-upstream", "messages": messages, **params})
                assert r.status_code == 200, r.text
                attempt = attempt_of(r.headers["x-litellm-call-id"])
                assert attr(attempt, "gen_ai.request.temperature") == 0.25
                assert attr(attempt, "gen_ai.request.top_p") == 0.5
                assert attr(attempt, "gen_ai.request.max_tokens") == 40
                assert attr(attempt, "gen_ai.request.seed") == 11
                assert attr(attempt, "gen_ai.request.presence_penalty") == 0.1
                assert strings(attempt, "gen_ai.request.stop_sequences") == ["END"]
                assert attr(attempt, "gen_ai.request.choice.count") is None  # n = 1
                assert attr(attempt, "gen_ai.response.id") == r.json()["id"]
                assert strings(attempt, "gen_ai.response.finish_reasons") == [r.json()["choices"][0]["finish_reason"]]
                content = attr(attempt, "gen_ai.input.messages")
                if not capture:
                    assert content is None and attr(attempt, "gen_ai.output.messages") is None
                    # On no span, in no attribute.
                    assert "the secret prompt" not in str(receiver.received)
                else:
                    assert json.loads(content) == [
                        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                        {"role": "user", "parts": [{"type": "text", "content": "the secret prompt"}]}]
                    (out,) = json.loads(attr(attempt, "gen_ai.output.messages"))
                    assert out["role"] == "assistant" and out["finish_reason"] == r.json()["choices"][0]["finish_reason"]
                    assert out["parts"] == [{"type": "text", "content": r.json()["choices"][0]["message"]["content"]}]

                # A stream: the id and finish reason come from its chunks, the text is theirs.
                with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30, headers=headers,
                                  json={"model": "gpt-upstream", "stream": True, "messages": messages}) as s:
                    assert s.status_code == 200
                    call_id = s.headers["x-litellm-call-id"]
                    chunks = [json.loads(line[6:]) for line in s.read().decode().splitlines()
                              if line.startswith("data: {")]
                attempt = attempt_of(call_id)
                if not capture:
                    assert attr(attempt, "gen_ai.input.messages") is None
                    assert attr(attempt, "gen_ai.output.messages") is None
                assert attr(attempt, "gen_ai.response.id") == chunks[0]["id"]
                finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
                assert strings(attempt, "gen_ai.response.finish_reasons") == finish[-1:]
                if capture:
                    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
                    (out,) = json.loads(attr(attempt, "gen_ai.output.messages"))
                    assert out["parts"] == [{"type": "text", "content": text}]

                # Anthropic's shape, in and out.
                a = httpx.post(f"{url}/v1/messages", timeout=30,
                               headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"},
                               json={"model": "gpt-upstream", "max_tokens": 30, "top_k": 3, "system": "sys",
                                     "stop_sequences": ["X", "Y"], "messages": [{"role": "user", "content": "hey"}]})
                assert a.status_code == 200, a.text
                attempt = attempt_of(a.headers["x-litellm-call-id"])
                assert attr(attempt, "gen_ai.request.max_tokens") == 30
                assert attr(attempt, "gen_ai.request.top_k") == 3.0
                assert strings(attempt, "gen_ai.request.stop_sequences") == ["X", "Y"]
                assert attr(attempt, "gen_ai.response.id") == a.json()["id"]
                assert strings(attempt, "gen_ai.response.finish_reasons") == [a.json()["stop_reason"]]
                if capture:
                    assert json.loads(attr(attempt, "gen_ai.system_instructions")) == [{"type": "text", "content": "sys"}]
                else:
                    assert attr(attempt, "gen_ai.system_instructions") is None
                    assert attr(attempt, "gen_ai.input.messages") is None
                    assert attr(attempt, "gen_ai.output.messages") is None
                    # Streamed and Anthropic requests too: on no span, in no attribute.
                    assert "the secret prompt" not in str(receiver.received)
            finally:
                p.stop()
    finally:
        receiver.stop()


def test_genai_metrics_go_out_over_otlp_with_the_conventions_names_units_and_buckets(mock_provider, tmp_path):
    """gen_ai.client.token.usage and gen_ai.client.operation.duration (a failed attempt
    with its error.type), gen_ai.server.request.duration, and for a stream the server's time
    to first token and time per output token, read from a real OTLP/gRPC receiver."""
    receiver = OtlpReceiver()
    more = f"""  - model_name: whole-only
    litellm_params: {{model: openai/gpt-4o-whole, api_base: "{mock_provider}/v1", api_key: k}}
  - model_name: broken
    litellm_params: {{model: openai/gpt-4o-broken, api_base: "{mock_provider}/v1", api_key: k}}
"""
    # Metrics only: no spans are exported.
    url, p = start_gateway(tmp_path, mock_provider, receiver.port, more + FLAKY.format(mock=mock_provider),
                           OTEL_METRIC_EXPORT_INTERVAL="200", OTEL_TRACES_EXPORTER="none")
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    try:
        usage = {"input": 0, "output": 0}
        for model in ("gpt-upstream", "whole-only"):
            r, _ = ask(url, mock_provider, None, model=model)
            usage["input"] += r.json()["usage"]["prompt_tokens"]
            usage["output"] += r.json()["usage"]["completion_tokens"]
        httpx.post(f"{mock_provider}/__faults", json={"gpt-4o-flaky": {"status": 500},
                                                      "gpt-4o-broken": {"status": 500}}).raise_for_status()
        try:
            r, _ = ask(url, mock_provider, None, model="flaky")
            usage["input"] += r.json()["usage"]["prompt_tokens"]
            usage["output"] += r.json()["usage"]["completion_tokens"]
            # No fallback: the request fails with its only attempt.
            assert httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=30, json={
                "model": "broken", "messages": [{"role": "user", "content": "x"}]}).status_code >= 500
        finally:
            httpx.post(f"{mock_provider}/__faults", json={}).raise_for_status()
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30, headers=headers,
                          json={"model": "gpt-upstream", "stream": True, "stream_options": {"include_usage": True},
                                "messages": [{"role": "user", "content": "hi"}]}) as s:
            chunks = [json.loads(line[6:]) for line in s.read().decode().splitlines() if line.startswith("data: {")]
        streamed = next(c["usage"] for c in chunks if c.get("usage"))
        usage["input"] += streamed["prompt_tokens"]
        usage["output"] += streamed["completion_tokens"]
        # A request that reaches no provider makes no GenAI operation.
        assert httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=30,
                          json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}).status_code == 404

        def points(name):
            m = receiver.metric(name)
            return [] if m is None else list(m.histogram.data_points)

        def labels(dp):
            return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in dp.attributes}

        def tokens_by_type():
            out = {}
            for d in points("gen_ai.client.token.usage"):
                out[labels(d)["gen_ai.token.type"]] = out.get(labels(d)["gen_ai.token.type"], 0) + d.sum
            return out

        # Each request is recorded after its answer went out, instrument by instrument, and
        # exported every 200 ms: wait for an export that holds all of the last one.
        deadline = time.time() + 15
        while time.time() < deadline and not (
                sum(d.count for d in points("gen_ai.server.request.duration")) == 5 and tokens_by_type() == usage
                and points("gen_ai.server.time_to_first_token")
                and (streamed["completion_tokens"] <= 1 or points("gen_ai.server.time_per_output_token"))):
            time.sleep(0.1)
        requests = points("gen_ai.server.request.duration")
        # Five requests reached a provider: four served (the fallback's among them), one failed.
        assert sum(d.count for d in requests) == 5, requests
        [failed_request] = [d for d in requests if "error.type" in labels(d)]
        assert failed_request.count == 1 and labels(failed_request)["gen_ai.request.model"] == "gpt-4o-broken"
        assert all(labels(d)["gen_ai.operation.name"] == "chat" for d in requests)
        assert all(labels(d)["gen_ai.provider.name"] == "openai" for d in requests)
        assert list(requests[0].explicit_bounds) == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                                                     10.24, 20.48, 40.96, 81.92]
        assert receiver.metric("gen_ai.server.request.duration").unit == "s"

        attempts = points("gen_ai.client.operation.duration")
        failed = [d for d in attempts if "error.type" in labels(d)]
        assert sorted(labels(d)["gen_ai.request.model"] for d in failed) == ["gpt-4o-broken", "gpt-4o-flaky"]
        assert sum(d.count for d in failed) == 2
        assert sum(d.count for d in attempts if "error.type" not in labels(d)) == 4
        assert labels(attempts[0])["server.address"] == "127.0.0.1"

        tokens = points("gen_ai.client.token.usage")
        assert receiver.metric("gen_ai.client.token.usage").unit == "{token}"
        assert tokens_by_type() == usage
        assert list(tokens[0].explicit_bounds)[:3] == [1, 4, 16]

        ttft = points("gen_ai.server.time_to_first_token")
        # Only the streamed request's deployment has a series (the others never streamed).
        assert [labels(d)["gen_ai.request.model"] for d in ttft] == ["gpt-4o-mini"]
        assert sum(d.count for d in ttft) == 1 and 0 < ttft[0].sum < 5
        assert list(ttft[0].explicit_bounds)[:3] == [0.001, 0.005, 0.01]
        tpot = points("gen_ai.server.time_per_output_token")
        assert sum(d.count for d in tpot) == (1 if streamed["completion_tokens"] > 1 else 0)
        # A series is exported once something was recorded in it, not before.
        for name in ("gen_ai.server.request.duration", "gen_ai.client.operation.duration", "gen_ai.client.token.usage",
                     "gen_ai.server.time_to_first_token", "gen_ai.server.time_per_output_token"):
            assert all(d.count > 0 for d in points(name)), name
        # No spans went out: traces were turned off on their own.
        assert receiver.received_spans() == []
    finally:
        p.stop()
        receiver.stop()


def test_pass_through_and_upload_requests_carry_the_requests_trace(mock_provider, tmp_path):
    """Calls without an attempt span of their own name the request's span: a provider's
    native route (pass-through) and a multipart upload."""
    import io
    import wave

    receiver = OtlpReceiver()
    url, p = start_gateway(tmp_path, mock_provider, receiver.port, f"""  - model_name: whisper
    litellm_params: {{model: openai/whisper-1, api_base: "{mock_provider}/v1", api_key: k}}
    model_info: {{mode: audio_transcription}}
  - model_name: cohere-chat
    litellm_params: {{model: cohere/command-r-plus, api_base: "{mock_provider}", api_key: k}}""")
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}

    def route_span(call_id: str):
        deadline = time.time() + 15
        while time.time() < deadline:
            found = [s for s in receiver.spans() if attr(s, "routeiq.request_id") == call_id]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no span for {call_id}")

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    try:
        # Cohere's native API, passed through.
        r = httpx.post(f"{url}/cohere/v2/chat", headers=headers, timeout=30,
                       json={"model": "command-r-plus", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        sent = httpx.get(f"{mock_provider}/__last_request").json()
        assert sent["path"] == "/v2/chat"
        route = route_span(r.headers["x-litellm-call-id"])
        assert sent["headers"]["traceparent"] == f"00-{route.trace_id.hex()}-{route.span_id.hex()}-01"

        r = httpx.post(f"{url}/v1/audio/transcriptions", headers=headers, timeout=30,
                       data={"model": "whisper"}, files={"file": ("a.wav", buf.getvalue(), "audio/wav")})
        assert r.status_code == 200, r.text
        sent = httpx.get(f"{mock_provider}/__last_request").json()
        assert sent["path"].startswith("/v1/audio/transcription")
        route = route_span(r.headers["x-litellm-call-id"])
        assert sent["headers"]["traceparent"] == f"00-{route.trace_id.hex()}-{route.span_id.hex()}-01"
    finally:
        p.stop()
        receiver.stop()
