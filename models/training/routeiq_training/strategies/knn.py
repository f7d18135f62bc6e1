"""k nearest neighbours: a candidate's score is its share among the best candidates of the
`k` training queries most similar to the query (dot product of L2-normalised features;
equal similarities go to the lower row index).

Optionally the comparison happens in a projected space (`params.json` `"projection"`, a
`p x dim` matrix): the rows of `knn.f32` are `normalise(projection . e_row)` and a query
is compared as `normalise(projection . e)`. The data plane then reads `p` instead of all
the query's non-zero buckets per training row, which is what makes it fast. The
projection is uncentred PCA: the top `p` right-singular vectors of the matrix of
normalised training features (uncentred because the contract has no mean to subtract),
each signed so its largest component is positive.

`k` and `p` are tuned together on the inner split (PCA fitted to the inner fit rows):
each `p` in P_CHOICES (None: no projection) gets its smallest best `k`; the projection
with the best inner quality is chosen (equal quality: the smaller `p`) unless comparing
the features themselves is better by more than PREFER_PROJECTION_WITHIN, i.e. a
projection wins within 0.005 of inner quality because it is several times faster in the
data plane. `p` must be below the feature dimension and at most the number of fit rows,
and P_CHOICES never exceeds MAX_P. Without an inner split to tune on, `p` is P_DEFAULT.

Projected rows and queries are computed with the data plane's arithmetic: the float32
projection exactly as exported, `projection . e` summed in float32 over the features in
index order, normalised with a float64 norm (sequential sum) and cast to float32, and
similarities summed in float32 over the `p` dimensions in order; so the pipeline's
neighbours are the data plane's, ties included. Without a projection the similarities
are computed in float64 (the data plane sums float32: only near-ties can differ)."""

import numpy as np

from .common import Trained, TrainSet, f32

K_CHOICES = (1, 5, 10, 20, 50)
# Always 32: the data plane's decision (hashing, projecting, then rows x p
# multiply-adds) measured a p99 of 61 us at p = 64 and 423 us without a projection
# (4,442 LLMRouter rows), against a 50 us target; p = 32 costs 0.9 accuracy points
# held out against p = 64 there.
P_CHOICES = (32,)
P_DEFAULT = 32
MAX_P = 32
PREFER_PROJECTION_WITHIN = 0.005


def _normalised(features: np.ndarray) -> np.ndarray:
    """Rows L2-normalised as the data plane does: float64 norm summed in order, then
    float32; a zero row stays zero."""
    x = features.astype(np.float64)
    norms = np.sqrt(np.cumsum(x * x, axis=1)[:, -1:]) if x.shape[1] else np.zeros((len(x), 1))
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)


def principal_directions(rows: np.ndarray, p: int) -> np.ndarray:
    """The top `p` right-singular vectors of `rows` (uncentred PCA), [p, dim] float64,
    each signed so that its largest-magnitude component is positive."""
    _, _, vt = np.linalg.svd(rows.astype(np.float64), full_matrices=False)
    vt = vt[:p]
    largest = vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)]
    return vt * np.where(largest < 0, -1.0, 1.0)[:, None]


def exported(directions: np.ndarray) -> np.ndarray:
    """The projection exactly as params.json holds it (float32)."""
    return np.asarray(f32(directions), dtype=np.float32)


def project(projection: np.ndarray, features: np.ndarray) -> np.ndarray:
    """normalise(projection . e) per row of `features`, in float32 like the data plane:
    products and sums in float32, over the features in index order (all-zero columns add
    nothing there, as the data plane skips zero features)."""
    w_t = np.ascontiguousarray(np.asarray(projection, dtype=np.float32).T)
    e_t = np.ascontiguousarray(np.asarray(features, dtype=np.float32).T)
    out = np.zeros((e_t.shape[1], w_t.shape[1]), dtype=np.float32)
    for i in np.flatnonzero(e_t.any(axis=1)):
        out += e_t[i][:, None] * w_t[i]
    return _normalised(out)


def _f32_similarity(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """rows . query per query, summed in float32 over the dimensions in order."""
    sims = np.zeros((len(queries), len(rows)), dtype=np.float32)
    columns = np.asarray(rows, dtype=np.float32).T
    q_t = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).T)
    for i in range(len(q_t)):
        sims += q_t[i][:, None] * columns[i]
    return sims


def neighbour_order(rows: np.ndarray, features: np.ndarray,
                    projection: np.ndarray | None = None) -> np.ndarray:
    """Training-row indices per query, most similar first, ties by lower index. With a
    projection, `rows` are already projected and `features` are projected here."""
    if projection is None:
        similarity = features.astype(np.float64) @ rows.astype(np.float64).T
    else:
        similarity = _f32_similarity(rows, project(projection, features))
    return np.argsort(-similarity, axis=1, kind="stable")


def shares(order: np.ndarray, labels: np.ndarray, k: int, n_candidates: int) -> np.ndarray:
    nearest = labels[order[:, :k]]
    counts = np.zeros((len(order), n_candidates))
    for c in range(n_candidates):
        counts[:, c] = (nearest == c).sum(axis=1)
    return counts / k


def _choose(best: dict) -> int | None:
    """The projection from each p's (quality, k): the best projection, unless no
    projection is better by more than PREFER_PROJECTION_WITHIN."""
    projected = [p for p in best if p is not None]
    if not projected:
        return None
    top = max(best[p][0] for p in projected)
    p = min(p for p in projected if best[p][0] == top)
    if None in best and best[None][0] - top > PREFER_PROJECTION_WITHIN:
        return None
    return p


def train(ts: TrainSet) -> Trained:
    rows = _normalised(ts.features)
    labels = ts.best_labels()
    n_candidates, dim = len(ts.candidates), ts.features.shape[1]
    fit, validate = ts.inner_split()
    n_fit = int(fit.sum())

    choices = [p for p in P_CHOICES
               if p is None or (p <= MAX_P and p < dim and p <= n_fit)] or [None]
    quality, best = {}, {}
    if n_fit and validate.any():
        directions = principal_directions(rows[fit], max((p or 0) for p in choices)) \
            if any(choices) else None
        for p in choices:
            if p is None:
                order = neighbour_order(rows[fit], rows[validate])
            else:
                projection = exported(directions[:p])
                order = neighbour_order(project(projection, ts.features[fit]),
                                        ts.features[validate], projection)
            quality[p] = {k: ts.quality(shares(order, labels[fit], min(k, n_fit),
                                               n_candidates), validate)
                          for k in K_CHOICES}
            top = max(quality[p].values())
            best[p] = (top, min(k for k in K_CHOICES if quality[p][k] == top))  # smallest
        p = _choose(best)
        k = best[p][1]
    else:  # nothing to tune on
        p = P_DEFAULT if P_DEFAULT < dim and P_DEFAULT <= len(rows) else None
        k = K_CHOICES[0]
    k = min(k, len(rows))

    projection = None if p is None else exported(principal_directions(rows, p))
    stored = rows if projection is None else project(projection, ts.features)

    def reference(features: np.ndarray) -> np.ndarray:
        return shares(neighbour_order(stored, features, projection), labels, k, n_candidates)

    params = {"k": int(k), "labels": [int(v) for v in labels]}
    if projection is not None:
        params["projection"] = f32(projection)
    return Trained(
        params=params,
        files={"knn.f32": stored.astype("<f4").tobytes()},
        reference=reference,
        notes={"k": int(k), "projection": int(p or 0),
               "inner_quality_by_projection_and_k": {
                   str(p or "none"): {str(k): round(q, 4) for k, q in by_k.items()}
                   for p, by_k in quality.items()}},
    )


def scorer(params: dict, files: dict[str, bytes], manifest: dict):
    labels = np.asarray(params["labels"], dtype=np.int64)
    dim = int(manifest["featurizer"]["dim"])
    projection = params.get("projection")
    if projection is not None:
        projection = np.asarray(projection, dtype=np.float32)
        if projection.ndim != 2 or projection.shape[1] != dim or not len(projection):
            raise ValueError(f"knn projection must be a non-empty p x {dim} matrix")
    width = dim if projection is None else len(projection)
    rows = np.frombuffer(files["knn.f32"], dtype="<f4").reshape(len(labels), width)
    k, n_candidates = int(params["k"]), len(manifest["candidates"])

    def score(features: np.ndarray) -> np.ndarray:
        return shares(neighbour_order(rows, features, projection), labels, k, n_candidates)

    return score
