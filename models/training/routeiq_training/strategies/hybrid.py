"""Hybrid LLM-style two-model routing: a small model unless a regressor predicts that the
large one does enough better.

- small: among the cheapest candidates, the best by mean training score;
- large: the best candidate by mean training score (when that is the small one, the best
  of the others, so that there is still a choice);
- a ridge regression predicts score(large) - score(small) from the features;
- large is chosen when the prediction exceeds `threshold`, picked to maximise the mean
  quality on the training split, judged on out-of-fold (5-fold) predictions so that the
  threshold is not fitted to the regression's own training rows. Equal quality goes to
  the higher threshold (fewer large calls).

Scores: large 1 and small 0 when large is chosen, else the reverse; others unscored.
"""

import numpy as np
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import KFold, cross_val_predict

from .common import Trained, TrainSet, f32, matrix

ALPHAS = (0.1, 1.0, 10.0, 100.0)
LARGE_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def pair(ts: TrainSet) -> tuple[int, int]:
    means, prices = ts.scores.mean(axis=0), ts.prices
    order = sorted(range(len(means)), key=lambda i: (-means[i], prices[i], i))
    cheapest = [i for i in order if prices[i] == prices.min()]
    small = cheapest[0]
    large = next(i for i in order if i != small)
    return small, large


def best_threshold(predicted: np.ndarray, y_small: np.ndarray, y_large: np.ndarray) -> float:
    """The threshold maximising mean quality when `predicted > threshold` goes large."""
    cuts = np.unique(predicted)
    candidates = np.concatenate([[cuts[0] - 1.0], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1.0]])
    quality = np.array([np.where(predicted > t, y_large, y_small).mean() for t in candidates])
    best = np.flatnonzero(quality == quality.max())
    return float(candidates[best[-1]])


def route(scores_row_count: int, n_candidates: int, small: int, large: int,
          goes_large: np.ndarray) -> np.ndarray:
    out = np.full((scores_row_count, n_candidates), np.nan)
    out[:, large] = np.where(goes_large, 1.0, 0.0)
    out[:, small] = np.where(goes_large, 0.0, 1.0)
    return out


def train(ts: TrainSet) -> Trained:
    small, large = pair(ts)
    target = ts.scores[:, large] - ts.scores[:, small]
    alpha = float(RidgeCV(alphas=ALPHAS).fit(ts.features, target).alpha_)
    out_of_fold = cross_val_predict(Ridge(alpha=alpha), ts.features, target,
                                    cv=KFold(5, shuffle=True, random_state=ts.seed))
    threshold = best_threshold(out_of_fold, ts.scores[:, small], ts.scores[:, large])
    model = Ridge(alpha=alpha).fit(ts.features, target)
    coef, intercept = model.coef_.astype(np.float64), float(model.intercept_)
    n_candidates = len(ts.candidates)

    def reference(features: np.ndarray) -> np.ndarray:
        predicted = features.astype(np.float64) @ coef + intercept
        return route(len(features), n_candidates, small, large, predicted > threshold)

    # Thresholds sending a given share of the training queries (out of fold) large: the
    # (1 - share) quantile of the predictions, just below the lowest for share 1.
    shares = {f"{share:.2f}": float(np.quantile(out_of_fold, 1 - share)) if share < 1
              else float(out_of_fold.min() - 1.0) for share in LARGE_SHARES}
    return Trained(
        params={"small": small, "large": large, "coef": f32(coef), "intercept": f32(intercept),
                "threshold": f32(threshold)},
        reference=reference,
        notes={"alpha": alpha, "small": ts.candidates[small].name,
               "large": ts.candidates[large].name,
               "training_large_share": float((out_of_fold > threshold).mean()),
               "thresholds_by_training_large_share": shares},
    )


def scorer(params: dict, files: dict[str, bytes], manifest: dict):
    coef, intercept = matrix(params["coef"]), float(matrix(params["intercept"]))
    threshold = float(matrix(params["threshold"]))
    small, large = int(params["small"]), int(params["large"])
    n_candidates = len(manifest["candidates"])

    def score(features: np.ndarray) -> np.ndarray:
        predicted = features.astype(np.float64) @ coef + intercept
        return route(len(features), n_candidates, small, large, predicted > threshold)

    return score


def threshold_table(params: dict, notes: dict, features: np.ndarray, scores: np.ndarray,
                    costs: np.ndarray) -> list[dict]:
    """Held-out quality and cost per query at the tuned threshold and at the thresholds
    that send 0, 25, 50, 75 and 100 % of the training queries to the large model."""
    coef, intercept = matrix(params["coef"]), float(matrix(params["intercept"]))
    small, large = int(params["small"]), int(params["large"])
    predicted = features.astype(np.float64) @ coef + intercept
    thresholds = [("tuned", float(matrix(params["threshold"])))] + [
        (f"share_{share}", t)
        for share, t in notes["thresholds_by_training_large_share"].items()]
    rows = []
    for label, t in thresholds:
        chosen = np.where(predicted > t, large, small)
        idx = np.arange(len(chosen))
        rows.append({"threshold": label, "value": t,
                     "large_share": float((chosen == large).mean()),
                     "accuracy": float(scores[idx, chosen].mean()),
                     "cost_per_query": float(costs[idx, chosen].mean())})
    return rows
