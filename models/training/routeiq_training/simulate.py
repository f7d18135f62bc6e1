"""Simulated end users, to evaluate the personalised strategies on data without users.

`train` and `eval` take `--simulate-users N` (default off). Every query of the data, in
both splits, then goes to one of N synthetic users, and its scores become that user's own,
before the split and before any training or scoring:

- user: `sim-j` with j = int(sha256("routeiq-simulated-user:" + query UTF-8).hexdigest()
  [:8], 16) % N (a hash of its own, so users are spread evenly over both splits). Users
  already in the data are replaced.
- scores: y'_m = (1 - WEIGHT) * y_m + WEIGHT * p_m for every candidate m, with p_m in
  [0, 1] the user's preference for m (WEIGHT = 0.3; a user without a preference keeps the
  data's scores). The scores stay in [0, 1]. User j has preference j % 4:
  0. `cost`: p_m = 1 - price_m / max price (prefers cheap candidates);
  1. `gemma`: p_m = 1 when the name contains "gemma", else 0 (a model family);
  2. `neutral`: the data's own scores;
  3. `large`: p_m = size_b_m / max size_b (prefers large candidates).

With binary scores, a `gemma` user still prefers any correct answer (0.7) to a wrong
gemma (0.3), and prefers gemma among correct ones (1.0). The numbers this gives are about
these made-up users, not about real ones.
"""

import hashlib

import numpy as np

from .data import Candidate, RoutingTable, user_array

WEIGHT = 0.3
PREFERENCES = (
    ("cost", "prefers cheap candidates: p_m = 1 - price_m / max price"),
    ("gemma", "prefers the gemma family: p_m = 1 when the name contains \"gemma\", else 0"),
    ("neutral", "the data's own scores"),
    ("large", "prefers large candidates: p_m = size_b_m / max size_b"),
)


def user_name(j: int) -> str:
    return f"sim-{j}"


def user_of(query: str, n_users: int) -> str:
    digest = hashlib.sha256(("routeiq-simulated-user:" + query).encode("utf-8")).hexdigest()
    return user_name(int(digest[:8], 16) % n_users)


def preference(j: int, candidates: list[Candidate]) -> np.ndarray | None:
    """User j's p (one value in [0, 1] per candidate), or None for the neutral user."""
    kind = PREFERENCES[j % len(PREFERENCES)][0]
    prices = np.array([c.price for c in candidates])
    sizes = np.array([c.size_b for c in candidates])
    if kind == "cost":
        return 1 - prices / prices.max()
    if kind == "gemma":
        return np.array([1.0 if "gemma" in c.name else 0.0 for c in candidates])
    if kind == "large":
        return sizes / sizes.max()
    return None


def describe(n_users: int) -> dict[str, str]:
    """Each simulated user's preference, for reports."""
    return {user_name(j): "{}: {}".format(*PREFERENCES[j % len(PREFERENCES)])
            for j in range(n_users)}


def apply(table: RoutingTable, n_users: int) -> RoutingTable:
    """The table with simulated users and each row's scores made its user's."""
    if n_users < 1:
        raise ValueError(f"--simulate-users must be at least 1, not {n_users}")
    users = [user_of(q, n_users) for q in table.queries]
    scores = table.scores.copy()
    for j in range(n_users):
        p = preference(j, table.candidates)
        rows = np.array([u == user_name(j) for u in users], dtype=bool)
        if p is not None and rows.any():
            scores[rows] = (1 - WEIGHT) * scores[rows] + WEIGHT * p
    return RoutingTable(table.queries, scores, table.candidates, table.source_sha256,
                        table.cluster_ids, user_array(users))
