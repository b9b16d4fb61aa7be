"""``TfidfStudent``: word n-gram + character n-gram TF-IDF with a calibrated linear model.

Character n-grams are taken from the first ``char_max_chars`` characters only: on long newswire
they cost most of the time and add nothing past the opening (measured by
``benchmarks/bench_students.py``), while on short noisy text they add ~1 point.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptArtifactError, StudentError
from .artifacts import dump_skops, load_skops
from .base import CALIBRATED_TYPES, MODEL_FILE, Student, calibrated, check_param, is_int, is_range
from .charngrams import CharNgramTfidf

__all__ = ["TfidfStudent", "fit_vectorizers", "make_vectorizers", "pack_word", "unpack_word"]

_VOCAB_FILE = "vocabulary.json"
_CHAR_FILE = "char_ngrams.npz"


def make_vectorizers(*, word_ngrams: tuple[int, int], char_ngrams: tuple[int, int] | None,
                     char_max_chars: int | None, min_df: int, max_features: int | None) -> dict[str, Any]:
    """The unfitted ``{"word": TfidfVectorizer, "char": CharNgramTfidf}`` of a TF-IDF student
    (``char`` only when ``char_ngrams`` is given); shared with the multi-label student."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vecs: dict[str, Any] = {
        "word": TfidfVectorizer(ngram_range=tuple(word_ngrams), sublinear_tf=True, min_df=min_df,
                                max_features=max_features)
    }
    if char_ngrams is not None:
        vecs["char"] = CharNgramTfidf(ngram_range=tuple(char_ngrams), max_chars=char_max_chars,
                                      min_df=min_df, max_features=max_features)
    return vecs


def fit_vectorizers(vecs: dict[str, Any], X: list[str], *, min_df: int) -> Any:
    """Fit each of ``vecs`` on ``X``; the training texts' features side by side (CSR)."""
    import scipy.sparse as sp

    mats = []
    for kind, vec in vecs.items():
        try:
            mats.append(vec.fit_transform(X))
        except ValueError as exc:  # sklearn: "empty vocabulary; perhaps the documents only contain stop words"
            raise StudentError(
                f"no {kind} n-gram occurs in ≥ min_df={min_df} of the {len(X)} training texts "
                f"({exc}); lower min_df or add data"
            ) from None
    return sp.hstack(mats, format="csr") if len(mats) > 1 else mats[0]


def pack_word(word: Any) -> tuple[Any, bytes]:
    """A fitted word vectorizer without its vocabulary, and the vocabulary as a JSON list.

    ``TfidfVectorizer.vocabulary_`` is a dict that skops stores node by node (~400 B per
    term): it goes to a plain JSON list instead (term i has column i)."""
    light = copy.copy(word)
    del light.vocabulary_
    terms = sorted(word.vocabulary_, key=word.vocabulary_.__getitem__)
    return light, json.dumps(terms, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def unpack_word(light: Any, vocab: bytes) -> Any:
    """Inverse of :func:`pack_word` (sets ``vocabulary_`` on ``light``)."""
    light.vocabulary_ = {t: i for i, t in enumerate(json.loads(vocab.decode("utf-8")))}
    return light


class TfidfStudent(Student):
    """Word + character n-gram TF-IDF with a calibrated linear classifier.

    Parameters
    ----------
    word_ngrams : (int, int), default=(1, 2)
        Word n-gram range.
    char_ngrams : (int, int) or None, default=(2, 5)
        Character n-gram range (``char_wb``: n-grams inside word boundaries); ``None``
        disables character features.
    char_max_chars : int or None, default=300
        Character n-grams are taken from the first ``char_max_chars`` characters of each
        text (``None``: all of it). Long texts cost time, not accuracy, past the opening.
    min_df : int, default=2
        Ignore n-grams seen in fewer training texts.
    max_features : int or None, default=200_000
        Keep at most this many n-grams per vectorizer (most frequent first).
    classifier : {"svm", "logreg"}, default="svm"
        ``LinearSVC`` (fast, accurate on TF-IDF) or ``LogisticRegression``.
    C : float, default=0.5
        Inverse regularisation strength of the classifier.
    calibration : {"temperature", "sigmoid", "isotonic"}, default="temperature"
        How decision scores become probabilities (``CalibratedClassifierCV``).
    calibration_cv : int, default=5
        Stratified folds whose out-of-fold scores fit the calibration (capped by the
        smallest label's count).
    min_examples_per_label : int, default=5
    random_state : int, default=0

    Attributes
    ----------
    classes_ : ndarray of str
        Sorted labels.
    vectorizers_ : dict
        ``{"word": TfidfVectorizer, "char": TfidfVectorizer}`` (``char`` when enabled).
    model_ : CalibratedClassifierCV
    n_features_ : int
    n_train_ : int
    size_bytes_ : int
        Bytes on disk, after ``save`` or ``load``.

    Examples
    --------
    >>> X = ["wheat crop up", "corn and wheat", "grain exports", "wheat prices", "grain harvest",
    ...      "oil rises", "crude falls", "oil output", "opec crude", "oil supply"]
    >>> y = ["grain"] * 5 + ["crude"] * 5
    >>> st = TfidfStudent(min_df=1).fit(X, y)
    >>> st.predict(["crude oil"]).tolist()
    ['crude']
    >>> round(float(st.predict_proba(["crude oil"]).sum()), 6)
    1.0
    """

    name = "tfidf"
    version = 1
    _tuple_params = ("word_ngrams", "char_ngrams")

    def __init__(
        self,
        *,
        word_ngrams: tuple[int, int] = (1, 2),
        char_ngrams: tuple[int, int] | None = (2, 5),
        char_max_chars: int | None = 300,
        min_df: int = 2,
        max_features: int | None = 200_000,
        classifier: str = "svm",
        C: float = 0.5,
        calibration: str = "temperature",
        calibration_cv: int = 5,
        min_examples_per_label: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.char_max_chars = char_max_chars
        self.min_df = min_df
        self.max_features = max_features
        self.classifier = classifier
        self.C = C
        self.calibration = calibration
        self.calibration_cv = calibration_cv
        self.min_examples_per_label = min_examples_per_label
        self.random_state = random_state

    def _check_params(self) -> None:
        super()._check_params()
        check_param(
            is_range(self.word_ngrams, 1),
            "word_ngrams",
            self.word_ngrams,
            "a (min, max) pair, 1 ≤ min ≤ max",
        )
        check_param(
            self.char_ngrams is None or is_range(self.char_ngrams, 1),
            "char_ngrams",
            self.char_ngrams,
            "None or a (min, max) pair, 1 ≤ min ≤ max",
        )
        check_param(
            self.char_max_chars is None or is_int(self.char_max_chars, 1),
            "char_max_chars",
            self.char_max_chars,
            "None or a positive integer",
        )
        check_param(is_int(self.min_df, 1), "min_df", self.min_df, "a positive integer")
        check_param(
            self.max_features is None or is_int(self.max_features, 1),
            "max_features",
            self.max_features,
            "None or a positive integer",
        )
        check_param(
            self.classifier in ("svm", "logreg"), "classifier", self.classifier, "'svm' or 'logreg'"
        )

    def _make_vectorizers(self) -> dict[str, Any]:
        return make_vectorizers(word_ngrams=self.word_ngrams, char_ngrams=self.char_ngrams,
                                char_max_chars=self.char_max_chars, min_df=self.min_df,
                                max_features=self.max_features)

    def _features(self, X: list[str]) -> Any:
        import scipy.sparse as sp

        mats = [vec.transform(X) for vec in self.vectorizers_.values()]
        return sp.hstack(mats, format="csr") if len(mats) > 1 else mats[0]

    def _fit(self, X: list[str], y: np.ndarray, cv: int) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        vecs = self._make_vectorizers()
        features = fit_vectorizers(vecs, X, min_df=self.min_df)
        if self.classifier == "svm":
            base = LinearSVC(C=self.C, random_state=self.random_state)
        else:
            base = LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state)
        model = calibrated(base, self.calibration, cv, self.random_state).fit(features, y)
        self.vectorizers_ = vecs
        self.model_ = model
        self.n_features_ = int(features.shape[1])
        self._prepare_fast_path()

    # A temperature-scaled linear model is softmax(beta * (x @ W.T + b)). Computing that
    # directly, block by block (no hstack), skips ~1 ms of scikit-learn input validation per
    # call, most of a single request's latency. It is used only when it reproduces
    # CalibratedClassifierCV.predict_proba on probe texts (else the sklearn path is used).
    def _prepare_fast_path(self) -> None:
        self._fast: tuple[list[np.ndarray], np.ndarray, float, bool] | None = None
        cals = self.model_.calibrated_classifiers_
        if self.calibration != "temperature" or len(cals) != 1:
            return
        est, calibrator = cals[0].estimator, cals[0].calibrators[0]
        coef, intercept = getattr(est, "coef_", None), getattr(est, "intercept_", None)
        beta = getattr(calibrator, "beta_", None)
        if (
            coef is None
            or intercept is None
            or beta is None
            or len(est.classes_) != len(self.model_.classes_)
        ):
            return
        widths = np.cumsum([len(v.vocabulary_) for v in self.vectorizers_.values()])[:-1]
        blocks = [
            np.ascontiguousarray(b) for b in np.split(np.asarray(coef, dtype=np.float64).T, widths)
        ]
        self._fast = (
            blocks,
            np.asarray(intercept, dtype=np.float64),
            float(beta),
            len(self.model_.classes_) == 2,
        )
        probe = (
            self._probe_texts()
        )  # (the estimator may see label-encoded classes: order is checked here)
        if not np.allclose(
            self._fast_proba(probe),
            self.model_.predict_proba(self._features(probe)),
            rtol=0,
            atol=1e-9,
        ):
            self._fast = None

    def _probe_texts(self) -> list[str]:
        vocab = self.vectorizers_["word"].vocabulary_
        terms = sorted(vocab, key=vocab.__getitem__)[:4000:7]
        return [" ".join(terms[i : i + 40]) for i in range(0, len(terms), 40)][:12] + ["", "a"]

    def _fast_proba(self, X: list[str]) -> np.ndarray:
        blocks, intercept, beta, binary = self._fast  # type: ignore[misc]
        dec = intercept + sum(
            vec.transform(X) @ w for vec, w in zip(self.vectorizers_.values(), blocks)
        )
        logits = np.hstack([-dec, dec]) if binary else dec
        z = beta * logits
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=1, keepdims=True)

    def _proba(self, X: list[str]) -> np.ndarray:
        if getattr(self, "_fast", None) is not None:
            return self._fast_proba(X)
        return self.model_.predict_proba(self._features(X))

    def _inner_classes(self) -> np.ndarray:
        return self.model_.classes_

    def _files(self) -> dict[str, bytes]:
        light, vocab = pack_word(self.vectorizers_["word"])
        files = {MODEL_FILE: dump_skops({"word": light, "model": self.model_}), _VOCAB_FILE: vocab}
        if "char" in self.vectorizers_:
            files[_CHAR_FILE] = self.vectorizers_["char"].to_bytes()
        return files

    def _restore(self, blobs: dict[str, bytes], manifest: dict[str, Any], directory: Path) -> None:

        needed = [MODEL_FILE, _VOCAB_FILE] + ([_CHAR_FILE] if self.char_ngrams is not None else [])
        for f in needed:
            if f not in blobs:
                raise CorruptArtifactError(f"{directory / 'manifest.json'}: does not list {f}")
        obj = load_skops(blobs[MODEL_FILE], allowed=CALIBRATED_TYPES, where=directory / MODEL_FILE)
        try:
            word = unpack_word(obj["word"], blobs[_VOCAB_FILE])
            vecs: dict[str, Any] = {"word": word}
            if self.char_ngrams is not None:
                params = {
                    "ngram_range": self.char_ngrams,
                    "max_chars": self.char_max_chars,
                    "min_df": self.min_df,
                    "max_features": self.max_features,
                }
                vecs["char"] = CharNgramTfidf.from_bytes(blobs[_CHAR_FILE], params)
            self.model_ = obj["model"]
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
            raise CorruptArtifactError(
                f"{directory}: the saved TF-IDF student is incomplete ({exc!r})"
            ) from None
        self.vectorizers_ = vecs
        self.n_features_ = sum(len(v.vocabulary_) for v in vecs.values())
        self._prepare_fast_path()
