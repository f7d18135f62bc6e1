"""`eval`: scores the held-out split with every artifact loaded from disk (ONNX strategies
through their exported `model.onnx`) and writes `report.json` and `report.md`.

When the held-out rows have users (in the data, or simulated with `--simulate-users N`),
the personalised strategies score with each row's user, and the report adds the accuracy
per user of every router, of the personalised ones also without the user (their base
model), of the best single model and of the oracle."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from . import artifact, simulate
from .choice import pick
from .data import RoutingTable, heldout_mask, load_table
from .metrics import METRIC_DEFINITIONS, Baselines, baselines, evaluate
from .strategies import LEARNED, PERSONALISED, STRATEGIES

MAX_USERS_LISTED = 20  # with more users, the per-user table gives the overall accuracy only


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


def by_user(router_scores: dict[str, np.ndarray], held: RoutingTable, base: Baselines,
            simulated_users: int) -> dict:
    """Held-out accuracy (at λ = 0) overall and per user, of each router's scores, the best
    single model and the oracle."""
    users = np.array(["(none)" if u is None else u for u in held.users], dtype=object)
    names = sorted(set(users))
    listed = names if len(names) <= MAX_USERS_LISTED else []
    rows = np.arange(len(users))

    def accuracy(chosen: np.ndarray) -> dict:
        got = held.scores[rows, chosen]
        return {"overall": float(got.mean()),
                "per_user": {u: float(got[users == u].mean()) for u in listed}}

    table = {name: accuracy(pick(s, held.prices)) for name, s in router_scores.items()}
    table["best single"] = accuracy(np.full(len(users), base.best_single))
    table["oracle"] = accuracy(pick(held.scores, held.prices))
    return {"simulated_users": simulated_users,
            "preferences": simulate.describe(simulated_users) if simulated_users else None,
            "n_heldout": len(users), "users": len(names),
            "heldout_rows": {u: int((users == u).sum()) for u in listed},
            "accuracy": table}


def run(data: Path, llm_data: Path, artifacts: Path, out: Path, threads: int = 1,
        simulate_users: int = 0) -> dict:
    table = load_table(data, llm_data)
    if simulate_users:
        table = simulate.apply(table, simulate_users)
    held = heldout_mask(table.queries)
    train_table, held_table = table.subset(~held), table.subset(held)
    base = baselines(train_table, held_table)
    names = [c.name for c in table.candidates]

    results, features_cache, user_scores = {}, {}, {}
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
        scores = router.score_features(features, held_table.users)
        result = evaluate(scores, held_table, base)
        same_data = manifest["training_data_sha256"] == table.source_sha256
        if not same_data:
            print(f"{directory}: trained on other data than {data}; its held-out split may "
                  "overlap its training data", file=sys.stderr)
        if manifest["metrics"].get("simulated_users", 0) != simulate_users:
            print(f"{directory}: trained with --simulate-users "
                  f"{manifest['metrics'].get('simulated_users', 0)}, evaluated with "
                  f"{simulate_users}", file=sys.stderr)
        if held_table.users is not None:
            user_scores[directory.name] = scores
            if manifest["strategy"] in PERSONALISED:
                user_scores[f"{directory.name} (no user)"] = router.score_features(features)
        results[directory.name] = {
            "strategy": manifest["strategy"], "version": manifest["version"],
            "featurizer": manifest["featurizer"], "trained_on_this_data": same_data, **result}

    base_json = base.to_json()
    report = {"data": str(data), "training_data_sha256": table.source_sha256,
              "n_train": len(train_table.queries), "n_heldout": len(held_table.queries),
              "candidates": [c.to_json() for c in table.candidates],
              "baselines": base_json, "strategies": results,
              "best_learned": best_learned_summary(results, base_json),
              "users": None if held_table.users is None else by_user(
                  user_scores, held_table, base, simulate_users)}
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

    if report.get("users"):
        lines += [""] + users_markdown(report["users"])

    lines += ["", "## Single models", "", "| model | accuracy | cost / query (USD) |",
              "|---|---|---|"]
    for name, s in base["single_models"].items():
        lines.append(f"| {name} | {_num(s['accuracy'])} | {_num(s['cost_per_query'], 7)} |")
    return "\n".join(lines) + "\n"


def users_markdown(users: dict) -> list[str]:
    listed = list(users["heldout_rows"])
    preferences = users["preferences"] or {}
    if users["simulated_users"]:
        intro = (f"Simulated users (`--simulate-users {users['simulated_users']}`): each "
                 "query's scores, in both splits, are those of a synthetic user it is "
                 "assigned to by a hash; these numbers are about those made-up preferences, "
                 "not real users. Accuracy is the mean held-out score, under the query's user's "
                 "preferences, of the candidate chosen at λ = 0.")
    else:
        intro = ("Users from the data. Accuracy is the mean held-out score of the candidate "
                 "chosen at λ = 0.")
    header = " | ".join(f"{u} ({preferences[u].split(':')[0]})" if u in preferences else u
                        for u in listed)
    lines = ["## Per user", "", intro, "",
             "| router | overall |" + (f" {header} |" if listed else ""),
             "|---|---|" + "---|" * len(listed),
             f"| held-out rows | {users['n_heldout']} |"
             + "".join(f" {users['heldout_rows'][u]} |" for u in listed)]
    for name, acc in users["accuracy"].items():
        lines.append(f"| {name} | {_num(acc['overall'])} |"
                     + "".join(f" {_num(acc['per_user'][u])} |" for u in listed))
    if not listed:
        lines += ["", f"{users['users']} users, more than {MAX_USERS_LISTED}: no column per user."]
    if preferences:
        lines += [""] + [f"- `{u}`: {text}" for u, text in preferences.items()]
    return lines
