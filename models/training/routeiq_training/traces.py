"""`traces`: gateway traces plus user feedback -> LLMRouter routing records.

Input: an OTLP/JSON trace export (the OpenTelemetry file exporter's format: one JSON
object with `resourceSpans`, or one per line) or a Jaeger JSON export (`{"data": [{"spans"
}]}`), and feedback, a JSON list of `{"trace_id", "score"}` (several scores for one trace
are averaged).

Every `routeiq.route` span whose trace has feedback becomes one row:
`{"query": routeiq.route.query, "model_name": routeiq.route.candidate,
"performance": feedback score, "cost": routeiq.cost_usd, "latency": span seconds}`, plus
`"user": routeiq.end_user` when the request named its end user (personalised training).
"""

import base64
import binascii
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROUTE_SPAN = "routeiq.route"
QUERY = "routeiq.route.query"
CANDIDATE = "routeiq.route.candidate"
COST = "routeiq.cost_usd"
END_USER = "routeiq.end_user"
REQUEST_ID = "routeiq.request_id"
_HEX_ID = re.compile(r"[0-9a-fA-F]{16,32}")


def trace_id(raw: str) -> str:
    """Lower-case hex; OTLP/JSON writes hex, protobuf's JSON mapping base64."""
    if _HEX_ID.fullmatch(raw):
        return raw.lower().rjust(32, "0")
    try:
        return base64.b64decode(raw, validate=True).hex()
    except (binascii.Error, ValueError):
        return raw.lower()


def otlp_value(value: dict):
    for kind in ("stringValue", "boolValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        return int(value["intValue"])  # int64 is a JSON string in OTLP/JSON
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [otlp_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def otlp_spans(doc: dict) -> Iterator[dict]:
    for resource_spans in doc.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                yield {"trace_id": trace_id(span["traceId"]), "name": span["name"],
                       "seconds": (int(span["endTimeUnixNano"])
                                   - int(span["startTimeUnixNano"])) / 1e9,
                       "attributes": {a["key"]: otlp_value(a["value"])
                                      for a in span.get("attributes", [])}}


def jaeger_spans(doc: dict) -> Iterator[dict]:
    for trace in doc.get("data", []):
        for span in trace.get("spans", []):
            yield {"trace_id": trace_id(span["traceID"]), "name": span["operationName"],
                   "seconds": float(span["duration"]) / 1e6,  # microseconds
                   "attributes": {t["key"]: t["value"] for t in span.get("tags", [])}}


def read_spans(path: Path) -> list[dict]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError:  # the file exporter writes one request per line
        docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    spans = []
    for doc in docs:
        spans += list(jaeger_spans(doc)) if "data" in doc else list(otlp_spans(doc))
    return spans


def read_feedback(path: Path) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for entry in json.loads(Path(path).read_text(encoding="utf-8")):
        sums.setdefault(trace_id(entry["trace_id"]), []).append(float(entry["score"]))
    return {t: sum(v) / len(v) for t, v in sums.items()}


def records(spans: list[dict], feedback: dict[str, float]) -> tuple[list[dict], int]:
    """The rows, and the number of routing spans left out for lack of feedback."""
    rows, unrated = [], 0
    for span in spans:
        if span["name"] != ROUTE_SPAN:
            continue
        attrs = span["attributes"]
        # Feedback is by call id: the span's trace id, unless the caller's trace held it.
        call_id = trace_id(attrs[REQUEST_ID]) if attrs.get(REQUEST_ID) else span["trace_id"]
        if call_id not in feedback:
            unrated += 1
            continue
        if attrs.get(QUERY) is None or attrs.get(CANDIDATE) is None:
            raise ValueError(f"trace {span['trace_id']}: a {ROUTE_SPAN} span without "
                             f"{QUERY} or {CANDIDATE}")
        cost = attrs.get(COST)
        row = {"query": attrs[QUERY], "model_name": attrs[CANDIDATE],
               "performance": feedback[call_id],
               "cost": None if cost is None else float(cost),
               "latency": span["seconds"]}
        if attrs.get(END_USER):
            row["user"] = attrs[END_USER]
        rows.append(row)
    return rows, unrated


def run(otlp: Path, feedback: Path, out: Path) -> list[dict]:
    rows, unrated = records(read_spans(otlp), read_feedback(feedback))
    if unrated:
        print(f"{unrated} {ROUTE_SPAN} spans have no feedback and are left out",
              file=sys.stderr)
    Path(out).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    return rows
