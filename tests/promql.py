"""PromQL read from the shipped Grafana dashboards, for the tests that hold them against what
the planes export: `tests/deploy/test_compose.py` against the registrations in the source,
`tests/e2e/test_dashboards.py` against a running stack."""

import json
import re
from pathlib import Path

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                   "bool", "and", "or", "unless", "inf", "nan", "le"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, keywords or labels)."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = GROUPING.sub(" ", e)
    e = re.sub(r"\$\{[^}]*\}|\$\w+", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group(0).lower() in PROMQL_KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def promql_labels(expr: str, legend: str) -> set[str]:
    """The labels an expression matches on or groups by, and those its legend shows."""
    labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", " ".join(re.findall(r"\{([^}]*)\}", expr))))
    for _, group in GROUPING.findall(expr):
        labels |= {w.strip() for w in group.split(",") if w.strip()}
    labels |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend or ""))
    return labels


def dashboard_queries(dashboard: Path) -> list[tuple[str, str, str]]:
    """(panel title or variable, PromQL, legend) of every query of a Grafana dashboard; a
    `label_values(metric, label)` variable becomes (`metric`, `{{label}}`)."""
    dash = json.loads(dashboard.read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title", "?"), t["expr"], t.get("legendFormat", "")))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if v.get("type") == "query":
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q)
            assert m, f"variable {v['name']}: {q}"
            out.append((f"variable {v['name']}", m.group(1), "{{" + m.group(2) + "}}"))
    return out
