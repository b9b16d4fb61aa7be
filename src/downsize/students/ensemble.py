"""``EnsembleStudent``: the average of the calibrated probabilities of fitted members.

``student: ensemble`` (and ``auto``, which considers it) averages what each member's
``predict_proba`` says, over the union of their labels. Each member is calibrated on its own, so
the average is a probability too; the average of calibrated probabilities ranks requests at least
as well as its members when they err on different texts (word n-grams and sentence vectors do).
Its threshold is calibrated like any student's: nothing in the guarantee assumes a member.

Saving writes each member into its own folder (``m0/``, ``m1/`` …, each with its verified
manifest) and the ensemble's manifest last, which pins the sha256 of every member's manifest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import CorruptArtifactError, StudentError
from .artifacts import MANIFEST, read_manifest, sha256_bytes, write_artifact

__all__ = ["EnsembleStudent"]


class EnsembleStudent(ClassifierMixin, BaseEstimator):
    """Average of the calibrated class probabilities of several students.

    Parameters
    ----------
    members : sequence of (name, estimator) or None
        Unfitted students to fit (cloned), as in scikit-learn's ``VotingClassifier``. Training
        builds ensembles from already fitted members with :meth:`from_fitted` instead.
    random_state : int, default=0

    Attributes
    ----------
    members_ : list of fitted students
    classes_ : ndarray of str
        Sorted union of the members' labels.
    n_train_ : int
    """

    name = "ensemble"
    version = 1

    #: ``load`` needs a loader for its members (the package's ``load_student``).
    composite = True

    def __init__(self, *, members: Any = None, random_state: int = 0) -> None:
        self.members = members
        self.random_state = random_state

    @classmethod
    def from_fitted(cls, members: dict[str, Any], *, random_state: int = 0) -> EnsembleStudent:
        """An ensemble of already fitted students (``{family: student}``): nothing is refitted."""
        if len(members) < 2:
            raise StudentError(f"an ensemble needs at least 2 members, got {len(members)}")
        ens = cls(random_state=random_state)
        ens.names_ = list(members)
        ens._set_members(list(members.values()))
        return ens

    def _set_members(self, fitted: list[Any]) -> None:
        self.members_ = fitted
        self.classes_ = np.asarray(sorted({str(c) for m in fitted for c in m.classes_}), dtype=object)
        self.n_train_ = int(max(getattr(m, "n_train_", 0) for m in fitted))

    def fit(self, X: Any, y: Any) -> EnsembleStudent:
        from sklearn.base import clone

        members = list(self.members or [])
        if len(members) < 2:
            raise StudentError("an ensemble needs at least 2 members, given as (name, student) pairs; "
                               f"got {len(members)} (training builds one from the candidates it fitted)")
        self.names_ = [str(n) for n, _ in members]
        self._set_members([clone(m).fit(X, y) for _, m in members])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "members_")
        texts = list(X)
        out = np.zeros((len(texts), len(self.classes_)))
        col = {c: i for i, c in enumerate(self.classes_)}
        for m in self.members_:
            p = m.predict_proba(texts)
            out[:, [col[str(c)] for c in m.classes_]] += p
        return out / len(self.members_)

    def predict(self, X: Any) -> np.ndarray:
        p = self.predict_proba(X)
        return self.classes_[p.argmax(1)] if len(p) else np.empty(0, dtype=object)

    def confidence(self, X: Any) -> np.ndarray:
        p = self.predict_proba(X)
        return p.max(1) if len(p) else np.empty(0)

    def size_bytes(self) -> int:
        return int(sum(m.size_bytes() for m in self.members_))

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        check_is_fitted(self, "members_")
        directory = Path(directory)
        if directory.is_dir() and any(directory.iterdir()) and not overwrite:
            raise StudentError(f"{directory}: directory is not empty; choose a new one or pass overwrite=True")
        pins = []
        for i, (family, m) in enumerate(zip(self.names_, self.members_, strict=True)):
            sub = m.save(directory / f"m{i}", overwrite=overwrite)
            pins.append({"dir": f"m{i}", "family": family, "manifest_sha256": sha256_bytes((sub / MANIFEST).read_bytes())})
        write_artifact(directory, {}, name=self.name, version=self.version, classes=[str(c) for c in self.classes_],
                       params={"members": list(self.names_), "random_state": self.random_state},
                       extra={"n_train": self.n_train_, "members": pins}, overwrite=True)
        self.size_bytes_ = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, load_member: Any) -> EnsembleStudent:
        """Load the ensemble and each member (with ``load_member``, the package's ``load_student``)."""
        directory = Path(directory)
        manifest, _ = read_manifest(directory)
        if manifest["name"] != cls.name:
            raise StudentError(f"{directory}: holds a {manifest['name']!r} student, not 'ensemble'")
        fitted = []
        for pin in manifest.get("members", []):
            sub = directory / pin["dir"]
            if not (sub / MANIFEST).exists() or sha256_bytes((sub / MANIFEST).read_bytes()) != pin["manifest_sha256"]:
                raise CorruptArtifactError(f"{sub / MANIFEST}: missing or not the member this ensemble was saved with")
            fitted.append(load_member(sub))
        ens = cls(random_state=manifest["params"].get("random_state", 0))
        ens.names_ = [str(n) for n in manifest["params"]["members"]]
        ens._set_members(fitted)
        ens.size_bytes_ = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
        return ens
