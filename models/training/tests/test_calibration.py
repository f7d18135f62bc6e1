"""Calibration and operating points (`calibration.py`), the conservative mode and the cost
knob (`choice.py`), on synthetic scores whose answers are known, and in the artifacts
`train` writes for the fixture."""

import json
from itertools import pairwise

import numpy as np
import pytest

from conftest import FIXTURES
from routeiq_training import artifact, calibration, evaluation, parity, train
from routeiq_training.choice import conservative, familiar, knob, pick, vertex_choice
from routeiq_training.data import Candidate, RoutingTable, heldout_mask, load_table
from routeiq_training.metrics import envelope_value


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _synthetic(n: int = 2000, k: int = 4, seed: int = 0):
    """Raw scores in [0, 1] that rank well but are miscalibrated (the true probability of
    being correct is `sigmoid(6 * (raw - 0.6))`), fractional correctness scores drawn
    from it, and prices ascending with the index."""
    rng = np.random.default_rng(seed)
    raw = rng.uniform(0, 1, size=(n, k))
    truth = 1 / (1 + np.exp(-6 * (raw - 0.6)))
    y = rng.binomial(4, truth) / 4  # four graded answers per query: 0, 0.25, ..., 1
    return raw, y, np.linspace(0.1, 1.0, k)


def test_calibration_lowers_the_log_loss_and_matches_the_mean():
    raw, y, _ = _synthetic()
    fitted = calibration.fit(raw, y)
    p = calibration.apply(fitted, raw).astype(np.float64)
    for m in range(raw.shape[1]):
        clipped = np.clip(raw[:, m], 1e-3, 1 - 1e-3)
        assert _log_loss(p[:, m], y[:, m]) <= _log_loss(clipped, y[:, m])
        # logistic regression with an intercept matches the mean (up to Platt's smoothing)
        assert p[:, m].mean() == pytest.approx(y[:, m].mean(), abs=2e-3)
        # the miscalibration was a slope of 6 and an offset of -3.6 on the raw scale
        assert fitted["a"][m] == pytest.approx(6, rel=0.15)
        assert fitted["b"][m] == pytest.approx(-3.6, rel=0.15)


def test_calibrated_scores_are_probabilities_monotone_in_the_raw_score():
    raw, y, _ = _synthetic()
    fitted = calibration.fit(raw, y)
    assert all(a > 0 for a in fitted["a"])
    # over the raw scores' range and beyond (far out, float32 rounds p to 0 or 1)
    grid = np.linspace(-1, 2, 301)[:, None].repeat(raw.shape[1], axis=1)
    p = calibration.apply(fitted, grid)
    assert p.dtype == np.float32 and ((p > 0) & (p < 1)).all()
    assert (np.diff(p.astype(np.float64), axis=0) > 0).all()
    # the coefficients are float32 values, so f32 and f64 readers compute the same
    assert all(float(np.float32(v)) == v for v in fitted["a"] + fitted["b"])


def test_calibration_follows_the_contract_formula_and_keeps_unscored_unscored():
    fitted = {"method": "platt", "a": [2.0, 0.0], "b": [-1.0, 0.5]}
    raw = np.array([[0.25, np.nan], [3.0, np.nan]])
    p = calibration.apply(fitted, raw)
    assert p[0, 0] == np.float32(1 / (1 + np.exp(0.5)))
    assert p[1, 0] == np.float32(1 / (1 + np.exp(-5.0)))
    assert np.isnan(p[:, 1]).all()


def test_degenerate_candidates_get_their_mean():
    y = np.array([[1.0, 0.0, 0.2], [0.0, 0.0, 0.4], [1.0, 0.0, 0.6], [1.0, 0.0, 0.8]])
    raw = np.array([[np.nan, 0.3, 1.0], [np.nan, 0.3, 1.0], [np.nan, 0.3, 1.0],
                    [np.nan, 0.3, 1.0]])
    fitted = calibration.fit(raw, y)
    assert fitted["a"] == [0.0, 0.0, 0.0]
    logit = lambda q: float(np.float32(np.log(q / (1 - q))))  # noqa: E731
    assert fitted["b"][0] == logit(0.75)  # unscored: the mean of every row
    assert fitted["b"][1] == logit(calibration.CLIP)  # never correct: clipped
    assert fitted["b"][2] == pytest.approx(0.0, abs=1e-12)  # one score: logit(0.5)


def test_separable_scores_keep_a_finite_slope():
    raw = np.array([[0.0], [0.0], [1.0], [1.0]])
    y = np.array([[0.0], [0.0], [1.0], [1.0]])
    fitted = calibration.fit(raw, y)
    p = calibration.apply(fitted, raw)
    assert np.isfinite(fitted["a"][0]) and 0 < fitted["a"][0] < 10
    assert 0 < p[0, 0] < 0.5 < p[2, 0] < 1


def _operating(seed: int = 0):
    raw, y, prices = _synthetic(seed=seed)
    p = calibration.apply(calibration.fit(raw, y), raw)
    queries = [f"query {i}" for i in range(len(y))]
    return p, y, prices, calibration.operating_points(p, y, prices, seed, queries)


def test_the_curve_is_a_monotone_concave_envelope_of_every_policy():
    p, y, prices, operating = _operating()
    curve = operating["curve"]
    xy = [(v["price_per_m"], v["quality"]) for v in curve]
    assert all(x1 < x2 and q1 < q2 for (x1, q1), (x2, q2) in pairwise(xy))
    slopes = [(q2 - q1) / (x2 - x1) for (x1, q1), (x2, q2) in pairwise(xy)]
    assert all(s1 > s2 for s1, s2 in pairwise(slopes))
    rows = np.arange(len(y))
    for vertex in curve:  # a vertex is a policy, and reaches its point
        chosen = vertex_choice(vertex, p, prices)
        assert prices[chosen].mean() == pytest.approx(vertex["price_per_m"], abs=1e-12)
        assert y[rows, chosen].mean() == pytest.approx(vertex["quality"], abs=1e-12)
        assert set(vertex) in ({"price_per_m", "quality", "candidate"},
                               {"price_per_m", "quality", "cost_weight"})
    # every single candidate and the router at cost weight 0 are on or under it
    best = operating["best_single"]
    assert operating["quality"] == y[:, best].mean() and operating["price_per_m"] == prices[best]
    router = pick(p, prices)
    for price, quality in [(prices[m], y[:, m].mean()) for m in range(len(prices))] + [
            (prices[router].mean(), y[rows, router].mean())]:
        if price >= xy[0][0]:
            assert envelope_value(xy, price) >= quality - 1e-12
    # calibrated scores that rank well: the router at cost weight 0 tops the curve
    assert curve[-1] == {"price_per_m": prices[router].mean(),
                         "quality": y[rows, router].mean(), "cost_weight": 0.0}
    assert curve[0] == {"price_per_m": prices[0], "quality": y[:, 0].mean(), "candidate": 0}


def test_the_margin_makes_a_noise_router_no_worse_than_the_best_single():
    rng = np.random.default_rng(4)
    y = rng.binomial(1, [0.3, 0.7, 0.5], size=(500, 3)).astype(np.float64)
    p = rng.uniform(0.4, 0.6, size=(500, 3)).astype(np.float32)  # knows nothing
    prices = np.array([0.1, 0.5, 1.0])
    operating = calibration.operating_points(p, y, prices, 0, ["q"] * len(y))
    assert operating["best_single"] == 1
    chosen = conservative(p, prices, 1, operating["margin"])
    assert (chosen == 1).mean() > 0.95
    assert operating["margin"] in calibration.MARGINS


def test_conservative_keeps_the_best_single_unless_the_gain_exceeds_the_margin():
    prices = np.array([1.0, 2.0, 3.0])
    p = np.array([[0.5, 0.6, 0.2],    # choice 1 is best's own
                  [0.7, 0.6, 0.2],    # gain 0.1 over best
                  [0.9, 0.6, 0.2],    # gain 0.3
                  [0.9, np.nan, 0.2]])  # best unscored
    assert conservative(p, prices, 1, 0.2).tolist() == [1, 1, 0, 0]
    assert conservative(p, prices, 1, 0.05).tolist() == [1, 0, 0, 0]
    assert conservative(p, prices, 1, 0.1 + 1e-9).tolist() == [1, 1, 0, 0]
    # with a cost weight the gains are of p - λ·price: at λ = 0.2 row 0 chooses 0 (0.3
    # against 0.2 for best), a gain of 0.1
    assert conservative(p, prices, 1, 0.05, cost_weight=0.2).tolist() == [0, 0, 0, 0]
    assert conservative(p, prices, 1, 0.2, cost_weight=0.2).tolist() == [1, 0, 0, 0]
    # a huge margin is the best single model wherever it is scored
    p_rand, _, prices_rand = _synthetic(200, 4, 1)
    assert (conservative(p_rand, prices_rand, 2, 1e9) == 2).all()
    # an unfamiliar query keeps the best single model whatever the gain, scored or not
    familiar = np.array([True, False, False, False])
    assert conservative(p, prices, 1, 0.05, familiar=familiar).tolist() == [1, 1, 1, 1]
    assert conservative(p, prices, 1, 0.05, familiar=~familiar).tolist() == [1, 0, 0, 0]


def test_familiar_queries_lie_within_the_training_lengths_in_bytes():
    operating = {"query_bytes": calibration.query_bytes(["abcd", "ab", "abcdef"])}
    assert operating["query_bytes"] == {"min": 2, "max": 6}
    # "é" is two bytes: "aé" is 3, "ééé" is 6, "éééé" is 8
    got = familiar(operating, ["a", "ab", "aé", "ééé", "abcdefg", "éééé"])
    assert got.tolist() == [False, True, True, True, False, False]
    assert familiar({}, ["a"]) is None  # operating points made before the range existed


CURVE = {"best_single": 2, "quality": 0.6, "price_per_m": 0.9, "margin": 0.02, "curve": [
    {"price_per_m": 0.1, "quality": 0.3, "candidate": 0},
    {"price_per_m": 0.4, "quality": 0.55, "cost_weight": 0.3},
    {"price_per_m": 0.8, "quality": 0.65, "cost_weight": 0.0}]}


@pytest.mark.parametrize(("price", "expected"), [
    (0.05, (0, 0, 0.0)),   # below the first vertex: the first
    (0.1, (0, 0, 0.0)),    # exactly the first
    (0.25, (0, 1, 0.5)),
    (0.4, (1, 2, 0.0)),    # exactly a vertex: that vertex alone
    (0.7, (1, 2, 0.75)),
    (0.8, (2, 2, 0.0)),    # exactly the last
    (5.0, (2, 2, 0.0)),    # above the last: the last
])
def test_max_price_mixes_the_adjacent_vertices(price, expected):
    mix = knob(CURVE, max_price_per_m=price)
    assert (mix.low, mix.high) == expected[:2]
    assert mix.weight == pytest.approx(expected[2])


@pytest.mark.parametrize(("floor", "expected"), [
    (0.1, (0, 0, 0.0)),    # under the first vertex's quality: the first
    (0.5, (0, 0, 0.0)),    # 0.3 exactly
    (0.75, (0, 1, 0.6)),   # 0.45
    (1.0, (1, 2, 0.5)),    # 0.6: the best single model's quality
    (1.2, (2, 2, 0.0)),    # 0.72: above the last vertex: the last
])
def test_quality_floor_mixes_the_adjacent_vertices(floor, expected):
    mix = knob(CURVE, quality_floor=floor)
    assert (mix.low, mix.high) == expected[:2]
    assert mix.weight == pytest.approx(expected[2])


def test_the_knob_reaches_the_requested_price_and_quality_in_expectation():
    vertices = CURVE["curve"]
    for price in np.linspace(0.1, 0.8, 15):
        low, high, weight = knob(CURVE, max_price_per_m=float(price))
        expected = weight * vertices[high]["price_per_m"] + \
            (1 - weight) * vertices[low]["price_per_m"]
        assert expected == pytest.approx(price)
    for floor in np.linspace(0.5, 65 / 60, 15):
        low, high, weight = knob(CURVE, quality_floor=float(floor))
        expected = weight * vertices[high]["quality"] + (1 - weight) * vertices[low]["quality"]
        assert expected == pytest.approx(floor * CURVE["quality"])


def test_the_knob_on_a_single_vertex_curve_is_that_vertex():
    single = {**CURVE, "curve": [{"price_per_m": 0.9, "quality": 0.6, "candidate": 2}]}
    for args in ({"max_price_per_m": 0.1}, {"max_price_per_m": 0.9}, {"max_price_per_m": 3},
                 {"quality_floor": 0.5}, {"quality_floor": 1.0}, {"quality_floor": 2.0}):
        assert tuple(knob(single, **args)) == (0, 0, 0.0)
    with pytest.raises(ValueError, match="exactly one"):
        knob(single)
    with pytest.raises(ValueError, match="exactly one"):
        knob(single, max_price_per_m=1.0, quality_floor=1.0)


def test_out_of_fold_rows_are_scored_by_models_that_did_not_see_them(monkeypatch):
    queries = [f"query {i}" for i in range(60)]
    table = RoutingTable(queries, np.tile([0.0, 1.0], (60, 1)),
                         [Candidate("a", 1.0, 1.0, 1.0), Candidate("b", 2.0, 2.0, 2.0)], "x")
    fitted_on, original = [], train.fit

    def fit(strategy, fold_table, features, seed):
        fitted_on.append(set(fold_table.queries))
        return original(strategy, fold_table, features, seed)

    monkeypatch.setattr(train, "fit", fit)
    scores = train.out_of_fold_scores("smallest", table, np.zeros((60, 0), np.float32), 0, 3)
    folds = train.calibration_folds(queries, 3)
    assert len(fitted_on) == 3 and not np.isnan(scores).any()
    for f, seen in enumerate(fitted_on):
        assert seen == {q for q, g in zip(queries, folds) if g != f}
    with pytest.raises(ValueError, match="at least two"):
        train.out_of_fold_scores("smallest", table.subset(folds == 0),
                                 np.zeros((int((folds == 0).sum()), 0), np.float32), 0, 3)


def test_calibration_folds_split_the_training_rows_evenly():
    """The held-out split takes hash bucket 0 of other bits of the same hash: the training
    rows (buckets 1 to 4) still fall into every calibration fold alike."""
    queries = [f"question {i}" for i in range(5000)]
    training = [q for q, held in zip(queries, heldout_mask(queries)) if not held]
    counts = np.bincount(train.calibration_folds(training, 5), minlength=5)
    assert counts.min() > 0.9 * counts.mean()


@pytest.fixture(scope="module")
def calibrated_artifacts(tmp_path_factory, fixture_paths):
    out = tmp_path_factory.mktemp("calibrated")
    summary, in_memory = train.run(*fixture_paths, out, ["svm", "mlp", "elo"], "hashed-ngram",
                                   256, seed=0, calibration_folds=2)
    return out, summary, in_memory


def test_train_writes_calibration_and_operating_points(calibrated_artifacts, fixture_paths):
    out, summary, _ = calibrated_artifacts
    queries = load_table(*fixture_paths).queries
    training = [q for q, held in zip(queries, heldout_mask(queries)) if not held]
    assert summary["calibration_folds"] == 2
    for strategy in ("svm", "mlp"):
        manifest = json.loads((out / strategy / "manifest.json").read_text())
        cal, operating = manifest["calibration"], manifest["operating"]
        assert cal["method"] == "platt" and len(cal["a"]) == len(cal["b"]) == 9
        assert set(operating) == {"best_single", "quality", "price_per_m", "margin",
                                  "query_bytes", "curve"}
        lengths = [len(q.encode("utf-8")) for q in training]
        assert operating["query_bytes"] == {"min": min(lengths), "max": max(lengths)}
        prices = [(c["input_price"] + c["output_price"]) / 2 for c in manifest["candidates"]]
        assert operating["price_per_m"] == prices[operating["best_single"]]
        assert 0 <= operating["margin"] <= 0.3
        curve = operating["curve"]
        assert [v["price_per_m"] for v in curve] == sorted(v["price_per_m"] for v in curve)
        # the curve reaches the best single model's training quality
        assert curve[-1]["quality"] >= operating["quality"]
    elo = json.loads((out / "elo" / "manifest.json").read_text())
    assert "calibration" not in elo and "operating" not in elo


def test_artifact_parity_and_eval_read_calibrated_scores(calibrated_artifacts, fixture_paths,
                                                         tmp_path):
    out, summary, in_memory = calibrated_artifacts
    queries = json.loads((FIXTURES / "parity_queries.json").read_text())
    for strategy in ("svm", "mlp"):
        router = artifact.load(out / strategy)
        raw = in_memory[strategy].reference(router.features(queries))
        expected = calibration.apply(router.manifest["calibration"], raw)
        scores = router.scores(queries)
        scored = ~np.isnan(expected)
        np.testing.assert_array_equal(np.isnan(scores), ~scored)
        np.testing.assert_allclose(scores[scored], expected[scored], atol=1e-5)
        assert ((scores[scored] > 0) & (scores[scored] < 1)).all()

        parity.run(out / strategy, FIXTURES / "parity_queries.json", tmp_path / "e.json")
        rows = json.loads((tmp_path / "e.json").read_text())
        got = np.array([[np.nan if s is None else s for s in r["scores"]] for r in rows])
        np.testing.assert_array_equal(got, scores.astype(np.float64))
        assert [r["choice"] for r in rows] == pick(scores, router.prices).tolist()
    # eval from disk (calibrated) agrees with train's held-out metrics
    report = evaluation.run(*fixture_paths, out, tmp_path / "report")
    for strategy in ("svm", "mlp"):
        assert report["strategies"][strategy]["accuracy"] == pytest.approx(
            summary["strategies"][strategy]["metrics"]["accuracy"])


def test_calibration_folds_must_be_zero_or_at_least_two(fixture_paths, tmp_path):
    with pytest.raises(ValueError, match="--calibration-folds 1"):
        train.run(*fixture_paths, tmp_path, ["svm"], "hashed-ngram", 64, seed=0,
                  calibration_folds=1)


def test_personalised_strategies_are_not_calibrated(fixture_paths, tmp_path):
    """One scaling per candidate over every user's rows would flatten the user terms."""
    train.run(*fixture_paths, tmp_path, ["personalized"], "hashed-ngram", 64, seed=0,
              simulate_users=3, calibration_folds=2)
    manifest = json.loads((tmp_path / "personalized" / "manifest.json").read_text())
    assert "calibration" not in manifest and "operating" not in manifest
