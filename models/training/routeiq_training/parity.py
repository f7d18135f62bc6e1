"""`parity`: the scores and choice an artifact gives each query, computed from the
artifact's files only. The data plane's test compares its own scores to these. The query
file is a JSON list of query strings, or of `{"query", "user"}` objects (`user` a string,
null or absent; plain strings may be mixed in): then every expected row also has `"user"`
(null for none), and the personalised strategies score with it.

`make-parity-queries`: the fixed query list those tests use (held-out queries of the
fixture plus edge cases for the featurizers)."""

import json
import math
from pathlib import Path

from . import artifact
from .choice import pick
from .data import heldout_mask, load_table

# Featurizer edge cases: empty, blank, punctuation only, case folding (ASCII only),
# non-ASCII letters and emoji, scripts without spaces, control characters, and queries
# longer than the 8192 bytes the hashed featurizer reads (one cut inside a character).
EDGE_CASES = [
    "",
    "   \t\n  ",
    "?!... ,;:-- (()) !!!",
    "WHAT IS THE CAPITAL OF FRANCE?",
    "What is the capital of France?",
    "a",
    "Hello",
    "ÀÉÎ àéî Ünïcödé ÉCOLE café naïve",
    "Summarise this 🚀🔥 please 👩‍💻 — “quoted” text…",
    "机器学习是什么？请详细解释。",
    "ما هي عاصمة فرنسا؟",
    "2+2=? 3.14159 x^2 - 4x + 4 = 0",
    "def f(x):\n    return x**2  # square\r\nprint(f(3))",
    "nul\u0000and\u0001control\u001fchars\ttab",
    "The quick brown fox jumps over the lazy dog. " * 200,
    "x" + "日本語 " * 1000,
]


def expected(router: artifact.Router, queries: list[str],
             users: list[str | None] | None = None) -> list[dict]:
    scores = router.scores(queries, users)
    choices = pick(scores, router.prices)
    rows = []
    for i, (q, row, c) in enumerate(zip(queries, scores, choices)):
        rows.append({"query": q, **({} if users is None else {"user": users[i]}),
                     "scores": [None if math.isnan(v) else float(v) for v in row],
                     "choice": int(c)})
    return rows


def _query_item(item) -> bool:
    return isinstance(item, str) or (
        isinstance(item, dict) and isinstance(item.get("query"), str)
        and isinstance(item.get("user"), (str, type(None))) and set(item) <= {"query", "user"})


def read_queries(queries_file: Path) -> tuple[list[str], list[str | None] | None]:
    """The queries, and their users (None when the file holds plain strings only)."""
    items = json.loads(Path(queries_file).read_text(encoding="utf-8"))
    if not isinstance(items, list) or not all(_query_item(q) for q in items):
        raise ValueError(f"{queries_file}: expected a JSON list of strings or of "
                         "{\"query\", \"user\"} objects")
    queries = [q if isinstance(q, str) else q["query"] for q in items]
    if all(isinstance(q, str) for q in items):
        return queries, None
    return queries, [None if isinstance(q, str) else q.get("user") for q in items]


def run(artifact_dir: Path, queries_file: Path, out: Path, threads: int = 1) -> None:
    queries, users = read_queries(queries_file)
    rows = expected(artifact.load(artifact_dir, threads), queries, users)
    Path(out).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n",
                         encoding="utf-8")


def make_queries(data: Path, llm_data: Path, count: int = 40) -> list[str]:
    table = load_table(data, llm_data)
    held = [q for q, h in zip(table.queries, heldout_mask(table.queries)) if h]
    wanted = count - len(EDGE_CASES)
    longest = max(held, key=len)  # longer than the 256 tokens the minilm encoder reads
    step = max(1, len(held) // wanted)
    picked = [longest] + [q for q in held[::step] if q != longest][:wanted - 1]
    return picked + EDGE_CASES
