"""A faster ``transform`` for a fitted scikit-learn word n-gram ``TfidfVectorizer``.

scikit-learn fits the vocabulary and idf (nothing here changes them or what is saved); only
prediction goes through :class:`WordNgramTransform`, which returns the same matrix.
``TfidfVectorizer.transform`` runs its regex on each text, builds every n-gram as a Python
string (``" ".join``) and looks each one up in a dict from a Python loop: on debtags' package
descriptions that is ~0.17 ms per text, a third of what the multi-label student spent per row,
all of it holding the GIL. Here the whole batch is one array of code points: a token is a
maximal run of ≥ 2 characters that ``re`` itself counts as ``\\w`` (:func:`code_point_table`),
so the tokens are exactly ``findall``'s; each gets a 64-bit hash from one prefix sum
(:func:`_tokens`) and, through the sorted hashes of the vocabulary's tokens, an integer id. An
n-gram is then the integer ``id₁·T^(n−1) + … + idₙ`` (``T`` the number of distinct vocabulary
tokens), looked up in the sorted keys of the vocabulary's n-grams with ``searchsorted``. The
only approximation is a 64-bit token hash: a text token taken for a vocabulary token it is not
has odds of ~10⁻¹⁴ per token (the vocabulary's own hashes are checked distinct).
Counts, ``(1 + log tf)·idf`` and the L2 norm are numpy (:func:`weigh_counts`).

Only the configuration downsize fits is accelerated (word analyzer, default token pattern,
no stop words, accents or custom callables, ``T^n < 2^62``); :meth:`WordNgramTransform.supports`
says when, and any other vectoriser keeps its own ``transform``.

The module also holds the kernels both n-gram featurisers share (:mod:`.charngrams` imports
them): :func:`count_matrix`, :func:`weigh_counts`, :func:`mix64` and :func:`code_point_table`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["WordNgramTransform", "code_point_table", "count_matrix", "items_left", "mix64", "weigh_counts"]

_DEFAULT_PATTERN = r"(?u)\b\w\w+\b"


def count_matrix(docs: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR counts of the ``(doc, column)`` occurrences, indices sorted within each row; a
    negative column is no occurrence. ``docs`` broadcasts against ``cols`` (a row of text
    indices against a grid of columns, one row per n-gram size).

    One sort of the flattened ``doc·width + column`` keys (uint32 when they fit, as a block of
    ~768 rows of a vocabulary under 5 million columns does; absent ones get a key past every real one), then the runs
    of equal keys are the counts and a binary search of each row's first key gives ``indptr``.
    On debtags' character n-grams that is 3–4x faster than ``coo_matrix(...).tocsr()``, which
    sorts row by row to add up the repeats."""
    n_docs, width = shape
    end = n_docs * width
    dtype = np.uint32 if end < 2**32 - 1 else np.int64
    keys = np.asarray(docs).astype(dtype) * dtype(width) + np.maximum(cols, 0).astype(dtype)
    keys = np.where(np.asarray(cols) >= 0, keys, dtype(end)).ravel()
    keys.sort()
    keys = keys[: np.searchsorted(keys, dtype(end))]
    if len(keys) == 0:
        return sp.csr_matrix(shape, dtype=np.float64)
    first = np.empty(len(keys), dtype=bool)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.diff(starts, append=len(keys)).astype(np.float64)
    unique = keys[starts]
    row_starts = np.arange(n_docs + 1, dtype=np.int64) * width
    indptr = np.searchsorted(unique, row_starts.astype(dtype))
    columns = (unique - np.repeat(row_starts[:-1].astype(dtype), np.diff(indptr))).astype(np.int32)
    return sp.csr_matrix((counts, columns, indptr.astype(np.int64)), shape=shape)


def weigh_counts(m: sp.csr_matrix, idf: np.ndarray | None, *, sublinear: bool = True,
                 normalise: bool = True) -> sp.csr_matrix:
    """In place: ``tf`` (or ``1 + log tf``) × ``idf``, rows L2-normalised, as scikit-learn's
    ``TfidfTransformer`` does."""
    if sublinear:
        m.data = 1.0 + np.log(m.data)
    if idf is not None:
        m.data *= idf[m.indices]
    if normalise:
        rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        norms = np.sqrt(np.bincount(rows, weights=m.data * m.data, minlength=m.shape[0]))
        m.data /= np.where(norms > 0, norms, 1.0)[rows]
    return m


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the polynomial hash over all 64 bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def items_left(doc: np.ndarray, n_docs: int) -> np.ndarray:
    """For each item of texts laid one after another (``doc``: its text's index, in order),
    how many items from it to its text's end, itself included: an n-gram starting there stays
    inside the text iff ``n ≤`` that."""
    lengths = np.bincount(doc, minlength=n_docs)
    return np.repeat(np.cumsum(lengths), lengths) - np.arange(len(doc), dtype=np.int64)


def _find(sorted_keys: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(found, at)``: whether each of ``q`` is in ``sorted_keys``, and where."""
    if len(sorted_keys) == 0:
        return np.zeros(len(q), dtype=bool), np.zeros(len(q), dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, q), len(sorted_keys) - 1)
    return sorted_keys[at] == q, at


_B = 0x100000001B3  # odd, so invertible modulo 2^64
_B_INV = pow(_B, -1, 2**64)
_tables: dict[str, np.ndarray] = {}


def code_point_table(char_class: str) -> np.ndarray:
    """Which code points a one-character ``re`` class (``r"\\w"``, ``r"\\s"``) matches in a str
    pattern, read off ``re`` itself once per process, so numpy finds exactly what ``re`` would."""
    table = _tables.get(char_class)
    if table is None:
        every = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
        table = np.zeros(0x110000, dtype=bool)
        for m in re.finditer(char_class + "+", every):
            table[m.start() : m.end()] = True
        _tables[char_class] = table
    return table


def _tokens(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(text index, 64-bit hash)`` of every token ``(?u)\\b\\w\\w+\\b`` of ``texts``, in order.

    A token is a maximal run of ≥ 2 word characters, so the texts are joined with a space
    (no run crosses from one into the next), turned into code points (UTF-32) and the runs
    found with numpy. A run's hash is the polynomial ``Σ c_i·B^(e−1−i)`` modulo 2^64, read
    off one prefix sum as ``(S_e − S_s)·B^(e−1)`` with ``S_j = Σ_{i<j} c_i·B^(−i)`` (``B`` is
    odd, so ``B^(−1)`` exists modulo 2^64), then mixed with the length (splitmix64)."""
    codes = np.frombuffer(" ".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    word = code_point_table(r"\w")[codes]
    edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    keep = ends - starts >= 2
    starts, ends = starts[keep], ends[keep]
    text_ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1)
    doc = np.searchsorted(text_ends, starts, side="right")
    n = len(codes)
    with np.errstate(over="ignore"):
        inv_pow = np.full(n, _B_INV, dtype=np.uint64)
        inv_pow[0] = 1
        np.cumprod(inv_pow, out=inv_pow)
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(codes * inv_pow, out=prefix[1:])
        del inv_pow
        last = ends - 1
        pw = np.full(max(int(last.max(initial=0)) + 1, 1), _B, dtype=np.uint64)
        pw[0] = 1
        np.cumprod(pw, out=pw)
        h = (prefix[ends] - prefix[starts]) * pw[last]
        h = mix64(h ^ (ends - starts).astype(np.uint64))
    return doc, h


class WordNgramTransform:
    """``transform`` of a fitted ``TfidfVectorizer`` (see the module docstring), built from its
    ``vocabulary_`` and ``idf_``; ``transform(X)`` equals ``vectorizer.transform(X)``."""

    def __init__(self, vectorizer: Any) -> None:
        v = vectorizer
        if not self.supports(v):
            raise ValueError("WordNgramTransform reproduces only a fitted word TfidfVectorizer with the default "
                             "token pattern and no stop words, accents, binary tf or custom callables")
        self.lowercase = bool(v.lowercase)
        self.min_n, self.max_n = v.ngram_range
        self.width = len(v.vocabulary_)
        self.idf = np.asarray(v.idf_, dtype=np.float64) if v.use_idf else None
        self.sublinear, self.normalise, self.dtype = bool(v.sublinear_tf), v.norm == "l2", v.dtype
        split = {col: term.split(" ") for term, col in v.vocabulary_.items()}
        tokens: dict[str, int] = {}
        for parts in split.values():
            if not self.min_n <= len(parts) <= self.max_n:
                raise ValueError(f"vocabulary term {' '.join(parts)!r} is not a {v.ngram_range} n-gram")
            for tok in parts:
                tokens.setdefault(tok, len(tokens))
        self.base = max(len(tokens), 1)
        _, hashes = _tokens(list(tokens))
        order = np.argsort(hashes)
        self._hashes, self._ids = hashes[order], order.astype(np.int64)
        if len(hashes) != len(tokens) or np.any(self._hashes[1:] == self._hashes[:-1]):
            raise ValueError("the vocabulary's tokens do not re-tokenise one by one into distinct hashes")
        if float(self.base) ** self.max_n >= 2.0**62:
            raise ValueError(f"{self.base} tokens to the power {self.max_n} overflow a 64-bit n-gram key")
        by_n: dict[int, tuple[list[int], list[int]]] = {}
        for col, parts in split.items():
            key = 0
            for tok in parts:
                key = key * self.base + tokens[tok]
            keys, cols = by_n.setdefault(len(parts), ([], []))
            keys.append(key)
            cols.append(col)
        self.keys: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for n, (keys, cols) in by_n.items():
            karr, carr = np.asarray(keys, dtype=np.int64), np.asarray(cols, dtype=np.int64)
            order = np.argsort(karr)
            self.keys[n] = (karr[order], carr[order])

    @classmethod
    def of(cls, vectorizer: Any) -> WordNgramTransform | None:
        """The accelerated transform of ``vectorizer``, or ``None`` when it is not one this reproduces."""
        try:
            return cls(vectorizer)
        except ValueError:
            return None

    @staticmethod
    def supports(v: Any) -> bool:
        """Whether ``v`` is a fitted ``TfidfVectorizer`` configured as this class reproduces."""
        try:
            lo, hi = v.ngram_range
            return bool(v.analyzer == "word" and v.tokenizer is None and v.preprocessor is None
                        and v.stop_words is None and v.strip_accents is None and not v.binary
                        and v.input == "content" and v.norm in ("l2", None) and v.token_pattern == _DEFAULT_PATTERN
                        and 1 <= lo <= hi and hasattr(v, "vocabulary_") and (not v.use_idf or hasattr(v, "idf_")))
        except AttributeError:
            return False

    def transform(self, X: Sequence[str]) -> sp.csr_matrix:
        n_docs = len(X)
        doc, hashes = _tokens([x.lower() for x in X] if self.lowercase else X)
        total = len(hashes)
        ids = np.full(total, -1, dtype=np.int64)
        found, at = _find(self._hashes, hashes)
        ids[found] = self._ids[at[found]]
        left = items_left(doc, n_docs)
        docs, cols = [], []
        key = np.zeros(total, dtype=np.int64)
        known = np.ones(total, dtype=bool)
        for k in range(self.max_n):
            n = k + 1
            count = total - k
            if count <= 0:
                break
            key = key[:count] * self.base + np.maximum(ids[k : k + count], 0)
            known = known[:count] & (ids[k : k + count] >= 0)
            if n < self.min_n or n not in self.keys:
                continue
            ok = known & (left[:count] >= n)
            vocab_keys, vocab_cols = self.keys[n]
            hit, at = _find(vocab_keys, key[ok])
            docs.append(doc[:count][ok][hit])
            cols.append(vocab_cols[at[hit]])
        if docs:
            m = count_matrix(np.concatenate(docs), np.concatenate(cols), (n_docs, self.width))
        else:
            m = sp.csr_matrix((n_docs, self.width), dtype=np.float64)
        m = weigh_counts(m, self.idf, sublinear=self.sublinear, normalise=self.normalise)
        return m.astype(self.dtype, copy=False)
