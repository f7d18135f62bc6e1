"""Multi-layer perceptron regressing every candidate's score (scikit-learn
`MLPRegressor`, one hidden ReLU layer, squared loss, early stopping on a random tenth of
the training rows). A candidate's score is its predicted quality."""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

from . import onnx_model
from .common import Trained, TrainSet

HIDDEN = 128


def train(ts: TrainSet) -> Trained:
    model = MLPRegressor(hidden_layer_sizes=(HIDDEN,), alpha=1e-3, learning_rate_init=1e-3,
                         batch_size=64, max_iter=200, early_stopping=True,
                         n_iter_no_change=10, random_state=ts.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(ts.features, ts.scores)
    n_candidates = len(ts.candidates)

    def reference(features: np.ndarray) -> np.ndarray:
        return model.predict(features).reshape(len(features), n_candidates)

    converted = onnx_model.convert(model, ts.features.shape[1])
    # skl2onnx ends with a Reshape to [N, 1] even for several outputs (it would interleave
    # them into one column): the scores are the Reshape's input, already [N, K].
    output = converted.graph.output[0].name
    last = next(n for n in converted.graph.node if output in n.output)
    scores_tensor = last.input[0] if last.op_type == "Reshape" else output
    model_bytes = onnx_model.with_scores_output(
        converted, scores_tensor, n_candidates, "routeiq-training mlp")
    return Trained(
        files={"model.onnx": model_bytes},
        score_columns=list(range(n_candidates)),
        reference=reference,
        notes={"hidden": HIDDEN, "epochs": int(model.n_iter_)},
    )


scorer = onnx_model.scorer
