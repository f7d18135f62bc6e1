"""`robust-eval`: strategies and the best single model learn from a fold's training rows
only, and the report holds every split, fold and verdict."""

import json

import numpy as np
import pytest

from routeiq_training import robust_eval
from routeiq_training.bootstrap import resamples
from routeiq_training.cli import main
from routeiq_training.data import Candidate, RoutingTable
from routeiq_training.train import fit as train_fit


def _shifted_table() -> RoutingTable:
    """`a` is best on the first six rows and worst on the last four (the test rows); `b`
    the reverse. `b` is the cheaper."""
    scores = np.array([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 4)
    candidates = [Candidate("a", 50.0, 2.0, 2.0), Candidate("b", 7.0, 1.0, 1.0)]
    return RoutingTable([f"query {i}" for i in range(10)], scores, candidates, "x")


TEST = np.array([False] * 6 + [True] * 4)


def test_best_single_and_training_come_from_the_training_rows_only(monkeypatch):
    table = _shifted_table()
    seen = []

    def fit(strategy, train_table, features, seed):
        seen.extend(train_table.queries)
        return train_fit(strategy, train_table, features, seed)

    monkeypatch.setattr(robust_eval, "fit", fit)
    result = robust_eval.run_fold(table, np.zeros((10, 0), np.float32), TEST, ["elo"], 0)
    assert seen and not set(seen) & {q for q, t in zip(table.queries, TEST) if t}
    assert result.n_train == 6
    # on the test rows `b` is always better, but the training rows choose `a`
    assert result.models == {"best single": "a", "cheapest": "b"}
    assert result.values["best single"]["accuracy"].tolist() == [0.0] * 4
    assert result.values["cheapest"]["accuracy"].tolist() == [1.0] * 4
    assert result.values["oracle"]["accuracy"].tolist() == [1.0] * 4
    assert result.values["random"]["accuracy"].tolist() == [0.5] * 4
    # elo rated `a` higher on the training rows, so it picks `a` like the best single model
    assert result.values["elo"]["accuracy"].tolist() == [0.0] * 4

    rows = robust_eval.summarise(result.values, ["elo"], resamples(4, 100, 0))
    assert rows["elo"]["accuracy_minus_best_single"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert rows["elo"]["verdict"] == "ties"
    assert rows["oracle"]["accuracy"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert "verdict" not in rows["oracle"]


def test_report_from_the_command_line(fixture_paths, tmp_path, capsys):
    data, llms = map(str, fixture_paths)
    out = tmp_path / "robust"
    assert main(["robust-eval", "--data", data, "--llm-data", llms, "--out", str(out),
                 "--strategies", "elo,mlp", "--dim", "64", "--bootstrap", "100"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["splits"]) == ["hash", "cluster", "length"]
    for split in report["splits"].values():
        for fold in split["folds"]:
            assert fold["n_train"] + fold["n_test"] == 800
            assert set(fold["training"]) == {"elo", "mlp"}
            results = fold["results"]
            assert set(results) == {"elo", "mlp", "best single", "oracle", "cheapest", "random"}
            for r in results.values():
                for metric in robust_eval.METRICS:
                    assert r[metric]["low"] <= r[metric]["mean"] <= r[metric]["high"]
            assert results["mlp"]["verdict"] in ("beats", "ties", "loses")
            gain = results["mlp"]["accuracy_minus_best_single"]["mean"]
            assert gain == pytest.approx(results["mlp"]["accuracy"]["mean"]
                                         - results["best single"]["accuracy"]["mean"])
        assert (split["pooled"] is None) == (len(split["folds"]) == 1)
    cluster = report["splits"]["cluster"]
    assert len(cluster["folds"]) == 3 and cluster["pooled"]["n_test"] == 800
    pooled = cluster["pooled"]["results"]["mlp"]["accuracy"]["mean"]
    folds = cluster["folds"]
    assert pooled == pytest.approx(sum(f["results"]["mlp"]["accuracy"]["mean"] * f["n_test"]
                                       for f in folds) / 800)
    printed = capsys.readouterr().out
    assert "| router | hash: held out | cluster: cluster 0 |" in printed
    assert printed == (out / "report.md").read_text() + "\n"


def test_unknown_split_is_an_error(fixture_paths, tmp_path, capsys):
    data, llms = map(str, fixture_paths)
    assert main(["robust-eval", "--data", data, "--llm-data", llms, "--out", str(tmp_path),
                 "--splits", "hash,time"]) == 1
    assert "unknown split 'time'" in capsys.readouterr().err
