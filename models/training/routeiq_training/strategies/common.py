"""What every strategy module shares: its input, its output, and float32 parameters."""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..choice import pick
from ..data import Candidate, inner_validation_mask


@dataclass
class TrainSet:
    strategy: str
    features: np.ndarray  # [n, dim] float32; [n, 0] for query-independent strategies
    scores: np.ndarray  # [n, K] true scores
    queries: list[str]
    candidates: list[Candidate]
    seed: int = 0
    cluster_ids: np.ndarray | None = None  # [n] query clusters, when the data has them
    users: np.ndarray | None = None  # [n] user id (str) or None per row, when the data has them

    @property
    def prices(self) -> np.ndarray:
        return np.array([c.price for c in self.candidates])

    def best_labels(self) -> np.ndarray:
        return pick(self.scores, self.prices)

    def inner_split(self) -> tuple[np.ndarray, np.ndarray]:
        """Masks (fit, validate) of the training rows, for tuning hyperparameters."""
        validate = inner_validation_mask(self.queries)
        return ~validate, validate

    def quality(self, predicted: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Mean true score of the candidates `predicted` scores pick (rows in `mask`)."""
        scores = self.scores if mask is None else self.scores[mask]
        chosen = pick(predicted, self.prices)
        return float(scores[np.arange(len(scores)), chosen].mean())


@dataclass
class Trained:
    params: dict | None = None  # params.json
    files: dict[str, bytes] = field(default_factory=dict)  # other files (knn.f32, model.onnx)
    score_columns: list[int] | None = None  # ONNX strategies
    # the in-memory model: reference(features), or reference(features, users) for the
    # personalised strategies
    reference: Callable[..., np.ndarray] | None = None
    notes: dict = field(default_factory=dict)  # tuned hyperparameters, for the manifest


def f32(values) -> list | float:
    """Float32 values for params.json, written with the fewest digits that read back as
    the same float32 (so both sides use identical parameters)."""
    arr = np.asarray(values, dtype=np.float32)
    shortest = np.array([float(str(v)) for v in arr.ravel()])
    return shortest.reshape(arr.shape).tolist()  # nested lists, or a float for a scalar


def matrix(values) -> np.ndarray:
    """A params.json array as float32 (exactly the values written), widened to float64."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
