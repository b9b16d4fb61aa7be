"""The contract every student shares: validation, calibrated probabilities, persistence.

Private: the public students are in :mod:`downsize.students`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..errors import CorruptArtifactError, NotFittedError, StudentError
from .artifacts import read_manifest, write_artifact

__all__ = ["Student", "MODEL_FILE", "CALIBRATED_TYPES", "check_texts", "calibrated", "check_param", "is_int", "is_range"]

_CALIBRATIONS = ("temperature", "sigmoid", "isotonic")


#: The skops file that holds a student's fitted model.
MODEL_FILE = "model.skops"
#: sklearn types that skops does not trust by default and that a student's model file may hold.
CALIBRATED_TYPES = frozenset(
    {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.calibration._TemperatureScaling",
        "sklearn.isotonic.IsotonicRegression",
        "sklearn.model_selection._split.StratifiedKFold",
    }
)

# -- validation helpers -------------------------------------------------------------------
def check_texts(X: Any, *, fit: bool) -> list[str]:
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


def check_param(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise StudentError(f"invalid parameter {name}={value!r}: expected {expected}")


def is_int(v: Any, lo: int) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= lo


def is_range(v: Any, lo: int) -> bool:
    return (
        isinstance(v, (tuple, list))
        and len(v) == 2
        and all(is_int(x, lo) for x in v)
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


class Student(ClassifierMixin, BaseEstimator):
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
        check_param(
            is_int(self.min_examples_per_label, 2),
            "min_examples_per_label",
            self.min_examples_per_label,
            "an integer ≥ 2",
        )
        check_param(
            is_int(self.calibration_cv, 2), "calibration_cv", self.calibration_cv, "an integer ≥ 2"
        )
        check_param(
            self.calibration in _CALIBRATIONS,
            "calibration",
            self.calibration,
            " or ".join(repr(c) for c in _CALIBRATIONS),
        )
        check_param(
            isinstance(self.C, (int, float)) and not isinstance(self.C, bool) and self.C > 0,
            "C",
            self.C,
            "a positive number",
        )

    # -- the sklearn contract -----------------------------------------------------------
    def fit(self, X: Sequence[str], y: Sequence[str]) -> Student:
        """Fit on texts ``X`` and their labels ``y``; returns ``self``.

        Raises
        ------
        StudentError
            Bad parameters, fewer than 2 labels, a label with fewer than
            ``min_examples_per_label`` examples (each named, with its count), an empty or
            non-string text (with its index), or ``len(X) != len(y)``.
        """
        texts = check_texts(X, fit=True)
        labels = _check_labels(y, len(texts))
        self._check_params()
        classes, counts = np.unique(labels, return_counts=True)
        if len(classes) < 2:
            have = (
                f"one: {classes[0]!r} ({counts[0]} examples)" if len(classes) else "none (no data)"
            )
            raise StudentError(f"a student needs at least 2 labels; the training data has {have}")
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
        texts = check_texts(X, fit=False)
        if not texts:
            return np.empty((0, len(self.classes_)))
        from sklearn import config_context

        with config_context(assume_finite=True):  # our features are finite by construction
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
    def load(cls, directory: str | os.PathLike[str], **runtime: Any) -> Student:
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
        cls,
        directory: Path,
        manifest: dict[str, Any],
        blobs: dict[str, bytes],
        runtime: dict[str, Any],
    ) -> Student:
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
            raise StudentError(
                f"load() accepts only {', '.join(cls._runtime_params) or 'no'} overrides, not {sorted(unknown)}"
            )
        params = dict(manifest["params"])
        for p in cls._tuple_params:
            if isinstance(params.get(p), list):
                params[p] = tuple(params[p])
        try:
            student = cls(**params, **runtime)
        except TypeError as exc:
            raise CorruptArtifactError(
                f"{directory / 'manifest.json'}: parameters do not fit {cls.__name__} ({exc})"
            ) from None
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


def calibrated(estimator: Any, method: str, cv: int, random_state: int | None) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    return CalibratedClassifierCV(estimator, method=method, cv=folds, ensemble=False)
