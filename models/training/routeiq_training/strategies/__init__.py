"""The routing strategies: one module each, all with the same two functions.

- `train(TrainSet) -> Trained`: fits the strategy and returns what its artifact holds.
- `scorer(params, files, manifest) -> score(features) -> [N, K]`: scores from the
  artifact's contents only (`params.json` parsed, other files as bytes), NaN for an
  unscored candidate. The pipeline's own evaluation, `eval` and `parity` all use it.
"""

from . import elo, graph, hybrid, knn, mf, mlp, routerdc, size, svm

STRATEGIES = {
    "knn": knn, "svm": svm, "mlp": mlp, "mf": mf, "graph": graph, "routerdc": routerdc,
    "elo": elo, "hybrid": hybrid, "smallest": size, "largest": size,
}
QUERY_INDEPENDENT = {"elo", "smallest", "largest"}
# Strategies fitted to the routing data (smallest/largest only read the sizes).
LEARNED = ("knn", "svm", "mlp", "mf", "graph", "routerdc", "hybrid", "elo")


def module(strategy: str):
    try:
        return STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of "
                         f"{', '.join(STRATEGIES)}") from None
