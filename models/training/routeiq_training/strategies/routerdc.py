"""RouterDC (Chen et al., NeurIPS 2024): a query-based router trained by dual contrastive
learning, on a frozen encoder.

score(m, e) = cos(W e, H_m): the cosine between the projected query (W, d x dim, on the
featurizer's vector e) and a learned embedding of candidate m (H, K x d). The artifact
holds W and H with its rows L2-normalised. Two losses, as in the paper:
- sample-LLM: for each training query, the K_PLUS best candidates by score are positives
  and the K_MINUS worst are negatives (equal scores in a random order, redrawn every
  step). Each positive p adds -log(exp(s_p/tau) / (exp(s_p/tau) + sum_n exp(s_n/tau))),
  s = cos(W e, H_m), over the negatives scored strictly below p (as RouterDC's code,
  which leaves out positives that failed and negatives that succeeded). A query whose
  candidates all score the same adds nothing. The sum over positives is averaged over
  the queries.
- sample-sample (with the data's `cluster_id`; skipped without it): every step, each
  query gets one random other query of its cluster as positive and N_OTHERS random
  queries of other clusters as negatives; InfoNCE on the cosines of their projections
  (temperature tau), averaged over the queries and weighted by LAMBDA (RouterDC uses 1).
Both gradients are written out by hand (`loss_and_gradients`); W and H are fitted by
full-batch Adam. The number of steps and tau are chosen on the inner split, then the
model is refitted on the whole training split.

How it differs from RouterDC: the encoder (mDeBERTa in the paper) is not fine-tuned; the
query encoder is the frozen featurizer followed by the learned linear projection W. The
paper's clusters come from k-means over the training queries' embeddings; here they are
the data's `cluster_id`.
"""

import numpy as np
from scipy import sparse

from . import adam
from .common import Trained, TrainSet, f32, matrix

D = 64
LR = 0.003
MAX_STEPS = 150
EVERY = 10
TAUS = (0.3, 1.0)
K_PLUS = 3
K_MINUS = 3
LAMBDA = 1.0
N_OTHERS = 3  # negatives per query in the sample-sample loss (RouterDC's H)


def normalise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows divided by their L2 norms (a zero row stays zero), and the norms (1 for zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms = np.where(norms > 0, norms, 1.0)
    return x / norms, norms


def _through_normalise(grad: np.ndarray, unit: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """The gradient with respect to x, from the gradient with respect to x / |x|."""
    return (grad - unit * (unit * grad).sum(axis=1, keepdims=True)) / norms


def scores(w: np.ndarray, h: np.ndarray, features: np.ndarray) -> np.ndarray:
    return normalise(features.astype(np.float64) @ w.T)[0] @ normalise(h)[0].T


def _info_nce(logits: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, -log softmax(logits)[0] over the valid columns (column 0 is the positive,
    always valid), and its gradient with respect to the logits (0 where not valid)."""
    z = np.where(valid, logits, -np.inf)
    top = z.max(axis=1, keepdims=True)
    exp = np.where(valid, np.exp(z - top), 0.0)
    total = exp.sum(axis=1, keepdims=True)
    loss = np.log(total[:, 0]) + top[:, 0] - logits[:, 0]
    grad = exp / total
    grad[:, 0] -= 1.0
    return loss, grad


def llm_pairs(targets: np.ndarray, rng: np.random.Generator):
    """Positives [n, K_PLUS] (the best candidates) with their mask (scored above the
    query's worst candidate), negatives [n, K_MINUS] (the worst candidates), and per
    positive the mask of its negatives (scored strictly below it) [n, K_PLUS, K_MINUS].
    Equal scores are ordered at random."""
    n, k = targets.shape
    order = np.lexsort((rng.random((n, k)), -targets), axis=1)
    pos = order[:, :min(K_PLUS, k - 1)]
    neg = order[:, k - min(K_MINUS, k - 1):]
    rows = np.arange(n)[:, None]
    pos_y, neg_y = targets[rows, pos], targets[rows, neg]
    pos_ok = pos_y > targets.min(axis=1, keepdims=True)
    neg_ok = neg_y[:, None, :] < pos_y[:, :, None]
    return pos, pos_ok, neg, neg_ok


def cluster_partners(clusters: np.ndarray, rng: np.random.Generator):
    """Anchors (the queries whose cluster has another query and that have queries of
    other clusters) and per anchor [1 + N_OTHERS] partners: a random other query of its
    cluster, then N_OTHERS random queries of other clusters (with replacement)."""
    n = len(clusters)
    by_cluster = np.argsort(clusters, kind="stable")
    sorted_clusters = clusters[by_cluster]
    start = np.searchsorted(sorted_clusters, clusters, side="left")
    size = np.searchsorted(sorted_clusters, clusters, side="right") - start
    rank = np.empty(n, dtype=np.int64)
    rank[by_cluster] = np.arange(n) - np.searchsorted(sorted_clusters, sorted_clusters)
    anchors = np.flatnonzero((size > 1) & (size < n))
    if not len(anchors):
        return anchors, np.zeros((0, 1 + N_OTHERS), dtype=np.int64)
    a_start, a_size = start[anchors], size[anchors]
    shift = (rng.random(len(anchors)) * (a_size - 1)).astype(np.int64) + 1
    positive = by_cluster[a_start + (rank[anchors] + shift) % a_size]
    r = (rng.random((len(anchors), N_OTHERS)) * (n - a_size)[:, None]).astype(np.int64)
    others = by_cluster[np.where(r < a_start[:, None], r, r + a_size[:, None])]
    return anchors, np.concatenate([positive[:, None], others], axis=1)


def loss_and_gradients(p: adam.Params, features: np.ndarray, pairs, tau: float,
                       partners=None, weight: float = LAMBDA) -> tuple[float, adam.Params]:
    """The loss (sample-LLM, plus `weight` x sample-sample when `partners` are given) and
    its gradients with respect to W and H."""
    u = features @ p["W"].T
    u_unit, u_norms = normalise(u)
    h_unit, h_norms = normalise(p["H"])
    s = u_unit @ h_unit.T
    n = len(s)
    rows = np.arange(n)
    pos, pos_ok, neg, neg_ok = pairs
    d_s = np.zeros_like(s)
    loss = 0.0
    for j in range(pos.shape[1]):
        logits = np.concatenate([s[rows, pos[:, j]][:, None], s[rows[:, None], neg]],
                                axis=1) / tau
        valid = np.concatenate([np.ones((n, 1), dtype=bool), neg_ok[:, j]], axis=1)
        per_query, grad = _info_nce(logits, valid)
        share = pos_ok[:, j] / n
        loss += float((per_query * share).sum())
        grad *= (share / tau)[:, None]
        d_s[rows, pos[:, j]] += grad[:, 0]
        d_s[rows[:, None], neg] += grad[:, 1:]
    d_u_unit = d_s @ h_unit
    d_h_unit = d_s.T @ u_unit
    if partners is not None and len(partners[0]):
        anchors, others = partners
        logits = np.einsum("ad,ajd->aj", u_unit[anchors], u_unit[others]) / tau
        per_anchor, grad = _info_nce(logits, np.ones(logits.shape, dtype=bool))
        loss += weight * float(per_anchor.mean())
        grad *= weight / (tau * len(anchors))
        # d_cos[a, o] = d loss / d (u_unit[a] . u_unit[o]), a sparse [n, n]
        d_cos = sparse.csr_matrix(
            (grad.ravel(), (np.repeat(anchors, others.shape[1]), others.ravel())), (n, n))
        d_u_unit += d_cos @ u_unit + d_cos.T @ u_unit
    d_u = _through_normalise(d_u_unit, u_unit, u_norms)
    return loss, {"W": (features.T @ d_u).T,
                  "H": _through_normalise(d_h_unit, h_unit, h_norms)}


def _gradients(features: np.ndarray, targets: np.ndarray, clusters: np.ndarray | None,
               tau: float, seed: int) -> adam.Gradients:
    e = features.astype(np.float64)
    rng = np.random.default_rng(seed)

    def gradients(p: adam.Params) -> adam.Params:
        partners = None if clusters is None else cluster_partners(clusters, rng)
        return loss_and_gradients(p, e, llm_pairs(targets, rng), tau, partners)[1]

    return gradients


def _init(dim: int, n_candidates: int, seed: int) -> adam.Params:
    rng = np.random.default_rng(seed)
    return {"W": rng.normal(0, 1 / np.sqrt(dim), (D, dim)),
            "H": rng.normal(0, 1, (n_candidates, D))}


def train(ts: TrainSet) -> Trained:
    dim, n_candidates = ts.features.shape[1], len(ts.candidates)
    fit, validate = ts.inner_split()
    clusters = ts.cluster_ids
    tuning = {}
    for tau in TAUS:
        tuning[tau] = adam.best_steps(
            lambda: _init(dim, n_candidates, ts.seed),
            _gradients(ts.features[fit], ts.scores[fit],
                       None if clusters is None else clusters[fit], tau, ts.seed),
            lambda p: ts.quality(scores(p["W"], p["H"], ts.features[validate]), validate),
            MAX_STEPS, LR, EVERY)
    # the best inner quality; equal ones go to the lower tau, then fewer steps
    tau = max(TAUS, key=lambda t: tuning[t][1][tuning[t][0]])
    steps, quality = tuning[tau]
    p = adam.run(_init(dim, n_candidates, ts.seed),
                 _gradients(ts.features, ts.scores, clusters, tau, ts.seed), steps, LR)
    w, h = p["W"], normalise(p["H"])[0]
    return Trained(
        params={"W": f32(w), "H": f32(h)},
        reference=lambda features: scores(w, h, features),
        notes={"d": D, "steps": steps, "tau": tau, "k_plus": K_PLUS, "k_minus": K_MINUS,
               "lambda": LAMBDA if clusters is not None else 0.0,
               "inner_quality_by_tau": {str(t): round(tuning[t][1][tuning[t][0]], 4)
                                        for t in TAUS},
               "inner_quality_by_steps": {str(s): round(q, 4) for s, q in quality.items()}},
    )


def scorer(params: dict, files: dict[str, bytes], manifest: dict):
    w, h = matrix(params["W"]), matrix(params["H"])
    return lambda features: scores(w, h, features)
