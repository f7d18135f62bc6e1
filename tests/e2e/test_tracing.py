"""W3C trace context through the gateway: a caller's `traceparent` is honoured, and the
providers are sent one, so their spans join the caller's trace."""

import os
import time

import httpx
from conftest import BIN_DIR, MASTER_KEY, Process, free_port, wait_http
from otlp import OtlpReceiver

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def ask(url: str, mock_url: str, traceparent: str | None) -> tuple[httpx.Response, dict]:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    if traceparent:
        headers["traceparent"] = traceparent
    r = httpx.post(f"{url}/v1/chat/completions", timeout=30, headers=headers,
                   json={"model": "gpt-upstream", "messages": [{"role": "user", "content": "hi"}]})
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


def test_the_providers_parent_is_the_requests_span_in_the_callers_trace(mock_provider, tmp_path):
    receiver = OtlpReceiver()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: gpt-upstream
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{mock_provider}/v1", api_key: k}}
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
        deadline = time.time() + 15
        while len(receiver.spans()) < 2 and time.time() < deadline:
            time.sleep(0.05)
        spans = {s.trace_id.hex(): s for s in receiver.spans()}
        _, trace, parent, flags = CALLER.split("-")
        # In the caller's trace, under the caller's span; the provider's parent is its span.
        span = spans[trace]
        assert span.parent_span_id.hex() == parent
        assert joined_sent["traceparent"] == f"00-{trace}-{span.span_id.hex()}-{flags}"
        attrs = {a.key: a.value for a in span.attributes}
        assert attrs["routeiq.request_id"].string_value == joined.headers["x-litellm-call-id"]
        # No caller's trace: the request's id names the trace.
        call_id = own.headers["x-litellm-call-id"]
        span = spans[call_id]
        assert own_sent["traceparent"] == f"00-{call_id}-{span.span_id.hex()}-01"
    finally:
        p.stop()
        receiver.stop()
