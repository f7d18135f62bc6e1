"""Picking one candidate from a score vector.

Cost-aware routing maximises `score - cost_weight * (input_price + output_price) / 2`.
Unscored candidates (NaN) rank below every scored one. Exact ties go to the cheaper
candidate, then to the lower index. The same rule labels training rows with their best
candidate (cost_weight 0 on the true scores) and picks the oracle's candidate.
"""

import numpy as np


def pick(scores: np.ndarray, prices: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
    """The chosen candidate index per row of `scores` ([N, K], NaN = unscored)."""
    scores = np.asarray(scores, dtype=np.float64)
    adjusted = np.where(np.isnan(scores), -np.inf, scores - cost_weight * prices)
    tied = adjusted == adjusted.max(axis=1, keepdims=True)
    order = np.lexsort((np.arange(len(prices)), prices))  # by price, then index
    return order[np.argmax(tied[:, order], axis=1)]
