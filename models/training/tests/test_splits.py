"""The evaluation splits: every fold's test and training rows partition the table, and
each split shifts what it says it shifts."""

import numpy as np
import pytest

from routeiq_training import splits
from routeiq_training.data import Candidate, RoutingTable, heldout_mask, load_table


@pytest.fixture(scope="module")
def table(fixture_paths):
    return load_table(*fixture_paths)


def _table(queries: list[str], clusters=None) -> RoutingTable:
    return RoutingTable(queries, np.zeros((len(queries), 1)), [Candidate("m", 1.0, 1.0, 1.0)],
                        "x", clusters)


@pytest.mark.parametrize("name", list(splits.SPLITS))
def test_every_fold_splits_the_rows_into_training_and_test(table, name):
    n = len(table.queries)
    for fold in splits.folds(name, table):
        assert fold.test.dtype == bool and fold.test.shape == (n,)
        train, test = table.subset(~fold.test), table.subset(fold.test)
        assert not set(train.queries) & set(test.queries)
        assert sorted(train.queries + test.queries) == sorted(table.queries)
        assert train.queries and test.queries


def test_hash_split_is_the_held_out_split(table):
    (fold,) = splits.folds("hash", table)
    np.testing.assert_array_equal(fold.test, heldout_mask(table.queries))


def test_leave_one_cluster_out_tests_each_cluster_once_and_alone(table):
    folds = splits.folds("cluster", table)
    assert len(folds) == len(np.unique(table.cluster_ids)) == 3
    # every row is tested in exactly one fold
    np.testing.assert_array_equal(sum(f.test.astype(int) for f in folds), 1)
    for fold in folds:
        held = np.unique(table.cluster_ids[fold.test])
        assert len(held) == 1
        assert held[0] not in table.cluster_ids[~fold.test]


def test_cluster_split_needs_clusters():
    with pytest.raises(ValueError, match="cluster_id"):
        splits.folds("cluster", _table(["a", "b"]))
    with pytest.raises(ValueError, match="two clusters"):
        splits.folds("cluster", _table(["a", "b"], np.array([3, 3])))


def test_length_split_tests_the_longest_fifth(table):
    (fold,) = splits.folds("length", table)
    lengths = np.array([len(q.encode("utf-8")) for q in table.queries])
    assert lengths[~fold.test].max() < lengths[fold.test].min()
    assert fold.test.sum() >= np.ceil(0.2 * len(lengths))
    # by hand: of 10 queries the 2 longest are tested
    (fold,) = splits.folds("length", _table(["x" * n for n in (1, 2, 3, 4, 5, 5, 6, 7, 8, 9)]))
    assert fold.test.tolist() == [False] * 8 + [True] * 2
    # of 5 the longest one, in UTF-8 bytes: "éé" is 4
    (fold,) = splits.folds("length", _table(["a", "ab", "abc", "é", "éé"]))
    assert fold.test.tolist() == [False, False, False, False, True]
    # the queries as long as the cut are tested too
    (fold,) = splits.folds("length", _table(["a", "b", "cc", "dd", "ee"]))
    assert fold.test.tolist() == [False, False, True, True, True]
    with pytest.raises(ValueError, match="different lengths"):
        splits.folds("length", _table(["ab", "cd"]))


def test_unknown_split_is_named():
    with pytest.raises(ValueError, match="unknown split 'time'"):
        splits.folds("time", _table(["a"]))
