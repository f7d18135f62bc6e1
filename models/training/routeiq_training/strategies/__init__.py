"""The routing strategies: one module each, all with the same two functions.

- `train(TrainSet) -> Trained`: fits the strategy and returns what its artifact holds.
- `scorer(params, files, manifest) -> score(features) -> [N, K]`: scores from the
  artifact's contents only (`params.json` parsed, other files as bytes), NaN for an
  unscored candidate. The pipeline's own evaluation, `eval` and `parity` all use it.
  The personalised strategies' `score(features, users=None)` also takes each row's end
  user (a list aligned with the rows, `None` for a row without one); `artifact.Router`
  passes users to those only.
"""

from . import elo, graph, hybrid, knn, mf, mlp, personal, routerdc, size, svm

STRATEGIES = {
    "knn": knn, "svm": svm, "mlp": mlp, "mf": mf, "graph": graph, "routerdc": routerdc,
    "elo": elo, "hybrid": hybrid, "smallest": size, "largest": size,
    "personalized": personal, "gmt": personal,
}
QUERY_INDEPENDENT = {"elo", "smallest", "largest"}
# Strategies whose scores depend on the request's end user.
PERSONALISED = {"personalized", "gmt"}
# What `train` fits without --strategies: the personalised strategies only add to the
# base model with users in the data (or --simulate-users), so they are asked for by name.
DEFAULT = tuple(s for s in STRATEGIES if s not in PERSONALISED)
# Strategies fitted to the routing data (smallest/largest only read the sizes).
LEARNED = ("knn", "svm", "mlp", "mf", "graph", "routerdc", "hybrid", "elo", "personalized",
           "gmt")


def module(strategy: str):
    try:
        return STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of "
                         f"{', '.join(STRATEGIES)}") from None
