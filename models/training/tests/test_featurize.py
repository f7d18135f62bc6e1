"""The hashed n-gram featurizer against an independent, straightforward computation of
ARTIFACTS.md's definition, and against values computed once by hand."""

import math

import numpy as np

from routeiq_training.featurize import fnv1a64, hashed_ngram, ngram_features


def fnv_reference(data: bytes) -> int:
    h = 14695981039346656037
    for b in data:
        h ^= b
        h = (h * 1099511628211) % 2 ** 64
    return h


def vector_reference(features: list[bytes], dim: int) -> np.ndarray:
    counts = [0] * dim
    for f in features:
        h = fnv_reference(f)
        counts[h % dim] += 1 if h < 2 ** 63 else -1
    norm = math.sqrt(sum(c * c for c in counts))
    return np.array([c / norm for c in counts], dtype=np.float32)


def test_fnv1a_64_published_vectors():
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


def test_one_word_query_by_hand():
    # "Hi" -> w:hi, c:^hi, c:hi$, n:1 (one word: bit length 1)
    assert ngram_features("Hi") == [b"w:hi", b"c:^hi", b"c:hi$", b"n:1"]
    v = hashed_ngram("Hi", 1024)
    expected = {823: 0.5, 229: -0.5, 653: -0.5, 448: 0.5}  # bucket: sign / sqrt(4)
    assert {int(i): float(v[i]) for i in np.flatnonzero(v)} == expected
    for feature, bucket in zip(ngram_features("Hi"), (823, 229, 653, 448)):
        assert fnv_reference(feature) % 1024 == bucket
    assert v.dtype == np.float32


def test_two_words_have_a_bigram_and_word_count_feature_2():
    features = ngram_features("Hi there")
    assert features == [b"w:hi", b"w:there", b"b:hi there", b"c:^hi", b"c:hi$", b"c:^th",
                        b"c:the", b"c:her", b"c:ere", b"c:re$", b"n:2"]
    v = hashed_ngram("Hi there", 1024)
    assert np.array_equal(v, vector_reference(features, 1024))
    assert v[510] == np.float32(1 / math.sqrt(11)) and v[31] == np.float32(-1 / math.sqrt(11))


def test_empty_query_is_only_the_word_count_feature():
    assert ngram_features("") == [b"n:0"]
    v = hashed_ngram("", 1024)
    assert v[883] == 1.0 and np.count_nonzero(v) == 1


def test_word_count_bit_length():
    assert ngram_features("a b c")[-1] == b"n:2"
    assert ngram_features("a b c d")[-1] == b"n:3"
    assert ngram_features("?!")[-1] == b"n:0"


def test_only_ascii_is_lower_cased_and_non_ascii_bytes_are_word_bytes():
    assert np.array_equal(hashed_ngram("HeLLo WORLD", 64), hashed_ngram("hello world", 64))
    assert ngram_features("É")[0] == b"w:" + "É".encode()  # not folded to é
    assert ngram_features("café-au lait")[:3] == [b"w:caf\xc3\xa9", b"w:au", b"w:lait"]


def test_only_the_first_8192_bytes_count_even_inside_a_character():
    long = "x" + "日本語 " * 1000
    raw = long.encode()[:8192]
    assert raw[-1:] == "日".encode()[:1]
    assert np.array_equal(hashed_ngram(long, 256), hashed_ngram(long + " more words", 256))
    words = raw.split(b" ")
    assert ngram_features(long)[len(words) - 1] == b"w:" + words[-1]


def test_random_texts_match_the_reference():
    rng = np.random.default_rng(0)
    alphabet = list("abcXYZ019 .,!é日🚀\n")
    for _ in range(50):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 60))))
        assert np.array_equal(hashed_ngram(text, 128),
                              vector_reference(ngram_features(text), 128)), text
