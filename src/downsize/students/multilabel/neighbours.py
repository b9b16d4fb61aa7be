"""How the decoded set agrees with the answers of the most similar training texts.

Texts close to a training text tend to get its answer (a package and its ``-dev`` twin, a ticket
and its follow-up), and texts close to none are where the heads guess. So the stacked record
confidence (:mod:`.decode`) also sees, for the ``k`` training texts most similar to the text:
the largest similarity, and how the decoded set agrees with their sets (F1 and exact match,
similarity-weighted and for the nearest one). Similarity is the cosine of word TF-IDF vectors
restricted to the rarer terms (document frequency ≤ ``max_df``: they carry the similarity and
keep the sparse product small); on training rows the row itself is left out, so the descriptors
mean the same at fit and at predict time. scikit-learn's ``NearestNeighbors`` would compute the
same cosine neighbours, but not on a sparse matrix in chunks with the self-match excluded, and
it would be saved as a pickle-only object; the index here is one CSR matrix and a vocabulary.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["NEIGHBOUR_DESCRIPTORS", "Neighbours"]

NEIGHBOUR_DESCRIPTORS = ("nn_max_sim", "nn_weighted_f1", "nn_weighted_exact", "nn1_f1", "nn1_exact")
_CHUNK = 512


class Neighbours:
    """A cosine index of the training texts and their label sets."""

    def __init__(self, k: int = 10, max_df: float = 0.05) -> None:
        self.k, self.max_df = k, max_df
        self.vectorizer: Any = None
        self.A: Any = None  # (n_train, n_terms) CSR, rows unit-norm
        self.Y: np.ndarray | None = None  # (n_train, n_labels) bool
        self._AT: Any = None  # A transposed, CSR: made by the first query
        self._link: tuple[np.ndarray, np.ndarray] | None = None  # see link()

    def fit(self, X: list[str], Y: np.ndarray) -> Neighbours:
        from sklearn.feature_extraction.text import TfidfVectorizer

        n = len(X)
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2, max_df=max(self.max_df, min(1.0, 4 / n)), dtype=np.float32)
        try:
            A = vec.fit_transform(X)
        except ValueError:  # no term in 2 texts and few enough: no neighbours (descriptors stay 0)
            vec, A = None, None
        self.vectorizer, self.A, self.Y = vec, A, np.asarray(Y, dtype=bool)
        self._AT = self._link = None
        return self

    def _top(self, G: np.ndarray, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if exclude is not None:
            G[np.arange(len(G)), exclude] = -1.0
        k = min(self.k, G.shape[1])
        idx = np.argpartition(-G, k - 1, axis=1)[:, :k]
        sim = np.take_along_axis(G, idx, axis=1)
        order = np.argsort(-sim, axis=1)
        return np.take_along_axis(idx, order, axis=1), np.maximum(np.take_along_axis(sim, order, axis=1), 0.0)

    def link(self, terms: tuple[dict[str, int], np.ndarray] | None) -> None:
        """Let :meth:`query` build its vectors from another word TF-IDF matrix of the same texts
        (the features' ``(vocabulary, idf)``: same tokens, ``sublinear_tf``, l2 rows), instead of
        tokenising them again. Only when every index term is a column there: then the vectors are
        exactly this vectoriser's (``(1 + log tf)·idf`` rescaled term by term, rows re-normalised)."""
        self._link = None
        if terms is None or self.vectorizer is None:
            return
        vocab, idf = terms
        cols = np.fromiter((vocab.get(t, -1) for t in self.vocabulary()), dtype=np.int64)
        if len(cols) and cols.min() >= 0:
            self._link = (cols, (np.asarray(self.vectorizer.idf_) / np.asarray(idf)[cols]).astype(np.float64))

    def _from_words(self, W: Any) -> Any:
        import scipy.sparse as sp

        cols, scale = self._link
        B = (W.tocsr()[:, cols] @ sp.diags(scale)).tocsr()
        norms = np.sqrt(np.asarray(B.multiply(B).sum(1)).ravel())
        B = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ B
        return B.astype(np.float32).tocsr()

    def query(self, X: list[str] | None, *, training: bool = False, words: Any = None
              ) -> tuple[np.ndarray, np.ndarray] | None:
        """(indices, similarities) of each text's ``k`` nearest training texts, most similar first
        (``training``: ``X`` are the training texts, each one's own row excluded; ``words``: their
        word TF-IDF rows from the :meth:`link`-ed features, used instead of tokenising ``X``)."""
        if self.A is None or self.A.shape[0] < 2:
            return None
        if training:
            B = self.A
        elif words is not None and self._link is not None:
            B = self._from_words(words)
        else:
            B = self.vectorizer.transform(X)
        AT = self.prepare()
        idx, sim = [], []
        for s in range(0, B.shape[0], _CHUNK):
            G = (B[s : s + _CHUNK] @ AT).toarray()
            i, v = self._top(G, np.arange(s, s + G.shape[0]) if training else None)
            idx.append(i)
            sim.append(v)
        return np.vstack(idx), np.vstack(sim)

    def prepare(self) -> Any:
        """The index transposed (CSR), made once: by the first query, or before threads query."""
        if self._AT is None and self.A is not None:  # fit and from_bytes reset it
            self._AT = self.A.T.tocsr()
        return self._AT

    def describe(self, M: np.ndarray, found: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        """The :data:`NEIGHBOUR_DESCRIPTORS` of each decoded set ``M`` (zeros without an index)."""
        if found is None:
            return np.zeros((len(M), len(NEIGHBOUR_DESCRIPTORS)))
        idx, sim = found
        NY = self.Y[idx]  # (n, k, n_labels)
        tp = (NY & M[:, None, :]).sum(2)
        size = NY.sum(2) + M.sum(1)[:, None]
        f1 = np.where(size == 0, 1.0, 2 * tp / np.maximum(size, 1))
        exact = (NY == M[:, None, :]).all(2)
        w = sim + 1e-9
        w = w / w.sum(1, keepdims=True)
        return np.column_stack([sim[:, 0], (w * f1).sum(1), (w * exact).sum(1), f1[:, 0], exact[:, 0]])

    # -- persistence ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        if self.A is None:
            np.savez_compressed(buf, k=self.k, empty=True)
        else:
            A, Yc = self.A.tocsr(), np.flatnonzero(self.Y.ravel())
            np.savez_compressed(buf, k=self.k, empty=False, data=A.data.astype(np.float32), indices=A.indices,
                                indptr=A.indptr, shape=np.asarray(A.shape), y_flat=Yc,
                                y_shape=np.asarray(self.Y.shape), idf=self.vectorizer.idf_)
        return buf.getvalue()

    def vocabulary(self) -> list[str]:
        if self.vectorizer is None:
            return []
        voc = self.vectorizer.vocabulary_
        return sorted(voc, key=voc.__getitem__)

    @classmethod
    def from_bytes(cls, data: bytes, vocabulary: list[str]) -> Neighbours:
        import scipy.sparse as sp
        from sklearn.feature_extraction.text import TfidfVectorizer

        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            nb = cls(k=int(z["k"]))
            if bool(z["empty"]):
                return nb
            shape = tuple(int(x) for x in z["shape"])
            nb.A = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            ys = tuple(int(x) for x in z["y_shape"])
            Y = np.zeros(ys[0] * ys[1], dtype=bool)
            Y[z["y_flat"]] = True
            nb.Y = Y.reshape(ys)
            idf = z["idf"]
        if len(vocabulary) != shape[1] or len(idf) != shape[1]:
            raise ValueError(f"neighbour index of {shape[1]} terms, vocabulary of {len(vocabulary)}")
        vec = TfidfVectorizer(sublinear_tf=True, dtype=np.float32, vocabulary={t: i for i, t in enumerate(vocabulary)})
        vec.idf_ = idf
        nb.vectorizer = vec
        return nb
