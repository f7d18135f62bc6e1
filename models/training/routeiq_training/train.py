"""`train`: fits each strategy on the training split and writes its artifact.

Each artifact's held-out metrics are computed by a router built from the files just
written (the same path `eval` and `parity` take), then the manifest is written last.
A summary with the tuned hyperparameters goes to `<out>/training-report.json`.
With `simulate_users` (`--simulate-users N`), every strategy trains and is evaluated on the
simulated users' scores (`simulate.py`), and the manifests' metrics say so
(`simulated_users`).
With `--calibration-folds N` (default 5), every calibrated strategy (`calibrated`) is also fitted N
more times on N folds of the training rows, and the out-of-fold scores give the manifest's
`calibration` and `operating` (`calibrate`, `calibration.py`).
"""

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import artifact, calibration, featurize, simulate
from .data import RoutingTable, heldout_mask, load_table
from .metrics import baselines, evaluate, query_costs
from .strategies import PERSONALISED, QUERY_INDEPENDENT, module
from .strategies.common import Trained, TrainSet
from .strategies.hybrid import threshold_table


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def flat_metrics(result: dict, notes: dict) -> dict:
    """The manifest's metrics: a flat map of numbers (held-out metrics, then the tuned
    hyperparameters that are single numbers)."""
    metrics = {k: result[k] for k in ("accuracy", "hit_rate", "cost_per_query", "n_heldout",
                                      "aiq", "apgr", "cost_to_match_best_single")
               if result.get(k) is not None}
    for key, value in notes.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[key] = value
    return metrics


def calibrated(strategy: str) -> bool:
    """Whether `--calibration-folds` calibrates `strategy`: every query-dependent one but
    the personalised ones. Their worth is the per-user term, and one Platt scaling per
    candidate fitted over every user's rows shrinks it under the candidates' intercepts:
    on the fixture's three simulated users, calibrated `personalized` and `gmt` routed
    every query the same with or without its user."""
    return strategy not in QUERY_INDEPENDENT and strategy not in PERSONALISED


def check_calibration_folds(folds: int) -> None:
    if folds != 0 and folds < 2:
        raise ValueError(f"--calibration-folds {folds}: expected 0 (off) or at least 2")


def fit(strategy: str, table: RoutingTable, features: np.ndarray | None, seed: int) -> Trained:
    """`strategy` fitted to every row of `table` (`features` are its rows' features; the
    query-independent strategies get none, so their artifacts name no featurizer). The
    strategy tunes its hyperparameters on an inner split of these rows only."""
    if strategy in QUERY_INDEPENDENT:
        features = np.zeros((len(table.queries), 0), np.float32)
    return module(strategy).train(TrainSet(
        strategy, features, table.scores, table.queries, table.candidates, seed,
        table.cluster_ids, table.users))


def fitted_scores(strategy: str, trained: Trained, features: np.ndarray,
                  users: np.ndarray | None) -> np.ndarray:
    """The fitted model's raw scores; the personalised strategies also take each row's
    user."""
    if strategy in PERSONALISED:
        return trained.reference(features, users)
    return trained.reference(features)


def calibration_folds(queries: list[str], folds: int) -> np.ndarray:
    """Each query's calibration fold in 0..folds-1, from bits of its SHA-256 that the
    held-out split (`data.split_bucket`, the first 8 hex digits) does not use: the training
    rows all lie outside bucket 0, and the folds must still split them evenly."""
    return np.array([int(hashlib.sha256(q.encode("utf-8")).hexdigest()[8:16], 16) % folds
                     for q in queries])


def out_of_fold_scores(strategy: str, table: RoutingTable, features: np.ndarray, seed: int,
                       folds: int) -> np.ndarray:
    """[N, K] raw scores of `table`'s rows, each row scored by `strategy` fitted (by `fit`)
    to the rows of the other folds."""
    fold = calibration_folds(table.queries, folds)
    if len(np.unique(fold)) < 2:
        raise ValueError(f"calibration needs training queries in at least two of its {folds} "
                         "folds")
    scores = np.full(table.scores.shape, np.nan)
    for f in np.unique(fold):
        test = fold == f
        trained = fit(strategy, table.subset(~test), features[~test], seed)
        scores[test] = fitted_scores(strategy, trained, features[test],
                                     None if table.users is None else table.users[test])
    return scores


def calibrate(strategy: str, table: RoutingTable, features: np.ndarray, seed: int,
              folds: int) -> dict:
    """The manifest's `calibration` and `operating` for `strategy` trained on `table`,
    from out-of-fold scores of its rows."""
    started = time.monotonic()
    raw = out_of_fold_scores(strategy, table, features, seed, folds)
    fitted = calibration.fit(raw, table.scores)
    operating = calibration.operating_points(calibration.apply(fitted, raw), table.scores,
                                             table.prices, seed, table.queries)
    log(f"  {strategy}: out-of-fold scores over {folds} folds, calibration and operating "
        f"points in {time.monotonic() - started:.1f} s")
    return {"calibration": fitted, "operating": operating}


def run(data: Path, llm_data: Path, out: Path, strategies: list[str], featurizer_name: str,
        dim: int, seed: int, encoder: Path | None = None, tokenizer: Path | None = None,
        threads: int = 1, simulate_users: int = 0,
        encoder_layers: int = featurize.MINILM_LAYERS,
        calibration_folds: int = calibration.DEFAULT_FOLDS) -> tuple[dict, dict]:
    """Returns the summary written to training-report.json and, per strategy, the
    in-memory `Trained` (tests compare it with the artifact). With `calibration_folds`
    (0 = off), every calibrated strategy's (`calibrated`) manifest has `calibration` and
    `operating`, and its held-out metrics are those of its calibrated scores."""
    for s in strategies:
        module(s)  # unknown names fail before any work
    check_calibration_folds(calibration_folds)
    table = load_table(data, llm_data)
    if simulate_users:
        table = simulate.apply(table, simulate_users)
        log(f"simulated users: {simulate.describe(simulate_users)}")
    held = heldout_mask(table.queries)
    train_table, held_table = table.subset(~held), table.subset(held)
    log(f"{len(table.queries)} queries, {len(table.candidates)} candidates: "
        f"{len(train_table.queries)} for training, {len(held_table.queries)} held out")

    featurizer = featurize.build(featurizer_name, dim, encoder, tokenizer, threads,
                                   encoder_layers)
    train_features = held_features = None
    if any(s not in QUERY_INDEPENDENT for s in strategies):
        started = time.monotonic()
        train_features = featurizer(train_table.queries)
        held_features = featurizer(held_table.queries)
        log(f"featurized with {featurizer_name} in {time.monotonic() - started:.1f} s")

    base = baselines(train_table, held_table)
    held_costs = query_costs(held_table.queries, held_table.candidates)
    summary = {"featurizer": featurizer.manifest(), "training_data_sha256": table.source_sha256,
               "n_train": len(train_table.queries), "n_heldout": len(held_table.queries),
               "simulated_users": simulate_users, "calibration_folds": calibration_folds,
               "strategies": {}}
    in_memory = {}
    for strategy in strategies:
        started = time.monotonic()
        independent = strategy in QUERY_INDEPENDENT
        trained = fit(strategy, train_table, train_features, seed)
        in_memory[strategy] = trained
        fitted = None
        if calibration_folds and calibrated(strategy):
            fitted = calibrate(strategy, train_table, train_features, seed, calibration_folds)

        files = dict(trained.files)
        if trained.params is not None:
            files[artifact.PARAMS] = json.dumps(trained.params, separators=(",", ":")).encode()
        if not independent:
            files.update(featurizer.files())
        manifest = artifact.draft_manifest(strategy, train_table.candidates,
                                           featurizer.manifest(), files, table.source_sha256,
                                           trained.score_columns, fitted)
        directory = Path(out) / strategy
        artifact.write_files(directory, files)

        router = artifact.build_router(manifest, artifact.read_files(directory, manifest),
                                       threads)
        eval_features = np.zeros((len(held_table.queries), 0), np.float32) if independent \
            else held_features
        result = evaluate(router.score_features(eval_features, held_table.users), held_table,
                          base)
        manifest["metrics"] = flat_metrics(result, trained.notes)
        if simulate_users:
            manifest["metrics"]["simulated_users"] = simulate_users
        extra = {}
        if strategy == "hybrid":
            extra["heldout_by_threshold"] = threshold_table(
                trained.params, trained.notes, held_features, held_table.scores, held_costs)
            for row in extra["heldout_by_threshold"]:
                for key in ("large_share", "accuracy", "cost_per_query"):
                    manifest["metrics"][f"threshold_{row['threshold']}_{key}"] = row[key]
        artifact.write_manifest(directory, manifest)

        seconds = time.monotonic() - started
        log(f"{strategy}: accuracy {result['accuracy']:.4f}, cost/query "
            f"${result['cost_per_query']:.7f}, AIQ {result['aiq']:.4f} ({seconds:.1f} s)")
        summary["strategies"][strategy] = {
            "version": manifest["version"], "seconds": round(seconds, 2),
            "metrics": manifest["metrics"], "notes": trained.notes, **extra}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "training-report.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary, in_memory
