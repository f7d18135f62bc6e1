"""Matrix factorisation (RouteLLM's form, fitted to per-(query, model) scores).

score(m, e) = sum_j w_j * P_mj / |P_m| * (W e)_j, with W (d x dim) projecting the query
features, P (K x d) the model embeddings and w (d) per-dimension weights. The score is
read as the logit of the model's quality on the query: the parameters minimise the
cross-entropy between sigmoid(score) and the observed score in [0, 1] (plus a small L2
penalty on W), by full-batch Adam in numpy. The number of steps is chosen on the inner
split, then the model is refitted on the whole training split.
"""

import numpy as np

from . import adam
from .common import Trained, TrainSet, f32, matrix, sigmoid

D = 64
LR = 0.01
MAX_STEPS = 300
EVERY = 25
L2 = 1e-3


def scores(p: adam.Params, features: np.ndarray) -> np.ndarray:
    u = features.astype(np.float64) @ p["W"].T
    q = p["P"] / np.linalg.norm(p["P"], axis=1, keepdims=True)
    return (u * p["w"]) @ q.T


def _gradients(features: np.ndarray, targets: np.ndarray):
    e = features.astype(np.float64)
    n_cells = targets.size

    def gradients(p: adam.Params) -> adam.Params:
        u = e @ p["W"].T
        norms = np.linalg.norm(p["P"], axis=1, keepdims=True)
        q = p["P"] / norms
        s = (u * p["w"]) @ q.T
        g = (sigmoid(s) - targets) / n_cells
        gq = g @ q
        d_u = gq * p["w"]
        d_q = g.T @ (u * p["w"])
        d_p = (d_q - q * (q * d_q).sum(axis=1, keepdims=True)) / norms
        return {"W": d_u.T @ e + L2 * p["W"], "P": d_p, "w": (u * gq).sum(axis=0)}

    return gradients


def _init(dim: int, n_candidates: int, seed: int) -> adam.Params:
    rng = np.random.default_rng(seed)
    return {"W": rng.normal(0, 1 / np.sqrt(dim), (D, dim)),
            "P": rng.normal(0, 1, (n_candidates, D)),
            "w": np.ones(D)}


def train(ts: TrainSet) -> Trained:
    dim, n_candidates = ts.features.shape[1], len(ts.candidates)
    fit, validate = ts.inner_split()
    steps, quality = adam.best_steps(
        lambda: _init(dim, n_candidates, ts.seed),
        _gradients(ts.features[fit], ts.scores[fit]),
        lambda p: ts.quality(scores(p, ts.features[validate]), validate),
        MAX_STEPS, LR, EVERY)
    p = adam.run(_init(dim, n_candidates, ts.seed), _gradients(ts.features, ts.scores),
                 steps, LR)
    return Trained(
        params={"W": f32(p["W"]), "P": f32(p["P"]), "w": f32(p["w"])},
        reference=lambda features: scores(p, features),
        notes={"d": D, "steps": steps,
               "inner_quality_by_steps": {str(s): round(q, 4) for s, q in quality.items()}},
    )


def scorer(params: dict, files: dict[str, bytes], manifest: dict):
    p = {"W": matrix(params["W"]), "P": matrix(params["P"]), "w": matrix(params["w"])}
    return lambda features: scores(p, features)
