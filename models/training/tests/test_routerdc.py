"""routerdc: its hand-written gradients against finite differences, the contrastive pairs
it draws, and training without query clusters."""

import numpy as np
import pytest
from gradients import numeric_gradient

from routeiq_training import featurize
from routeiq_training.data import load_table
from routeiq_training.strategies import routerdc
from routeiq_training.strategies.common import TrainSet


@pytest.mark.parametrize("with_clusters", [False, True])
def test_gradients_match_finite_differences(with_clusters):
    rng = np.random.default_rng(1)
    n, dim, k, d = 40, 12, 6, 5
    features = rng.normal(size=(n, dim))
    targets = rng.integers(0, 3, size=(n, k)) / 2
    targets[0] = 0.5  # all equal: adds nothing to the sample-LLM loss
    p = {"W": rng.normal(size=(d, dim)), "H": rng.normal(size=(k, d))}
    pairs = routerdc.llm_pairs(targets, rng)
    partners = routerdc.cluster_partners(rng.integers(0, 3, size=n), rng) \
        if with_clusters else None

    def loss():
        return routerdc.loss_and_gradients(p, features, pairs, 0.3, partners)[0]

    value, grads = routerdc.loss_and_gradients(p, features, pairs, 0.3, partners)
    assert value > 0
    for key in ("W", "H"):
        numeric = numeric_gradient(loss, p[key])
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-5, atol=1e-8)
    if with_clusters:  # the sample-sample term is there and weighted
        no_clusters = routerdc.loss_and_gradients(p, features, pairs, 0.3)[0]
        half = routerdc.loss_and_gradients(p, features, pairs, 0.3, partners, 0.5)[0]
        assert half == pytest.approx((value + no_clusters) / 2)


def test_positives_and_negatives():
    targets = np.array([
        [1, 0, 0.5, 1, 0, 0],  # positives 0, 3, 2; negatives 1, 4, 5
        [1, 1, 1, 1, 1, 0],  # three of the 1s, each against candidate 5 only
        [0.7] * 6,  # all equal: nothing
        [0, 0, 0, 0, 0, 1],  # candidate 5 only, against three of the 0s
    ])
    for seed in range(5):
        pos, pos_ok, neg, neg_ok = routerdc.llm_pairs(targets, np.random.default_rng(seed))
        assert pos.shape == pos_ok.shape == neg.shape == (4, 3)
        assert neg_ok.shape == (4, 3, 3)
        assert list(pos[0]) in ([0, 3, 2], [3, 0, 2]) and set(neg[0]) == {1, 4, 5}
        assert pos_ok[0].all() and neg_ok[0].all()
        assert set(pos[1]) < {0, 1, 2, 3, 4} and pos_ok[1].all()
        assert 5 in neg[1] and (neg_ok[1] == (neg[1] == 5)[None, :]).all()
        assert not pos_ok[2].any()
        assert pos[3][0] == 5 and list(pos_ok[3]) == [True, False, False]
        assert neg_ok[3][0].all() and not (targets[3][neg[3]]).any()


def test_cluster_partners():
    clusters = np.array([4, 4, 4, 4, 9, 9, 9, 2, 4, 9])  # cluster 2 has one query
    anchors, partners = routerdc.cluster_partners(clusters, np.random.default_rng(0))
    assert list(anchors) == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert partners.shape == (9, 1 + routerdc.N_OTHERS)
    for _ in range(20):
        anchors, partners = routerdc.cluster_partners(clusters, np.random.default_rng(_))
        assert (partners[:, 0] != anchors).all()
        assert (clusters[partners[:, 0]] == clusters[anchors]).all()
        assert (clusters[partners[:, 1:]] != clusters[anchors][:, None]).all()
    anchors, _ = routerdc.cluster_partners(np.zeros(5, dtype=int), np.random.default_rng(0))
    assert len(anchors) == 0  # one cluster: no negatives, no sample-sample loss


def test_scores_are_cosines():
    rng = np.random.default_rng(0)
    w, h, e = rng.normal(size=(4, 7)), rng.normal(size=(3, 4)), rng.normal(size=(5, 7))
    u = e @ w.T
    expected = (u @ h.T) / np.outer(np.linalg.norm(u, axis=1), np.linalg.norm(h, axis=1))
    np.testing.assert_allclose(routerdc.scores(w, h, e), expected)
    assert (routerdc.scores(w, h, np.zeros((1, 7))) == 0).all()


def test_trains_without_clusters(fixture_paths):
    table = load_table(*fixture_paths)
    assert table.cluster_ids is not None
    features = featurize.build("hashed-ngram", 64)(table.queries)
    ts = TrainSet("routerdc", features, table.scores, table.queries, table.candidates)
    trained = routerdc.train(ts)
    assert trained.notes["lambda"] == 0.0
    assert np.array(trained.params["W"]).shape == (routerdc.D, 64)
    h = np.array(trained.params["H"])
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1, atol=1e-6)
    assert trained.reference(features).shape == (800, 9)
