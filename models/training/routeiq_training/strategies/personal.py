"""`personalized` and `gmt`: a latent routing model plus a learned term per end user.

Both start from the same base model, `graph`'s (`graph.fit_model`): score_m(e) =
H_m . (W e) + b_m, fitted to every training row (all users together) with the logistic
loss of `mf` and `graph`, its steps chosen on the inner split. Then, with the base frozen,
each user with at least MIN_ROWS training rows gets parameters of its own, fitted to that
user's rows only:

- `personalized`: a vector c_u of K numbers, one per candidate:
  score_m(e, u) = H_m . (W e) + b_m + c_um.
- `gmt`: a vector v_u of d numbers that moves the query in the latent space:
  score_m(e, u) = H_m . (W e + v_u) + b_m.

The user's parameters theta_u (c_u or v_u) minimise
  sum over the user's rows i of (1/K) sum_m CE(sigmoid(s_im), y_im) + L2_USER / 2 * |theta_u|^2,
a sum over rows (not a mean), so the L2 pull towards 0, which is the base model, outweighs
the data for a user with few rows and fades as rows accumulate. The loss is convex in
theta_u; it is minimised by USER_STEPS full-batch Adam steps for all users at once (the
loss is a sum of per-user terms and Adam works per coordinate, so this is the same as one
user at a time). Users with fewer than MIN_ROWS rows, and rows without a user, add nothing.
An unknown or absent user gets the base model's scores (no user term), as in the data
plane. Without users in the data, `users` is empty and both strategies are `graph`.

`personalized` is a simplification of LLMRouter's PersonalizedRouter (a GraphRouter whose
graph also has user nodes): here the user is a per-candidate offset learned on top of a
frozen graph model, not a node the messages pass through.

`gmt` is a much simplified take on LLMRouter's GMTRouter (Graph-based Multi-Turn
personalised router), which learns user preference embeddings (user nodes that start at
zero) in a heterogeneous graph of user, session, query, LLM and response nodes with
Heterogeneous Graph Transformer layers, trained on pairwise preferences over multi-turn
sessions, and scores candidates with a cross-attention predictor. Kept here: a learned
per-user embedding that starts at zero and acts on the query's latent state. Left out:
sessions and multi-turn history, response nodes, the GNN layers and message passing of
the user embedding, the pairwise preference loss (the loss here is pointwise, as for the
other strategies), the cross-attention predictor, and adapting to a new user at serving
time (an unknown user gets the base model). With d >= K, H v_u can reach any offset per
candidate when H has rank K, so `gmt` can express what `personalized` does; they differ in
what the L2 penalty pulls towards (small latent shifts against small score offsets).
"""

from collections import Counter

import numpy as np

from . import adam, graph
from .common import Trained, TrainSet, f32, matrix, sigmoid

MIN_ROWS = 5  # training rows a user needs to get parameters of its own
L2_USER = 1.0
USER_LR = 0.05
USER_STEPS = 300


def user_width(strategy: str, n_candidates: int, d: int) -> int:
    """The length of one user's vector: K for personalized, d for gmt."""
    return n_candidates if strategy == "personalized" else d


def user_rows(users, known: list[str]) -> np.ndarray:
    """Per row, the index of its user in `known`; -1 for no user or an unknown one."""
    lookup = {u: i for i, u in enumerate(known)}
    return np.array([-1 if u is None else lookup.get(u, -1) for u in users], dtype=np.int64)


def scores(strategy: str, w: np.ndarray, h: np.ndarray, b: np.ndarray, known: list[str],
           table: np.ndarray, features: np.ndarray, users=None) -> np.ndarray:
    """[N, K] scores; `users` is None or one user id (or None) per row, `table` the known
    users' vectors [len(known), K or d]."""
    u = features.astype(np.float64) @ w.T
    rows = np.full(len(u), -1) if users is None else user_rows(users, known)
    if len(rows) != len(u):
        raise ValueError(f"{len(rows)} users for {len(u)} feature rows")
    has = rows >= 0
    if strategy == "gmt":
        u[has] += table[rows[has]]
    s = u @ h.T + b
    if strategy == "personalized":
        s[has] += table[rows[has]]
    return s


def loss_and_gradients(strategy: str, theta: np.ndarray, base: np.ndarray,
                       targets: np.ndarray, rows: np.ndarray, h: np.ndarray,
                       l2: float = L2_USER) -> tuple[float, np.ndarray]:
    """The users' loss and its gradient with respect to `theta` (one vector per user);
    `base` [n, K] are the frozen base model's scores of the rows, `rows` [n] each row's
    user index (all >= 0)."""
    offsets = theta if strategy == "personalized" else theta @ h.T  # [users, K]
    s = base + offsets[rows]
    k = targets.shape[1]
    loss = (np.logaddexp(0.0, s) - targets * s).sum() / k + l2 / 2 * (theta * theta).sum()
    d_offsets = np.zeros_like(offsets)
    np.add.at(d_offsets, rows, (sigmoid(s) - targets) / k)
    d_theta = d_offsets if strategy == "personalized" else d_offsets @ h
    return float(loss), d_theta + l2 * theta


def fit_users(strategy: str, base: np.ndarray, targets: np.ndarray, rows: np.ndarray,
              h: np.ndarray, n_users: int) -> np.ndarray:
    """The users' vectors [n_users, K or d], from zero (the base model)."""
    p = {"theta": np.zeros((n_users, user_width(strategy, *h.shape)))}
    adam.run(p, lambda q: {"theta": loss_and_gradients(strategy, q["theta"], base, targets,
                                                       rows, h)[1]},
             USER_STEPS, USER_LR)
    return p["theta"]


def train(ts: TrainSet) -> Trained:
    p, h, steps, quality = graph.fit_model(ts)
    w, b = p["W"], p["b"]
    counts = Counter(u for u in (ts.users if ts.users is not None else []) if u is not None)
    known = sorted(u for u, n in counts.items() if n >= MIN_ROWS)
    table = np.zeros((len(known), user_width(ts.strategy, *h.shape)))
    if known:
        rows = user_rows(ts.users, known)
        mine = rows >= 0
        base = graph.scores_from_states(w, h, b, ts.features[mine])
        table = fit_users(ts.strategy, base, ts.scores[mine], rows[mine], h, len(known))
    return Trained(
        params={"W": f32(w), "H": f32(h), "b": f32(b),
                "users": {u: f32(table[i]) for i, u in enumerate(known)}},
        reference=lambda features, users=None: scores(ts.strategy, w, h, b, known, table,
                                                      features, users),
        notes={"d": graph.D, "steps": steps,
               "inner_quality_by_steps": {str(s): round(q, 4) for s, q in quality.items()},
               "users": len(known), "users_below_min_rows": len(counts) - len(known),
               "min_user_rows": MIN_ROWS, "user_l2": L2_USER, "user_steps": USER_STEPS},
    )


def scorer(params: dict, files: dict[str, bytes], manifest: dict):
    strategy = manifest["strategy"]
    w, h, b = matrix(params["W"]), matrix(params["H"]), matrix(params["b"])
    width = user_width(strategy, *h.shape)
    known = list(params["users"])
    table = np.zeros((len(known), width))
    for i, u in enumerate(known):
        vector = params["users"][u]
        if len(vector) != width:
            raise ValueError(f"params.json: user {u!r} has {len(vector)} values, expected "
                             f"{width}")
        table[i] = matrix(vector)
    return lambda features, users=None: scores(strategy, w, h, b, known, table, features,
                                               users)
