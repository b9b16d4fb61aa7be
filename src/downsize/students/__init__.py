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

Students (one module each)
--------------------------
``TfidfStudent``
    word n-gram + character n-gram TF-IDF with a linear SVM (or logistic regression).
    Character n-grams are taken from the first ``char_max_chars`` characters only: on
    long newswire they cost most of the time and add nothing past the opening (measured
    by ``benchmarks/bench_students.py``), while on short noisy text they add ~1 point.
``MiniLMStudent``
    all-MiniLM-L6-v2 sentence vectors (torch-free, :mod:`downsize.students.encoder`) with a
    logistic-regression head. Only the head is saved; the manifest pins the encoder's
    ONNX sha256, which ``load`` checks against the installed package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import StudentError
from .artifacts import read_manifest
from .base import Student
from .encoder import minilm_available
from .minilm import MiniLMStudent
from .tfidf import TfidfStudent

__all__ = [
    "Student",
    "TfidfStudent",
    "MiniLMStudent",
    "STUDENTS",
    "make_student",
    "load_student",
    "minilm_available",
]

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
