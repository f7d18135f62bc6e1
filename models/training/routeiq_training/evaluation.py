"""`eval`: scores the held-out split with every artifact loaded from disk (ONNX strategies
through their exported `model.onnx`) and writes `report.json` and `report.md`."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from . import artifact
from .data import heldout_mask, load_table
from .metrics import METRIC_DEFINITIONS, baselines, evaluate
from .strategies import LEARNED, STRATEGIES


def _featurizer_key(router: artifact.Router) -> str:
    spec = router.manifest["featurizer"]
    files = {n: h for n, h in router.manifest["files"].items()
             if n in ("encoder.onnx", "tokenizer.json")}
    return hashlib.sha256(json.dumps([spec, files], sort_keys=True).encode()).hexdigest()


def best_learned_summary(results: dict, base_json: dict) -> dict | None:
    learned = [name for name, r in results.items() if r["strategy"] in LEARNED]
    if not learned:
        return None
    name = max(learned, key=lambda n: results[n]["accuracy"])
    r, best = results[name], base_json["best_single"]
    reaching = [p["cost_per_query"] for p in r["curve"] if p["accuracy"] >= best["accuracy"]]
    lowest = min(reaching) if reaching else None
    return {
        "strategy": name,
        "accuracy": r["accuracy"],
        "best_single_model": best["model"],
        "best_single_accuracy": best["accuracy"],
        "relative_quality_gain": (r["accuracy"] - best["accuracy"]) / best["accuracy"],
        "lowest_cost_reaching_best_single_quality": lowest,
        "best_single_cost": best["cost_per_query"],
        "cost_ratio": lowest / best["cost_per_query"] if lowest is not None else None,
    }


def run(data: Path, llm_data: Path, artifacts: Path, out: Path, threads: int = 1) -> dict:
    table = load_table(data, llm_data)
    held = heldout_mask(table.queries)
    train_table, held_table = table.subset(~held), table.subset(held)
    base = baselines(train_table, held_table)
    names = [c.name for c in table.candidates]

    results, features_cache = {}, {}
    order = list(STRATEGIES)
    directories = sorted(artifact.find(artifacts), key=lambda d: (
        order.index(d.name) if d.name in order else len(order), d.name))
    for directory in directories:
        router = artifact.load(directory, threads)
        manifest = router.manifest
        if [c.name for c in router.candidates] != names:
            raise ValueError(f"{directory}: trained for candidates "
                             f"{[c.name for c in router.candidates]}, the data scores {names}")
        if router.featurizer is None:
            features = np.zeros((len(held_table.queries), 0), np.float32)
        else:
            key = _featurizer_key(router)
            if key not in features_cache:
                features_cache[key] = router.features(held_table.queries)
            features = features_cache[key]
        result = evaluate(router.score_features(features), held_table, base)
        same_data = manifest["training_data_sha256"] == table.source_sha256
        if not same_data:
            print(f"{directory}: trained on other data than {data}; its held-out split may "
                  "overlap its training data", file=sys.stderr)
        results[directory.name] = {
            "strategy": manifest["strategy"], "version": manifest["version"],
            "featurizer": manifest["featurizer"], "trained_on_this_data": same_data, **result}

    base_json = base.to_json()
    report = {"data": str(data), "training_data_sha256": table.source_sha256,
              "n_train": len(train_table.queries), "n_heldout": len(held_table.queries),
              "candidates": [c.to_json() for c in table.candidates],
              "baselines": base_json, "strategies": results,
              "best_learned": best_learned_summary(results, base_json)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    return report


def _num(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f} %"


def markdown(report: dict) -> str:
    base = report["baselines"]
    data = (f"Data: `{report['data']}` (sha256 `{report['training_data_sha256'][:12]}…`), "
            f"{report['n_train']} training and {report['n_heldout']} held-out queries.")
    lines = ["# Routing evaluation", "", "## Metric definitions", "", METRIC_DEFINITIONS,
             data, "",
             "## Results (held-out split)", "",
             ("| router | featurizer | accuracy | hit rate | cost / query (USD) | AIQ | APGR "
              "| cost to match best single |"),
             "|---|---|---|---|---|---|---|---|"]
    for name, r in report["strategies"].items():
        feat = r["featurizer"]["name"] if r["featurizer"] else "-"
        lines.append(f"| {name} | {feat} | {_num(r['accuracy'])} | {_num(r['hit_rate'])} | "
                     f"{_num(r['cost_per_query'], 7)} | {_num(r['aiq'])} | {_num(r['apgr'])} | "
                     f"{_percent(r['cost_to_match_best_single'])} |")
    for label, key in (("best single", "best_single"), ("cheapest", "cheapest")):
        b = base[key]
        lines.append(f"| {label} ({b['model']}) | - | {_num(b['accuracy'])} | "
                     f"{_num(b['hit_rate'])} | {_num(b['cost_per_query'], 7)} | - | - | - |")
    for label, key in (("random", "random"), ("oracle", "oracle")):
        b = base[key]
        lines.append(f"| {label} | - | {_num(b['accuracy'])} | {_num(b['hit_rate'])} | "
                     f"{_num(b['cost_per_query'], 7)} | - | - | - |")
    env = base["single_model_envelope"]
    lines.append(f"| single-model envelope | - | - | - | - | {_num(env['aiq'])} | "
                 f"{_num(env['apgr'])} | - |")

    best = report["best_learned"]
    if best:
        summary = (f"`{best['strategy']}` (highest accuracy at λ = 0): "
                   f"{_num(best['accuracy'])} against {_num(best['best_single_accuracy'])} for "
                   f"the best single model `{best['best_single_model']}`, a relative quality "
                   f"change of {best['relative_quality_gain'] * 100:+.2f} %.")
        lines += ["", "## Best learned router", "", summary]
        if best["lowest_cost_reaching_best_single_quality"] is not None:
            lines.append(
                f"Its curve reaches the best single model's quality at "
                f"${best['lowest_cost_reaching_best_single_quality']:.7f} per query, against "
                f"${best['best_single_cost']:.7f} for the best single model "
                f"({best['cost_ratio'] * 100:.1f} % of its cost).")
        else:
            lines.append("Its curve never reaches the best single model's quality.")

    lines += ["", "## Single models", "", "| model | accuracy | cost / query (USD) |",
              "|---|---|---|"]
    for name, s in base["single_models"].items():
        lines.append(f"| {name} | {_num(s['accuracy'])} | {_num(s['cost_per_query'], 7)} |")
    return "\n".join(lines) + "\n"
