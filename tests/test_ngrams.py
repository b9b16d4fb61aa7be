"""The n-gram kernels under the TF-IDF features: the word transform, counting, blocks in threads."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from downsize.students import _threads
from downsize.students._threads import map_blocks
from downsize.students.wordngrams import WordNgramTransform, count_matrix

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    with gzip.open(DATA / "debtags-sample.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


PROBES = ["", "a", "!!!", "the the the the", "Über café ÉCOLE naïve straße İstanbul ΟΔΥΣΣΕΥΣ",
          "x_y __init__ 3d 2026 ½ ² ٣٤ 数据库 管理", "tabs\tand\nnew  lines", "unseen-words-only qwxz",
          "   \t\n ", "x\u2003\u2003y \u00a0lead trail\u3000", "\ud800 lone surrogate", "😀 emoji  x",
          "a\x00b \x1c\x1d\x1e\x1f separators", "e\u0301 combining"]


@pytest.mark.parametrize("params", [
    {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 2},
    {"ngram_range": (1, 3), "sublinear_tf": False, "min_df": 1},
    {"ngram_range": (2, 2), "sublinear_tf": True, "min_df": 2, "norm": None},
    {"ngram_range": (1, 1), "lowercase": False, "use_idf": False, "min_df": 1},
    {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 2, "max_features": 500, "dtype": np.float32},
])
def test_word_transform_equals_scikit_learns(texts, params) -> None:
    """Same matrix as ``TfidfVectorizer.transform``: values, columns and row order, on real
    package descriptions and on texts with accents, scripts, digits, repeats and nothing known."""
    vec = TfidfVectorizer(**params).fit(texts[:300])
    fast = WordNgramTransform.of(vec)
    assert fast is not None
    probe = texts[300:] + PROBES + [t.upper() for t in texts[300:340]]
    ref, ours = vec.transform(probe), fast.transform(probe)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    ref.sort_indices()
    np.testing.assert_array_equal(ours.indptr, ref.indptr)
    np.testing.assert_array_equal(ours.indices, ref.indices)
    np.testing.assert_allclose(ours.data, ref.data, rtol=1e-6 if params.get("dtype") else 1e-12)


@pytest.mark.parametrize("max_chars", [300, None, 3])
def test_char_ngrams_prepare_texts_as_the_regex_does(texts, max_chars) -> None:
    """The batch-wide numpy preparation equals ``" " + re.sub(r"\\s+", " ", t).strip() + " "``
    on each (cut, lower-cased) text, blank and unusual whitespace included."""
    import re

    from downsize.students.charngrams import CharNgramTfidf

    probe = texts[:200] + PROBES + [" ", "a", " a "]
    codes, doc = CharNgramTfidf(max_chars=max_chars)._codes(probe)
    lengths = np.bincount(doc, minlength=len(probe))
    got = np.split(codes.astype(np.uint32), np.cumsum(lengths)[:-1])
    for t, g in zip(probe, got):
        t = t if max_chars is None else t[:max_chars]
        assert g.tobytes().decode("utf-32-le", "surrogatepass") == " " + re.sub(r"\s+", " ", t.lower()).strip() + " "
    assert CharNgramTfidf()._codes([])[0].size == 0


@pytest.mark.parametrize("params", [
    {"analyzer": "char"}, {"stop_words": "english"}, {"token_pattern": r"\S+"}, {"binary": True},
    {"preprocessor": str.strip}, {"strip_accents": "unicode"},
])
def test_word_transform_leaves_other_vectorisers_alone(texts, params) -> None:
    vec = TfidfVectorizer(**params).fit(texts[:100])
    assert WordNgramTransform.of(vec) is None
    assert WordNgramTransform.of(TfidfVectorizer()) is None  # not fitted
    with pytest.raises(ValueError, match="reproduces only"):
        WordNgramTransform(vec)


@pytest.mark.parametrize("shape", [(7, 5), (40_000, 200_000)])  # keys fit 32 bits / need 64
def test_count_matrix_adds_up_repeats_like_scipy(shape) -> None:
    rng = np.random.default_rng(0)
    n = 5_000
    docs, cols = rng.integers(0, shape[0], n), rng.integers(0, min(shape[1], 50), n)
    cols[::3] = rng.integers(0, shape[1], len(cols[::3]))
    ref = sp.coo_matrix((np.ones(n), (docs, cols)), shape=shape).tocsr()
    ref.sum_duplicates()
    ours = count_matrix(docs, cols, shape)
    np.testing.assert_array_equal(ours.indptr, ref.indptr)
    np.testing.assert_array_equal(ours.indices, ref.indices)
    np.testing.assert_array_equal(ours.data, ref.data)
    assert count_matrix(np.empty(0, int), np.empty(0, int), shape).nnz == 0


def test_map_blocks_covers_the_rows_in_order(monkeypatch) -> None:
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    assert map_blocks(lambda a, b: (a, b), 100, block_rows=10, min_rows=512) == [(0, 100)]
    blocks = map_blocks(lambda a, b: (a, b), 1000, block_rows=100, min_rows=512)
    assert len(blocks) == 10 and blocks[0][0] == 0 and blocks[-1][1] == 1000
    assert all(b[1] == c[0] for b, c in zip(blocks, blocks[1:]))
    assert len(map_blocks(lambda a, b: (a, b), 1000, block_rows=5000, min_rows=512)) == 2  # one per core
    monkeypatch.setattr(_threads, "cores", lambda: 1)
    assert map_blocks(lambda a, b: (a, b), 1000, block_rows=100, min_rows=512) == [(0, 1000)]
