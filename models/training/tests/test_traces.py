"""OTLP/JSON (and Jaeger JSON) traces plus feedback -> LLMRouter routing records."""

import base64
import json

import pytest

from routeiq_training import traces

T1 = "5b8efff798038103d269b633813fc60c"
T2 = "eee19b7ec3c1b174a1b37b3b3b8ea1b2"
T3 = "0af7651916cd43dd8448eb211c80319c"


def attr(key, **value):
    return {"key": key, "value": value}


def route_span(trace, query, candidate, start, end, cost):
    return {"traceId": trace, "spanId": "eee19b7ec3c1b174", "name": "routeiq.route",
            "kind": 1, "startTimeUnixNano": str(start), "endTimeUnixNano": str(end),
            "attributes": [attr("routeiq.route.query", stringValue=query),
                           attr("routeiq.route.candidate", stringValue=candidate),
                           attr("routeiq.route.strategy", stringValue="llmrouter-knn"),
                           attr("gen_ai.usage.input_tokens", intValue="12"),
                           attr("gen_ai.usage.output_tokens", intValue=40),
                           attr("routeiq.cost_usd", doubleValue=cost)]}


OTLP = {"resourceSpans": [{
    "resource": {"attributes": [attr("service.name", stringValue="routeiq-dataplane")]},
    "scopeSpans": [{"scope": {"name": "routeiq"}, "spans": [
        route_span(T1, "What is 2+2?", "gemma-2-9b-it", 1_000_000_000, 1_250_000_000, 1.5e-5),
        {"traceId": T1, "spanId": "aaaaaaaaaaaaaaaa", "name": "chat gemma-2-9b-it",
         "startTimeUnixNano": "1000000000", "endTimeUnixNano": "1200000000",
         "attributes": []},
        route_span(T2, "Écris un poème", "llama3-chatqa-1.5-70b", 5_000_000_000,
                   7_000_000_000, 2.5e-4),
        route_span(T3, "no feedback for me", "gemma-2-9b-it", 0, 1, 0.0),
    ]}]}]}


def test_otlp_spans_with_feedback_become_records(tmp_path):
    otlp = tmp_path / "traces.json"
    otlp.write_text(json.dumps(OTLP))
    feedback = tmp_path / "feedback.json"
    feedback.write_text(json.dumps([{"trace_id": T1, "score": 1.0},
                                    {"trace_id": T1.upper(), "score": 0.5},
                                    {"trace_id": T2, "score": 0}]))
    out = tmp_path / "records.json"
    traces.run(otlp, feedback, out)
    rows = json.loads(out.read_text())
    assert rows == [
        {"query": "What is 2+2?", "model_name": "gemma-2-9b-it", "performance": 0.75,
         "cost": 1.5e-5, "latency": 0.25},
        {"query": "Écris un poème", "model_name": "llama3-chatqa-1.5-70b", "performance": 0.0,
         "cost": 2.5e-4, "latency": 2.0},
    ]


def test_file_exporter_lines_and_base64_ids(tmp_path):
    b64 = base64.b64encode(bytes.fromhex(T1)).decode()
    doc = json.loads(json.dumps(OTLP))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = b64
    otlp = tmp_path / "traces.jsonl"
    otlp.write_text(json.dumps(doc) + "\n" + json.dumps({"resourceSpans": []}) + "\n")
    rows, unrated = traces.records(traces.read_spans(otlp), {T1: 1.0})
    assert [r["query"] for r in rows] == ["What is 2+2?"] and unrated == 2


def test_feedback_is_by_call_id_when_the_span_joined_the_callers_trace():
    # A request whose caller sent a traceparent: its span is in the caller's trace, and
    # its call id is in `routeiq.request_id`.
    span = route_span(T3, "joined", "gemma-2-9b-it", 0, 1_000_000_000, 0.0)
    span["attributes"].append(attr("routeiq.request_id", stringValue=T2))
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    rows, unrated = traces.records(list(traces.otlp_spans(doc)), {T2: 0.5})
    assert [(r["query"], r["performance"]) for r in rows] == [("joined", 0.5)] and unrated == 0


def test_attribute_values():
    assert traces.otlp_value({"intValue": "42"}) == 42
    assert traces.otlp_value({"doubleValue": 0.5}) == 0.5
    assert traces.otlp_value({"boolValue": True}) is True


def test_jaeger_export(tmp_path):
    doc = {"data": [{"traceID": T2, "spans": [{
        "traceID": T2, "spanID": "1", "operationName": "routeiq.route",
        "startTime": 1_700_000_000_000_000, "duration": 1_500_000,
        "tags": [{"key": "routeiq.route.query", "type": "string", "value": "hi"},
                 {"key": "routeiq.route.candidate", "type": "string", "value": "m"},
                 {"key": "routeiq.cost_usd", "type": "float64", "value": 0.001}]}]}]}
    path = tmp_path / "jaeger.json"
    path.write_text(json.dumps(doc))
    rows, _ = traces.records(traces.read_spans(path), {T2: 0.25})
    assert rows == [{"query": "hi", "model_name": "m", "performance": 0.25, "cost": 0.001,
                     "latency": 1.5}]


def test_route_span_without_query_is_an_error():
    span = {"trace_id": T1, "name": "routeiq.route", "seconds": 1.0, "attributes": {}}
    with pytest.raises(ValueError, match="routeiq.route.query"):
        traces.records([span], {T1: 1.0})
