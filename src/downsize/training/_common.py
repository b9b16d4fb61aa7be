"""What training and calibrating share: the store's labels as answers, saved students' files."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from ..errors import AnswerError, CorruptArtifactError, StudentError
from ..store import StudentVersion
from ..students import FAMILIES, load_student
from ..students.artifacts import sha256_bytes
from ..tasks import TaskConfig


def _answers(task_name: str, task: TaskConfig, examples: list[Any]) -> list[Any]:
    """The examples' effective labels as the kind's answers (the store holds their text form)."""
    out, bad = [], []
    for e in examples:
        try:
            out.append(task.decode(e.label))
        except AnswerError as exc:
            bad.append((e, str(exc)))
    if bad:
        values = sorted({e.label for e, _ in bad})
        e, why = bad[0]
        raise StudentError(
            f"task {task_name!r}: labels {values[:10]} are not among the configured labels of the task "
            f"({len(bad)} example(s), e.g. #{e.example_id} from {e.source}: {why}); fix the labels in the store "
            "or the task's config")
    return out


#: The label source of ``downsize synth``: trained on (with ``synthetic_weight``), never calibrated on.
SYNTHETIC = "synthetic"
_MIN_SPLIT = 10  # real examples below 2x this: no calibration split


def _sha256(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def student_dir(sv: StudentVersion, home: str | os.PathLike[str] | None) -> Path:
    """The directory of a saved student: its stored path resolved against the project's ``home``.

    Paths are stored relative to the home (``students/<task>/v<N>``), so a moved or copied project
    loads its own files. Rows written before that hold absolute paths: used as they are, or, when
    nothing is there any more (a moved project), the same place under ``home``.

    Raises
    ------
    StudentError
        A relative path and no ``home`` to resolve it against.
    """
    p = Path(sv.path)
    if p.is_absolute():
        if home is not None and not p.exists():
            here = Path(home) / "students" / sv.task / f"v{sv.version}"
            if (here / "manifest.json").exists():
                return here
        return p
    if home is None:
        raise StudentError(f"student {sv.task} v{sv.version}: its path {sv.path!r} is relative to the project's "
                           "home, and no home was given to resolve it")
    return Path(home) / p


def load_student_version(sv: StudentVersion, home: str | os.PathLike[str] | None = None, *,
                         embedding_cache: bool = False) -> Any:
    """Load a saved student (its path resolved by :func:`student_dir`), checking its manifest against
    the checksum in the store. ``embedding_cache``: MiniLM students read and write the project's
    embedding cache (:func:`embedding_cache_dir`; calibration does, the request path does not)."""
    path = student_dir(sv, home)
    manifest = path / "manifest.json"
    if not manifest.exists():
        raise StudentError(f"student {sv.task} v{sv.version}: {manifest} is missing (was {path} moved or deleted?)")
    if _sha256(manifest) != sv.sha256:
        raise CorruptArtifactError(
            f"student {sv.task} v{sv.version}: {manifest} does not match the checksum recorded when it was "
            "trained; the file was modified or corrupted: retrain with `downsize train`"
        )
    if embedding_cache and home is not None:
        return load_student(path, cache_dir=os.fspath(embedding_cache_dir(home)))
    return load_student(path)


def embedding_cache_dir(home: str | os.PathLike[str]) -> Path:
    """Where MiniLM sentence vectors are cached (SQLite, keyed by text hash and model), so that
    re-training and re-calibrating a project never embeds the same text twice."""
    return Path(home) / "cache" / "embeddings"


def _with_embedding_cache(task: TaskConfig, params: dict[str, dict[str, Any]],
                          home: Path) -> dict[str, dict[str, Any]]:
    """``params`` plus the project's embedding cache for every family that takes a ``cache_dir``."""
    out = {f: dict(p) for f, p in params.items()}
    for family in task.students:
        cls = FAMILIES.get((task.kind, family), (None,))[0]
        if cls is not None and "cache_dir" in inspect.signature(cls).parameters:
            out.setdefault(family, {}).setdefault("cache_dir", os.fspath(embedding_cache_dir(home)))
    return out
