"""W3C trace context through the gateway: a caller's `traceparent` is honoured, and the
providers are sent one, so their spans join the caller's trace."""

import os
import time

import httpx
from conftest import BIN_DIR, MASTER_KEY, Process, free_port, wait_http
from otlp import OtlpReceiver

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def ask(url: str, mock_url: str, traceparent: str | None,
        model: str = "gpt-upstream") -> tuple[httpx.Response, dict]:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    if traceparent:
        headers["traceparent"] = traceparent
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


def test_each_attempt_is_a_genai_client_span_under_the_requests_span(mock_provider, tmp_path):
    receiver = OtlpReceiver()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: gpt-upstream
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock_provider}/v1", api_key: k}}
  - model_name: flaky
    litellm_params: {{model: openai/gpt-4o-flaky, api_base: "{mock_provider}/v1", api_key: k}}
router_settings:
  num_retries: 0
  fallbacks: [{{flaky: [gpt-upstream]}}]
general_settings:
  master_key: {MASTER_KEY}
""")
    port = free_port()
    p = Process([str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
                tmp_path / "gw.log", env=dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100",
                                              OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health/liveliness", p.proc)
        joined, joined_sent = ask(url, mock_provider, CALLER)
        own, own_sent = ask(url, mock_provider, None)
        httpx.post(f"{mock_provider}/__faults", json={"gpt-4o-flaky": {"status": 500}}).raise_for_status()
        try:
            fell_back, _ = ask(url, mock_provider, CALLER, model="flaky")
        finally:
            httpx.post(f"{mock_provider}/__faults", json={}).raise_for_status()

        def spans_of(call_id: str) -> tuple:
            deadline = time.time() + 15
            while time.time() < deadline:
                routes = [s for s in receiver.spans() if attr(s, "routeiq.request_id") == call_id]
                if routes:
                    (route,) = routes
                    attempts = [s for s in receiver.received_spans()
                                if s.parent_span_id == route.span_id and s.trace_id == route.trace_id]
                    if attempts:
                        return route, attempts
                time.sleep(0.05)
            raise AssertionError(f"no spans for {call_id}")

        _, trace, parent, _ = CALLER.split("-")
        # In the caller's trace, under the caller's span; the provider's parent is the
        # attempt's span, a GenAI client span under the request's.
        route, [attempt] = spans_of(joined.headers["x-litellm-call-id"])
        assert route.trace_id.hex() == trace and route.parent_span_id.hex() == parent
        assert joined_sent["traceparent"] == f"00-{trace}-{attempt.span_id.hex()}-01"
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
    finally:
        p.stop()
        receiver.stop()


def attr(span, key: str):
    for a in span.attributes:
        if a.key == key:
            v = a.value
            return getattr(v, v.WhichOneof("value"))
    return None
