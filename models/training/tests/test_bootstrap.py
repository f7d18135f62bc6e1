"""Bootstrap intervals and verdicts on values whose answer is known."""

import numpy as np
import pytest

from routeiq_training.bootstrap import interval, paired, resamples, verdict


def test_resamples_are_fixed_by_the_seed():
    np.testing.assert_array_equal(resamples(30, 5, seed=7), resamples(30, 5, seed=7))
    assert not np.array_equal(resamples(30, 5, seed=7), resamples(30, 5, seed=8))
    draws = resamples(30, 5, seed=7)
    assert draws.shape == (5, 30) and draws.min() >= 0 and draws.max() < 30


def test_the_interval_of_a_constant_is_a_point():
    r = interval(np.full(40, 0.3), resamples(40, 200, seed=0))
    assert r["low"] == r["high"]
    assert r["low"] == pytest.approx(0.3) and r["mean"] == pytest.approx(0.3)


def test_the_interval_of_random_data_holds_the_mean_with_the_normal_width():
    values = np.random.default_rng(1).normal(0.5, 0.2, size=400)
    r = interval(values, resamples(400, 2000, seed=0))
    assert r["low"] < r["mean"] < r["high"]
    assert r["mean"] == values.mean()
    # a mean of 400 values: about ±1.96 standard errors
    normal_width = 2 * 1.96 * values.std() / np.sqrt(len(values))
    assert r["high"] - r["low"] == pytest.approx(normal_width, rel=0.15)


def test_a_router_against_itself_differs_by_exactly_zero():
    a = np.random.default_rng(2).random(100)
    r = paired(a, a.copy(), resamples(100, 500, seed=0))
    assert r == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert verdict(r) == "ties"


def test_pairing_resamples_both_routers_jointly():
    # b is a plus 0.01 on every query: each mean's interval is far wider than 0.01, but
    # resampled jointly the difference is always exactly 0.01
    a = np.random.default_rng(3).random(200)
    b = a + 0.01
    draws = resamples(200, 500, seed=0)
    assert interval(a, draws)["high"] > interval(b, draws)["low"]
    r = paired(b, a, draws)
    assert r["low"] == pytest.approx(0.01) and r["high"] == pytest.approx(0.01)
    assert verdict(r) == "beats" and verdict(paired(a, b, draws)) == "loses"


def test_verdicts():
    assert verdict({"mean": 0.02, "low": 0.001, "high": 0.04}) == "beats"
    assert verdict({"mean": 0.02, "low": 0.0, "high": 0.04}) == "ties"
    assert verdict({"mean": -0.01, "low": -0.03, "high": 0.01}) == "ties"
    assert verdict({"mean": -0.02, "low": -0.04, "high": -0.001}) == "loses"
