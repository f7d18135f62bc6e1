"""`semantic-eval`: the threshold table of the semantic cache, from labelled pairs and rule-made
paraphrases of routing questions, with a real minilm artifact."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from routeiq_training import featurize, semantic_eval

PAIRS = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "semantic" / "pairs.jsonl"


def test_the_table_counts_hits_and_false_hits_per_threshold():
    pairs = [{"paraphrase": True}, {"paraphrase": True}, {"paraphrase": False},
             {"paraphrase": False}]
    rows = semantic_eval.table(pairs, np.array([0.97, 0.89, 0.91, 0.5]))
    by = {r["threshold"]: r for r in rows}
    assert by[0.88] == {"threshold": 0.88, "paraphrase_hit_rate": 1.0, "false_hit_rate": 0.5}
    assert by[0.90] == {"threshold": 0.90, "paraphrase_hit_rate": 0.5, "false_hit_rate": 0.5}
    assert by[0.95] == {"threshold": 0.95, "paraphrase_hit_rate": 0.5, "false_hit_rate": 0.0}
    assert by[0.98]["paraphrase_hit_rate"] == 0.0


def test_rule_paraphrases_keep_the_question():
    rng = random.Random(0)
    q = "What is the capital of France?"
    for _ in range(20):
        p = semantic_eval.rule_paraphrase(q, rng)
        assert "capital of france" in p.lower() and p != ""


def test_the_shipped_pairs_are_balanced_and_labelled():
    pairs = semantic_eval.read_pairs(PAIRS)
    para = [p for p in pairs if p["paraphrase"]]
    assert len(para) >= 50 and len(pairs) - len(para) >= 50
    assert all(p["a"] != p["b"] for p in pairs)
    assert all(p.get("kind") for p in pairs if not p["paraphrase"])


try:
    ENCODER = featurize.default_encoder_path()
except ValueError:
    ENCODER = None


@pytest.mark.skipif(ENCODER is None, reason="requirements-encoder.txt not installed")
def test_a_minilm_artifact_ranks_paraphrases_above_near_misses(tmp_path, fixture_paths):
    from routeiq_training import train

    data, llms = fixture_paths
    small = tmp_path / "routing_small.json"
    small.write_text(json.dumps(json.loads(data.read_text())[:60]))
    train.run(small, llms, tmp_path / "out", ["knn"], "minilm", 0, 0, calibration_folds=0)
    report = semantic_eval.run(tmp_path / "out" / "knn", PAIRS, small, 40, 0, 1)
    for name in ("pairs", "llmrouter"):
        table = report["sets"][name]["table"]
        # More paraphrases than near misses clear every threshold, and both rates fall as
        # the threshold rises.
        for row in table:
            assert row["paraphrase_hit_rate"] >= row["false_hit_rate"], (name, row)
        hits = [r["paraphrase_hit_rate"] for r in table]
        assert hits == sorted(hits, reverse=True)
    assert "| 0.95 |" in semantic_eval.markdown(report)
