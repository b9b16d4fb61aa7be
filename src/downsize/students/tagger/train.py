"""Training crfsuite models, several at once.

A stacked-confidence tagger trains ``confidence_cv + 1`` independent CRFs (one per fold and the
final one). python-crfsuite's ``Trainer.train`` holds the GIL for the whole L-BFGS run (it is
not declared ``nogil``), so threads would not overlap; the fits go to worker processes instead,
through joblib's loky backend (scikit-learn's ``n_jobs``), each returning crfsuite's model file
as bytes. Small fits stay in the calling process: starting workers costs more than they save.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PARALLEL_MIN_RECORDS", "resolve_jobs", "train_crf", "train_crfs"]

_MODEL = "model.crfsuite"

#: Below this many training records (summed over the fits) every fit runs in this process.
PARALLEL_MIN_RECORDS = 2000

Job = tuple[Sequence[list[list[str]]], Sequence[list[str]]]


def train_crf(items: Sequence[list[list[str]]], tags: Sequence[list[str]], params: dict[str, Any]) -> bytes:
    """One crfsuite fit: ``items[i]`` are the attribute lists of record i's tokens, ``tags[i]``
    their BIO tags (records with no token are skipped); returns the model file's bytes."""
    import pycrfsuite

    trainer = pycrfsuite.Trainer(verbose=False)
    for x, t in zip(items, tags):
        if x:
            trainer.append(x, t)
    trainer.set_params({**params, "feature.possible_transitions": True})
    with tempfile.TemporaryDirectory(prefix="downsize-crf-") as tmp:
        path = os.path.join(tmp, _MODEL)
        trainer.train(path)
        return Path(path).read_bytes()


def resolve_jobs(n_jobs: int | None, jobs: Sequence[Job]) -> int:
    """Worker processes for ``jobs``: ``n_jobs`` as scikit-learn reads it (``-1``: every core),
    ``None``: every core when the fits hold ≥ :data:`PARALLEL_MIN_RECORDS` records, else 1;
    never more than there are fits."""
    cores = os.cpu_count() or 1
    if n_jobs is None:
        n_jobs = -1 if sum(len(items) for items, _ in jobs) >= PARALLEL_MIN_RECORDS else 1
    n = cores + 1 + n_jobs if n_jobs < 0 else n_jobs
    return max(1, min(n, len(jobs)))


def train_crfs(jobs: Sequence[Job], params: dict[str, Any], n_jobs: int | None = None) -> list[bytes]:
    """:func:`train_crf` for each ``(items, tags)`` of ``jobs``, in order, on up to ``n_jobs``
    processes (see :func:`resolve_jobs`). The models are the same as one at a time."""
    workers = resolve_jobs(n_jobs, jobs)
    if workers == 1:
        return [train_crf(items, tags, params) for items, tags in jobs]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=workers, backend="loky")(delayed(train_crf)(items, tags, params) for items, tags in jobs)
