"""`select`: the featurizer and strategy are chosen on validation folds made inside each
outer fold's training rows, the outer test rows are scored once by the chosen router, and
the default is chosen on the whole table."""

import json

import numpy as np
import pytest

from routeiq_training import selection, splits
from routeiq_training.cli import main
from routeiq_training.data import Candidate, RoutingTable, load_table, split_bucket


def test_validation_folds_are_the_split_made_again_inside_the_training_rows():
    queries = [f"query number {i}" for i in range(60)]
    table = RoutingTable(queries, np.zeros((60, 1)), [Candidate("a", 1.0, 1.0, 1.0)], "x",
                         np.array([i % 3 for i in range(60)]))
    inside = table.subset(table.cluster_ids != 0)
    folds = splits.validation_folds("cluster", inside)
    assert [f.name for f in folds] == ["cluster 1", "cluster 2"]
    assert all(f.test.sum() == 20 for f in folds)

    (hashed,) = splits.validation_folds("hash", table)
    assert hashed.test.tolist() == [split_bucket(q) == 2 for q in queries]
    assert 0 < hashed.test.sum() < 60

    (longest,) = splits.validation_folds("length", inside)
    lengths = np.array([len(q) for q in inside.queries])
    assert lengths[longest.test].min() > lengths[~longest.test].max()


def test_the_largest_mean_gain_is_chosen_and_a_tie_goes_to_the_first_listed():
    cands = selection.candidates(["hashed-ngram", "structure"], ["mlp", "mf"])
    assert [c.name for c in cands] == ["mlp on hashed-ngram", "mf on hashed-ngram",
                                       "mlp on structure", "mf on structure"]
    means = {"mlp on hashed-ngram": 0.05, "mf on hashed-ngram": 0.1,
             "mlp on structure": 0.05, "mf on structure": 0.1}
    assert selection.choose(means, cands).name == "mf on hashed-ngram"
    means["mf on structure"] = 0.3
    assert selection.choose(means, cands) == selection.Candidate("structure", "mf")


def test_only_the_chosen_strategys_routers_are_renamed():
    names = ["mf", "mf conservative", "mfx", "best single"]
    assert [selection._selected(n, "mf") for n in names] == [
        "selected", "selected conservative", "mfx", "best single"]


def test_nested_choice_never_sees_the_outer_test_rows(fixture_paths, tmp_path, monkeypatch,
                                                      capsys):
    real = selection.run_fold
    calls = []

    def run_fold(table, features, test, strategies, seed, calibration_folds=0):
        calls.append((set(table.queries), {q for q, t in zip(table.queries, test) if t},
                      list(strategies), calibration_folds))
        return real(table, features, test, strategies, seed, calibration_folds)

    monkeypatch.setattr(selection, "run_fold", run_fold)
    data, llms = map(str, fixture_paths)
    out = tmp_path / "select"
    assert main(["select", "--data", data, "--llm-data", llms, "--out", str(out),
                 "--featurizers", "hashed-ngram,structure", "--strategies", "mlp,graph",
                 "--splits", "cluster,length", "--dim", "64", "--bootstrap", "50",
                 "--calibration-folds", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    table = load_table(*fixture_paths)
    all_queries = set(table.queries)
    by_cluster = {c: {q for q, k in zip(table.queries, table.cluster_ids) if k == c}
                  for c in sorted(set(table.cluster_ids.tolist()))}
    assert len(by_cluster) == 3

    # per outer fold, 2 featurizers per validation fold, over the cluster split's
    # validation folds and the length split's one, then the chosen router once
    position = 0
    outer = [(f, "cluster") for f in report["splits"]["cluster"]["folds"]] + \
        [(f, "length") for f in report["splits"]["length"]["folds"]]
    assert len(outer) == 4
    for fold, split in outer:
        clusters_inside = 2 if split == "cluster" else 3
        n_validation = 2 * (clusters_inside + 1)
        validation = calls[position:position + n_validation]
        table_queries, outer_test, strategies, calibration_folds = \
            calls[position + n_validation]
        position += n_validation + 1
        assert table_queries == all_queries and len(outer_test) == fold["n_test"]
        if split == "cluster":
            assert outer_test in by_cluster.values()
        for inside, held, strategies_v, folds_v in validation:
            assert inside == all_queries - outer_test
            assert strategies_v == ["mlp", "graph"] and folds_v == 0
        # the cluster split's validation folds leave out, in turn, each cluster's rows
        # among the outer fold's training rows
        held_clusters = [held for _, held, _, _ in validation[:2 * clusters_inside:2]]
        inside = all_queries - outer_test
        assert held_clusters == [c & inside for c in by_cluster.values() if c & inside]
        choice = fold["choice"]
        means = {c: sum(choice["validation_gain"][s][c]["mean"] for s in ("cluster", "length"))
                 / 2 for c in report["candidates"]}
        assert choice["validation_mean"] == pytest.approx(means)
        assert choice["chosen"] == max(means, key=means.get)
        assert strategies == [choice["strategy"]] and calibration_folds == 2
        assert set(fold["results"]) >= {"selected", "selected calibrated",
                                        "selected conservative", "selected quality_floor 1",
                                        "best single"}
        r = fold["results"]["selected"]
        assert r["accuracy_minus_best_single"]["mean"] == pytest.approx(
            r["accuracy"]["mean"] - fold["results"]["best single"]["accuracy"]["mean"])
    assert report["splits"]["cluster"]["pooled"]["n_test"] == 800

    # the default: the same rule on the whole table (3 cluster folds and 1 length fold)
    default_calls = calls[position:]
    assert len(default_calls) == 2 * (3 + 1)
    assert all(t == all_queries for t, _, _, _ in default_calls)
    assert [held for _, held, _, _ in default_calls[:6:2]] == list(by_cluster.values())
    default = report["default"]
    assert default["chosen"] == max(default["validation_mean"],
                                    key=default["validation_mean"].get)
    printed = capsys.readouterr().out
    assert "## The default" in printed and f"**`{default['chosen']}`**" in printed
    assert printed == (out / "report.md").read_text() + "\n"


def test_strategies_it_cannot_compare_and_too_few_clusters_are_refused(
        fixture_paths, tmp_path, capsys):
    data, llms = map(str, fixture_paths)
    assert main(["select", "--data", data, "--llm-data", llms, "--out", str(tmp_path),
                 "--strategies", "mlp,gmt"]) == 1
    assert "gmt is personalised" in capsys.readouterr().err
    rows = json.loads(open(data).read())
    two = tmp_path / "two.json"
    two.write_text(json.dumps([r for r in rows if r.get("cluster_id") in (0, 1)]))
    assert main(["select", "--data", str(two), "--llm-data", llms, "--out", str(tmp_path),
                 "--splits", "cluster"]) == 1
    assert "at least three clusters" in capsys.readouterr().err


def test_a_query_independent_strategy_is_refused(fixture_paths, tmp_path, capsys):
    data, llms = map(str, fixture_paths)
    assert main(["select", "--data", data, "--llm-data", llms, "--out", str(tmp_path),
                 "--strategies", "mlp,elo"]) == 1
    assert "elo does not read the query" in capsys.readouterr().err


def test_choices_may_be_made_on_other_splits_than_the_outer_folds(fixture_paths, tmp_path):
    data, llms = map(str, fixture_paths)
    assert main(["select", "--data", data, "--llm-data", llms, "--out", str(tmp_path),
                 "--featurizers", "hashed-ngram", "--strategies", "mlp,graph",
                 "--splits", "length", "--validation-splits", "cluster,hash", "--dim", "64",
                 "--bootstrap", "20", "--calibration-folds", "2"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["validation_splits"] == ["cluster", "hash"]
    assert list(report["splits"]) == ["length"]
    (fold,) = report["splits"]["length"]["folds"]
    for choice in (fold["choice"], report["default"]):
        assert list(choice["validation_gain"]) == ["cluster", "hash"]
        means = choice["validation_mean"]
        assert choice["chosen"] == max(means, key=means.get)
    # the outer fold's training rows hold every cluster: three validation folds of it,
    # together all its rows
    assert fold["choice"]["n_validation"]["cluster"] == fold["n_train"]
