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


def test_calibrated_conservative_and_knob_routers_on_known_scores():
    y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    prices = np.array([2.0, 1.0])
    costs = np.tile(prices, (4, 1))
    raw = np.array([[2.0, -2.0], [-2.0, 2.0], [0.1, 0.0], [0.0, 0.1]])
    calibrated = {
        "calibration": {"method": "platt", "a": [1.0, 1.0], "b": [0.0, 0.0]},
        "operating": {"best_single": 0, "quality": 0.6, "price_per_m": 2.0, "margin": 0.2,
                      "curve": [{"price_per_m": 1.0, "quality": 0.5, "candidate": 1},
                                {"price_per_m": 1.5, "quality": 0.75, "cost_weight": 0.0}]}}
    queries = ["one", "two", "three", "four"]
    values, mix = robust_eval.calibrated_routers("s", calibrated, raw, y, costs, prices,
                                                 queries)
    # on sigmoid(raw) the router picks 0, 1, 0, 1
    assert values["s calibrated"]["accuracy"].tolist() == [1, 1, 1, 0]
    # row 3's gain over the best single model (0.525 - 0.5) is within the margin
    assert values["s conservative"]["accuracy"].tolist() == [1, 1, 1, 0]
    assert values["s conservative"]["cost_per_query"].tolist() == [2, 1, 2, 2]
    # with the training queries 4 to 5 bytes long, rows 0 and 1 (3 bytes) are unfamiliar:
    # row 1 keeps the best single model although its gain clears the margin
    calibrated["operating"]["query_bytes"] = {"min": 4, "max": 5}
    values, _ = robust_eval.calibrated_routers("s", calibrated, raw, y, costs, prices,
                                               queries)
    assert values["s conservative"]["accuracy"].tolist() == [1, 0, 1, 0]
    assert values["s conservative"]["cost_per_query"].tolist() == [2, 2, 2, 2]
    # quality 0.6 lies 0.4 of the way from vertex 0 (candidate 1) to vertex 1 (the router)
    assert mix == {"low": 0, "high": 1, "weight": pytest.approx(0.4)}
    np.testing.assert_allclose(values["s quality_floor 1"]["accuracy"], [0.4, 1, 1, 0])
    np.testing.assert_allclose(values["s quality_floor 1"]["cost_per_query"], [1.4, 1, 1.4, 1])


def test_report_from_the_command_line(fixture_paths, tmp_path, capsys):
    data, llms = map(str, fixture_paths)
    out = tmp_path / "robust"
    assert main(["robust-eval", "--data", data, "--llm-data", llms, "--out", str(out),
                 "--strategies", "elo,mlp", "--featurizer", "hashed-ngram", "--dim", "64",
                 "--bootstrap", "100",
                 "--calibration-folds", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["splits"]) == ["hash", "cluster", "length"]
    calibrated = ["mlp calibrated", "mlp conservative", "mlp quality_floor 1"]
    assert report["routers"] == ["elo", "mlp"] + calibrated  # elo is query-independent
    for split in report["splits"].values():
        for fold in split["folds"]:
            assert fold["n_train"] + fold["n_test"] == 800
            assert set(fold["training"]) == {"elo", "mlp"}
            assert set(fold["training"]["mlp"]["quality_floor_mix"]) == {"low", "high", "weight"}
            results = fold["results"]
            assert set(results) == {"elo", "mlp", "best single", "oracle", "cheapest",
                                    "random", *calibrated}
            for r in results.values():
                for metric in robust_eval.METRICS:
                    assert r[metric]["low"] <= r[metric]["mean"] <= r[metric]["high"]
            for router in report["routers"]:
                r, best = results[router], results["best single"]
                assert r["verdict"] in ("beats", "ties", "loses")
                gain = r["accuracy_minus_best_single"]["mean"]
                assert gain == pytest.approx(r["accuracy"]["mean"] - best["accuracy"]["mean"])
                ratio = r["cost_ratio_to_best_single"]
                assert ratio["mean"] == pytest.approx(r["cost_per_query"]["mean"]
                                                      / best["cost_per_query"]["mean"])
                assert ratio["low"] <= ratio["mean"] <= ratio["high"]
        assert (split["pooled"] is None) == (len(split["folds"]) == 1)
    cluster = report["splits"]["cluster"]
    assert len(cluster["folds"]) == 3 and cluster["pooled"]["n_test"] == 800
    pooled = cluster["pooled"]["results"]["mlp"]["accuracy"]["mean"]
    folds = cluster["folds"]
    assert pooled == pytest.approx(sum(f["results"]["mlp"]["accuracy"]["mean"] * f["n_test"]
                                       for f in folds) / 800)
    printed = capsys.readouterr().out
    assert "| router | hash: held out | cluster: cluster 0 |" in printed
    assert "## Cost ÷ best single model, per test set" in printed
    assert "| mlp quality_floor 1 | " in printed
    assert printed == (out / "report.md").read_text() + "\n"


def test_unknown_split_is_an_error(fixture_paths, tmp_path, capsys):
    data, llms = map(str, fixture_paths)
    assert main(["robust-eval", "--data", data, "--llm-data", llms, "--out", str(tmp_path),
                 "--splits", "hash,time"]) == 1
    assert "unknown split 'time'" in capsys.readouterr().err
