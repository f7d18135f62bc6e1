"""The `structure` and `concat` featurizers against values worked out by hand from
ARTIFACTS.md's definitions."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from routeiq_training.featurize import STRUCTURE_DIM, Concat, HashedNgram, Structure, build, \
    from_manifest, structure


def test_empty_query_is_all_zeros():
    assert structure("").tolist() == [0.0] * STRUCTURE_DIM


def test_a_short_question_by_hand():
    q = "What is 2+2?"  # 12 bytes
    v = structure(q).tolist()
    n = 12
    expected = [
        math.log2(13) / 13,  # length
        math.log2(1 + 4) / 12,  # What, is, 2, 2
        0.0,  # no newline
        2 / n,  # two digits
        1 / n,  # W
        0.0,  # ASCII only
        2 / n,  # two spaces
        2 / n,  # + and ?
        1 / n,  # +
        0.0,
        1 / 4,  # one question mark
        1.0,  # ends with ?
        0.0,
        0.0,
        0.0,
        (4 + 2 + 1 + 1) / 4 / 20,
    ]
    assert v == pytest.approx(expected, abs=1e-7)


def test_options_code_and_math_markers():
    mc = "Pick one:\n(A) red\n(B) blue\nC. green\nD: plain A) B."
    assert structure(mc)[14] == pytest.approx(4 / 5)  # A, B, C, D; the trailing ones repeat
    assert structure("Plan A is fine")[14] == 0.0  # a letter, not an option
    assert structure("```py\nx = 1\n```")[12] == 1.0
    assert structure("compute $x^2$")[13] == 1.0
    assert structure("plain words only")[12:14].tolist() == [0.0, 0.0]


def test_non_ascii_share_and_full_width_question_mark():
    v = structure("机器学习是什么？")
    assert v[5] == 1.0  # every byte is non-ASCII
    assert v[11] == 1.0  # ends with U+FF1F


def test_every_value_is_in_unit_range_and_only_8192_bytes_count():
    long = "Why? " * 5000
    v = structure(long)
    assert ((v >= 0) & (v <= 1)).all()
    assert structure(long).tolist() == structure(long[:8192]).tolist()


def test_concat_is_its_parts_side_by_side_normalised():
    parts = [HashedNgram(32), Structure()]
    f = Concat(parts)
    q = ["What is 2+2?", ""]
    got = f(q)
    assert got.shape == (2, 48)
    whole = np.concatenate([HashedNgram(32)(q), Structure()(q)], axis=1).astype(np.float64)
    assert got[0] == pytest.approx(whole[0] / np.linalg.norm(whole[0]), abs=1e-7)
    assert got[1][32:].tolist() == [0.0] * 16  # "" has only the hashed word-count feature
    for row in got:
        assert math.isclose(float(np.linalg.norm(row)), 1.0, rel_tol=1e-6)


def test_build_names_and_manifests_round_trip():
    f = build("hashed-ngram+structure", 64)
    assert f.manifest() == {"name": "concat", "version": 1, "dim": 80, "parts": [
        {"name": "hashed-ngram", "version": 1, "dim": 64},
        {"name": "structure", "version": 1, "dim": 16}]}
    again = from_manifest(f.manifest(), {})
    assert again(["hi"]).tolist() == f(["hi"]).tolist()
    assert build("structure", 64).manifest() == {"name": "structure", "version": 1, "dim": 16}
    for bad in ("hashed-ngram+hashed-ngram", "ngrams", "hashed-ngram+"):
        with pytest.raises(ValueError):
            build(bad, 64)


FIXTURE = Path(__file__).resolve().parents[3] / "tests/fixtures/llmrouter/structure_expected.json"


def test_the_committed_vectors_are_this_code_s():
    """The data plane's unit test compares its own `structure` with these vectors, value
    for value; they must be what this code computes (regenerate the file when the
    definition changes: a version bump)."""
    rows = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert len(rows) >= 40
    for row in rows:
        assert structure(row["query"]).tolist() == row["structure"], row["query"][:40]
