"""Platt calibration of a strategy's scores and its operating points: the manifest's
`calibration` and `operating` (`models/ARTIFACTS.md`, "Calibration and operating points").

Why: raw scores are on each strategy's own scale (neighbour shares, decision values,
logits), so a `cost_weight` trades differently per strategy and per retraining, and a
client cannot say "the best single model's quality, cheaper". Mapped to each candidate's
probability of being correct, scores share one scale; the operating points then say
what the router reaches at each price (`curve`), which candidate to fall back to
(`best_single`), how large a calibrated gain must be before leaving it (`margin`), and
which queries are like the training ones at all (`query_bytes`).

Everything is fitted on out-of-fold scores of the training rows (`train.calibrate`): a
model's scores on its own training rows are overconfident (knn with k = 1 scores its own
label 1), so a calibration, a margin or a curve measured on them would be too.
"""

import numpy as np
from scipy.optimize import minimize

from .bootstrap import paired, resamples
from .choice import conservative, pick
from .metrics import best_single, cost_weights, envelope

DEFAULT_FOLDS = 5
MARGINS = np.round(np.linspace(0.0, 0.3, 31), 2)  # 0, 0.01, ..., 0.3
MARGIN_ROUNDS = 1000
CLIP = 1e-6  # a constant or unscored candidate's mean correctness, clipped before its logit


def _logit(share: float) -> float:
    share = min(max(share, CLIP), 1 - CLIP)
    return float(np.log(share / (1 - share)))


def _as_f32(value: float) -> float:
    """A float32 value, written in full: a reader parsing it as f64 or as f32 gets the same
    number, so both sides compute with identical coefficients."""
    return float(np.float32(value))


def platt(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of one candidate: `sigmoid(a * raw + b)` fitted to its correctness `y` in
    [0, 1] by log loss over the scored rows. A fractional `y` is a row that is `y` parts
    correct and `1 - y` parts wrong: its log loss against the target `y` is exactly that.
    Platt's target smoothing (positives `(N+ + 1) / (N+ + 2)`, negatives `1 / (N- + 2)`,
    with `N+ = sum(y)`, `N- = sum(1 - y)`) keeps `a` finite when the scores separate the
    correct rows from the wrong ones. Without two distinct scores `a` means nothing:
    then `a = 0` and `b` the logit of the candidate's mean."""
    scored = ~np.isnan(raw)
    s, t = raw[scored], y[scored]
    if len(s) == 0:
        return 0.0, _logit(float(y.mean()))
    if s.min() == s.max():
        return 0.0, _logit(float(t.mean()))
    positives, negatives = t.sum(), (1 - t).sum()
    target = t * (positives + 1) / (positives + 2) + (1 - t) / (negatives + 2)
    # fitted on standardised scores (one scale for every strategy), then mapped back
    centre, spread = s.mean(), s.std()
    x = (s - centre) / spread

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        z = ab[0] * x + ab[1]
        error = 0.5 * (1.0 + np.tanh(0.5 * z)) - target  # sigmoid(z) - target
        value = np.mean(np.logaddexp(0.0, z) - target * z)
        return float(value), np.array([np.mean(error * x), np.mean(error)])

    start = np.array([0.0, _logit(float(target.mean()))])
    a, b = minimize(loss, start, jac=True, method="L-BFGS-B").x
    return float(a / spread), float(b - a * centre / spread)


def fit(raw: np.ndarray, y: np.ndarray) -> dict:
    """The manifest's `calibration` from out-of-fold raw scores ([N, K], NaN = unscored)
    and the true scores ([N, K])."""
    coefficients = [platt(raw[:, m], y[:, m]) for m in range(y.shape[1])]
    return {"method": "platt", "a": [_as_f32(a) for a, _ in coefficients],
            "b": [_as_f32(b) for _, b in coefficients]}


def apply(calibration: dict, raw: np.ndarray) -> np.ndarray:
    """`p = 1 / (1 + exp(-(a * s + b)))` per candidate, in f64, then f32 (the contract's
    arithmetic); NaN (unscored) stays NaN."""
    if calibration["method"] != "platt":
        raise ValueError(f"unknown calibration method {calibration['method']!r}")
    a = np.array(calibration["a"], dtype=np.float64)
    b = np.array(calibration["b"], dtype=np.float64)
    with np.errstate(over="ignore"):  # exp(large) = inf gives p = 0, as in the contract
        p = 1.0 / (1.0 + np.exp(-(a * np.asarray(raw, dtype=np.float64) + b)))
    return p.astype(np.float32)


def choose_margin(p: np.ndarray, y: np.ndarray, prices: np.ndarray, best: int,
                  seed: int) -> float:
    """The margin of `MARGINS` whose conservative router (at cost weight 0) has the highest
    lower 95 % bootstrap bound on its paired gain over `best`; ties to the smaller
    margin. The bound, not the mean: the mode is there to not lose to the best single
    model, so a margin is judged by how bad its gain could plausibly be."""
    rows = np.arange(len(y))
    draws = resamples(len(y), MARGIN_ROUNDS, seed)
    lows = [paired(y[rows, conservative(p, prices, best, float(margin))], y[:, best],
                   draws)["low"] for margin in MARGINS]
    return float(MARGINS[int(np.argmax(lows))])


def query_bytes(queries: list[str]) -> dict:
    """`operating.query_bytes`: the shortest and longest training query, in UTF-8 bytes.
    Outside that range the router would extrapolate: a model fitted on short questions has
    no evidence about long ones, and on the length split (every test query longer than
    every training query) calibrated gains that cleared the margin still lost to the best
    single model. The conservative mode keeps the best single model there."""
    lengths = [len(q.encode("utf-8")) for q in queries]
    return {"min": min(lengths), "max": max(lengths)}


def operating_points(p: np.ndarray, y: np.ndarray, prices: np.ndarray, seed: int,
                     queries: list[str]) -> dict:
    """The manifest's `operating` from calibrated out-of-fold scores `p` and true scores
    `y` ([N, K]) of the training rows, and those rows' `queries`."""
    best = best_single(y, prices)
    rows = np.arange(len(y))
    # each point's policy, keyed by its (price per million tokens, quality); a single
    # candidate first, then the smallest cost weight, names a point several policies reach
    policies: dict[tuple[float, float], dict] = {}
    for m, price in enumerate(prices):
        policies.setdefault((float(price), float(y[:, m].mean())), {"candidate": m})
    for weight in cost_weights(p, prices):
        chosen = pick(p, prices, float(weight))
        if (chosen == chosen[0]).all():
            continue  # every query to one candidate: that candidate's point
        point = (float(prices[chosen].mean()), float(y[rows, chosen].mean()))
        policies.setdefault(point, {"cost_weight": float(weight)})
    return {
        "best_single": best, "quality": float(y[:, best].mean()),
        "price_per_m": float(prices[best]),
        "margin": choose_margin(p, y, prices, best, seed),
        "query_bytes": query_bytes(queries),
        "curve": [{"price_per_m": price, "quality": quality, **policies[(price, quality)]}
                  for price, quality in envelope(list(policies))],
    }
