"""Central finite differences, for the gradient checks of the hand-written gradients."""

import numpy as np


def numeric_gradient(loss, values: np.ndarray, eps=1e-6) -> np.ndarray:
    """d loss / d values, perturbing `values` in place one entry at a time."""
    grad = np.zeros_like(values)
    for idx in np.ndindex(values.shape):
        old = values[idx]
        values[idx] = old + eps
        up = loss()
        values[idx] = old - eps
        down = loss()
        values[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad
