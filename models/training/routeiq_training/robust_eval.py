"""`robust-eval`: routers against the best single model under distribution shift, with
bootstrap intervals; writes `report.json` and `report.md`.

For each split (`splits.py`) and each of its folds:
- every strategy is fitted to the fold's training rows only, by `train`'s own code
  (`train.fit`). Its hyperparameters are tuned on an inner split of those rows
  (`TrainSet.inner_split`: the training queries in hash bucket 1), mlp's early stopping
  and hybrid's cross-validation also draw from them: no strategy sees a test row before
  it is scored;
- the best single model (and the cheapest) is chosen from the training rows' mean scores
  (`metrics.baselines`), as in `eval`;
- the test rows are scored once, by the fitted model in memory (`Trained.reference`): no
  artifact is written, so svm and mlp score in scikit-learn's float64 rather than through
  their float32 ONNX export (the same choices up to float32 near-ties).

The tuning's inner split is drawn from the training distribution, not shifted like the
test fold: the hyperparameters are what `train` would choose on that training data.

With `calibration_folds` (`--calibration-folds N`, default 5; 0 = off), every
query-dependent strategy also gets its calibration and operating points from out-of-fold
scores of the fold's training rows (`train.calibrate`, as `train` writes them into the
manifest; never from the test rows), and three more routers are tested: `<strategy>
calibrated` (the choice on calibrated scores at cost weight 0), `<strategy> conservative`
(`routing_strategy_args.conservative`) and `<strategy> quality_floor 1` (the cost knob at
the best single model's training quality; per test row, the expected value of the mix
of its two curve vertices).

Per fold, and pooled over the folds of a split with several (every query tested once, by
the models that did not train on its fold), each router and baseline gets accuracy, hit
rate and cost per query with percentile bootstrap intervals, and each router its paired
differences to the best single model (accuracy, cost, and the ratio of their costs) and
the verdict (`bootstrap.py`).
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bootstrap, calibration, featurize, splits
from .choice import conservative, familiar, knob, pick, vertex_choice
from .data import RoutingTable, load_table
from .metrics import (
    CHOICE_DEFINITIONS,
    baselines,
    per_query,
    query_costs,
    random_per_query,
)
from .strategies import QUERY_INDEPENDENT, module
from .train import calibrate, calibrated, check_calibration_folds, fit, fitted_scores, log

METRICS = ("accuracy", "hit_rate", "cost_per_query")
BEST_SINGLE = "best single"
CHEAPEST = "cheapest"
QUALITY_FLOOR = 1.0  # the cost knob tested: the best single model's quality, at the lowest price


@dataclass
class FoldResult:
    n_train: int
    models: dict[str, str]  # the candidate each single-model baseline sends every query to
    routers: list[str]  # the names in `values` that are routers, in report order
    values: dict[str, dict[str, np.ndarray]]  # per router or baseline: per metric, per test row
    # per strategy: seconds, its tuned hyperparameters (notes), and when calibrated the
    # calibration's seconds, its operating points and the knob's mix
    training: dict[str, dict]


def calibrated_routers(strategy: str, calibrated: dict, raw: np.ndarray, y: np.ndarray,
                       costs: np.ndarray, prices: np.ndarray,
                       queries: list[str]) -> tuple[dict, dict]:
    """Per-query values of the strategy's calibrated, conservative and knob routers on the
    test rows (`raw` their raw scores, `queries` their queries), and the knob's mix."""
    p = calibration.apply(calibrated["calibration"], raw)
    operating = calibrated["operating"]
    mix = knob(operating, quality_floor=QUALITY_FLOOR)
    low, high = (per_query(vertex_choice(operating["curve"][i], p, prices), y, costs)
                 for i in (mix.low, mix.high))
    values = {
        f"{strategy} calibrated": per_query(pick(p, prices), y, costs),
        f"{strategy} conservative": per_query(
            conservative(p, prices, operating["best_single"], operating["margin"],
                         familiar=familiar(operating, queries)), y, costs),
        f"{strategy} quality_floor {QUALITY_FLOOR:g}": {
            m: mix.weight * high[m] + (1 - mix.weight) * low[m] for m in METRICS},
    }
    return values, mix._asdict()


def run_fold(table: RoutingTable, features: np.ndarray, test: np.ndarray,
             strategies: list[str], seed: int, calibration_folds: int = 0) -> FoldResult:
    """Trains every strategy on the rows outside `test` and scores the rows in it."""
    train_table, test_table = table.subset(~test), table.subset(test)
    y, prices = test_table.scores, test_table.prices
    costs = query_costs(test_table.queries, test_table.candidates)
    values, training, routers = {}, {}, list(strategies)
    for strategy in strategies:
        started = time.monotonic()
        trained = fit(strategy, train_table, features[~test], seed)
        scores = fitted_scores(strategy, trained, features[test], test_table.users)
        values[strategy] = per_query(pick(scores, prices), y, costs)
        seconds = time.monotonic() - started
        training[strategy] = {"seconds": round(seconds, 2), "notes": trained.notes}
        log(f"  {strategy}: accuracy {values[strategy]['accuracy'].mean():.4f} "
            f"({seconds:.1f} s)")
        if calibration_folds and calibrated(strategy):
            started = time.monotonic()
            fitted = calibrate(strategy, train_table, features[~test], seed, calibration_folds)
            more, mix = calibrated_routers(strategy, fitted, scores, y, costs, prices,
                                           test_table.queries)
            values.update(more)
            routers += list(more)
            training[strategy].update({
                "calibration_seconds": round(time.monotonic() - started, 2),
                "operating": fitted["operating"], "quality_floor_mix": mix})
            log("  " + ", ".join(f"{name}: accuracy {v['accuracy'].mean():.4f}"
                                 for name, v in more.items()))

    base = baselines(train_table, test_table)
    n = len(test_table.queries)
    values[BEST_SINGLE] = per_query(np.full(n, base.best_single), y, costs)
    values["oracle"] = per_query(pick(y, prices), y, costs)
    values[CHEAPEST] = per_query(np.full(n, base.cheapest), y, costs)
    values["random"] = random_per_query(y, costs)
    models = {BEST_SINGLE: table.candidates[base.best_single].name,
              CHEAPEST: table.candidates[base.cheapest].name}
    return FoldResult(len(train_table.queries), models, routers, values, training)


def summarise(values: dict[str, dict[str, np.ndarray]], routers: list[str],
              draws: np.ndarray) -> dict:
    """Every metric of every router and baseline with its interval; for the routers also
    their paired differences to the best single model (accuracy, cost, and the ratio of
    their mean costs) and the verdict on the accuracy difference."""
    best = values[BEST_SINGLE]
    rows = {}
    for name, v in values.items():
        row = {m: bootstrap.interval(v[m], draws) for m in METRICS}
        if name in routers:
            gain = bootstrap.paired(v["accuracy"], best["accuracy"], draws)
            row["accuracy_minus_best_single"] = gain
            row["cost_minus_best_single"] = bootstrap.paired(
                v["cost_per_query"], best["cost_per_query"], draws)
            row["cost_ratio_to_best_single"] = bootstrap.ratio(
                v["cost_per_query"], best["cost_per_query"], draws)
            row["verdict"] = bootstrap.verdict(gain)
        rows[name] = row
    return rows


def pooled(results: list[FoldResult]) -> dict[str, dict[str, np.ndarray]]:
    """Every fold's per-query values, one after the other."""
    return {name: {m: np.concatenate([r.values[name][m] for r in results]) for m in METRICS}
            for name in results[0].values}


def write_report(out: Path, report: dict, text: str) -> None:
    """`report.json` and `report.md` (`text`) in `out`, made if needed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    (out / "report.md").write_text(text, encoding="utf-8")


def split_report(results: list[FoldResult], folds_json: list[dict], rounds: int,
                 seed: int) -> dict:
    """A split's part of a report: its folds, and the folds' test rows pooled when there
    are several."""
    split = {"folds": folds_json, "pooled": None}
    if len(results) > 1:
        values = pooled(results)
        n = len(values[BEST_SINGLE]["accuracy"])
        split["pooled"] = {"n_test": n, "results": summarise(
            values, results[0].routers, bootstrap.resamples(n, rounds, seed))}
    return split


def run(data: Path, llm_data: Path, out: Path, strategies: list[str], split_names: list[str],
        featurizer_name: str, dim: int, seed: int, rounds: int,
        encoder: Path | None = None, tokenizer: Path | None = None, threads: int = 1,
        encoder_layers: int = featurize.MINILM_LAYERS,
        calibration_folds: int = calibration.DEFAULT_FOLDS) -> dict:
    for s in strategies:
        module(s)  # unknown names fail before any work
    check_calibration_folds(calibration_folds)
    if rounds < 1:
        raise ValueError("--bootstrap needs at least one resample")
    table = load_table(data, llm_data)
    folds = {name: splits.folds(name, table) for name in split_names}

    featurizer = featurize.build(featurizer_name, dim, encoder, tokenizer, threads,
                                 encoder_layers)
    features = np.zeros((len(table.queries), 0), np.float32)
    if any(s not in QUERY_INDEPENDENT for s in strategies):
        started = time.monotonic()
        features = featurizer(table.queries)
        log(f"featurized {len(table.queries)} queries with {featurizer_name} in "
            f"{time.monotonic() - started:.1f} s")

    report = {"data": str(data), "training_data_sha256": table.source_sha256,
              "n_queries": len(table.queries),
              "candidates": [c.to_json() for c in table.candidates],
              "featurizer": featurizer.manifest(), "strategies": strategies, "routers": None,
              "calibration_folds": calibration_folds, "seed": seed,
              "bootstrap_rounds": rounds, "confidence": bootstrap.CONFIDENCE, "splits": {}}
    for name, split_folds in folds.items():
        results, folds_json = [], []
        for fold in split_folds:
            n_test = int(fold.test.sum())
            log(f"{name}, {fold.name}: {len(table.queries) - n_test} training, "
                f"{n_test} test queries")
            result = run_fold(table, features, fold.test, strategies, seed, calibration_folds)
            results.append(result)
            report["routers"] = result.routers
            folds_json.append({
                "fold": fold.name, "n_train": result.n_train, "n_test": n_test,
                "models": result.models, "training": result.training,
                "results": summarise(result.values, result.routers,
                                     bootstrap.resamples(n_test, rounds, seed))})
        report["splits"][name] = split_report(results, folds_json, rounds, seed)

    write_report(Path(out), report, markdown(report))
    return report


def value_text(r: dict, digits: int = 4, signed: bool = False) -> str:
    """A metric with its interval, `mean [low, high]`."""
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{r['mean']:{spec}} [{r['low']:{spec}}, {r['high']:{spec}}]"


def gain_text(row: dict) -> str:
    """A router's paired accuracy difference to the best single model, and its verdict."""
    return f"{value_text(row['accuracy_minus_best_single'], signed=True)} {row['verdict']}"


def cost_ratio_text(row: dict) -> str:
    """A router's cost as a share of the best single model's, with its interval."""
    return value_text(row["cost_ratio_to_best_single"], 3)


def _columns(report: dict) -> list[tuple[str, dict]]:
    """(heading, results) per fold, then per pooled split."""
    columns = []
    for name, split in report["splits"].items():
        columns += [(f"{name}: {f['fold']}", f["results"]) for f in split["folds"]]
        if split["pooled"]:
            columns.append((f"{name}: all folds", split["pooled"]["results"]))
    return columns


def _table(results: dict, models: dict | None) -> list[str]:
    lines = [("| router | accuracy | cost / query (USD) | accuracy − best single | "
              "cost − best single (USD) | cost ÷ best single | verdict |"),
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        label = f"{name} ({models[name]})" if models and name in models else name
        cells = [value_text(r["accuracy"]), value_text(r["cost_per_query"], 7)]
        if "verdict" in r:
            cells += [value_text(r["accuracy_minus_best_single"], signed=True),
                      value_text(r["cost_minus_best_single"], 7, signed=True), cost_ratio_text(r),
                      r["verdict"]]
        else:
            cells += ["", "", "", ""]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    feat = report["featurizer"]
    data = (f"Data: `{report['data']}` (sha256 `{report['training_data_sha256'][:12]}…`), "
            f"{report['n_queries']} queries, {len(report['candidates'])} candidates. "
            f"Featurizer {feat['name']}" + (f" (dim {feat['dim']})" if "dim" in feat else "")
            + f"; seed {report['seed']}.")
    method = ("In every fold each strategy is trained on the fold's training queries only "
              "(its hyperparameters tuned on an inner split of them, as in `train`), the best "
              "single and cheapest models are chosen by their mean score on those training "
              "queries, and the test queries are scored once. Below, *held-out* means the "
              "fold's test queries.")
    if report["calibration_folds"]:
        method += (
            " Each query-dependent strategy's calibration and operating points come from "
            f"out-of-fold scores of the fold's training queries ({report['calibration_folds']}"
            " folds of them, as `train --calibration-folds` writes them into the manifest). "
            "*<strategy> calibrated* chooses on the calibrated scores at cost weight 0; "
            "*conservative* keeps the best single model (of the training queries) for a test "
            "query shorter or longer than every training query, and otherwise unless the "
            "calibrated choice beats it by more than the operating points' margin; "
            f"*quality_floor {QUALITY_FLOOR:g}* is the cost knob at the best single model's "
            "training quality, each test query counting the expected value of the mix of the "
            "curve's two vertices.")
    intervals = (
        f"Intervals: {report['confidence'] * 100:g} % percentile bootstrap over the test "
        f"queries ({report['bootstrap_rounds']} resamples, seed {report['seed']}), the same "
        "resamples for every router and baseline of a test set. *accuracy − best single* is "
        "paired: per query, resampled jointly; so is *cost ÷ best single*, the ratio of the "
        "mean costs per query in each resample. A router **beats** the best single model when "
        "that interval is above 0, **loses** when it is below 0, and **ties** when it "
        "contains 0. *all folds* pools a split's test queries (each tested once, by the "
        "models that did not train on its fold) and resamples them as one set. "
        "`report.json` also has the hit rate and each fold's tuned hyperparameters and "
        "training times.")
    lines = ["# Routing evaluation under distribution shift", "", data, "",
             "## Splits", "", splits.DEFINITIONS, "## Method", "", method, "",
             CHOICE_DEFINITIONS, intervals, "",
             "## Accuracy − best single model, per test set", ""]
    columns = _columns(report)
    header = ["| router | " + " | ".join(h for h, _ in columns) + " |",
              "|---|" + "---|" * len(columns)]
    lines += header
    for router in report["routers"]:
        lines.append(f"| {router} | " + " | ".join(gain_text(r[router]) for _, r in columns)
                     + " |")
    lines += ["", "## Cost ÷ best single model, per test set", ""] + header
    for router in report["routers"]:
        lines.append(f"| {router} | " + " | ".join(cost_ratio_text(r[router]) for _, r in columns)
                     + " |")
    for name, split in report["splits"].items():
        for f in split["folds"]:
            lines += ["", f"## {name}: {f['fold']}", "",
                      f"{f['n_train']} training, {f['n_test']} test queries.", ""]
            lines += _table(f["results"], f["models"])
        if split["pooled"]:
            distinct = {f["models"][BEST_SINGLE] for f in split["folds"]}
            lines += ["", f"## {name}: all folds", "",
                      f"{split['pooled']['n_test']} test queries. Best single model per fold: "
                      + ", ".join(f"{f['fold']} `{f['models'][BEST_SINGLE]}`"
                                  for f in split["folds"])
                      + ("." if len(distinct) > 1 else " (the same in every fold)."), ""]
            lines += _table(split["pooled"]["results"], None)
    return "\n".join(lines) + "\n"
