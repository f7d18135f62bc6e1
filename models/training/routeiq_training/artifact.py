"""Reading and writing artifact directories (`models/ARTIFACTS.md`).

`Router` scores queries from an artifact's files only; `train` evaluates through it
before writing the manifest, and `eval` and `parity` load artifacts from disk into it.
With the manifest's `calibration`, its scores are the calibrated probabilities, as the
data plane's.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from . import calibration, featurize
from .choice import pick
from .data import Candidate
from .strategies import PERSONALISED, QUERY_INDEPENDENT, module

FORMAT = "routeiq-router/1"
MANIFEST = "manifest.json"
PARAMS = "params.json"
KNOWN_FILES = (PARAMS, "knn.f32", "model.onnx", "encoder.onnx", "tokenizer.json")


class InvalidArtifact(ValueError):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Router:
    manifest: dict
    candidates: list[Candidate]
    featurizer: Callable[[list[str]], np.ndarray] | None
    # score_features(features, users=None): users, one id (or None) per row, only change
    # the personalised strategies' scores
    score_features: Callable[..., np.ndarray]

    @property
    def prices(self) -> np.ndarray:
        return np.array([c.price for c in self.candidates])

    def features(self, queries: list[str]) -> np.ndarray:
        if self.featurizer is None:
            return np.zeros((len(queries), 0), dtype=np.float32)
        return self.featurizer(queries)

    def scores(self, queries: list[str], users: list[str | None] | None = None) -> np.ndarray:
        """[N, K] scores, NaN for unscored candidates."""
        return self.score_features(self.features(queries), users)

    def choose(self, queries: list[str], cost_weight: float = 0.0,
               users: list[str | None] | None = None) -> np.ndarray:
        return pick(self.scores(queries, users), self.prices, cost_weight)


def build_router(manifest: dict, files: dict[str, bytes], threads: int = 1) -> Router:
    """A router from a manifest and the bytes of the files it lists."""
    if manifest.get("format") != FORMAT:
        raise InvalidArtifact(f"unsupported format {manifest.get('format')!r}: expected {FORMAT}")
    strategy = manifest["strategy"]
    params = json.loads(files[PARAMS]) if PARAMS in files else None
    score = module(strategy).scorer(params, files, manifest)
    if strategy not in PERSONALISED:
        score = _ignoring_users(score)
    if "calibration" in manifest:
        score = _calibrated(score, manifest["calibration"])
    featurizer = featurize.from_manifest(manifest["featurizer"], files, threads)
    candidates = [Candidate.from_json(c) for c in manifest["candidates"]]
    return Router(manifest, candidates, featurizer, score)


def _ignoring_users(score: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda features, users=None: score(features)


def _calibrated(score: Callable[..., np.ndarray], fitted: dict) -> Callable[..., np.ndarray]:
    return lambda features, users=None: calibration.apply(fitted, score(features, users))


def read_files(directory: Path, manifest: dict) -> dict[str, bytes]:
    """The listed files, each checked against its SHA-256."""
    files = {}
    for name, expected in manifest["files"].items():
        path = Path(directory) / name
        if not path.is_file():
            raise InvalidArtifact(f"{directory}: {name} is listed in the manifest but missing")
        data = path.read_bytes()
        if sha256(data) != expected:
            raise InvalidArtifact(f"{directory}: {name} does not match its SHA-256 in the "
                                  "manifest")
        files[name] = data
    return files


def load(directory: Path, threads: int = 1) -> Router:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise InvalidArtifact(f"{directory}: no {MANIFEST}")
    manifest = json.loads(path.read_text())
    return build_router(manifest, read_files(directory, manifest), threads)


def find(root: Path) -> list[Path]:
    """`root` itself when it is an artifact, else its artifact subdirectories."""
    root = Path(root)
    if (root / MANIFEST).is_file():
        return [root]
    return sorted(p for p in root.iterdir() if (p / MANIFEST).is_file())


def draft_manifest(strategy: str, candidates: list[Candidate], featurizer_spec: dict | None,
                   files: dict[str, bytes], training_data_sha256: str,
                   score_columns: list[int] | None, calibrated: dict | None = None,
                   now: datetime | None = None) -> dict:
    """The manifest before its metrics; `calibrated` holds its `calibration` and
    `operating` (`train.calibrate`), when it has them."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    manifest = {
        "format": FORMAT,
        "strategy": strategy,
        "version": f"{strategy}-{now.strftime('%Y%m%dT%H%M%S')}-{training_data_sha256[:8]}",
        "candidates": [c.to_json() for c in candidates],
        "featurizer": None if strategy in QUERY_INDEPENDENT else featurizer_spec,
        "files": {name: sha256(data) for name, data in sorted(files.items())},
        "training_data_sha256": training_data_sha256,
        "metrics": {},
        "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if score_columns is not None:
        manifest["score_columns"] = score_columns
    if calibrated is not None:
        manifest.update(calibrated)
    return manifest


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Writes the files, after removing the old manifest (a reader never sees a manifest
    over half-written files) and any stale artifact file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    for name in KNOWN_FILES:
        if name not in files:
            (directory / name).unlink(missing_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)


def write_manifest(directory: Path, manifest: dict) -> None:
    """Written last, through a temporary file renamed into place."""
    tmp = Path(directory) / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(Path(directory) / MANIFEST)
