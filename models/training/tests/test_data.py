"""Input formats and the held-out split."""

import hashlib
import json

import numpy as np
import pytest

from routeiq_training.data import heldout_mask, load_table, parse_size_b


def test_heldout_rule():
    queries = [f"q{i}" for i in range(200)]
    mask = heldout_mask(queries)
    for q, held in zip(queries, mask):
        assert held == (int(hashlib.sha256(q.encode()).hexdigest()[:8], 16) % 5 == 0)
    assert 0.1 < mask.mean() < 0.3


def test_candidates_are_the_scored_llms_in_name_order(fixture_paths):
    table = load_table(*fixture_paths)
    names = [c.name for c in table.candidates]
    assert names == sorted(names) and len(names) == 9
    gemma = table.candidates[names.index("gemma-2-9b-it")]
    assert (gemma.size_b, gemma.input_price, gemma.output_price) == (9.0, 0.1, 0.1)
    assert table.scores.shape == (800, 9)


def test_llmrouter_records_give_the_same_table(fixture_paths, tmp_path):
    data, llms = fixture_paths
    table = load_table(data, llms)
    rows = [{"query": q, "model_name": c.name, "performance": float(s), "cost": 0.0}
            for q, row in zip(table.queries[:50], table.scores[:50])
            for c, s in zip(table.candidates, row)]
    rows.append({"query": "only one model", "model_name": "gemma-2-9b-it", "performance": 1.0})
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    converted = load_table(path, llms)
    assert converted.queries == table.queries[:50]  # the incomplete query is left out
    np.testing.assert_array_equal(converted.scores, table.scores[:50])
    assert converted.cluster_ids is None  # records have no clusters


def test_cluster_ids_follow_their_queries(fixture_paths, tmp_path):
    data, llms = fixture_paths
    rows = json.loads(data.read_text())
    table = load_table(data, llms)
    assert list(table.cluster_ids) == [r["cluster_id"] for r in rows]
    held = heldout_mask(table.queries)
    part = table.subset(held)
    assert list(part.cluster_ids) == [r["cluster_id"] for r, h in zip(rows, held) if h]
    del rows[3]["cluster_id"]  # a record without one: no clusters at all
    path = tmp_path / "table.json"
    path.write_text(json.dumps(rows))
    assert load_table(path, llms).cluster_ids is None


def test_unknown_llm_is_an_error(tmp_path, fixture_paths):
    path = tmp_path / "records.json"
    path.write_text(json.dumps([{"query": "q", "model_name": "nope", "performance": 1}]))
    with pytest.raises(ValueError, match="nope"):
        load_table(path, fixture_paths[1])


def test_sizes():
    assert parse_size_b("7B") == 7.0 and parse_size_b("1.5b") == 1.5
    assert parse_size_b("350M") == 0.35 and parse_size_b(12) == 12.0
