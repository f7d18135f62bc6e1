"""Evaluation splits: which queries a router is tested on, the rest being what it may learn
from. `train` and `eval` use the hash split only; `robust-eval` adds two that shift the
test queries away from the training ones, because a router that beats the best single
model on queries like its training queries may not on new kinds of query.

Each split is a list of folds; a fold's test rows and training rows (all the others) are
disjoint and together cover the table. `DEFINITIONS` is the text the reports give.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .data import RoutingTable, bucket_mask, heldout_mask

LENGTH_TEST_SHARE = 0.2

DEFINITIONS = f"""\
- **hash**: the held-out split of `train` and `eval`: a query is tested when
  `int(sha256(query UTF-8).hexdigest()[:8], 16) % 5 == 0` (about 20 %). Training and test
  queries come from the same distribution.
- **cluster** (leave one cluster out): one fold per value of the data's `cluster_id`,
  testing the queries of that cluster after training on the other clusters. The test
  queries are of a kind the router never saw.
- **length**: the longest queries are tested and the shorter ones train: the test queries
  are the longest {LENGTH_TEST_SHARE * 100:g} % by UTF-8 length (rounded up), with every query as long
  as the shortest of them (ties at the cut). Every training query is shorter than every
  test query.
"""


@dataclass(frozen=True)
class Fold:
    name: str
    test: np.ndarray  # bool [n]: the rows tested; the other rows are for training


def hash_folds(table: RoutingTable) -> list[Fold]:
    return [Fold("held out", heldout_mask(table.queries))]


def cluster_folds(table: RoutingTable) -> list[Fold]:
    if table.cluster_ids is None:
        raise ValueError("the cluster split needs the routing table's cluster_id in every "
                         "record (leave it out with --splits)")
    clusters = np.unique(table.cluster_ids)
    if len(clusters) < 2:
        raise ValueError("the cluster split needs at least two clusters in the data")
    return [Fold(f"cluster {c}", table.cluster_ids == c) for c in clusters]


def length_folds(table: RoutingTable, share: float = LENGTH_TEST_SHARE) -> list[Fold]:
    lengths = np.array([len(q.encode("utf-8")) for q in table.queries])
    cut = int(np.sort(lengths)[::-1][math.ceil(share * len(lengths)) - 1])
    test = lengths >= cut
    if test.all():
        raise ValueError("the length split needs queries of different lengths")
    return [Fold(f"≥ {cut} bytes", test)]


SPLITS: dict[str, Callable[[RoutingTable], list[Fold]]] = {
    "hash": hash_folds, "cluster": cluster_folds, "length": length_folds}


def folds(name: str, table: RoutingTable) -> list[Fold]:
    """The split's folds of `table`."""
    try:
        make = SPLITS[name]
    except KeyError:
        raise ValueError(f"unknown split {name!r}: expected one of {', '.join(SPLITS)}") \
            from None
    return make(table)


VALIDATION_BUCKET = 2  # of `data.split_bucket`: 0 is the hash split's test rows, 1 the
# rows every strategy tunes its hyperparameters on (`data.inner_validation_mask`)


def validation_folds(name: str, table: RoutingTable) -> list[Fold]:
    """The split's folds made again within `table`, an outer fold's training rows: the
    validation folds that choose between routers before the outer fold's test rows are
    scored (`selection.py`). The cluster and length splits are the same rule applied to these
    rows (leave out each of their clusters; their longest rows); the hash split, whose
    test bucket these rows do not hold, validates on hash bucket 2."""
    if name == "hash":
        return [Fold(f"bucket {VALIDATION_BUCKET}", bucket_mask(table.queries,
                                                                VALIDATION_BUCKET))]
    return folds(name, table)
