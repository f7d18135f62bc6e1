"""A simplified GraphRouter: LLM node states from one hop of message passing over the
query-LLM bipartite graph of the training data.

What it does:
- Each training query is a node with its feature vector e_i; each LLM m is a node; an
  edge (i, m) carries the observed score y_im.
- One hop of message passing gives LLM m the score-weighted mean of its neighbours'
  features, a_m = sum_i y_im e_i / sum_i y_im. These are centred across LLMs and
  L2-normalised (so they say what m is relatively good at), giving A (K x dim).
- The LLM node state is a learned projection of that message plus a learned per-LLM
  vector (the self-loop of a node without input features): H = A V^T + C (K x d).
- A query's state is W e (d); the edge score is score(m, e) = H_m . (W e) + b_m, read as
  the logit of the quality of m on the query. V, C, W, b minimise the cross-entropy
  against the observed scores (full-batch Adam, steps chosen on the inner split).
- H is computed offline; the artifact holds W, H and b only.

How it is simpler than GraphRouter (Feng et al., 2024): a single hop over a bipartite
graph, no task nodes, no edge features (cost, latency) in the messages, no non-linear
GNN layers, and no inductive scoring of an LLM unseen in training (H is frozen): a new
candidate needs retraining.
"""

import numpy as np

from . import adam
from .common import Trained, TrainSet, f32, matrix, sigmoid

D = 64
LR = 0.01
MAX_STEPS = 300
EVERY = 25
L2 = 1e-3


def llm_messages(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """A: per LLM, the score-weighted mean of its training queries' features, centred
    across LLMs and L2-normalised."""
    e = features.astype(np.float64)
    weights = targets.sum(axis=0)
    a = (targets.T @ e) / np.where(weights > 0, weights, 1.0)[:, None]
    a -= a.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms > 0, norms, 1.0)


def node_states(p: adam.Params, messages: np.ndarray) -> np.ndarray:
    return messages @ p["V"].T + p["C"]


def scores_from_states(w: np.ndarray, h: np.ndarray, b: np.ndarray,
                       features: np.ndarray) -> np.ndarray:
    return (features.astype(np.float64) @ w.T) @ h.T + b


def _gradients(features: np.ndarray, targets: np.ndarray, messages: np.ndarray):
    e = features.astype(np.float64)
    n_cells = targets.size

    def gradients(p: adam.Params) -> adam.Params:
        h = node_states(p, messages)
        u = e @ p["W"].T
        s = u @ h.T + p["b"]
        g = (sigmoid(s) - targets) / n_cells
        d_h = g.T @ u
        return {"W": (g @ h).T @ e + L2 * p["W"], "V": d_h.T @ messages + L2 * p["V"],
                "C": d_h, "b": g.sum(axis=0)}

    return gradients


def _init(dim: int, n_candidates: int, seed: int) -> adam.Params:
    rng = np.random.default_rng(seed)
    return {"W": rng.normal(0, 1 / np.sqrt(dim), (D, dim)),
            "V": rng.normal(0, 1 / np.sqrt(dim), (D, dim)),
            "C": rng.normal(0, 0.1, (n_candidates, D)),
            "b": np.zeros(n_candidates)}


def fit_model(ts: TrainSet) -> tuple[adam.Params, np.ndarray, int, dict[int, float]]:
    """The fitted parameters, the LLM states H, the tuned number of steps and the inner
    quality per number of steps (also the base model of `personalized` and `gmt`)."""
    dim, n_candidates = ts.features.shape[1], len(ts.candidates)
    fit, validate = ts.inner_split()
    fit_messages = llm_messages(ts.features[fit], ts.scores[fit])

    def validation_quality(p: adam.Params) -> float:
        h = node_states(p, fit_messages)
        return ts.quality(scores_from_states(p["W"], h, p["b"], ts.features[validate]),
                          validate)

    steps, quality = adam.best_steps(
        lambda: _init(dim, n_candidates, ts.seed),
        _gradients(ts.features[fit], ts.scores[fit], fit_messages),
        validation_quality, MAX_STEPS, LR, EVERY)
    messages = llm_messages(ts.features, ts.scores)
    p = adam.run(_init(dim, n_candidates, ts.seed),
                 _gradients(ts.features, ts.scores, messages), steps, LR)
    return p, node_states(p, messages), steps, quality


def train(ts: TrainSet) -> Trained:
    p, h, steps, quality = fit_model(ts)
    return Trained(
        params={"W": f32(p["W"]), "H": f32(h), "b": f32(p["b"])},
        reference=lambda features: scores_from_states(p["W"], h, p["b"], features),
        notes={"d": D, "steps": steps,
               "inner_quality_by_steps": {str(s): round(q, 4) for s, q in quality.items()}},
    )


def scorer(params: dict, files: dict[str, bytes], manifest: dict):
    w, h, b = matrix(params["W"]), matrix(params["H"]), matrix(params["b"])
    return lambda features: scores_from_states(w, h, b, features)
