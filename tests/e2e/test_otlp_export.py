"""OTLP transports and logs: the services export over HTTP/protobuf when
`OTEL_EXPORTER_OTLP_PROTOCOL` says so, and their log events go out as OTLP log records
(and JSON lines) carrying the trace and span of the call they were logged in."""

import http.server
import json
import os
import threading
import time

import httpx
import pytest
from conftest import BIN_DIR, MASTER_KEY, Process, free_port, wait_http
from otlp import Blackhole, OtlpHttpReceiver, OtlpReceiver, attributes
from test_tracing import CALLER, ask, start_gateway, tree_of

SECRETS = (MASTER_KEY, "sk-provider-secret-9f2")


def wait_for(what: str, find, timeout: float = 15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {what}")


def test_spans_metrics_and_logs_go_out_over_http_protobuf(mock_provider, tmp_path):
    """`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`: the data plane posts its spans, GenAI
    metrics and log records to the collector's `/v1/traces`, `/v1/metrics` and `/v1/logs`
    as protobuf, with `OTEL_EXPORTER_OTLP_HEADERS`. The request's log record is in the
    request's trace and span; no record carries a key or the provider's secret."""
    receiver = OtlpHttpReceiver()
    url, p = start_gateway(tmp_path, mock_provider, receiver.port,
                           OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                           OTEL_EXPORTER_OTLP_HEADERS="x-collector-tenant=t1",
                           OTEL_METRIC_EXPORT_INTERVAL="200", OTEL_BLRP_SCHEDULE_DELAY="100",
                           ROUTEIQ_LOG="info,routeiq.request=debug")
    try:
        r, sent = ask(url, mock_provider, CALLER)
        call_id = r.headers["x-litellm-call-id"]
        route, children = tree_of(receiver, call_id)
        _, trace, caller_span, _ = CALLER.split("-")
        assert route.trace_id.hex() == trace and route.parent_span_id.hex() == caller_span
        assert any(c.name.startswith("chat ") for c in children)
        usage = wait_for("token usage metric", lambda: receiver.metric("gen_ai.client.token.usage"))
        assert usage.histogram.data_points

        def request_record():
            return [lr for svc, lr in receiver.log_records()
                    if svc == "routeiq-dataplane" and attributes(lr).get("request_id") == call_id]
        [record] = wait_for("request log record", request_record)
        assert record.body.string_value == "request"
        assert record.trace_id == route.trace_id and record.span_id == route.span_id
        assert record.severity_text == "DEBUG"
        a = attributes(record)
        assert a["model_group"] == "gpt-upstream" and a["status"] == 200
        # The startup summary is exported too, outside any trace.
        startup = [lr for svc, lr in receiver.log_records() if "serving" in lr.body.string_value]
        assert startup and not startup[0].trace_id
    finally:
        p.stop()
        receiver.stop()
    paths = {path for path, _ in receiver.requests}
    assert paths == {"/v1/traces", "/v1/metrics", "/v1/logs"}, paths
    for _, headers in receiver.requests:
        assert headers.get("content-type") == "application/x-protobuf"
        assert headers.get("x-collector-tenant") == "t1"
    exported = "".join(str(lr) for _, lr in receiver.log_records())
    for secret in SECRETS:
        assert secret not in exported


def test_a_protocol_the_gateway_does_not_speak_is_named_and_nothing_is_exported(mock_provider, tmp_path):
    """`http/json` is not built in: the gateway says so at startup, still serves, and sends
    the collector nothing."""
    receiver = OtlpHttpReceiver()
    url, p = start_gateway(tmp_path, mock_provider, receiver.port, OTEL_EXPORTER_OTLP_PROTOCOL="http/json")
    try:
        ask(url, mock_provider, None)
        time.sleep(0.5)
    finally:
        p.stop()
        receiver.stop()
    log = p.output()
    assert 'OTEL_EXPORTER_OTLP_PROTOCOL="http/json" is not a protocol RouteIQ exports with' in log, log
    assert receiver.requests == []


def test_compression_the_gateway_does_not_do_is_named_and_no_span_is_exported(mock_provider, tmp_path):
    """Spans are sent uncompressed: `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` is refused by
    name at startup (the gateway still serves), as is a gRPC collector behind TLS."""
    receiver = OtlpReceiver()
    try:
        for env, said in (
            ({"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"},
             'OTEL_EXPORTER_OTLP_COMPRESSION="gzip": RouteIQ sends spans uncompressed'),
            ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"https://127.0.0.1:{receiver.port}"},
             "the OTLP/gRPC span exporter does not speak TLS"),
        ):
            url, p = start_gateway(tmp_path, mock_provider, receiver.port, OTEL_METRICS_EXPORTER="none",
                                   OTEL_LOGS_EXPORTER="none", **env)
            try:
                assert ask(url, mock_provider, None)[0].status_code == 200
                time.sleep(0.5)
            finally:
                p.stop()
            log = p.output()
            assert said in log and "OTLP span exporter not set up; no traces" in log, log
    finally:
        receiver.stop()
    assert receiver.received == []


def test_a_collector_that_is_down_is_logged_once_and_its_return_once(mock_provider, tmp_path):
    """Nothing listens on the collector's port: every request is answered, the failed
    exports are logged once (not once per batch), and when a collector comes up on that
    port the spans of new requests reach it and the recovery is logged once."""
    port = free_port()
    url, p = start_gateway(tmp_path, mock_provider, port, OTEL_METRICS_EXPORTER="none",
                           OTEL_LOGS_EXPORTER="none", OTEL_EXPORTER_OTLP_TIMEOUT="2000")
    receiver = None
    try:
        for _ in range(5):
            assert ask(url, mock_provider, None)[0].status_code == 200
            time.sleep(0.3)  # past the 100 ms batch delay: each request is a batch of its own
        receiver = OtlpReceiver(port)
        call_id = None

        def arrived():
            nonlocal call_id
            r, _ = ask(url, mock_provider, None)
            call_id = r.headers["x-litellm-call-id"]
            time.sleep(0.3)
            return any(attributes(s).get("routeiq.request_id") == call_id for s in receiver.spans())
        wait_for("spans at the collector once it is up", arrived, timeout=30)
        tree_of(receiver, call_id)
    finally:
        p.stop()
        if receiver:
            receiver.stop()
    log = p.output()
    assert log.count("OTLP span export failed") == 1, log
    assert log.count("OTLP span export works again") == 1, log


def test_a_stopping_gateway_sends_the_spans_and_metrics_it_still_holds(mock_provider, tmp_path):
    """Batches wait up to a minute here, so a request's spans and GenAI metrics are still
    queued when the gateway is told to stop (SIGTERM): it sends them before it exits."""
    receiver = OtlpReceiver()
    url, p = start_gateway(tmp_path, mock_provider, receiver.port, OTEL_BSP_SCHEDULE_DELAY="60000",
                           OTEL_METRIC_EXPORT_INTERVAL="60000", OTEL_LOGS_EXPORTER="none")
    try:
        r, _ = ask(url, mock_provider, None)
        call_id = r.headers["x-litellm-call-id"]
        time.sleep(0.5)
        assert receiver.spans() == [] and receiver.metric("gen_ai.client.token.usage") is None
        p.stop()
        assert p.proc.returncode == 0
        route, children = tree_of(receiver, call_id, timeout=1)
        assert any(c.name.startswith("chat ") for c in children)
        assert receiver.metric("gen_ai.client.token.usage").histogram.data_points
    finally:
        p.stop()
        receiver.stop()


def test_a_2xx_answer_that_is_not_protobuf_counts_as_delivered(mock_provider, tmp_path):
    """A collector off the specification that answers `200 ok` in plain text has taken the
    spans: no export failure is logged, and later batches are sent as usual."""
    posts = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            posts.append((self.path, len(body)))
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url, p = start_gateway(tmp_path, mock_provider, server.server_address[1], OTEL_METRICS_EXPORTER="none",
                           OTEL_LOGS_EXPORTER="none", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    traces = lambda: len([x for x in posts if x[0] == "/v1/traces"])  # noqa: E731
    try:
        assert ask(url, mock_provider, None)[0].status_code == 200
        wait_for("a span export", lambda: traces() >= 1)
        time.sleep(0.5)  # past the 100 ms batch delay: this request's spans are all sent
        first = traces()
        assert ask(url, mock_provider, None)[0].status_code == 200
        wait_for("the next request's span export", lambda: traces() > first)
    finally:
        p.stop()
        server.shutdown()
    assert all(size > 0 for _, size in posts)
    assert "OTLP span export failed" not in p.output()


def test_lines_logged_while_a_sampled_request_is_served_carry_its_trace(mock_provider, tmp_path):
    """JSON and OTLP logs: a warning logged while a sampled request is served (its
    deployment refuses connections) names the request's trace and span, in the JSON line and
    in the OTLP record; the same warning for an unsampled request (the caller's flags 00)
    names none."""
    receiver = OtlpReceiver()
    dead = free_port()
    extra = f"""  - model_name: dead
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:{dead}/v1", api_key: sk-x}}
router_settings:
  num_retries: 0"""
    url, p = start_gateway(tmp_path, mock_provider, receiver.port, extra, ROUTEIQ_LOG_FORMAT="json",
                           OTEL_BLRP_SCHEDULE_DELAY="100", OTEL_METRICS_EXPORTER="none")
    unsampled = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    try:
        ids = []
        for traceparent in (None, unsampled):
            headers = {"Authorization": f"Bearer {MASTER_KEY}"}
            if traceparent:
                headers["traceparent"] = traceparent
            r = httpx.post(f"{url}/v1/chat/completions", timeout=30, headers=headers,
                           json={"model": "dead", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code >= 500, r.text
            ids.append(r.headers["x-litellm-call-id"])
        route, _ = tree_of(receiver, ids[0])

        def records():
            return [lr for svc, lr in receiver.log_records()
                    if svc == "routeiq-dataplane" and lr.body.string_value == "cannot connect upstream"]
        found = wait_for("two warnings over OTLP", lambda: len(records()) >= 2 and records())
        assert [(r.trace_id, r.span_id) for r in found] == [(route.trace_id, route.span_id), (b"", b"")]
    finally:
        p.stop()
        receiver.stop()
    lines = [json.loads(line) for line in p.output().splitlines() if line.startswith("{")]
    warned = [line for line in lines if line.get("message") == "cannot connect upstream"]
    assert len(warned) == 2, warned
    assert warned[0]["trace_id"] == route.trace_id.hex() and warned[0]["span_id"] == route.span_id.hex()
    assert "trace_id" not in warned[1]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_collector_that_hangs_delays_a_stop_by_at_most_the_flush_caps(mock_provider, tmp_path, protocol):
    """A collector that takes the exports and never answers, with a 30 s export timeout:
    at SIGTERM the spans, the OTLP metrics and the log records still queued are flushed
    side by side, each for at most 5 s, so the data plane exits within pingora's 1 s grace
    period plus 5 s (with 1 s to spare for a loaded machine; it took 41 s when the log
    flush had no cap and the flushes ran one after another)."""
    collector = Blackhole()
    url, p = start_gateway(tmp_path, mock_provider, collector.port, OTEL_BSP_SCHEDULE_DELAY="60000",
                           OTEL_METRIC_EXPORT_INTERVAL="60000", OTEL_BLRP_SCHEDULE_DELAY="60000",
                           OTEL_EXPORTER_OTLP_TIMEOUT="30000", OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
    try:
        for _ in range(3):
            assert ask(url, mock_provider, None)[0].status_code == 200
        started = time.monotonic()
        p.proc.terminate()
        p.proc.wait(timeout=60)
        took = time.monotonic() - started
        assert p.proc.returncode == 0, p.output()
        # about 6 s; one flush after another took 16 s, an uncapped log flush 41 s
        print(f"stopped in {took:.3f} s")
        assert took <= 7, (took, p.output())
        assert collector.received > 0  # the flushes did send
    finally:
        p.stop()
        collector.stop()


def start_admin_without_controlplane(tmp_path, env: dict) -> Process:
    """The admin API in front of a control plane that is not there (its calls fail fast)."""
    port, dead = free_port(), free_port()
    admin = Process([str(BIN_DIR / "routeiq-admin"), "--listen", f"127.0.0.1:{port}",
                     "--controlplane", f"http://127.0.0.1:{dead}", "--timeout-ms", "500"],
                    tmp_path / "admin.log", env=env)
    admin.url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{admin.url}/health/liveliness", admin.proc)
    except BaseException:
        admin.stop()
        raise
    return admin


def traced_key_generate(admin: Process) -> httpx.Response:
    """`POST /key/generate` in the caller's trace (answered 503 without a control plane)."""
    return httpx.post(f"{admin.url}/key/generate", json={}, timeout=10,
                      headers={"Authorization": f"Bearer {MASTER_KEY}", "traceparent": CALLER})


def test_the_admin_api_stops_within_one_flush_cap_when_the_collector_hangs(tmp_path):
    """The admin API's spans and log records still queued at SIGTERM, a collector that
    never answers: it flushes both side by side (at most 5 s), and dropping its tracer
    provider afterwards does not wait for the hung export a second time."""
    collector = Blackhole()
    env = dict(os.environ, ROUTEIQ_LOG="info", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
               OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BLRP_SCHEDULE_DELAY="60000",
               OTEL_EXPORTER_OTLP_TIMEOUT="30000")
    admin = start_admin_without_controlplane(tmp_path, env)
    try:
        assert traced_key_generate(admin).status_code == 503
        started = time.monotonic()
        admin.proc.terminate()
        admin.proc.wait(timeout=60)
        took = time.monotonic() - started
        assert admin.proc.returncode == 0, admin.output()
        print(f"stopped in {took:.3f} s")
        assert took <= 6, (took, admin.output())  # 5.0 s measured; 10 s when the drop waited again
        assert collector.received > 0
    finally:
        admin.stop()
        collector.stop()


def test_an_admin_calls_log_lines_carry_its_trace_in_json_and_in_otlp(tmp_path):
    """The admin API in front of a control plane that is not there: a traced call is
    answered 503 and its warning is logged inside the call's server span, as a JSON line
    with the span's `trace_id` and `span_id`, and as an OTLP/gRPC log record in that span."""
    receiver = OtlpReceiver()
    env = dict(os.environ, ROUTEIQ_LOG_FORMAT="json", ROUTEIQ_LOG="info",
               OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
               OTEL_BSP_SCHEDULE_DELAY="100", OTEL_BLRP_SCHEDULE_DELAY="100")
    admin = start_admin_without_controlplane(tmp_path, env)
    try:
        assert traced_key_generate(admin).status_code == 503
        _, trace, caller_span, _ = CALLER.split("-")
        [span] = wait_for("admin span", lambda: [s for svc, s in receiver.service_spans()
                                                 if svc == "routeiq-admin" and s.name == "POST /key/generate"])
        assert span.trace_id.hex() == trace and span.parent_span_id.hex() == caller_span

        def warning_record():
            return [lr for svc, lr in receiver.log_records()
                    if svc == "routeiq-admin" and lr.body.string_value == "control plane call failed"]
        [record] = wait_for("warning log record", warning_record)
        assert record.trace_id == span.trace_id and record.span_id == span.span_id
        assert record.severity_text == "WARN"
    finally:
        admin.stop()
        receiver.stop()
    lines = [json.loads(line) for line in admin.output().splitlines() if line.strip()]
    [warning] = [line for line in lines if line.get("message") == "control plane call failed"]
    assert warning["level"] == "WARN" and warning["target"].startswith("routeiq_admin")
    assert warning["trace_id"] == trace and warning["span_id"] == span.span_id.hex()
    # Lines logged outside any call carry no trace.
    serving = [line for line in lines if line.get("message") == "admin API serving"]
    assert serving and "trace_id" not in serving[0]
    # The startup summary says what is on.
    assert serving[0]["otlp"] is True and serving[0]["otlp_logs"] is True and serving[0]["version"]
    assert MASTER_KEY not in admin.output()
