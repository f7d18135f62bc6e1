"""`select`: the featurizer and strategy are chosen on validation folds made inside each
outer fold's training rows, the outer test rows are scored once by the chosen router, and
the default is chosen on the whole table."""

import json

import numpy as np
import pytest

from routeiq_training import selection, splits
from routeiq_training.cli import main
from routeiq_training.data import Candidate, RoutingTable, split_bucket


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
    gains = {"mlp on hashed-ngram": np.array([0.0, 0.1]), "mf on hashed-ngram": np.array([0.1]),
             "mlp on structure": np.array([0.2, -0.1]), "mf on structure": np.array([0.0])}
    assert selection.choose(gains, cands).name == "mf on hashed-ngram"
    gains["mf on structure"] = np.array([0.3])
    assert selection.choose(gains, cands) == selection.Candidate("structure", "mf")


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
                 "--splits", "cluster", "--dim", "64", "--bootstrap", "50",
                 "--calibration-folds", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    folds = report["splits"]["cluster"]["folds"]
    assert len(folds) == 3

    # per outer fold: 2 validation folds × 2 featurizers, then the chosen router once
    per_fold = 2 * 2 + 1
    all_queries = calls[4][0]
    for i, fold in enumerate(folds):
        outer_test = calls[i * per_fold + 4][1]
        assert len(outer_test) == fold["n_test"]
        for table_queries, _, strategies, calibration_folds in calls[i * per_fold:
                                                                      i * per_fold + 4]:
            assert not table_queries & outer_test
            assert strategies == ["mlp", "graph"] and calibration_folds == 0
        table_queries, _, strategies, calibration_folds = calls[i * per_fold + 4]
        assert table_queries == all_queries
        chosen = max(fold["validation_gain"].items(), key=lambda kv: kv[1]["mean"])[0]
        assert fold["chosen"] == chosen
        assert strategies == [chosen.split(" on ")[0]] and calibration_folds == 2
        assert set(fold["results"]) >= {"selected", "selected calibrated",
                                        "selected conservative", "selected quality_floor 1",
                                        "best single"}
        r = fold["results"]["selected"]
        assert r["accuracy_minus_best_single"]["mean"] == pytest.approx(
            r["accuracy"]["mean"] - fold["results"]["best single"]["accuracy"]["mean"])
    pooled = report["splits"]["cluster"]["pooled"]
    assert pooled["n_test"] == len(all_queries) == 800

    # the default: the whole table's cluster folds as validation folds
    default_calls = calls[3 * per_fold:]
    assert len(default_calls) == 3 * 2
    assert all(t | v == all_queries for t, v, _, _ in default_calls)
    default = report["default"]
    assert default["chosen"] == max(default["validation_gain"].items(),
                                    key=lambda kv: kv[1])[0]
    assert default["featurizer"] in ("hashed-ngram", "structure")
    printed = capsys.readouterr().out
    assert "## The default" in printed and f"**`{default['chosen']}`**" in printed
    assert printed == (out / "report.md").read_text() + "\n"


def test_a_query_independent_strategy_is_refused(fixture_paths, tmp_path, capsys):
    data, llms = map(str, fixture_paths)
    assert main(["select", "--data", data, "--llm-data", llms, "--out", str(tmp_path),
                 "--strategies", "mlp,elo"]) == 1
    assert "elo does not read the query" in capsys.readouterr().err
