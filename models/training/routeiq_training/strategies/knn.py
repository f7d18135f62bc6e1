"""k nearest neighbours: a candidate's score is its share among the best candidates of the
`k` training queries most similar to the query (dot product of L2-normalised features;
equal similarities go to the lower row index). `k` is tuned on the inner split."""

import numpy as np

from .common import Trained, TrainSet

K_CHOICES = (1, 5, 10, 20, 50)


def _normalised(features: np.ndarray) -> np.ndarray:
    x = features.astype(np.float64)
    norms = np.sqrt((x ** 2).sum(axis=1, keepdims=True))
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)


def neighbour_order(rows: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Training-row indices per query, most similar first, ties by lower index."""
    similarity = features.astype(np.float64) @ rows.astype(np.float64).T
    return np.argsort(-similarity, axis=1, kind="stable")


def shares(order: np.ndarray, labels: np.ndarray, k: int, n_candidates: int) -> np.ndarray:
    nearest = labels[order[:, :k]]
    counts = np.zeros((len(order), n_candidates))
    for c in range(n_candidates):
        counts[:, c] = (nearest == c).sum(axis=1)
    return counts / k


def train(ts: TrainSet) -> Trained:
    rows = _normalised(ts.features)
    labels = ts.best_labels()
    n_candidates = len(ts.candidates)
    fit, validate = ts.inner_split()
    order = neighbour_order(rows[fit], rows[validate])
    quality = {k: ts.quality(shares(order, labels[fit], min(k, fit.sum()), n_candidates),
                             validate)
               for k in K_CHOICES}
    best = max(quality.values())
    k = min(min(k for k in K_CHOICES if quality[k] == best), len(rows))  # smallest best k

    def reference(features: np.ndarray) -> np.ndarray:
        return shares(neighbour_order(rows, features), labels, k, n_candidates)

    return Trained(
        params={"k": int(k), "labels": [int(v) for v in labels]},
        files={"knn.f32": rows.astype("<f4").tobytes()},
        reference=reference,
        notes={"k": int(k), "inner_quality_by_k": {str(k): round(q, 4) for k, q in quality.items()}},
    )


def scorer(params: dict, files: dict[str, bytes], manifest: dict):
    labels = np.asarray(params["labels"], dtype=np.int64)
    dim = int(manifest["featurizer"]["dim"])
    rows = np.frombuffer(files["knn.f32"], dtype="<f4").reshape(len(labels), dim)
    k, n_candidates = int(params["k"]), len(manifest["candidates"])

    def score(features: np.ndarray) -> np.ndarray:
        return shares(neighbour_order(rows, features), labels, k, n_candidates)

    return score
