"""Cross-fitted calibration and the choice among students (``student: auto``) made on it.

Every labelled row gets an *out-of-fold* answer: the rows are cut into K stratified folds, a
student fitted on the other K − 1 folds answers each fold. The threshold is then calibrated on the
out-of-fold confidences and losses of **all** rows (not a 30 % hold-out), and the model that is
served is refitted on all rows. ``auto`` judges each candidate by exactly that: the coverage the
final rule certifies on its out-of-fold answers, with the same α, δ, bound and procedure; so no
one split's first confident error decides, and nothing is fitted twice (the fold fits are the
selection and the calibration; only the winner is refitted). An ensemble of candidates is judged
from the average of their out-of-fold probabilities: no extra fit at all.

What the guarantee is about
---------------------------
Learn-then-Test's guarantee is exact for a *fixed* model scored on points it never saw. Here each
row's score comes from a fold model that did not see it, so the guarantee holds exactly for the
K fold models taken together (the risk of answering a fresh request with a fold model drawn at
random, at the calibrated λ), not for the refitted model, which has seen every row. The refit is
fitted on K/(K − 1) times as much data as each fold model and is usually at least as accurate,
but nothing proves that its confidence is no more optimistic at a given λ. This is the
cross-validation trade-off of CV+/cross-conformal prediction, made without their factor-of-two
correction, so it is **measured**: ``benchmarks/bench_calibration.py`` applies the threshold to
the refit model on held-out traffic over 50 random resplits per data set and reports how often the
realised disagreement stays ≤ α (it must be ≥ 1 − δ). The live monitors
(:mod:`downsize.monitor`) then watch the served model's own risk.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CalibrationError
from ._threshold import ThresholdCalibrator

__all__ = ["Event", "OutOfFold", "ensemble_oof", "folds", "judge", "out_of_fold"]

#: A progress callback: one line of text for the user.
Event = Callable[[str], None]


@dataclass
class OutOfFold:
    """Out-of-fold answers of one candidate on every row, and what producing them cost."""

    family: str
    answers: list[Any]
    confidence: np.ndarray
    fold_of: np.ndarray
    fit_seconds: list[float] = field(default_factory=list)
    proba: np.ndarray | None = None
    classes: list[str] | None = None
    members: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        return float(sum(self.fit_seconds))

    def head(self, n: int) -> OutOfFold:
        """The first ``n`` rows (the ones answered out of fold; rows after them only trained)."""
        return OutOfFold(self.family, self.answers[:n], self.confidence[:n], self.fold_of[:n], self.fit_seconds,
                         None if self.proba is None else self.proba[:n], self.classes, self.members)


def folds(n: int, k: int, strata: Sequence[Any] | None, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each of n rows: stratified on ``strata`` when given, seeded."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if k < 2:
        raise CalibrationError(f"cross-fitting needs at least 2 folds, got {k}")
    idx = np.arange(n)
    split = (StratifiedKFold(k, shuffle=True, random_state=seed).split(idx, strata) if strata is not None
             else KFold(k, shuffle=True, random_state=seed).split(idx))
    fold_of = np.empty(n, dtype=int)
    for j, (_, out) in enumerate(split):
        fold_of[out] = j
    return fold_of


def out_of_fold(task: Any, family: str, X: list[str], y: list[Any], fold_of: np.ndarray,
                make: Callable[[str], Any], event: Event | None = None) -> OutOfFold:
    """Fit ``make(family)`` on all folds but one, K times; each row's answer from the model that did not see it."""
    k = int(fold_of.max()) + 1
    answers: list[Any] = [None] * len(X)
    conf = np.empty(len(X))
    proba: np.ndarray | None = None
    classes: list[str] | None = None
    secs = []
    for j in range(k):
        tr, out = np.flatnonzero(fold_of != j), np.flatnonzero(fold_of == j)
        t0 = time.perf_counter()
        st = make(family).fit([X[i] for i in tr], task.targets([y[i] for i in tr]))
        secs.append(time.perf_counter() - t0)
        texts = [X[i] for i in out]
        pred, c = task.score(st, texts)
        for i, a in zip(out, pred, strict=True):
            answers[i] = a
        conf[out] = c
        if hasattr(st, "predict_proba") and hasattr(st, "classes_"):
            p = st.predict_proba(texts)
            cls = [str(c) for c in st.classes_]
            if classes is None:
                classes, proba = cls, np.zeros((len(X), len(cls)))
            if cls == classes and proba is not None:
                proba[out] = p
            else:
                proba = None
        if event is not None:
            left = (k - j - 1) * float(np.mean(secs))
            event(f"  {family}: fold {j + 1}/{k} fitted in {secs[-1]:.1f} s" + (f" (about {left:.0f} s left)" if left else ""))
    return OutOfFold(family, answers, conf, fold_of, secs, proba, classes)


def ensemble_oof(task: Any, parts: Sequence[OutOfFold]) -> OutOfFold | None:
    """The average of the members' out-of-fold probabilities (None when a member has none)."""
    if any(p.proba is None or p.classes != parts[0].classes for p in parts):
        return None
    proba = np.mean([p.proba for p in parts], axis=0)
    classes = parts[0].classes or []
    answers = [classes[i] for i in proba.argmax(1)]
    fams = tuple(p.family for p in parts)
    secs = [t for p in parts for t in p.fit_seconds]  # its members' fits: judging it costs nothing more
    return OutOfFold("ensemble(" + "+".join(fams) + ")", answers, proba.max(1), parts[0].fold_of,
                     secs, proba, classes, fams)


def judge(task: Any, oof: OutOfFold, y: list[Any], *, alpha: float, delta: float,
          calibrator: Callable[..., ThresholdCalibrator] = ThresholdCalibrator) -> dict[str, Any]:
    """What the final rule certifies on a candidate's out-of-fold answers, and its spread over folds."""
    loss = task.disagreements(oof.answers, y)
    row: dict[str, Any] = {"kind": oof.family, "members": list(oof.members), "agreement": float(np.mean(loss == 0)),
                           "fit_seconds": oof.seconds, "coverage": 0.0, "coverage_folds": [], "threshold": None}
    try:
        cal = calibrator(alpha=alpha, delta=delta, bound=task.calibration_bound()).fit(oof.confidence, loss=loss)
    except CalibrationError as exc:
        row["note"] = str(exc)
        return row
    row["coverage"] = float(cal.coverage_)
    row["threshold"] = cal.threshold_
    if cal.threshold_ is not None:
        k = int(oof.fold_of.max()) + 1
        row["coverage_folds"] = [float(np.mean(oof.confidence[oof.fold_of == j] >= cal.threshold_)) for j in range(k)]
    return row


def ensembles(parts: Sequence[OutOfFold], task: Any) -> list[OutOfFold]:
    """Every ensemble of two or more candidates that can be averaged (from their out-of-fold probabilities)."""
    out = []
    for r in range(2, len(parts) + 1):
        for combo in itertools.combinations(parts, r):
            e = ensemble_oof(task, combo)
            if e is not None:
                out.append(e)
    return out
