"""knn's optional projection (`params.json` "projection", ARTIFACTS.md): the rows of
knn.f32 are the projected, normalised training features, and the pipeline's neighbours
are those of the data plane's arithmetic, transliterated here from
`dataplane/src/routing/learned/artifact.rs` (float32 sums in index order, float64 norm)."""

import json

import numpy as np
import pytest

from conftest import FIXTURES
from routeiq_training import artifact, train
from routeiq_training.data import heldout_mask, load_table
from routeiq_training.strategies import knn


@pytest.fixture(scope="module", params=["tuned", "p64", "none"])
def knn_artifact(request, fixture_paths, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"knn-{request.param}")
    choices = {"tuned": knn.P_CHOICES, "p64": (64,), "none": (None,)}[request.param]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(knn, "P_CHOICES", choices)
        mp.setattr(knn, "MAX_P", 64)
        summary, _ = train.run(*fixture_paths, out, ["knn"], "hashed-ngram", 1024, seed=0,
                               calibration_folds=0)
    table = load_table(*fixture_paths)
    held = heldout_mask(table.queries)
    training = [q for q, h in zip(table.queries, held) if not h]
    probes = [q for q, h in zip(table.queries, held) if h] + \
        json.loads((FIXTURES / "parity_queries.json").read_text())
    return request.param, out / "knn", summary["strategies"]["knn"], training, probes


def _dataplane_project(projection: np.ndarray, e: np.ndarray) -> np.ndarray:
    """`project` then `normalise` of artifact.rs / featurize.rs, one float at a time."""
    q = [np.float32(0)] * len(projection)
    for i, x in enumerate(e):
        if x != 0:
            for j in range(len(q)):
                q[j] = np.float32(q[j] + x * projection[j, i])
    norm = 0.0
    for x in q:
        norm += float(x) * float(x)
    norm = norm ** 0.5
    return np.array([np.float32(float(x) / norm) if norm > 0 else x for x in q], np.float32)


def _dataplane_nearest(rows: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    """The data plane's similarities (float32, summed over the query's non-zero
    dimensions in order) and its k nearest rows (ties to the lower row index)."""
    sims = np.zeros(len(rows), np.float32)
    for i, x in enumerate(q):
        if x != 0:
            sims = (sims + x * rows[:, i]).astype(np.float32)
    return sorted(range(len(rows)), key=lambda r: (-sims[r], r))[:k]


def _load(directory):
    params = json.loads((directory / "params.json").read_text())
    projection = np.asarray(params["projection"], np.float32) if "projection" in params else None
    width = 1024 if projection is None else len(projection)
    rows = np.frombuffer((directory / "knn.f32").read_bytes(), "<f4")
    return params, projection, width, rows


def test_knn_f32_rows_are_the_projected_unit_training_features(knn_artifact):
    variant, directory, report, training, _ = knn_artifact
    params, projection, width, rows = _load(directory)
    assert report["notes"]["projection"] == (0 if projection is None else width)
    if variant == "none":
        assert projection is None
    else:  # the fixture's tuned choice is a projection too
        assert projection.shape[1] == 1024 and width in (32, 64, 128)
        assert variant == "tuned" or width == 64
        # exactly the float32 values written, orthonormal up to float32 rounding
        np.testing.assert_allclose(projection.astype(np.float64) @ projection.T,
                                   np.eye(width), atol=1e-5)
    assert rows.size == len(params["labels"]) * width == len(training) * width
    rows = rows.reshape(len(training), width)
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    assert (norms > 0).all()
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    if projection is not None:
        e = artifact.load(directory).features(training[:6])
        for r in range(6):
            np.testing.assert_array_equal(rows[r], _dataplane_project(projection, e[r]))


def test_neighbours_are_the_data_planes(knn_artifact):
    """Exactly with a projection; without one the pipeline compares in float64, so only
    rows whose similarities differ by float32 rounding may swap."""
    _, directory, _, training, probes = knn_artifact
    params, projection, width, rows = _load(directory)
    rows = rows.reshape(len(training), width)
    router = artifact.load(directory)
    e = router.features(probes[:12])
    k = params["k"]
    order = knn.neighbour_order(rows, e, projection)
    labels = np.array(params["labels"])
    scores = router.score_features(e)
    for n in range(len(e)):
        q = e[n] if projection is None else _dataplane_project(projection, e[n])
        nearest = _dataplane_nearest(rows, q, k)
        if projection is None and list(order[n, :k]) != nearest:
            exact = rows.astype(np.float64) @ q.astype(np.float64)
            assert abs(exact[order[n, k - 1]] - exact[nearest[-1]]) < 1e-6
            continue
        assert list(order[n, :k]) == nearest
        votes = np.bincount(labels[nearest], minlength=scores.shape[1]) / k
        np.testing.assert_array_equal(scores[n], votes)


def test_projection_choice_prefers_a_projection_within_0_005():
    best = {None: (0.540, 1), 32: (0.536, 5), 64: (0.537, 1), 128: (0.537, 10)}
    assert knn._choose(best) == 64  # within 0.005 of none; equal quality: smaller p
    assert knn._choose({None: (0.545, 1), 32: (0.539, 5)}) is None  # worse by 0.006
    assert knn._choose({None: (0.530, 1), 128: (0.540, 1)}) == 128
    assert knn._choose({None: (0.530, 1)}) is None
    assert knn._choose({32: (0.5, 1)}) == 32


def test_principal_directions_are_the_top_right_singular_vectors():
    rng = np.random.default_rng(1)
    x = knn._normalised(rng.normal(size=(50, 20)).astype(np.float32) + 0.3)
    v = knn.principal_directions(x, 5)
    np.testing.assert_allclose(v @ v.T, np.eye(5), atol=1e-12)
    gram = x.astype(np.float64).T @ x.astype(np.float64)
    eigenvalues = np.linalg.eigvalsh(gram)[::-1][:5]
    np.testing.assert_allclose(np.einsum("pi,ij,pj->p", v, gram, v), eigenvalues, rtol=1e-9)
    assert (v[np.arange(5), np.abs(v).argmax(axis=1)] > 0).all()  # signed deterministically


def test_projection_of_a_zero_vector_stays_zero():
    projection = knn.exported(np.eye(4, 8))
    out = knn.project(projection, np.zeros((2, 8), np.float32))
    assert out.dtype == np.float32 and not out.any()
