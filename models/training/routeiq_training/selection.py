"""`select`: the featurizer and strategy to ship, chosen on validation folds only, and what
that choice scores on test rows it never saw; writes `report.json` and `report.md`.

A candidate is one featurizer with one strategy. Reading `robust-eval`'s test folds and
shipping the best candidate there would report an optimistic figure: the test rows chose
it. Here every choice is made on validation folds, and the test rows are scored once:

- **Nested, per outer fold of each split** (`splits.py`): the outer fold's test rows are
  set aside. Its training rows are split again by the same rule
  (`splits.validation_folds`: leave out each of their clusters; their longest rows; hash
  bucket 2). Every candidate is fitted to each validation fold's training rows and scored
  on its validation rows; its *validation gain* is its accuracy minus the best single
  model's (chosen on that validation fold's training rows), averaged over the validation
  rows of all the folds pooled. The candidate with the largest gain is chosen (on a tie,
  the one listed first). Only then is the chosen candidate fitted to the outer fold's
  training rows, calibrated on them as `robust-eval` does, and scored on the outer test
  rows: raw, calibrated, conservative and at `quality_floor: 1`, against the best single
  model of those training rows. The routers are named `selected ...` whatever was chosen,
  so a split's folds pool as in `robust-eval`: the pooled figure is what the procedure
  (choose on validation, then route) scores on unseen kinds of query.
- **The default**: the same choice made once on the whole table, every split's folds
  serving as validation folds; a candidate's gain is the mean of its pooled gains over
  the splits. This is what `train` should ship; the nested figures above are its
  expected test performance, as the procedure that chose it was tested there.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bootstrap, calibration, featurize, splits
from .data import RoutingTable, load_table
from .metrics import CHOICE_DEFINITIONS
from .robust_eval import BEST_SINGLE, QUALITY_FLOOR, pooled, run_fold, summarise
from .strategies import QUERY_INDEPENDENT, module
from .train import check_calibration_folds, log

DEFAULT_FEATURIZERS = ("hashed-ngram", "hashed-ngram+structure",
                       "hashed-ngram+minilm+structure")
DEFAULT_STRATEGIES = ("mlp", "mf", "graph", "routerdc")
SELECTED = "selected"


@dataclass(frozen=True)
class Candidate:
    featurizer: str
    strategy: str

    @property
    def name(self) -> str:
        return f"{self.strategy} on {self.featurizer}"


def candidates(featurizers: list[str], strategies: list[str]) -> list[Candidate]:
    """Every featurizer with every strategy, featurizers in the order given (so a tie goes
    to the featurizer listed first: list the cheaper first)."""
    return [Candidate(f, s) for f in featurizers for s in strategies]


def validation_gains(table: RoutingTable, features: dict[str, np.ndarray],
                     folds: list[splits.Fold], cands: list[Candidate],
                     seed: int) -> dict[str, np.ndarray]:
    """Per candidate (by name): its accuracy minus the best single model's on each
    validation row, the folds' rows one after the other. Each fold fits every candidate to
    the fold's training rows only; no calibration (the choice is on the raw router)."""
    gains: dict[str, list[np.ndarray]] = {c.name: [] for c in cands}
    for fold in folds:
        log(f"  validation fold {fold.name}: {int((~fold.test).sum())} training, "
            f"{int(fold.test.sum())} validation queries")
        for featurizer in dict.fromkeys(c.featurizer for c in cands):
            strategies = [c.strategy for c in cands if c.featurizer == featurizer]
            result = run_fold(table, features[featurizer], fold.test, strategies, seed)
            best = result.values[BEST_SINGLE]["accuracy"]
            for s in strategies:
                gains[Candidate(featurizer, s).name].append(
                    result.values[s]["accuracy"] - best)
    return {name: np.concatenate(g) for name, g in gains.items()}


def choose(gains: dict[str, np.ndarray], cands: list[Candidate]) -> Candidate:
    """The candidate with the largest mean gain; the first listed of those tied."""
    best = cands[0]
    for c in cands[1:]:
        if gains[c.name].mean() > gains[best.name].mean():
            best = c
    return best


def _selected(values: dict, strategy: str) -> dict:
    """The outer fold's routers renamed `selected ...`, so folds that chose different
    candidates pool."""
    return {(SELECTED + name[len(strategy):] if name.startswith(strategy) else name): v
            for name, v in values.items()}


def _gain_rows(gains: dict[str, np.ndarray], draws: np.ndarray) -> dict:
    return {name: bootstrap.interval(g, draws) for name, g in gains.items()}


def run(data: Path, llm_data: Path, out: Path, featurizers: list[str], strategies: list[str],
        split_names: list[str], dim: int, seed: int, rounds: int,
        encoder: Path | None = None, tokenizer: Path | None = None, threads: int = 1,
        calibration_folds: int = calibration.DEFAULT_FOLDS) -> dict:
    for s in strategies:
        module(s)  # unknown names fail before any work
        if s in QUERY_INDEPENDENT:
            raise ValueError(f"{s} does not read the query: there is no featurizer to choose "
                             "for it")
    check_calibration_folds(calibration_folds)
    if rounds < 1:
        raise ValueError("--bootstrap needs at least one resample")
    if not featurizers or not strategies or not split_names:
        raise ValueError("select needs at least one featurizer, strategy and split")
    table = load_table(data, llm_data)
    outer = {name: splits.folds(name, table) for name in split_names}
    cands = candidates(featurizers, strategies)

    features, manifests = {}, {}
    for name in featurizers:
        featurizer = featurize.build(name, dim, encoder, tokenizer, threads)
        started = time.monotonic()
        features[name] = featurizer(table.queries)
        manifests[name] = featurizer.manifest()
        log(f"featurized {len(table.queries)} queries with {name} in "
            f"{time.monotonic() - started:.1f} s")

    report = {"data": str(data), "training_data_sha256": table.source_sha256,
              "n_queries": len(table.queries), "featurizers": manifests,
              "strategies": strategies, "candidates": [c.name for c in cands],
              "calibration_folds": calibration_folds, "seed": seed,
              "bootstrap_rounds": rounds, "confidence": bootstrap.CONFIDENCE,
              "splits": {}, "default": None}
    for split_name, split_folds in outer.items():
        results, folds_json = [], []
        for fold in split_folds:
            started = time.monotonic()
            log(f"{split_name}, {fold.name}: choosing on the training rows' validation folds")
            inside = table.subset(~fold.test)
            gains = validation_gains(
                inside, {f: v[~fold.test] for f, v in features.items()},
                splits.validation_folds(split_name, inside), cands, seed)
            chosen = choose(gains, cands)
            log(f"  chose {chosen.name} (validation gain "
                f"{gains[chosen.name].mean():+.4f}); testing it once")
            result = run_fold(table, features[chosen.featurizer], fold.test,
                              [chosen.strategy], seed, calibration_folds)
            result.values = _selected(result.values, chosen.strategy)
            result.routers = [SELECTED + r[len(chosen.strategy):] for r in result.routers]
            results.append(result)
            n_val, n_test = len(next(iter(gains.values()))), int(fold.test.sum())
            folds_json.append({
                "fold": fold.name, "n_train": result.n_train, "n_test": n_test,
                "n_validation": n_val, "chosen": chosen.name,
                "validation_gain": _gain_rows(gains, bootstrap.resamples(n_val, rounds, seed)),
                "models": result.models, "training": result.training,
                "seconds": round(time.monotonic() - started, 1),
                "results": summarise(result.values, result.routers,
                                     bootstrap.resamples(n_test, rounds, seed))})
        split = {"folds": folds_json, "pooled": None}
        if len(results) > 1:
            values = pooled(results)
            n = len(values[BEST_SINGLE]["accuracy"])
            split["pooled"] = {"n_test": n, "results": summarise(
                values, results[0].routers, bootstrap.resamples(n, rounds, seed))}
        report["splits"][split_name] = split
        report["routers"] = results[0].routers

    log("the default: choosing on the whole table, each split's folds as validation folds")
    per_split = {name: validation_gains(table, features, folds, cands, seed)
                 for name, folds in outer.items()}
    means = {c.name: np.array([float(np.mean([per_split[s][c.name].mean()
                                              for s in outer]))]) for c in cands}
    default = choose(means, cands)
    report["default"] = {
        "chosen": default.name, "featurizer": default.featurizer,
        "strategy": default.strategy,
        "validation_gain": {c.name: float(means[c.name][0]) for c in cands},
        "per_split": {s: _gain_rows(g, bootstrap.resamples(len(next(iter(g.values()))),
                                                           rounds, seed))
                      for s, g in per_split.items()}}
    log(f"default: {default.name}")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    return report


def _value(r: dict, signed: bool = True, digits: int = 4) -> str:
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{r['mean']:{spec}} [{r['low']:{spec}}, {r['high']:{spec}}]"


def markdown(report: dict) -> str:
    lines = ["# Choosing the featurizer and strategy on validation folds", "",
             f"Data: `{report['data']}` (sha256 `{report['training_data_sha256'][:12]}…`), "
             f"{report['n_queries']} queries; seed {report['seed']}. Candidates: "
             + ", ".join(f"`{c}`" for c in report["candidates"]) + ".", "",
             "## Splits", "", splits.DEFINITIONS,
             "## Method", "", __doc__.split("\n\n", 1)[1].strip(), "", CHOICE_DEFINITIONS,
             f"Intervals: {report['confidence'] * 100:g} % percentile bootstrap "
             f"({report['bootstrap_rounds']} resamples). A router **beats** the best single "
             "model when the interval of its paired accuracy difference is above 0, "
             "**loses** when below, **ties** otherwise.", ""]
    lines += ["## Chosen per outer fold, and its test result", "",
              "| split: fold | chosen on validation | its validation gain | test: "
              + " | test: ".join(report["routers"]) + " |",
              "|---|---|---|" + "---|" * len(report["routers"])]
    for split_name, split in report["splits"].items():
        rows = [(f"{split_name}: {f['fold']}", f"`{f['chosen']}`",
                 _value(f["validation_gain"][f["chosen"]]), f["results"])
                for f in split["folds"]]
        if split["pooled"]:
            rows.append((f"{split_name}: all folds", "(each fold's)", "",
                         split["pooled"]["results"]))
        for label, chosen, gain, results in rows:
            cells = [f"{_value(results[r]['accuracy_minus_best_single'])} "
                     f"{results[r]['verdict']}" for r in report["routers"]]
            lines.append(f"| {label} | {chosen} | {gain} | " + " | ".join(cells) + " |")
    lines += ["", "Cost ÷ best single model on the test rows:", "",
              "| split: fold | " + " | ".join(report["routers"]) + " |",
              "|---|" + "---|" * len(report["routers"])]
    for split_name, split in report["splits"].items():
        rows = [(f"{split_name}: {f['fold']}", f["results"]) for f in split["folds"]]
        if split["pooled"]:
            rows.append((f"{split_name}: all folds", split["pooled"]["results"]))
        for label, results in rows:
            lines.append(f"| {label} | " + " | ".join(
                _value(results[r]["cost_ratio_to_best_single"], False, 3)
                for r in report["routers"]) + " |")
    for split_name, split in report["splits"].items():
        for f in split["folds"]:
            lines += ["", f"### Validation gains, {split_name}: {f['fold']}", "",
                      f"{f['n_validation']} validation rows, drawn from the outer fold's "
                      f"{f['n_train']} training rows; {f['seconds']} s for the fold (the "
                      "validation fits and the chosen router's).", "",
                      "| candidate | accuracy − best single |", "|---|---|"]
            lines += [f"| `{c}` | {_value(g)} |" for c, g in f["validation_gain"].items()]
    d = report["default"]
    splits_ = list(d["per_split"])
    lines += ["", "## The default", "",
              f"Chosen on the whole table, each split's folds as validation folds: "
              f"**`{d['chosen']}`** (featurizer `{d['featurizer']}`, strategy "
              f"`{d['strategy']}`).", "",
              "| candidate | " + " | ".join(splits_) + " | mean |",
              "|---|" + "---|" * (len(splits_) + 1)]
    for c in report["candidates"]:
        lines.append(f"| `{c}` | " + " | ".join(_value(d["per_split"][s][c])
                                              for s in splits_)
                     + f" | {d['validation_gain'][c]:+.4f} |")
    return "\n".join(lines) + "\n"
