"""Choice rule and evaluation metrics on tiny tables computable by hand."""


import numpy as np
import pytest

from routeiq_training.choice import pick
from routeiq_training.data import Candidate, RoutingTable
from routeiq_training.metrics import (
    aiq,
    apgr,
    baselines,
    envelope,
    evaluate,
    prompt_tokens,
    query_costs,
)


def test_pick_ties_go_to_the_cheaper_then_the_lower_index_and_unscored_lose():
    prices = np.array([0.2, 0.1, 0.1])
    assert pick(np.array([[1.0, 1.0, 1.0]]), prices).tolist() == [1]
    assert pick(np.array([[0.5, 0.2, 0.2]]), prices, cost_weight=3.0).tolist() == [1]
    assert pick(np.array([[np.nan, -5.0, np.nan]]), prices).tolist() == [1]
    assert pick(np.array([[0.9, 0.5, 0.5]]), prices, cost_weight=1.0).tolist() == [0]


def test_costs_use_ceil_of_bytes_over_4_and_256_output_tokens():
    assert prompt_tokens("") == 0 and prompt_tokens("abcde") == 2 and prompt_tokens("é") == 1
    c = query_costs(["abcde"], [Candidate("m", 1.0, 2.0, 3.0)])
    assert c[0, 0] == pytest.approx((2 * 2.0 + 256 * 3.0) / 1e6)


def test_envelope_and_aiq_by_hand():
    # A(1, .5) and B(3, .9) on the envelope; C(2, .6) below the segment A-B; D(4, .8)
    # after the best point (the envelope stays at .9).
    points = [(1.0, 0.5), (2.0, 0.6), (3.0, 0.9), (4.0, 0.8)]
    assert envelope(points) == [(1.0, 0.5), (3.0, 0.9)]
    # over [1, 5]: trapezoid 2 * 0.7 + flat 2 * 0.9 = 3.2, / 4
    assert aiq(points, 1.0, 5.0) == pytest.approx(0.8)
    # the router cannot be cheaper than 1: zero over [0, 1]
    assert aiq(points, 0.0, 5.0) == pytest.approx(3.2 / 5)


def test_apgr_by_hand():
    # weak (1, .5), strong (3, .9); budgets 1.2, 1.4, ..., 3.0
    points = [(1.0, 0.5), (2.0, 0.8), (3.0, 0.9)]
    # budgets < 2 reach .5 (PGR 0, 4 of them), budgets 2.0..2.8 reach .8 (PGR .75, 5 of
    # them; 2.0 is budget 5), budget 3.0 reaches .9 (PGR 1)
    assert apgr(points, (1.0, 0.5), (3.0, 0.9)) == pytest.approx((5 * 0.75 + 1.0) / 10)
    # budgets 1.2 and 1.4 reach nothing (PGR 0), 1.6 .. 3.0 reach .7 (PGR .5)
    assert apgr([(1.5, 0.7)], (1.0, 0.5), (3.0, 0.9)) == pytest.approx(8 * 0.5 / 10)
    assert apgr(points, (1.0, 0.5), (1.0, 0.9)) is None


def test_evaluate_a_synthetic_table():
    # Two candidates: cheap (price 1) and dear (price 3); queries of 0 bytes, so a query
    # costs 256 * output_price / 1e6.
    cands = [Candidate("cheap", 1.0, 1.0, 1.0), Candidate("dear", 9.0, 3.0, 3.0)]
    train = RoutingTable(["t1", "t2"], np.array([[0.0, 1.0], [1.0, 1.0]]), cands, "x")
    held = RoutingTable(["", "", "", ""],
                        np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]), cands, "x")
    base = baselines(train, held)
    assert [base.cheapest, base.best_single] == [0, 1]
    c_cheap, c_dear = 256e-6, 3 * 256e-6
    assert base.point(0) == pytest.approx((c_cheap, 0.25))
    assert base.point(1) == pytest.approx((c_dear, 0.75))
    assert base.oracle["accuracy"] == 0.75
    assert base.oracle["cost_per_query"] == pytest.approx((c_cheap * 2 + c_dear * 2) / 4)

    # A perfect router: dear exactly where cheap fails and dear succeeds.
    router = np.array([[0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.6, 0.4]])
    r = evaluate(router, held, base)
    assert r["accuracy"] == 0.75 and r["hit_rate"] == 1.0
    assert r["cost_per_query"] == pytest.approx((2 * c_cheap + 2 * c_dear) / 4)
    # Curve points: (c_dear/2 + c_cheap/2, .75) at λ=0 ... (c_cheap, .25) at λ_max;
    # in between, query 2 (margin .6, switches at λ=.3) goes cheap first: (.., .5).
    # Envelope over [c_cheap, c_dear]: from (c_cheap,.25) to (2c_cheap,.75), then flat.
    width = c_dear - c_cheap
    expected_aiq = (c_cheap * (0.25 + 0.75) / 2 + (c_dear - 2 * c_cheap) * 0.75) / width
    assert r["aiq"] == pytest.approx(expected_aiq)
    # APGR: PGR 1 from budget 2 * c_cheap on (budgets 5..10 of 10: c_cheap + i/10 * 2c_cheap),
    # .5 for budgets where 1.5 * c_cheap fits (i = 3, 4), 0 below (i = 1, 2).
    assert r["apgr"] == pytest.approx((6 * 1.0 + 2 * 0.5) / 10)
    weights = [p["cost_weight"] for p in r["curve"]]
    assert weights[0] == 0 and max(weights) == pytest.approx(0.4)
    assert r["curve"][-1]["accuracy"] == 0.25
