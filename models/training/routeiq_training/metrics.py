"""Held-out routing metrics. `METRIC_DEFINITIONS` is the text the reports start with."""

import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from .choice import pick
from .data import Candidate, RoutingTable

OUTPUT_TOKENS = 256
CURVE_POINTS = 101
APGR_BUDGETS = 10

# What a choice of one candidate per query scores (also `robust-eval`'s metrics).
CHOICE_DEFINITIONS = f"""\
- **accuracy**: mean held-out score of the chosen candidate (the router at cost weight 0).
- **hit rate**: share of held-out queries whose chosen candidate has the query's maximum score.
- **cost per query** (USD): mean of `(prompt_tokens * input_price + {OUTPUT_TOKENS} * output_price) / 1e6`
  for the chosen candidate, with `prompt_tokens = ceil(len(query UTF-8 bytes) / 4)` and
  prices in USD per million tokens.
- **baselines**: *best single* = the candidate with the best mean training score, always;
  *cheapest* = the lowest-priced candidate, always; *random* = the mean over candidates
  (expected value of a uniform pick); *oracle* = the candidate with the query's maximum
  score (ties to the cheapest).
"""
CURVE_DEFINITIONS = f"""\
- **cost-aware curve**: the router picks `argmax(score - λ * (input_price + output_price) / 2)`
  (unscored candidates never; exact ties to the cheaper, then the lower index). λ runs over
  {CURVE_POINTS} evenly spaced values from 0 to λ_max together with {CURVE_POINTS} quantiles
  of the per-query λ at which the query's cheapest scored candidate starts to win; λ_max is the
  largest of those, where the cheapest scored candidate wins on every query. Each λ gives one
  point (cost per query, accuracy).
- **AIQ** (RouterBench's average improvement in quality): the area under the router's
  non-decreasing concave envelope of its (cost, accuracy) points (mixing two operating points
  at random reaches any point on the segment between them; spending more never lowers the
  best quality reachable), over costs from the cheapest single model's cost to the most
  expensive single model's cost, divided by that range. Below the router's cheapest point the
  envelope is 0.
- **APGR** (RouteLLM's average performance gap recovered): weak = the cheapest model, strong =
  the best single model. At {APGR_BUDGETS} cost budgets evenly spaced above the weak model's cost up
  to the strong model's cost (`c_weak + i/{APGR_BUDGETS} * (c_strong - c_weak)`, i = 1..{APGR_BUDGETS}), PGR =
  `(q - q_weak) / (q_strong - q_weak)` where q is the best accuracy among the router's curve
  points (no mixing) whose cost is within the budget (PGR 0 when none is). APGR is their mean.
  PGR is not clipped: it exceeds 1 where the router beats the strong model within the budget.
- **cost to match best single**: the lowest cost per query at which the router's curve
  reaches the best single model's accuracy, as a share of that model's cost (- if never).
- **single-model envelope**: AIQ and APGR of the single models' own points (routing every
  query to one model, or mixing two at random): what a router must beat.
"""
METRIC_DEFINITIONS = CHOICE_DEFINITIONS + CURVE_DEFINITIONS


def prompt_tokens(query: str) -> int:
    return math.ceil(len(query.encode("utf-8")) / 4)


def query_costs(queries: list[str], candidates: list[Candidate]) -> np.ndarray:
    """[N, K] USD cost of sending each query to each candidate."""
    tokens = np.array([prompt_tokens(q) for q in queries], dtype=np.float64)[:, None]
    input_price = np.array([c.input_price for c in candidates])[None, :]
    output_price = np.array([c.output_price for c in candidates])[None, :]
    return (tokens * input_price + OUTPUT_TOKENS * output_price) / 1e6


def per_query(chosen: np.ndarray, scores: np.ndarray, costs: np.ndarray) -> dict:
    """Per query, the chosen candidate's score (`accuracy`), whether it has the query's
    maximum score (`hit_rate`, 0 or 1) and its cost: the metrics before averaging, which
    the bootstrap resamples."""
    idx = np.arange(len(chosen))
    picked = scores[idx, chosen]
    return {"accuracy": picked,
            "hit_rate": (picked == scores.max(axis=1)).astype(np.float64),
            "cost_per_query": costs[idx, chosen]}


def random_per_query(scores: np.ndarray, costs: np.ndarray) -> dict:
    """`per_query` of the random baseline: per query, the expected value of a uniform pick
    among the candidates."""
    return {"accuracy": scores.mean(axis=1),
            "hit_rate": (scores == scores.max(axis=1, keepdims=True)).mean(axis=1),
            "cost_per_query": costs.mean(axis=1)}


def averages(values: dict) -> dict:
    return {name: float(v.mean()) for name, v in values.items()}


def at_choice(chosen: np.ndarray, scores: np.ndarray, costs: np.ndarray) -> dict:
    return averages(per_query(chosen, scores, costs))


def switch_to_cheapest(router_scores: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """Per query, the cost weight from which its cheapest scored candidate wins."""
    scored = ~np.isnan(router_scores)
    out = np.zeros(len(router_scores))
    for i, (row, ok) in enumerate(zip(router_scores, scored)):
        if not ok.any():
            continue
        cheapest_price = prices[ok].min()
        cheap = ok & (prices == cheapest_price)
        best_cheap = row[cheap].max()
        dearer = ok & (prices > cheapest_price)
        if dearer.any():
            out[i] = max(0.0, float(((row[dearer] - best_cheap)
                                     / (prices[dearer] - cheapest_price)).max()))
    return out


def cost_weights(router_scores: np.ndarray, prices: np.ndarray) -> np.ndarray:
    switches = switch_to_cheapest(router_scores, prices)
    top = float(switches.max()) if len(switches) else 0.0
    grid = np.concatenate([np.linspace(0.0, top, CURVE_POINTS),
                           np.quantile(switches, np.linspace(0, 1, CURVE_POINTS))
                           if len(switches) else []])
    return np.unique(grid)


def curve(router_scores: np.ndarray, scores: np.ndarray, costs: np.ndarray,
          prices: np.ndarray) -> list[dict]:
    points = []
    for weight in cost_weights(router_scores, prices):
        chosen = pick(router_scores, prices, float(weight))
        points.append({"cost_weight": float(weight), **at_choice(chosen, scores, costs)})
    return points


def envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-decreasing concave envelope's vertices (cost ascending)."""
    pts = sorted(set(points), key=lambda p: (p[0], -p[1]))
    hull: list[tuple[float, float]] = []
    for p in pts:
        if hull and p[0] == hull[-1][0]:
            continue  # same cost, lower quality
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop hull[-1] when it is on or below the segment hull[-2] -> p
            if (y2 - y1) * (p[0] - x1) <= (p[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    top = max(range(len(hull)), key=lambda i: (hull[i][1], -i))
    return hull[:top + 1]


def envelope_value(vertices: list[tuple[float, float]], cost: float) -> float:
    if cost < vertices[0][0]:
        return 0.0
    if cost >= vertices[-1][0]:
        return vertices[-1][1]
    for (x1, y1), (x2, y2) in pairwise(vertices):
        if x1 <= cost <= x2:
            return y1 + (y2 - y1) * (cost - x1) / (x2 - x1)
    raise AssertionError("unreachable: cost within the envelope's range")


def aiq(points: list[tuple[float, float]], c_min: float, c_max: float) -> float:
    """Mean of the envelope over [c_min, c_max] (exact: it is piecewise linear)."""
    vertices = envelope(points)
    xs = sorted({c_min, c_max} | {x for x, _ in vertices if c_min < x < c_max})
    start = vertices[0][0]
    area = 0.0
    for a, b in pairwise(xs):
        left = envelope_value(vertices, a) if a >= start else 0.0
        right = envelope_value(vertices, b) if b > start else 0.0
        area += (b - a) * (left + right) / 2
    return area / (c_max - c_min)


def apgr(points: list[tuple[float, float]], weak: tuple[float, float],
         strong: tuple[float, float], budgets: int = APGR_BUDGETS) -> float | None:
    """`weak`/`strong` are (cost, quality); None when the gap or the cost range is empty."""
    (c_weak, q_weak), (c_strong, q_strong) = weak, strong
    if q_strong == q_weak or c_strong <= c_weak:
        return None
    gains = []
    for i in range(1, budgets + 1):
        budget = c_weak + i / budgets * (c_strong - c_weak)
        within = [q for c, q in points if c <= budget * (1 + 1e-12)]
        gains.append((max(within) - q_weak) / (q_strong - q_weak) if within else 0.0)
    return float(np.mean(gains))


@dataclass
class Baselines:
    """The single-model reference points on the held-out split."""

    candidates: list[Candidate]
    single: list[dict]  # per candidate: accuracy, hit_rate, cost_per_query
    best_single: int
    cheapest: int
    random: dict
    oracle: dict

    @property
    def c_min(self) -> float:
        return min(s["cost_per_query"] for s in self.single)

    @property
    def c_max(self) -> float:
        return max(s["cost_per_query"] for s in self.single)

    def point(self, index: int) -> tuple[float, float]:
        return self.single[index]["cost_per_query"], self.single[index]["accuracy"]

    def to_json(self) -> dict:
        names = [c.name for c in self.candidates]
        single_points = [self.point(i) for i in range(len(self.single))]
        return {
            "best_single": {"model": names[self.best_single], **self.single[self.best_single]},
            "cheapest": {"model": names[self.cheapest], **self.single[self.cheapest]},
            "random": self.random,
            "oracle": self.oracle,
            "single_model_envelope": {
                "aiq": aiq(single_points, self.c_min, self.c_max),
                "apgr": apgr(single_points, self.point(self.cheapest),
                             self.point(self.best_single))},
            "single_models": {n: s for n, s in zip(names, self.single)},
        }


def best_single(scores: np.ndarray, prices: np.ndarray) -> int:
    """The candidate with the highest mean score over the rows of `scores` ([N, K]); ties
    to the cheaper, then the lower index."""
    means = scores.mean(axis=0)
    return min(range(len(prices)), key=lambda i: (-means[i], prices[i], i))


def baselines(train: RoutingTable, heldout: RoutingTable) -> Baselines:
    prices = train.prices
    k = len(train.candidates)
    means = train.scores.mean(axis=0)
    best = best_single(train.scores, prices)
    cheapest = min(range(k), key=lambda i: (prices[i], -means[i], i))
    costs = query_costs(heldout.queries, heldout.candidates)
    n = len(heldout.queries)
    single = [at_choice(np.full(n, i), heldout.scores, costs) for i in range(k)]
    y = heldout.scores
    random = averages(random_per_query(y, costs))
    oracle = at_choice(pick(y, prices), y, costs)
    return Baselines(train.candidates, single, best, cheapest, random, oracle)


def evaluate(router_scores: np.ndarray, heldout: RoutingTable, base: Baselines) -> dict:
    """The held-out metrics of one router's scores ([N, K], NaN = unscored)."""
    prices = heldout.prices
    costs = query_costs(heldout.queries, heldout.candidates)
    at_zero = at_choice(pick(router_scores, prices), heldout.scores, costs)
    points = curve(router_scores, heldout.scores, costs, prices)
    xy = [(p["cost_per_query"], p["accuracy"]) for p in points]
    best_cost, best_quality = base.point(base.best_single)
    matching = [c for c, q in xy if q >= best_quality]
    return {
        **at_zero,
        "n_heldout": len(heldout.queries),
        "cost_to_match_best_single": min(matching) / best_cost if matching else None,
        "aiq": aiq(xy, base.c_min, base.c_max),
        "apgr": apgr(xy, base.point(base.cheapest), base.point(base.best_single)),
        "curve": points,
    }
