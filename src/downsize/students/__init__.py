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
``FinetuneStudent`` (:mod:`.finetune`)
    all-MiniLM-L6-v2 fine-tuned end to end with a classification head (torch, the
    ``[finetune]`` extra), exported to int8 ONNX and served by onnxruntime (``[minilm]``
    only); temperature-calibrated on a held-out split. ``auto`` does not try it (see
    :data:`OPT_IN`): name it with ``student: finetune``.

Multi-label (``kind: multilabel``)
----------------------------------
``MultiLabelStudent``
    one-vs-rest linear heads over the TF-IDF or MiniLM features (families ``tfidf``, ``minilm``),
    per-label Platt scaling on out-of-fold scores, label-set decoding per loss (``exact``: the
    most probable set; ``f1``: the best expected F1) with ``max_labels``, and a record confidence
    stacked on out-of-fold answers (:mod:`.multilabel.decode`). ``fit(texts, label_sets)``,
    ``predict_with_confidence(texts, loss=...)``; saves skops + npz + JSON + the manifest.

Extraction (``kind: extract``)
------------------------------
``EnsembleStudent``
    the average of the calibrated probabilities of fitted members (``student: ensemble``; ``auto``
    considers it, from the members' out-of-fold probabilities, without fitting anything again).
``TaggerStudent``
    a linear-chain CRF (crfsuite) over tokens (:mod:`.tagger.spans`) onto which the teacher's field
    values or entity mentions are aligned (:mod:`.tagger.align`); answers a record ``{field: value}``
    or a list of ``(text, type)`` mentions, with a record confidence stacked on out-of-fold
    answers (:mod:`.tagger.confidence`). Not a classifier: ``fit(texts, answers)``,
    ``predict_with_confidence(texts)``; saves crfsuite's model file + JSON + the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import StudentError
from .artifacts import read_manifest
from .base import Student
from .encoder import minilm_available
from .ensemble import EnsembleStudent
from .finetune import FinetuneStudent, finetune_available
from .minilm import MiniLMStudent
from .multilabel import MultiLabelStudent
from .tagger import TaggerStudent
from .tfidf import TfidfStudent

__all__ = [
    "Student",
    "TfidfStudent",
    "MiniLMStudent",
    "FinetuneStudent",
    "MultiLabelStudent",
    "TaggerStudent",
    "EnsembleStudent",
    "OPT_IN",
    "STUDENTS",
    "FAMILIES",
    "available",
    "make_student",
    "load_student",
    "minilm_available",
    "finetune_available",
]

#: Saved students by the ``name`` in their manifest (what :func:`load_student` dispatches on).
STUDENTS: dict[str, type[Any]] = {
    "tfidf": TfidfStudent,
    "minilm": MiniLMStudent,
    "finetune": FinetuneStudent,
    "tagger": TaggerStudent,
    "multilabel": MultiLabelStudent,
    "ensemble": EnsembleStudent,
}

#: (task kind, family) → the student class and the parameters that family fixes. A task's
#: ``student:`` names a family; its kind (``TaskConfig.students``) says which families fit it.
FAMILIES: dict[tuple[str, str], tuple[type[Any], dict[str, Any]]] = {
    ("classify", "tfidf"): (TfidfStudent, {}),
    ("classify", "minilm"): (MiniLMStudent, {}),
    ("classify", "ensemble"): (EnsembleStudent, {}),
    ("classify", "finetune"): (FinetuneStudent, {}),
    ("multilabel", "tfidf"): (MultiLabelStudent, {"features": "tfidf"}),
    ("multilabel", "minilm"): (MultiLabelStudent, {"features": "minilm"}),
    ("extract", "crf"): (TaggerStudent, {}),
}

#: Families that need an optional extra, and the extra.
_EXTRAS = {"minilm": ("minilm", minilm_available), "finetune": ("finetune", finetune_available)}

_HINTS = {"finetune": "pip install torch==2.13.0 (torch's CPU wheel first, or pip pulls a CUDA build), then "}

#: Families ``auto`` leaves out unless named: fitting them takes minutes, not seconds.
OPT_IN = frozenset({"finetune"})


def available(family: str, *, task_kind: str = "classify") -> bool:
    """Whether ``family`` students exist for ``task_kind`` and their extra (if any) is installed."""
    if (task_kind, family) not in FAMILIES:
        return False
    need = _EXTRAS.get(family)
    return need is None or need[1]()


def make_student(family: str, *, task_kind: str = "classify", **params: Any) -> Any:
    """A new, unfitted ``family`` student for a ``task_kind`` task (see :data:`FAMILIES`).

    Raises
    ------
    StudentError
        Unknown family for the kind; a family whose extra is not installed; an unknown parameter.
    """
    try:
        cls, fixed = FAMILIES[(task_kind, family)]
    except KeyError:
        fits = [f for k, f in FAMILIES if k == task_kind]
        raise StudentError(
            f"unknown student {family!r} for a {task_kind} task; choose one of: {', '.join(fits) or 'none'}"
        ) from None
    need = _EXTRAS.get(family)
    if need is not None and not need[1]():
        raise StudentError(
            f"the {family!r} student needs the [{need[0]}] extra: {_HINTS.get(family, '')}"
            f"pip install 'downsize[{need[0]}]'"
        )
    try:
        return cls(**{**fixed, **params})
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
    if getattr(cls, "composite", False):  # an ensemble loads its members with this function
        return cls.load(directory, load_member=load_student)
    if not hasattr(cls, "_from_manifest"):  # a student that is not a Student subclass loads itself
        return cls.load(directory)
    runtime = {k: v for k, v in runtime.items() if k in cls._runtime_params}
    return cls._from_manifest(directory, manifest, blobs, runtime)
