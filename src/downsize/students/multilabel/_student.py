"""``MultiLabelStudent``: every label that applies, with a record confidence for each loss."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from ...errors import CorruptArtifactError, NotFittedError, StudentError
from .._threads import map_blocks
from ..artifacts import read_manifest, write_artifact
from ..base import _jsonable, check_param, check_texts, is_int, is_range
from .decode import StackedConfidence, decode, describe, row_f1, set_key, set_lookup
from .features import FEATURES
from .heads import apply_platt, fit_heads, fit_platt, out_of_fold, scores
from .neighbours import Neighbours

__all__ = ["MultiLabelStudent"]

_HEADS, _STATE = "heads.npz", "multilabel.json"
_NEIGHBOURS, _NEIGHBOUR_TERMS = "neighbours.npz", "neighbour_terms.json"
_LOSSES = ("exact", "f1")
#: Heads with at most this many weights (n_features × n_labels) are scored with a dense copy.
_DENSE_CELLS = 32_000_000
#: C of the heads when ``C=None``, per featuriser.
_DEFAULT_C = {"tfidf": 0.5, "minilm": 1.0}
#: A batch of at least ``_PARALLEL_MIN`` texts is answered in blocks of about ``_BLOCK_ROWS``,
#: one thread per core (:func:`~.._threads.map_blocks`); measured on debtags with 2 cores, 8
#: blocks of ~780 rows beat 2 or 24 (blocks that finish early leave a core idle).
_PARALLEL_MIN, _BLOCK_ROWS = 512, 768


def _check_sets(y: Any, n: int, labels: list[str] | None) -> list[tuple[str, ...]]:
    if isinstance(y, (str, bytes)):
        raise StudentError("y must be a sequence of label sets (one list of labels per text), not a string")
    sets = list(y)
    if len(sets) != n:
        raise StudentError(f"X has {n} texts but y has {len(sets)} label sets")
    known = set(labels) if labels is not None else None
    out = []
    for i, s in enumerate(sets):
        if isinstance(s, (str, bytes)) or not isinstance(s, (list, tuple, set, frozenset)):
            raise StudentError(f"y[{i}] is {type(s).__name__}, expected a list of labels")
        for lab in s:
            if not isinstance(lab, str) or not lab.strip():
                raise StudentError(f"y[{i}] holds {lab!r}; labels are non-empty strings")
            if known is not None and lab not in known:
                raise StudentError(f"y[{i}] holds {lab!r}, which is not one of the student's {len(known)} labels")
        out.append(tuple(sorted(set(s))))
    return out


class MultiLabelStudent(BaseEstimator):
    """One-vs-rest linear heads over the TF-IDF or MiniLM features, per-label Platt scaling on
    out-of-fold scores, label-set decoding and a stacked record confidence per loss.

    Parameters
    ----------
    labels : list of str, optional
        Every label the task has (the ``classes_`` order). ``None``: the labels of the training data.
    max_labels : int, optional
        At most this many labels per answer.
    features : {"tfidf", "minilm"}, default="tfidf"
        Word + character n-gram TF-IDF (as :class:`~downsize.students.TfidfStudent`) or
        all-MiniLM-L6-v2 vectors (as :class:`~downsize.students.MiniLMStudent`, ``[minilm]`` extra).
    loss : {"exact", "f1"}, default="exact"
        The decoding and confidence :meth:`predict` uses unless told otherwise.
    C : float, optional
        Inverse regularisation of the heads (``None``: 0.5 for tfidf, 1.0 for minilm).
    word_ngrams, char_ngrams, char_max_chars, min_df, max_features
        The TF-IDF features (see :class:`~downsize.students.TfidfStudent`).
    max_length, batch_size, cache_dir
        The MiniLM encoder (see :class:`~downsize.students.MiniLMStudent`; ``batch_size`` and
        ``cache_dir`` are not saved).
    calibration_cv : int, default=5
        Folds of the out-of-fold scores (Platt scaling and the stacked confidence).
    min_examples_per_label : int, default=5
        A label with fewer training examples gets no head: the student never answers it (it is
        listed in ``dropped_labels_``); at least one label must have enough.
    prune : float, default=0.01
        Head weights below this share of the head's largest are dropped (size and speed).
    random_state : int, default=0

    Attributes
    ----------
    classes_ : ndarray of str
        The labels, in ``labels`` order (sorted when learned from the data).
    dropped_labels_ : list of str
    allow_empty_ : bool
        Whether "no label" is an answer: only if some training answer was empty.
    coef_ : scipy.sparse.csr_matrix, shape (n_features, n_labels)
    intercept_, platt_ : ndarray
    confidence_ : dict
        ``{"exact": StackedConfidence, "f1": StackedConfidence}``.
    neighbours_ : Neighbours
        The training texts' cosine index and label sets (descriptors of the confidence).
    oof_exact_, oof_f1_ : float
        Exact-match rate and mean F1 of the out-of-fold answers.
    n_train_ : int

    Examples
    --------
    >>> X = [f"{a} {b} text {i}" for i in range(12) for a, b in [("red", "round"), ("red", "square"),
    ...      ("blue", "round")]]
    >>> y = [s for _ in range(12) for s in (["red", "round"], ["red", "square"], ["blue", "round"])]
    >>> st = MultiLabelStudent(min_df=1, char_ngrams=None, calibration_cv=3).fit(X, y)
    >>> st.predict(["red round"])
    [('red', 'round')]
    """

    name: ClassVar[str] = "multilabel"
    version: ClassVar[int] = 1
    _runtime_params: ClassVar[tuple[str, ...]] = ("cache_dir", "batch_size")
    _tuple_params: ClassVar[tuple[str, ...]] = ("word_ngrams", "char_ngrams")

    def __init__(self, *, labels: Sequence[str] | None = None, max_labels: int | None = None,
                 features: str = "tfidf", loss: str = "exact", C: float | None = None,
                 word_ngrams: tuple[int, int] = (1, 2), char_ngrams: tuple[int, int] | None = (2, 5),
                 char_max_chars: int | None = 300, min_df: int = 2, max_features: int | None = 200_000,
                 max_length: int = 128, batch_size: int = 32, cache_dir: str | os.PathLike[str] | None = None,
                 calibration_cv: int = 5, min_examples_per_label: int = 5, prune: float = 0.01,
                 random_state: int | None = 0) -> None:
        self.labels = labels
        self.max_labels = max_labels
        self.features = features
        self.loss = loss
        self.C = C
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.char_max_chars = char_max_chars
        self.min_df = min_df
        self.max_features = max_features
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.calibration_cv = calibration_cv
        self.min_examples_per_label = min_examples_per_label
        self.prune = prune
        self.random_state = random_state

    # -- parameters -----------------------------------------------------------------------
    def _check_params(self) -> None:
        check_param(self.features in FEATURES, "features", self.features, " or ".join(map(repr, FEATURES)))
        check_param(self.loss in _LOSSES, "loss", self.loss, "'exact' or 'f1'")
        check_param(self.max_labels is None or is_int(self.max_labels, 1), "max_labels", self.max_labels,
                    "None or a positive integer")
        check_param(self.C is None or (isinstance(self.C, (int, float)) and not isinstance(self.C, bool)
                                       and self.C > 0), "C", self.C, "None or a positive number")
        check_param(is_range(self.word_ngrams, 1), "word_ngrams", self.word_ngrams, "a (min, max) pair")
        check_param(self.char_ngrams is None or is_range(self.char_ngrams, 1), "char_ngrams", self.char_ngrams,
                    "None or a (min, max) pair")
        check_param(is_int(self.min_df, 1), "min_df", self.min_df, "a positive integer")
        check_param(is_int(self.calibration_cv, 2), "calibration_cv", self.calibration_cv, "an integer ≥ 2")
        check_param(is_int(self.min_examples_per_label, 2), "min_examples_per_label",
                    self.min_examples_per_label, "an integer ≥ 2")
        check_param(isinstance(self.prune, (int, float)) and 0 <= self.prune < 1, "prune", self.prune,
                    "a number in [0, 1)")
        if self.labels is not None:
            labs = list(self.labels)
            check_param(len(labs) >= 1 and len(set(labs)) == len(labs) and all(isinstance(x, str) for x in labs),
                        "labels", self.labels, "None or distinct label names")

    def _featuriser(self) -> Any:
        p = {k: getattr(self, k) for k in ("word_ngrams", "char_ngrams", "char_max_chars", "min_df",
                                           "max_features", "max_length", "batch_size", "cache_dir")}
        return FEATURES[self.features](p)

    # -- fit ------------------------------------------------------------------------------
    def fit(self, X: Sequence[str], y: Sequence[Sequence[str]]) -> MultiLabelStudent:
        """Fit on texts ``X`` and their label sets ``y``; returns ``self``.

        Raises
        ------
        StudentError
            Bad parameters, a label outside ``labels`` (with its row), fewer than
            ``calibration_cv`` texts, or no label with ``min_examples_per_label`` examples.
        """
        texts = check_texts(X, fit=True)
        self._check_params()
        sets = _check_sets(y, len(texts), None if self.labels is None else list(self.labels))
        labels = list(self.labels) if self.labels is not None else sorted({x for s in sets for x in s})
        if not labels:
            raise StudentError("none of the training texts has a label; a student needs examples of at least one")
        if len(texts) < 2 * self.calibration_cv:
            raise StudentError(f"{len(texts)} training texts are too few for calibration_cv={self.calibration_cv} "
                               f"folds; label at least {2 * self.calibration_cv}")
        index = {lab: j for j, lab in enumerate(labels)}
        Y = np.zeros((len(texts), len(labels)), dtype=bool)
        for i, s in enumerate(sets):
            Y[i, [index[x] for x in s]] = True
        counts = Y.sum(0)
        active = counts >= self.min_examples_per_label
        if not active.any():
            best = max(zip(counts, labels))
            raise StudentError(f"no label has min_examples_per_label={self.min_examples_per_label} examples "
                               f"(the most frequent, {best[1]!r}, has {best[0]}); label more examples")
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)
        self._dense = None
        C = float(self.C if self.C is not None else _DEFAULT_C[self.features])
        feats = self._featuriser()
        F = feats.fit_transform(texts)
        seed = self.random_state
        S = out_of_fold(F, Y, active, cv=int(self.calibration_cv), C=C, seed=seed, prune=float(self.prune))
        self.platt_ = fit_platt(S, Y, active)
        self.coef_, self.intercept_ = fit_heads(F, Y, active, C=C, seed=seed, prune=float(self.prune))
        self.features_ = feats
        self.classes_ = np.asarray(labels, dtype=object)
        self.dropped_labels_ = [lab for lab, a in zip(labels, active) if not a]
        self.allow_empty_ = bool((Y.sum(1) == 0).any())
        self.label_counts_ = counts.astype(int)
        self.set_counts_ = dict(Counter(set_key(np.flatnonzero(r)) for r in Y))
        self._sets = set_lookup(self.set_counts_, len(labels))
        self.n_train_ = len(texts)
        self.neighbours_ = Neighbours().fit(texts, Y)
        self.neighbours_.link(feats.word_terms())
        found = self.neighbours_.query(texts, training=True)
        P = apply_platt(S, self.platt_)
        self.confidence_ = {}
        for loss in _LOSSES:
            M = decode(P, loss, max_labels=self.max_labels, allow_empty=self.allow_empty_)
            target = (M == Y).all(1).astype(float) if loss == "exact" else row_f1(M, Y)
            self.confidence_[loss] = StackedConfidence.fit(self._describe(P, M, found), target)
            setattr(self, f"oof_{loss}_", float(target.mean()))
        return self

    def _describe(self, P: np.ndarray, M: np.ndarray, found: Any) -> np.ndarray:
        return np.hstack([describe(P, M, self._sets, self.label_counts_, self.n_train_),
                          self.neighbours_.describe(M, found)])

    # -- predict --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "confidence_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) or load() first")

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        """Calibrated probability of each label, shape ``(len(X), len(classes_))`` (rows need not sum to 1)."""
        self._check_fitted()
        return self._proba(check_texts(X, fit=False))

    def _proba(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, len(self.classes_)))
        return self._proba_of(self.features_.transform(texts))

    def _proba_of(self, F: Any) -> np.ndarray:
        """The calibrated label probabilities of feature rows ``F``."""
        return apply_platt(scores(F, self._weights(), self.intercept_), self.platt_)

    def _weights(self) -> Any:
        """The heads' weights for scoring: the sparse matrix is what is saved, but a product with
        a dense copy is ~3x faster (the pruned heads still keep ~20 % of the weights), so up to
        :data:`_DENSE_CELLS` weights are scored densely (memory: 4 bytes per weight)."""
        W = getattr(self, "_dense", None)
        if W is None or W.shape != self.coef_.shape:
            n_cells = self.coef_.shape[0] * self.coef_.shape[1]
            W = self.coef_.toarray() if n_cells <= _DENSE_CELLS else self.coef_
            self._dense = W
        return W

    def _loss(self, loss: str | None) -> str:
        loss = self.loss if loss is None else loss
        if loss not in _LOSSES:
            raise StudentError(f"loss must be 'exact' or 'f1', got {loss!r}")
        return loss

    def predict_with_confidence(self, X: Sequence[str], *, loss: str | None = None
                                ) -> tuple[list[tuple[str, ...]], np.ndarray]:
        """Each text's label set (sorted tuple) and its record confidence for ``loss``: the
        probability that the set is exactly right (``exact``), or its expected F1 (``f1``)."""
        loss = self._loss(loss)
        self._check_fitted()
        texts = check_texts(X, fit=False)
        if not texts:
            return [], np.empty(0)
        self._weights()
        self.features_.prepare()
        self.neighbours_.prepare()
        parts = map_blocks(lambda lo, hi: self._answer(texts[lo:hi], loss, threads=len(texts) < _PARALLEL_MIN),
                           len(texts), block_rows=_BLOCK_ROWS, min_rows=_PARALLEL_MIN)
        M, conf = np.vstack([m for m, _ in parts]), np.concatenate([c for _, c in parts])
        names = self.classes_
        return [tuple(sorted(names[m])) for m in M], conf

    def _answer(self, texts: list[str], loss: str, *, threads: bool) -> tuple[np.ndarray, np.ndarray]:
        """Decoded sets (boolean mask) and record confidences of one block of texts."""
        F, words = self.features_.transform_parts(texts, threads=threads)
        P = self._proba_of(F)
        M = decode(P, loss, max_labels=self.max_labels, allow_empty=self.allow_empty_)
        return M, self.confidence_[loss].predict(self._describe(P, M, self.neighbours_.query(texts, words=words)))

    def predict(self, X: Sequence[str], *, loss: str | None = None) -> list[tuple[str, ...]]:
        """Each text's label set (sorted tuple of label names)."""
        return self.predict_with_confidence(X, loss=loss)[0]

    def confidence(self, X: Sequence[str], *, loss: str | None = None) -> np.ndarray:
        """The record confidence the cascade thresholds (see :meth:`predict_with_confidence`)."""
        return self.predict_with_confidence(X, loss=loss)[1]

    # -- persistence ----------------------------------------------------------------------
    def _files(self) -> dict[str, bytes]:
        W = self.coef_.tocsr()
        buf = io.BytesIO()
        np.savez_compressed(buf, data=W.data.astype(np.float32), indices=W.indices.astype(np.int32),
                            indptr=W.indptr.astype(np.int64), shape=np.asarray(W.shape, dtype=np.int64),
                            intercept=self.intercept_, platt=self.platt_, label_counts=self.label_counts_)
        state = {"confidence": {k: v.to_json() for k, v in self.confidence_.items()},
                 "set_counts": self.set_counts_, "allow_empty": self.allow_empty_,
                 "dropped_labels": self.dropped_labels_, "oof_exact": self.oof_exact_, "oof_f1": self.oof_f1_}
        terms = json.dumps(self.neighbours_.vocabulary(), ensure_ascii=False, separators=(",", ":"))
        return {**self.features_.files(), _HEADS: buf.getvalue(),
                _STATE: json.dumps(state, ensure_ascii=False, sort_keys=True).encode("utf-8"),
                _NEIGHBOURS: self.neighbours_.to_bytes(), _NEIGHBOUR_TERMS: terms.encode("utf-8")}

    def size_bytes(self) -> int:
        """Bytes the saved student takes on disk (serialises it if it was not saved yet)."""
        if hasattr(self, "size_bytes_"):
            return int(self.size_bytes_)
        self._check_fitted()
        return sum(len(b) for b in self._files().values())

    def _saved_params(self) -> dict[str, Any]:
        params = self.get_params()
        for p in self._runtime_params:
            params.pop(p, None)
        return _jsonable(params)

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Save to ``directory`` (skops + npz + JSON + ``manifest.json``, no pickle); returns it."""
        self._check_fitted()
        path = write_artifact(directory, self._files(), name=self.name, version=self.version,
                              classes=[str(c) for c in self.classes_], params=self._saved_params(),
                              extra={"n_train": int(self.n_train_), **self.features_.manifest()},
                              overwrite=overwrite)
        self.size_bytes_ = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **runtime: Any) -> MultiLabelStudent:
        """Load a student saved by :meth:`save`, verifying every file's sha256 first.

        Raises
        ------
        StudentError
            No manifest, a student of another kind, a newer format, a missing extra.
        CorruptArtifactError
            A file that differs from the manifest, or saved state that does not fit.
        """
        directory = Path(directory)
        manifest, blobs = read_manifest(directory)
        if manifest["name"] != cls.name:
            raise StudentError(f"{directory}: holds a {manifest['name']!r} student, not {cls.name!r}; "
                               "use load_student()")
        if not isinstance(manifest["version"], int) or manifest["version"] > cls.version:
            raise StudentError(f"{directory}: saved in student format {manifest['version']!r}, but this downsize "
                               f"reads format ≤ {cls.version}; upgrade downsize")
        params = dict(manifest["params"])
        for p in cls._tuple_params:
            if isinstance(params.get(p), list):
                params[p] = tuple(params[p])
        try:
            st = cls(**params, **{k: v for k, v in runtime.items() if k in cls._runtime_params})
        except TypeError as exc:
            raise CorruptArtifactError(f"{directory / 'manifest.json'}: parameters do not fit {cls.__name__} "
                                       f"({exc})") from None
        feats = st._featuriser()
        feats.restore(blobs, manifest, directory)
        for f in (_HEADS, _STATE, _NEIGHBOURS, _NEIGHBOUR_TERMS):
            if f not in blobs:
                raise CorruptArtifactError(f"{directory / 'manifest.json'}: does not list {f}")
        try:
            import scipy.sparse as sp

            with np.load(io.BytesIO(blobs[_HEADS]), allow_pickle=False) as z:
                shape = tuple(int(x) for x in z["shape"])
                st.coef_ = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
                st.intercept_, st.platt_ = z["intercept"].astype(float), z["platt"].astype(float)
                st.label_counts_ = z["label_counts"].astype(int)
            state = json.loads(blobs[_STATE].decode("utf-8"))
            st.confidence_ = {k: StackedConfidence.from_json(state["confidence"][k]) for k in _LOSSES}
            st.set_counts_ = {str(k): int(v) for k, v in state["set_counts"].items()}
            st._sets = set_lookup(st.set_counts_, len(manifest["classes"]))
            st.allow_empty_ = bool(state["allow_empty"])
            st.dropped_labels_ = list(state["dropped_labels"])
            st.oof_exact_, st.oof_f1_ = float(state["oof_exact"]), float(state["oof_f1"])
            st.neighbours_ = Neighbours.from_bytes(blobs[_NEIGHBOURS], json.loads(blobs[_NEIGHBOUR_TERMS]))
            st.neighbours_.link(feats.word_terms())
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptArtifactError(f"{directory}: the saved multi-label state is incomplete ({exc!r})") from None
        n_labels = len(manifest["classes"])
        if st.coef_.shape != (feats.n_features, n_labels) or st.platt_.shape != (n_labels, 2):
            raise CorruptArtifactError(f"{directory / _HEADS}: heads of shape {st.coef_.shape} do not fit "
                                       f"{feats.n_features} features and {n_labels} labels")
        st.features_ = feats
        st.classes_ = np.asarray(manifest["classes"], dtype=object)
        st.n_train_ = int(manifest.get("n_train", 0))
        st.size_bytes_ = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
        return st
