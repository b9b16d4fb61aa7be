"""Saving a :class:`~.tagger.TaggerStudent` without pickle: crfsuite's file, JSON, a manifest.

A saved tagger is a directory written by :func:`downsize.students.artifacts.write_artifact`:
``model.crfsuite`` (crfsuite's own binary model), ``tagger.json`` (labels, the edge rule, the
training counts and the stacked confidence's coefficients) and ``manifest.json`` (parameters,
sha256 of both files). :func:`load_tagger` verifies the checksums before parsing anything.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..artifacts import read_manifest, write_artifact
from ...errors import CorruptArtifactError, StudentError
from .confidence import Familiarity, StackedConfidence
from .crf import LinearChain
from .spans import EdgeRule
from .checks import parse_checks

__all__ = ["save_tagger", "load_tagger", "tagger_state", "MODEL", "STATE"]

MODEL, STATE = "model.crfsuite", "tagger.json"


def tagger_state(s: Any) -> bytes:
    state = {
        "labels": s.labels_,
        "edge_rule": s.edge_rule_.to_json(),
        "familiarity": s.familiarity_.to_json(),
        "confidence": s.confidence_,
        "confidence_model": s.confidence_model_.to_json() if s.confidence_ == "stacked" else None,
        "oof_accuracy": s.oof_accuracy_,
        "alignment": s.alignment_,
        "n_train": s.n_train_,
    }
    return json.dumps(state, ensure_ascii=False, sort_keys=True).encode("utf-8")


def save_tagger(s: Any, directory: str | os.PathLike[str], *, overwrite: bool) -> Path:
    return write_artifact(
        directory,
        {MODEL: s.model_bytes_, STATE: tagger_state(s)},
        name=s.name,
        version=s.version,
        classes=list(s.labels_),
        params=s.get_params(),
        extra={"n_train": int(s.n_train_), "python-crfsuite": version("python-crfsuite")},
        overwrite=overwrite,
    )


def load_tagger(cls: type, directory: str | os.PathLike[str]) -> Any:
    directory = Path(directory)
    manifest, blobs = read_manifest(directory)
    if manifest["name"] != cls.name:
        raise StudentError(f"{directory}: holds a {manifest['name']!r} student, not {cls.name!r}")
    if not isinstance(manifest["version"], int) or manifest["version"] > cls.version:
        raise StudentError(
            f"{directory}: saved in format {manifest['version']!r}; this downsize reads ≤ {cls.version}"
        )
    for f in (MODEL, STATE):
        if f not in blobs:
            raise CorruptArtifactError(f"{directory / f}: missing from the manifest")
    try:
        s = cls(**manifest["params"])
    except TypeError as exc:
        raise CorruptArtifactError(f"{directory / 'manifest.json'}: bad parameters ({exc})") from None
    try:
        state = json.loads(blobs[STATE].decode("utf-8"))
        s.edge_rule_ = EdgeRule.from_json(state["edge_rule"])
        s.familiarity_ = Familiarity.from_json(state["familiarity"])
        s.confidence_ = state["confidence"]
        if s.confidence_ == "stacked":
            s.confidence_model_ = StackedConfidence.from_json(state["confidence_model"])
        s.oof_accuracy_ = state["oof_accuracy"]
        s.alignment_ = state["alignment"]
        s.n_train_ = int(state["n_train"])
        labels = list(state["labels"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptArtifactError(f"{directory / STATE}: unreadable ({exc})") from None
    try:
        s.chain_ = LinearChain.from_crfsuite(blobs[MODEL])
    except Exception as exc:  # crfsuite raises assorted errors on a bad file
        raise CorruptArtifactError(f"{directory / MODEL}: not a crfsuite model ({exc})") from None
    s.model_bytes_ = blobs[MODEL]
    inner = {t.partition("-")[2] if t[:2] in ("B-", "I-") else t for t in s.chain_.labels}
    if sorted(inner - {"O"}) != labels or labels != list(manifest["classes"]):
        raise CorruptArtifactError(
            f"{directory / 'manifest.json'}: labels {manifest['classes']} do not match the model's"
        )
    s.labels_ = labels
    s.unplaced_ = []
    s._checks = parse_checks(s.fields)
    return s
