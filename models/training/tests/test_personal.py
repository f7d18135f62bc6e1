"""personalized and gmt: the users' gradients against finite differences, their artifacts
against the in-memory models (with users), the base model for an unknown user, users in
the input data, the simulated users, and `parity` and `eval` with users."""

import json

import numpy as np
import pytest
from gradients import numeric_gradient

from conftest import FIXTURES
from routeiq_training import artifact, evaluation, parity, simulate, train
from routeiq_training.cli import main
from routeiq_training.data import Candidate, heldout_mask, load_table
from routeiq_training.strategies import DEFAULT, PERSONALISED, STRATEGIES, personal
from routeiq_training.strategies.common import TrainSet

PERSONAL = ["personalized", "gmt"]
DIM = 256


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, fixture_paths):
    """personalized, gmt and mf trained on the fixture with 3 simulated users."""
    out = tmp_path_factory.mktemp("personal")
    summary, in_memory = train.run(*fixture_paths, out, PERSONAL + ["mf"], "hashed-ngram", DIM,
                                   seed=0, simulate_users=3, calibration_folds=0)
    return out, summary, in_memory


@pytest.fixture(scope="module")
def probes(fixture_paths):
    """Held-out queries with their simulated users, then with other users (an unknown one,
    none), and the parity file's queries with theirs."""
    table = simulate.apply(load_table(*fixture_paths), 3)
    held = table.subset(heldout_mask(table.queries))
    queries, users = parity.read_queries(FIXTURES / "parity_users.json")
    n = len(held.queries)
    others = [["sim-2", "sim-0", "sim-1", "nobody", None][i % 5] for i in range(n)]
    return (held.queries * 2 + queries, list(held.users) + others + users)


@pytest.mark.parametrize("strategy", PERSONAL)
def test_user_gradients_match_finite_differences(strategy):
    rng = np.random.default_rng(3)
    n, k, d, n_users = 30, 5, 4, 3
    h = rng.normal(size=(k, d))
    base = rng.normal(size=(n, k))
    targets = rng.integers(0, 3, size=(n, k)) / 2
    rows = rng.integers(0, n_users, size=n)
    theta = rng.normal(0, 0.5, size=(n_users, personal.user_width(strategy, k, d)))

    def loss():
        return personal.loss_and_gradients(strategy, theta, base, targets, rows, h, 0.7)[0]

    value, grad = personal.loss_and_gradients(strategy, theta, base, targets, rows, h, 0.7)
    assert value > 0
    np.testing.assert_allclose(grad, numeric_gradient(loss, theta), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("strategy", PERSONAL)
def test_user_parameters_reach_the_minimum_and_shrink_with_few_rows(strategy):
    rng = np.random.default_rng(4)
    k, d = 4, 6
    h = rng.normal(size=(k, d))
    one = rng.normal(size=(5, k)), rng.integers(0, 2, size=(5, k)).astype(float)
    # user 0 has 5 rows, user 1 the same 5 rows 40 times over
    base = np.concatenate([one[0]] * 41)
    targets = np.concatenate([one[1]] * 41)
    rows = np.array([0] * 5 + [1] * 200)
    theta = personal.fit_users(strategy, base, targets, rows, h, 2)
    grad = personal.loss_and_gradients(strategy, theta, base, targets, rows, h)[1]
    assert np.abs(grad).max() < 1e-2  # at the (convex) loss's minimum
    # the L2 pull keeps the few-rows user closer to the base model (theta 0)
    assert 0 < np.linalg.norm(theta[0]) < 0.5 * np.linalg.norm(theta[1])


@pytest.mark.parametrize("strategy", PERSONAL)
def test_artifact_reproduces_the_in_memory_model_with_users(simulated, probes, strategy):
    out, _, in_memory = simulated
    queries, users = probes
    router = artifact.load(out / strategy)
    features = router.features(queries)
    from_files = router.score_features(features, users)
    reference = in_memory[strategy].reference(features, users)
    np.testing.assert_allclose(from_files, reference, rtol=1e-4, atol=1e-4)
    assert router.score_features(features).shape == (len(queries), 9)


@pytest.mark.parametrize("strategy", PERSONAL)
def test_params_and_an_unknown_or_absent_user_gets_the_base_model(simulated, strategy):
    out, summary, _ = simulated
    params = json.loads((out / strategy / "params.json").read_text())
    assert set(params) == {"W", "H", "b", "users"}
    assert sorted(params["users"]) == ["sim-0", "sim-1", "sim-2"]
    width = 9 if strategy == "personalized" else 64
    assert all(len(v) == width for v in params["users"].values())
    assert summary["strategies"][strategy]["metrics"]["users"] == 3
    assert summary["strategies"][strategy]["metrics"]["simulated_users"] == 3

    router = artifact.load(out / strategy)
    queries = ["What is 2 + 2?", "Write a sonnet about the sea.", ""]
    e = router.features(queries)
    w, h, b = (np.asarray(params[k], np.float32).astype(np.float64) for k in ("W", "H", "b"))
    base = (e.astype(np.float64) @ w.T) @ h.T + b
    np.testing.assert_allclose(router.score_features(e), base, rtol=1e-12)
    np.testing.assert_array_equal(router.score_features(e, ["nobody", None, "sim-7"]),
                                  router.score_features(e))
    user = np.asarray(params["users"]["sim-1"], np.float32).astype(np.float64)
    expected = base + user if strategy == "personalized" else \
        (e.astype(np.float64) @ w.T + user) @ h.T + b
    np.testing.assert_allclose(router.score_features(e, ["sim-1"] * 3), expected, rtol=1e-12)
    assert not np.allclose(expected, base)


def test_without_users_both_are_the_graph_model(fixture_paths, tmp_path):
    _, in_memory = train.run(*fixture_paths, tmp_path, ["graph"] + PERSONAL, "hashed-ngram",
                             DIM, seed=0, calibration_folds=0)
    graph = json.loads((tmp_path / "graph" / "params.json").read_text())
    for strategy in PERSONAL:
        params = json.loads((tmp_path / strategy / "params.json").read_text())
        assert params["users"] == {}
        assert {k: params[k] for k in ("W", "H", "b")} == graph
        e = np.random.default_rng(0).normal(size=(4, DIM)).astype(np.float32)
        np.testing.assert_array_equal(in_memory[strategy].reference(e, ["a", None, "b", "c"]),
                                      in_memory["graph"].reference(e))


def test_users_with_few_rows_are_left_out():
    rng = np.random.default_rng(5)
    n, dim = 60, 8
    candidates = [Candidate(f"m{i}", 7.0, 0.1, 0.1) for i in range(3)]
    users = np.empty(n, dtype=object)
    users[:] = ["many"] * 50 + ["few"] * (personal.MIN_ROWS - 1) + [None] * 6
    ts = TrainSet("personalized", rng.normal(size=(n, dim)).astype(np.float32),
                  rng.integers(0, 2, size=(n, 3)).astype(float), [f"q{i}" for i in range(n)],
                  candidates, users=users)
    trained = personal.train(ts)
    assert list(trained.params["users"]) == ["many"]
    assert trained.notes["users"] == 1 and trained.notes["users_below_min_rows"] == 1


def test_users_in_the_input_data(fixture_paths, tmp_path):
    data, llms = fixture_paths
    table = load_table(data, llms)
    assert table.users is None
    rows = [{"query": q, "model_name": c.name, "performance": float(s), "user_id": 7}
            for q, row in zip(table.queries[:4], table.scores[:4])
            for c, s in zip(table.candidates, row)]
    # the same query for another user, with other scores: a row of its own
    rows += [{"query": table.queries[0], "model_name": c.name, "performance": 1.0,
              "user": "ann"} for c in table.candidates]
    rows += [{"query": "no user", "model_name": c.name, "performance": 0.5}
             for c in table.candidates]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(rows))
    converted = load_table(path, llms)
    assert converted.queries == table.queries[:4] + [table.queries[0], "no user"]
    assert list(converted.users) == ["7"] * 4 + ["ann", None]
    np.testing.assert_array_equal(converted.scores[:4], table.scores[:4])
    assert (converted.scores[4] == 1).all()
    assert list(converted.subset(np.array([0, 0, 0, 1, 1, 1], bool)).users) == ["7", "ann", None]

    records = json.loads(data.read_text())[:5]
    records[1]["user"] = "bob"
    path.write_text(json.dumps(records))
    assert list(load_table(path, llms).users) == [None, "bob", None, None, None]


def test_simulated_users_are_deterministic_and_documented(fixture_paths):
    table = load_table(*fixture_paths)
    a, b = simulate.apply(table, 4), simulate.apply(table, 4)
    assert list(a.users) == list(b.users)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.users[0] == simulate.user_of(table.queries[0], 4)
    assert set(a.users) == {"sim-0", "sim-1", "sim-2", "sim-3"}
    held = heldout_mask(table.queries)  # every user on both sides of the split
    assert set(a.users[held]) == set(a.users[~held]) == set(a.users)
    assert ((a.scores >= 0) & (a.scores <= 1)).all()

    names = [c.name for c in table.candidates]
    prices = table.prices
    for user, row in zip(a.users, range(len(table.queries))):
        y, got = table.scores[row], a.scores[row]
        if user == "sim-0":  # cost
            np.testing.assert_allclose(got, 0.7 * y + 0.3 * (1 - prices / prices.max()))
        elif user == "sim-1":  # gemma
            np.testing.assert_allclose(got, 0.7 * y + 0.3 * np.array(
                ["gemma" in n for n in names]))
        elif user == "sim-2":  # neutral
            np.testing.assert_array_equal(got, y)
    assert set(simulate.describe(5)) == {f"sim-{j}" for j in range(5)}
    assert simulate.describe(5)["sim-4"] == simulate.describe(5)["sim-0"]
    with pytest.raises(ValueError, match="at least 1"):
        simulate.apply(table, 0)


def test_parity_with_users(simulated, tmp_path):
    out, _, _ = simulated
    queries_file = FIXTURES / "parity_users.json"
    items = json.loads(queries_file.read_text())
    assert len(items) == 12 and isinstance(items[-1], str)
    for strategy in PERSONAL + ["mf"]:
        target = tmp_path / f"{strategy}.json"
        assert main(["parity", "--artifact", str(out / strategy), "--queries",
                     str(queries_file), "--out", str(target)]) == 0
        rows = json.loads(target.read_text())
        assert [list(r) for r in rows] == [["query", "user", "scores", "choice"]] * 12
        assert [r["user"] for r in rows] == [i["user"] for i in items[:-1]] + [None]
        router = artifact.load(out / strategy)
        plain = parity.expected(router, [r["query"] for r in rows])
        for r, p in zip(rows, plain):
            assert r["scores"][r["choice"]] == max(r["scores"])
            same = r["user"] in (None, "someone-unknown") or strategy == "mf"
            assert (r["scores"] == p["scores"]) == same


def test_eval_reports_the_simulated_users(simulated, fixture_paths, tmp_path):
    out, summary, _ = simulated
    report = evaluation.run(*fixture_paths, out, tmp_path / "report", simulate_users=3)
    for s in PERSONAL + ["mf"]:
        assert report["strategies"][s]["accuracy"] == pytest.approx(
            summary["strategies"][s]["metrics"]["accuracy"])
    users = report["users"]
    assert users["simulated_users"] == 3 and set(users["preferences"]) == {"sim-0", "sim-1",
                                                                          "sim-2"}
    assert sum(users["heldout_rows"].values()) == users["n_heldout"] == report["n_heldout"]
    acc = users["accuracy"]
    assert set(acc) == {"mf", "personalized", "personalized (no user)", "gmt",
                        "gmt (no user)", "best single", "oracle"}
    assert acc["personalized"]["overall"] == pytest.approx(
        report["strategies"]["personalized"]["accuracy"])
    # without the user both are the same base model
    assert acc["personalized (no user)"] == acc["gmt (no user)"]
    for a in acc.values():
        weights = users["heldout_rows"]
        overall = sum(a["per_user"][u] * weights[u] for u in weights) / users["n_heldout"]
        assert a["overall"] == pytest.approx(overall)
        assert a["overall"] <= acc["oracle"]["overall"] + 1e-12
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Per user" in md and "| personalized (no user) |" in md
    assert "sim-0 (cost)" in md and "not real users" in md


def test_personalised_strategies_are_trained_by_name_only():
    assert PERSONALISED == set(PERSONAL)
    assert list(DEFAULT) == [s for s in STRATEGIES if s not in PERSONALISED]
