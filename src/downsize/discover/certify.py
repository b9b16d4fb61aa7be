"""The certified local share: distil on the logged pairs, calibrate λ, read off the coverage.

The logged answers are the teacher's labels, so a template's requests are a labelled data set
that cost nothing more. A certifier fits a student on part of them and calibrates a threshold
on the rest (:class:`downsize.calibration.ThresholdCalibrator`, Learn-then-Test): the share of
held-out requests the student would answer is the *projected local share*, with its
Clopper–Pearson interval, and the guarantee holds for it (disagreement with the logged teacher
≤ α on what it answers, with probability ≥ 1 − δ, if the future traffic is exchangeable with
the logged traffic).

The hook is :data:`Certifier`: ``certifier(texts, answers, kind) -> Certification | None``.
:func:`default_certifier` certifies ``classify`` templates with a TF-IDF student; other kinds
return ``None`` (reported as "not certified yet") until the task-kind contract's students exist.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from ..calibration import ThresholdCalibrator, min_calibration_size
from ..config import TaskConfig
from ..errors import CalibrationError, StudentError

__all__ = ["Certification", "Certifier", "certify_classify", "default_certifier"]

_TASK = TaskConfig.model_fields
DEFAULT_ALPHA: float = _TASK["alpha"].default
DEFAULT_DELTA: float = _TASK["delta"].default
DEFAULT_BOUND: str = _TASK["bound"].default
DEFAULT_CAL_FRACTION: float = _TASK["calibration_fraction"].default
MIN_PER_LABEL: int = _TASK["min_examples_per_label"].default


@dataclass(frozen=True)
class Certification:
    """A calibrated projection of the local share of one template.

    Attributes
    ----------
    kind : str
    student : str
        Which student was fitted (e.g. ``tfidf``).
    n_train, n_calib : int
    alpha, delta : float
    threshold : float or None
        λ̂; ``None``: no threshold qualifies (every request goes to the teacher).
    coverage : float
        Share of the held-out requests the student answers: the projected local share.
    coverage_interval : (float, float)
        Its Clopper–Pearson interval at confidence ``1 - delta``.
    n_answered, errors_answered : int
    risk_upper : float or None
        Upper confidence bound of the disagreement rate on what it answers.
    guarantee : str
        The calibrator's sentence.
    seconds : float
        Fit + calibration time.
    model : object
        The fitted student (kept in memory, not saved), to check the projection on fresh traffic.
    """

    kind: str
    student: str
    n_train: int
    n_calib: int
    alpha: float
    delta: float
    threshold: float | None
    coverage: float
    coverage_interval: tuple[float, float]
    n_answered: int
    errors_answered: int
    risk_upper: float | None
    guarantee: str
    seconds: float
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("kind", "student", "n_train", "n_calib", "alpha", "delta", "threshold",
                                              "coverage", "coverage_interval", "n_answered", "errors_answered",
                                              "risk_upper", "guarantee", "seconds")}


#: ``(texts, answers, kind) -> Certification | None``; answers follow the task-kind contract
#: (classify: label strings; multilabel: sorted tuples of labels; extract: ``{field: value}`` dicts).
Certifier = Callable[[Sequence[str], Sequence[Any], str], "Certification | None"]


def certify_classify(texts: Sequence[str], labels: Sequence[str], *, alpha: float = DEFAULT_ALPHA,
                     delta: float = DEFAULT_DELTA, bound: str = DEFAULT_BOUND,
                     calibration_fraction: float = DEFAULT_CAL_FRACTION, max_examples: int = 2000,
                     seed: int = 0, student_params: dict[str, Any] | None = None) -> Certification:
    """Fit :class:`downsize.students.TfidfStudent` and calibrate on a held-out split of the pairs.

    Parameters
    ----------
    texts, labels : sequences of str
        Request texts and the logged (normalised) answers. Labels seen fewer than
        ``min_examples_per_label`` times in the training part are not learnt; their requests
        stay in the calibration part, where the student gets them wrong (as it would live).
    max_examples : int, default=2000
        A random sample of at most this many distinct texts is used (the guarantee needs
        hundreds of calibration points, not all of them: 600 held-out points give the share
        to ±4 %; a TF-IDF fit on 1,400 takes ~5 s of CPU).

    Notes
    -----
    Logs repeat inputs. Each distinct text counts once (with its most frequent answer), so no
    calibration text was seen in training: a repeated text in both parts would make the
    held-out agreement, and the share, optimistic.

    Raises
    ------
    CalibrationError
        Fewer calibration points than α, δ need (the message names the numbers).
    """
    from ..students import TfidfStudent

    t0 = time.perf_counter()
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    rng = np.random.default_rng(seed)
    by_text: dict[str, Counter[str]] = {}
    for t, lab in zip(texts, labels):
        by_text.setdefault(t, Counter())[lab] += 1
    uniq = list(by_text)
    idx = np.arange(len(uniq))
    if len(idx) > max_examples:
        idx = np.sort(rng.choice(idx, max_examples, replace=False))
    X = [uniq[i] for i in idx]
    y = np.asarray([by_text[t].most_common(1)[0][0] for t in X], dtype=object)
    counts = Counter(y.tolist())
    strata = np.asarray([v if counts[v] >= 2 else "\0rare" for v in y.tolist()], dtype=object)
    if Counter(strata.tolist())["\0rare"] == 1:
        strata[strata == "\0rare"] = strata[0]
    need = min_calibration_size(alpha, delta)
    tr, cal = train_test_split(np.arange(len(idx)), test_size=calibration_fraction, stratify=strata,
                               random_state=seed)
    if len(cal) < need:
        raise CalibrationError(f"{len(cal)} held-out pairs are too few to calibrate at alpha={alpha:g}, "
                               f"delta={delta:g} (need {need}; the template has {len(uniq)} distinct answered texts)")
    train_counts = Counter(y[tr].tolist())
    keep = np.asarray([train_counts[v] >= MIN_PER_LABEL for v in y[tr].tolist()])
    if len({v for v, c in train_counts.items() if c >= MIN_PER_LABEL}) < 2:
        raise StudentError(f"fewer than 2 answers have {MIN_PER_LABEL} training examples: nothing to learn")
    params = {"random_state": seed, **(student_params or {})}
    student = TfidfStudent(**params).fit([X[i] for i in tr[keep]], y[tr[keep]].tolist())
    X_cal = [X[i] for i in cal]
    proba = student.predict_proba(X_cal)
    pred = student.classes_[proba.argmax(1)]
    correct = pred == y[cal]
    cal_fit = ThresholdCalibrator(alpha=alpha, delta=delta, bound=bound).fit(proba.max(1), correct)
    return Certification(
        kind="classify", student="tfidf", n_train=int(keep.sum()), n_calib=len(cal), alpha=alpha, delta=delta,
        threshold=cal_fit.threshold_, coverage=cal_fit.coverage_,
        coverage_interval=tuple(float(x) for x in cal_fit.coverage_interval_),  # type: ignore[arg-type]
        n_answered=cal_fit.n_answered_, errors_answered=cal_fit.errors_answered_, risk_upper=cal_fit.risk_upper_,
        guarantee=cal_fit.guarantee_, seconds=time.perf_counter() - t0, model=student,
    )


def default_certifier(texts: Sequence[str], answers: Sequence[Any], kind: str) -> Certification | None:
    """Certify ``classify`` templates (:func:`certify_classify`); ``None`` for the other kinds for now."""
    if kind == "classify":
        return certify_classify(texts, [str(a) for a in answers])
    return None
