"""`semantic-eval`: how the semantic cache's threshold trades hits on paraphrases against
false hits on different questions, with the sentence encoder of an artifact (the one the
data plane loads from `cache_params.semantic_model_path`).

Two labelled sets:
- `pairs`: written by hand (tests/fixtures/semantic/pairs.jsonl): paraphrases of everyday
  questions, and near misses, questions that share a template or a topic but ask something
  else (another entity, number, operation or direction: a hit would be a wrong answer);
- `llmrouter`: questions of a routing table. Paraphrases are made by rules (a polite or
  framing prefix, case and punctuation changes), so they are easier than human ones; the
  near misses are each question's nearest *other* question in the sample by embedding,
  the hardest negatives the data has.

For each threshold `t` the report gives the share of paraphrase pairs at or above `t` (a
hit) and the share of near-miss pairs at or above `t` (a false hit).
"""

import json
import random
import re
from pathlib import Path

import numpy as np

from . import featurize
from .artifact import read_files

THRESHOLDS = [0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.98]

# Rule-made paraphrases of a question: the same request framed differently.
FRAMES = [
    "Please answer the following. {q}",
    "Can you help me with this? {q}",
    "Question: {q}",
    "{q} Thanks!",
    "I need help with this one: {q}",
]


def read_pairs(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def rule_paraphrase(q: str, rng: random.Random) -> str:
    frame = rng.choice(FRAMES).format(q=q.strip())
    if rng.random() < 0.5:
        frame = frame.rstrip("?.!")
    if rng.random() < 0.3:
        frame = frame.lower()
    return frame


def llmrouter_pairs(data: Path, n: int, seed: int, embed) -> list[dict]:
    rows = json.loads(data.read_text(encoding="utf-8"))
    questions = sorted({r["question"].strip() for r in rows if r.get("question")})
    rng = random.Random(seed)
    sample = rng.sample(questions, min(n, len(questions)))
    pairs = [{"a": q, "b": rule_paraphrase(q, rng), "paraphrase": True} for q in sample]
    vectors = embed(sample)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1.0)
    norm = lambda s: re.sub(r"\W+", " ", s.lower()).strip()  # noqa: E731
    for i, q in enumerate(sample):
        for j in np.argsort(-sims[i]):
            if norm(sample[j]) != norm(q):
                pairs.append({"a": q, "b": sample[j], "paraphrase": False, "kind": "nearest"})
                break
    return pairs


def similarities(pairs: list[dict], embed) -> np.ndarray:
    a = embed([p["a"] for p in pairs])
    b = embed([p["b"] for p in pairs])
    return np.sum(a * b, axis=1)


def table(pairs: list[dict], sims: np.ndarray) -> list[dict]:
    para = np.array([p["paraphrase"] for p in pairs])
    rows = []
    for t in THRESHOLDS:
        hit = sims >= t
        rows.append({
            "threshold": t,
            "paraphrase_hit_rate": float(hit[para].mean()) if para.any() else None,
            "false_hit_rate": float(hit[~para].mean()) if (~para).any() else None,
        })
    return rows


def run(artifact: Path, pairs_path: Path, data: Path | None, n: int, seed: int,
        threads: int) -> dict:
    manifest = json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))
    files = read_files(artifact, manifest)
    encoder = featurize.from_manifest(manifest["featurizer"], files, threads)
    if not isinstance(encoder, featurize.MiniLm):
        raise ValueError(f"{artifact}: the semantic cache needs a minilm featurizer")
    report = {"artifact": manifest["version"], "sets": {}}
    sets = {"pairs": read_pairs(pairs_path)}
    if data is not None:
        sets["llmrouter"] = llmrouter_pairs(data, n, seed, encoder)
    for name, pairs in sets.items():
        sims = similarities(pairs, encoder)
        para = np.array([p["paraphrase"] for p in pairs])
        worst = sorted(((float(s), p) for s, p in zip(sims, pairs) if not p["paraphrase"]),
                       key=lambda x: -x[0])[:5]
        report["sets"][name] = {
            "paraphrases": int(para.sum()),
            "near_misses": int((~para).sum()),
            "table": table(pairs, sims),
            "closest_near_misses": [{"similarity": round(s, 4), "a": p["a"][:120],
                                     "b": p["b"][:120]} for s, p in worst],
        }
    return report


def markdown(report: dict) -> str:
    out = []
    for name, s in report["sets"].items():
        out.append(f"**{name}**: {s['paraphrases']} paraphrase pairs, "
                   f"{s['near_misses']} near-miss pairs\n")
        out.append("| threshold | hits on paraphrases | false hits on near misses |")
        out.append("|---|---|---|")
        for r in s["table"]:
            out.append(f"| {r['threshold']:.2f} | {r['paraphrase_hit_rate']:.1%} "
                       f"| {r['false_hit_rate']:.1%} |")
        out.append("")
    return "\n".join(out)
