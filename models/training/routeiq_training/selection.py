"""`select`: the featurizer and strategy to ship, chosen on validation folds only, and what
that choice scores on test rows it never saw; writes `report.json` and `report.md`.

A candidate is one featurizer with one strategy. Reading `robust-eval`'s test folds and
shipping the best candidate there would report an optimistic figure: the test rows chose
it. Here every choice is made on validation folds, and the test rows are scored once:

- **The rule of every choice** (`choose_on`), given some rows: each split is made again
  within them (`splits.validation_folds`: leave out each of their clusters in turn; their
  longest rows; hash bucket 2 of them). Every candidate is fitted to each validation
  fold's training rows and scored on its validation rows. Its gain on a split is its
  accuracy minus the best single model's (chosen on that validation fold's training
  rows), over the split's validation rows pooled; its score is the mean of its gains over
  the splits. The candidate with the largest score is chosen (on a tie, the one listed
  first). The choice reads the raw routers, uncalibrated.
- **Nested, per outer fold of each split** (`splits.py`): the rule is applied to the outer
  fold's training rows only. Only then is the chosen candidate fitted to those rows,
  calibrated on them as `robust-eval` does, and scored once on the outer test rows: raw,
  calibrated, conservative and at `quality_floor: 1`, against the best single model of
  those training rows. The routers are named `selected ...` whatever was chosen, so a
  split's folds pool as in `robust-eval`: the pooled figure is what the procedure (choose
  by the rule, then route) scores on kinds of query it never saw.
- **The default**: the rule applied once to the whole table. No row is left to test it
  on, as for any final choice; the nested figures are its expected performance on unseen
  traffic, since they test the same rule.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bootstrap, calibration, featurize, splits
from .data import RoutingTable, load_table
from .metrics import CHOICE_DEFINITIONS
from .robust_eval import (
    BEST_SINGLE,
    cost_ratio_text,
    gain_text,
    run_fold,
    split_report,
    summarise,
    value_text,
    write_report,
)
from .strategies import PERSONALISED, QUERY_INDEPENDENT, module
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


def choose(means: dict[str, float], cands: list[Candidate]) -> Candidate:
    """The candidate with the largest mean gain; the first listed of those tied."""
    best = cands[0]
    for c in cands[1:]:
        if means[c.name] > means[best.name]:
            best = c
    return best


@dataclass
class Choice:
    chosen: Candidate
    # per split: per candidate, its gain on each of the split's validation rows
    gains: dict[str, dict[str, np.ndarray]]
    # per candidate: the mean over the splits of its mean gain there
    means: dict[str, float]

    def json(self, rounds: int, seed: int) -> dict:
        return {"chosen": self.chosen.name, "featurizer": self.chosen.featurizer,
                "strategy": self.chosen.strategy, "validation_mean": self.means,
                "validation_gain": {
                    split: {name: bootstrap.interval(g, bootstrap.resamples(len(g), rounds,
                                                                            seed))
                            for name, g in gains.items()}
                    for split, gains in self.gains.items()},
                "n_validation": {split: len(next(iter(gains.values())))
                                 for split, gains in self.gains.items()}}


def choose_on(table: RoutingTable, features: dict[str, np.ndarray], split_names: list[str],
              cands: list[Candidate], seed: int) -> Choice:
    """The rule every choice follows, for an outer fold's training rows as for the whole
    table: each split's validation folds of `table` (`splits.validation_folds`), each
    candidate's pooled gain per split, and the candidate with the largest mean of those
    over the splits."""
    gains = {}
    for name in split_names:
        log(f" {name} validation folds")
        gains[name] = validation_gains(table, features, splits.validation_folds(name, table),
                                       cands, seed)
    means = {c.name: float(np.mean([gains[s][c.name].mean() for s in split_names]))
             for c in cands}
    return Choice(choose(means, cands), gains, means)


def _selected(name: str, strategy: str) -> str:
    """The chosen strategy's router `name` as `selected ...` (any other name as it is), so
    outer folds that chose different candidates pool."""
    if name == strategy or name.startswith(strategy + " "):
        return SELECTED + name[len(strategy):]
    return name


def run(data: Path, llm_data: Path, out: Path, featurizers: list[str], strategies: list[str],
        split_names: list[str], dim: int, seed: int, rounds: int,
        encoder: Path | None = None, tokenizer: Path | None = None, threads: int = 1,
        calibration_folds: int = calibration.DEFAULT_FOLDS,
        validation_splits: list[str] | None = None) -> dict:
    """`split_names` give the outer folds; `validation_splits` (default: the same) the
    splits every choice is made on."""
    validation_splits = validation_splits or split_names
    for s in strategies:
        module(s)  # unknown names fail before any work
        if s in QUERY_INDEPENDENT:
            raise ValueError(f"{s} does not read the query: there is no featurizer to choose "
                             "for it")
        if s in PERSONALISED:
            raise ValueError(f"{s} is personalised: select compares routers without users")
    check_calibration_folds(calibration_folds)
    if rounds < 1:
        raise ValueError("--bootstrap needs at least one resample")
    if not featurizers or not strategies or not split_names:
        raise ValueError("select needs at least one featurizer, strategy and split")
    table = load_table(data, llm_data)
    outer = {name: splits.folds(name, table) for name in split_names}
    for name in validation_splits:
        splits.folds(name, table)  # an unknown or impossible split fails before any work
    if "cluster" in outer and "cluster" in validation_splits and len(outer["cluster"]) < 3:
        raise ValueError("select's cluster split needs at least three clusters: an outer "
                         "fold's training rows must hold two, to leave one out")
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
              "validation_splits": validation_splits,
              "calibration_folds": calibration_folds, "seed": seed,
              "bootstrap_rounds": rounds, "confidence": bootstrap.CONFIDENCE,
              "splits": {}, "default": None}
    for split_name, split_folds in outer.items():
        results, folds_json = [], []
        for fold in split_folds:
            started = time.monotonic()
            log(f"{split_name}, {fold.name}: choosing on the training rows' validation folds")
            inside = table.subset(~fold.test)
            choice = choose_on(inside, {f: v[~fold.test] for f, v in features.items()},
                               validation_splits, cands, seed)
            chosen = choice.chosen
            log(f"  chose {chosen.name} (mean validation gain "
                f"{choice.means[chosen.name]:+.4f}); testing it once")
            result = run_fold(table, features[chosen.featurizer], fold.test,
                              [chosen.strategy], seed, calibration_folds)
            result.values = {_selected(name, chosen.strategy): v
                             for name, v in result.values.items()}
            result.routers = [_selected(r, chosen.strategy) for r in result.routers]
            results.append(result)
            n_test = int(fold.test.sum())
            folds_json.append({
                "fold": fold.name, "n_train": result.n_train, "n_test": n_test,
                "choice": choice.json(rounds, seed), "models": result.models,
                "training": result.training,
                "seconds": round(time.monotonic() - started, 1),
                "results": summarise(result.values, result.routers,
                                     bootstrap.resamples(n_test, rounds, seed))})
        report["splits"][split_name] = split_report(results, folds_json, rounds, seed)
        report["routers"] = results[0].routers

    log("the default: choosing on the whole table by the same rule")
    default = choose_on(table, features, validation_splits, cands, seed)
    report["default"] = default.json(rounds, seed)
    log(f"default: {default.chosen.name}")

    write_report(Path(out), report, markdown(report))
    return report


def _choice_table(choice: dict, candidates: list[str]) -> list[str]:
    """A choice's validation gains: per candidate, per split, and their mean."""
    names = list(choice["validation_gain"])
    lines = ["| candidate | " + " | ".join(
                 f"{s} ({choice['n_validation'][s]} rows)" for s in names) + " | mean |",
             "|---|" + "---|" * (len(names) + 1)]
    for c in candidates:
        mark = "**" if c == choice["chosen"] else ""
        lines.append(f"| {mark}`{c}`{mark} | " + " | ".join(
            value_text(choice["validation_gain"][s][c], signed=True) for s in names)
            + f" | {choice['validation_mean'][c]:+.4f} |")
    return lines


def markdown(report: dict) -> str:
    lines = ["# Choosing the featurizer and strategy on validation folds", "",
             f"Data: `{report['data']}` (sha256 `{report['training_data_sha256'][:12]}…`), "
             f"{report['n_queries']} queries; seed {report['seed']}. Candidates: "
             + ", ".join(f"`{c}`" for c in report["candidates"]) + ". Validation splits: "
             + ", ".join(report["validation_splits"]) + ".", "",
             "## Splits", "", splits.DEFINITIONS,
             "## Method", "", __doc__.split("\n\n", 1)[1].strip(), "", CHOICE_DEFINITIONS,
             f"Intervals: {report['confidence'] * 100:g} % percentile bootstrap "
             f"({report['bootstrap_rounds']} resamples). A router **beats** the best single "
             "model when the interval of its paired accuracy difference is above 0, "
             "**loses** when below, **ties** otherwise.", ""]
    lines += ["## Chosen per outer fold, and its test result", "",
              "| split: fold | chosen on validation | its mean validation gain | test: "
              + " | test: ".join(report["routers"]) + " |",
              "|---|---|---|" + "---|" * len(report["routers"])]
    for split_name, split in report["splits"].items():
        rows = [(f"{split_name}: {f['fold']}", f"`{f['choice']['chosen']}`",
                 f"{f['choice']['validation_mean'][f['choice']['chosen']]:+.4f}",
                 f["results"]) for f in split["folds"]]
        if split["pooled"]:
            rows.append((f"{split_name}: all folds", "(each fold's)", "",
                         split["pooled"]["results"]))
        for label, chosen, gain, results in rows:
            cells = [gain_text(results[r]) for r in report["routers"]]
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
                cost_ratio_text(results[r]) for r in report["routers"]) + " |")
    for split_name, split in report["splits"].items():
        for f in split["folds"]:
            lines += ["", f"### Validation gains inside {split_name}: {f['fold']}", "",
                      f"Validation folds made within the outer fold's {f['n_train']} "
                      f"training rows; {f['seconds']} s for the fold (the validation fits "
                      "and the chosen router's).", ""]
            lines += _choice_table(f["choice"], report["candidates"])
    d = report["default"]
    lines += ["", "## The default", "",
              f"Chosen by the same rule on the whole table: **`{d['chosen']}`** (featurizer "
              f"`{d['featurizer']}`, strategy `{d['strategy']}`).", ""]
    lines += _choice_table(d, report["candidates"])
    return "\n".join(lines) + "\n"
