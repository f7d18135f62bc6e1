"""Routing data: the table of queries and per-candidate scores the strategies learn from.

Two input formats are read into the same `RoutingTable`:
- the routing table: a JSON list of `{"question", "scores": {llm: score}, ...}`;
- LLMRouter routing records: a JSON list (or JSON lines) of `{"query", "model_name",
  "performance", ...}` rows, grouped by query. A (query, model) pair seen several times
  takes the mean of its performances. Only queries scored for every model are kept:
  the strategies need a full score row per query.

The routing table's optional `cluster_id` (an integer per query, e.g. from k-means over
query embeddings) is kept for strategies that use query clusters (`routerdc`); it is `None`
for routing records, and for a table where some record has none.

A record may name the end user it was scored for: `"user"` in the routing table,
`"user"` or `"user_id"` in routing records (which are then grouped by query and user, so
one query may give one row per user). `users` holds each row's user id as a string, or
`None` for a row without one; it is `None` when no record has a user. The personalised
strategies (`personalized`, `gmt`) learn per-user terms from it; the others ignore it.

Candidates are the LLMs that appear in the scores, in sorted name order; their sizes and
prices come from the LLM file (`{name: {"size": "7B", "input_price", "output_price"}}`,
prices in USD per million tokens).
"""

import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Candidate:
    name: str
    size_b: float
    input_price: float
    output_price: float

    @property
    def price(self) -> float:
        """The price cost-aware routing weighs: the mean of input and output prices."""
        return (self.input_price + self.output_price) / 2

    def to_json(self) -> dict:
        return {"name": self.name, "size_b": self.size_b,
                "input_price": self.input_price, "output_price": self.output_price}

    @staticmethod
    def from_json(raw: dict) -> "Candidate":
        return Candidate(raw["name"], float(raw["size_b"]), float(raw["input_price"]),
                         float(raw["output_price"]))


@dataclass
class RoutingTable:
    queries: list[str]
    scores: np.ndarray  # [len(queries), len(candidates)], float64
    candidates: list[Candidate]
    source_sha256: str  # sha256 of the data file's bytes
    cluster_ids: np.ndarray | None = None  # [len(queries)] int64, or None
    users: np.ndarray | None = None  # [len(queries)] object: user id (str) or None; or None

    def subset(self, mask: np.ndarray) -> "RoutingTable":
        return RoutingTable([q for q, keep in zip(self.queries, mask) if keep],
                            self.scores[mask], self.candidates, self.source_sha256,
                            None if self.cluster_ids is None else self.cluster_ids[mask],
                            None if self.users is None else self.users[mask])

    @property
    def prices(self) -> np.ndarray:
        return np.array([c.price for c in self.candidates])


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def split_bucket(query: str) -> int:
    """The query's bucket in 0..4: bucket 0 is held out for evaluation."""
    return int(hashlib.sha256(query.encode("utf-8")).hexdigest()[:8], 16) % 5


def bucket_mask(queries: list[str], bucket: int) -> np.ndarray:
    """Which queries lie in `bucket` (`split_bucket`)."""
    return np.array([split_bucket(q) == bucket for q in queries], dtype=bool)


def heldout_mask(queries: list[str]) -> np.ndarray:
    return bucket_mask(queries, 0)


def inner_validation_mask(queries: list[str]) -> np.ndarray:
    """Within the training split (buckets 1..4), bucket 1 validates hyperparameters."""
    return bucket_mask(queries, 1)


def parse_size_b(size: str | float) -> float:
    """`"7B"` -> 7.0, `"1.5b"` -> 1.5, `"350M"` -> 0.35; a bare number is billions."""
    if isinstance(size, (int, float)):
        return float(size)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([bBmM]?)\s*", str(size))
    if not m:
        raise ValueError(f"cannot read the model size {size!r}: expected a number of "
                         "parameters such as \"7B\"")
    value = float(m.group(1))
    return value / 1000 if m.group(2) in ("m", "M") else value


def load_candidates(llm_path: Path, names: list[str]) -> list[Candidate]:
    llms = json.loads(Path(llm_path).read_text())
    missing = [n for n in names if n not in llms]
    if missing:
        raise ValueError(f"{llm_path}: no entry for {', '.join(missing)} (every LLM in the "
                         "routing data needs its size and prices)")
    return [Candidate(n, parse_size_b(llms[n]["size"]), float(llms[n]["input_price"]),
                      float(llms[n]["output_price"])) for n in names]


def _read_json_or_lines(path: Path):
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_table(data_path: Path, llm_path: Path) -> RoutingTable:
    rows = _read_json_or_lines(data_path)
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{data_path}: expected a non-empty JSON list of records")
    sha = file_sha256(data_path)
    clusters = None
    if "scores" in rows[0]:
        queries, names, scores, clusters, users = _from_score_table(rows, data_path)
    elif {"query", "model_name", "performance"} <= set(rows[0]):
        queries, names, scores, users = _from_llmrouter_records(rows, data_path)
    else:
        raise ValueError(f"{data_path}: records have neither \"question\"/\"scores\" nor "
                         "LLMRouter's \"query\"/\"model_name\"/\"performance\"")
    return RoutingTable(queries, scores, load_candidates(llm_path, names), sha, clusters,
                        users)


def _user(record: dict) -> str | None:
    user = record.get("user", record.get("user_id"))
    return None if user is None else str(user)


def user_array(users: list[str | None]) -> np.ndarray | None:
    """Per-row user ids as an object array, or None when no row has a user."""
    if all(u is None for u in users):
        return None
    array = np.empty(len(users), dtype=object)
    array[:] = users
    return array


def _from_score_table(rows: list[dict], path: Path):
    names = sorted({name for r in rows for name in r["scores"]})
    incomplete = [i for i, r in enumerate(rows) if set(r["scores"]) != set(names)]
    if incomplete:
        raise ValueError(f"{path}: record {incomplete[0]} does not score every LLM "
                         f"({len(incomplete)} such records)")
    scores = np.array([[float(r["scores"][n]) for n in names] for r in rows])
    clusters = None
    if all(r.get("cluster_id") is not None for r in rows):
        clusters = np.array([int(r["cluster_id"]) for r in rows], dtype=np.int64)
    users = user_array([_user(r) for r in rows])
    return [r["question"] for r in rows], names, scores, clusters, users


def _from_llmrouter_records(rows: list[dict], path: Path):
    sums: dict[tuple[str, str | None], dict[str, list[float]]] = {}
    for r in rows:
        perf = r["performance"]
        if perf is None or (isinstance(perf, float) and math.isnan(perf)):
            continue
        per_model = sums.setdefault((r["query"], _user(r)), {})
        per_model.setdefault(r["model_name"], []).append(float(perf))
    names = sorted({m for per_model in sums.values() for m in per_model})
    queries, users, scores = [], [], []
    for (query, user), per_model in sums.items():
        if len(per_model) == len(names):
            queries.append(query)
            users.append(user)
            scores.append([sum(per_model[n]) / len(per_model[n]) for n in names])
    dropped = len(sums) - len(queries)
    what = "queries" if all(u is None for _, u in sums) else "(query, user) pairs"
    if dropped:
        print(f"{path}: {dropped} of {len(sums)} {what} are not scored for all "
              f"{len(names)} models and are left out", file=sys.stderr)
    if not queries:
        raise ValueError(f"{path}: no query is scored for every model")
    return queries, names, np.array(scores), user_array(users)
