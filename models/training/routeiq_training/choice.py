"""Picking one candidate from a score vector: the rules the data plane mirrors
(`models/ARTIFACTS.md`).

Cost-aware routing maximises `score - cost_weight * (input_price + output_price) / 2`.
Unscored candidates (NaN) rank below every scored one. Exact ties go to the cheaper
candidate, then to the lower index. The same rule labels training rows with their best
candidate (cost_weight 0 on the true scores) and picks the oracle's candidate.

With an artifact's `operating` points (calibrated scores), two more rules: the
conservative mode, which leaves the best single model only for a clear gain on a query
like the training ones, and the cost knob, which mixes two adjacent vertices of the
cost-quality curve.
"""

from bisect import bisect_right
from typing import NamedTuple

import numpy as np


def pick(scores: np.ndarray, prices: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
    """The chosen candidate index per row of `scores` ([N, K], NaN = unscored)."""
    scores = np.asarray(scores, dtype=np.float64)
    adjusted = np.where(np.isnan(scores), -np.inf, scores - cost_weight * prices)
    tied = adjusted == adjusted.max(axis=1, keepdims=True)
    order = np.lexsort((np.arange(len(prices)), prices))  # by price, then index
    return order[np.argmax(tied[:, order], axis=1)]


def conservative(scores: np.ndarray, prices: np.ndarray, best: int, margin: float,
                 cost_weight: float = 0.0, familiar: np.ndarray | None = None) -> np.ndarray:
    """`routing_strategy_args.conservative`: per row, `best` (the best single model) when
    the row's query is unlike every training query (`familiar` False: see `familiar`);
    otherwise the usual choice `c` only when it is `best`, when `best` is unscored, or when
    `c`'s cost-adjusted score exceeds `best`'s by more than `margin`, else `best`. A router
    whose gains over the best single model are within its noise, or who is asked about
    queries it never saw the like of, then costs nothing in quality."""
    scores = np.asarray(scores, dtype=np.float64)
    chosen = pick(scores, prices, cost_weight)
    adjusted = scores - cost_weight * prices
    gain = adjusted[np.arange(len(chosen)), chosen] - adjusted[:, best]
    keep_best = ~np.isnan(scores[:, best]) & ~(gain > margin)
    if familiar is not None:
        keep_best |= ~familiar
    return np.where(keep_best, best, chosen)


def familiar(operating: dict, queries: list[str]) -> np.ndarray | None:
    """Per query, whether its length in UTF-8 bytes lies within the training queries'
    (`operating["query_bytes"]`, both ends included); None for operating points without
    that range (made before it existed), which the conservative mode then does not test."""
    span = operating.get("query_bytes")
    if span is None:
        return None
    lengths = np.array([len(q.encode("utf-8")) for q in queries])
    return (lengths >= span["min"]) & (lengths <= span["max"])


class Mix(NamedTuple):
    """Each request takes curve vertex `high` with probability `weight`, else `low`."""

    low: int
    high: int
    weight: float


def knob(operating: dict, max_price_per_m: float | None = None,
         quality_floor: float | None = None) -> Mix:
    """The cost knob (exactly one of the two): the two adjacent vertices of
    `operating["curve"]` whose mix has the price `max_price_per_m`, or the quality
    `quality_floor * operating["quality"]`, and the mixing weight. Outside the curve's
    range, its first or last vertex alone. The curve is concave, so this mix is the best
    quality for the price (the lowest price for the quality) any policy on it reaches."""
    if (max_price_per_m is None) == (quality_floor is None):
        raise ValueError("the cost knob takes exactly one of max_price_per_m and quality_floor")
    if max_price_per_m is not None:
        key, target = "price_per_m", max_price_per_m
    else:
        key, target = "quality", quality_floor * operating["quality"]
    values = [vertex[key] for vertex in operating["curve"]]
    if target <= values[0]:
        return Mix(0, 0, 0.0)
    if target >= values[-1]:
        return Mix(len(values) - 1, len(values) - 1, 0.0)
    low = bisect_right(values, target) - 1  # values[low] <= target < values[low + 1]
    return Mix(low, low + 1, (target - values[low]) / (values[low + 1] - values[low]))


def vertex_choice(vertex: dict, scores: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """The choices of one curve vertex's policy: every row to `candidate`, or the router
    (on calibrated `scores`) at `cost_weight`."""
    if "candidate" in vertex:
        return np.full(len(scores), vertex["candidate"])
    return pick(scores, prices, vertex["cost_weight"])
