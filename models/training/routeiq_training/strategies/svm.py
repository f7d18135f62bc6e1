"""Linear SVM classifier of the best candidate (scikit-learn `LinearSVC`, one-vs-rest).

A candidate's score is its decision-function value. Candidates never best on a training
query get no column and are unscored. `C` is tuned on the inner split. The ONNX export
takes the classifier's raw scores (for two classes, ONNX's two-column `[-d, d]` form,
so both classes keep a column)."""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from . import onnx_model
from .common import Trained, TrainSet

C_CHOICES = (0.01, 0.03, 0.1, 0.3, 1.0)


def _fit(features: np.ndarray, labels: np.ndarray, c: float, seed: int) -> LinearSVC:
    if len(np.unique(labels)) < 2:
        raise ValueError("svm needs at least two different best candidates in the training "
                         "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LinearSVC(C=c, random_state=seed, max_iter=5000).fit(features, labels)


def _decision(model: LinearSVC, features: np.ndarray, n_candidates: int) -> np.ndarray:
    raw = model.decision_function(features)
    if raw.ndim == 1:  # two classes: one value, positive for classes_[1]
        raw = np.stack([-raw, raw], axis=1)
    out = np.full((len(features), n_candidates), np.nan)
    out[:, model.classes_] = raw
    return out


def train(ts: TrainSet) -> Trained:
    labels = ts.best_labels()
    n_candidates = len(ts.candidates)
    fit, validate = ts.inner_split()
    quality = {}
    for c in C_CHOICES:
        m = _fit(ts.features[fit], labels[fit], c, ts.seed)
        quality[c] = ts.quality(_decision(m, ts.features[validate], n_candidates), validate)
    c = min(c for c in C_CHOICES if quality[c] == max(quality.values()))
    model = _fit(ts.features, labels, c, ts.seed)

    converted = onnx_model.convert(model, ts.features.shape[1])
    classifier = next(n for n in converted.graph.node if n.op_type == "LinearClassifier")
    model_bytes = onnx_model.with_scores_output(
        converted, classifier.output[1], len(model.classes_), "routeiq-training svm")
    return Trained(
        files={"model.onnx": model_bytes},
        score_columns=[int(c) for c in model.classes_],
        reference=lambda features: _decision(model, features, n_candidates),
        notes={"C": c, "inner_quality_by_C": {str(c): round(q, 4) for c, q in quality.items()}},
    )


scorer = onnx_model.scorer
