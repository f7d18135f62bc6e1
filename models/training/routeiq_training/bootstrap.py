"""Percentile bootstrap intervals over queries, and the verdict they give.

A test set of a few hundred queries gives accuracies a few points apart by chance alone,
so a router's gain over the best single model only counts when its interval excludes 0.
The queries are resampled with replacement (`resamples`, from a fixed seed so a report is
reproducible); a metric's interval is the middle `CONFIDENCE` of its mean over the
resamples. Every router and baseline of a test set is resampled with the same draws, so a
difference between two of them (`paired`) moves each query's pair of values together:
their errors on the same query are correlated, and resampling them separately would give
the difference a needlessly wide interval.
"""

import numpy as np

CONFIDENCE = 0.95


def resamples(n: int, rounds: int, seed: int) -> np.ndarray:
    """[rounds, n] row indices, each row `n` draws with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(rounds, n))


def _percentiles(estimate: float, resampled: np.ndarray) -> dict:
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return {"mean": float(estimate), "low": float(low), "high": float(high)}


def interval(values: np.ndarray, draws: np.ndarray) -> dict:
    """The mean of the per-query `values` with its percentile bootstrap interval."""
    return _percentiles(values.mean(), values[draws].mean(axis=1))


def paired(a: np.ndarray, b: np.ndarray, draws: np.ndarray) -> dict:
    """`a − b` (per query, aligned) with its interval, both resampled with the same draws."""
    return interval(a - b, draws)


def ratio(a: np.ndarray, b: np.ndarray, draws: np.ndarray) -> dict:
    """`mean(a) / mean(b)` (per query, aligned) with its interval, both means taken over
    the same draws: e.g. a router's cost as a share of the best single model's, which a
    difference in dollars per query does not give."""
    return _percentiles(a.mean() / b.mean(), a[draws].mean(axis=1) / b[draws].mean(axis=1))


def verdict(difference: dict) -> str:
    """`beats` when the difference's whole interval is above 0, `loses` when below, else
    `ties` (the data cannot tell them apart)."""
    if difference["low"] > 0:
        return "beats"
    if difference["high"] < 0:
        return "loses"
    return "ties"
