"""The certified local share: distil on the logged pairs, calibrate λ, read off the coverage.

The logged answers are the teacher's labels, so a template's requests are a labelled data set
that cost nothing more. A certifier fits a student on part of them and calibrates a threshold
on the rest (:class:`downsize.calibration.ThresholdCalibrator`, Learn-then-Test): the share of
held-out requests the student would answer is the *projected local share*, with its
Clopper–Pearson interval, and the guarantee holds for it (disagreement with the logged teacher
≤ α on what it answers, with probability ≥ 1 − δ, if the future traffic is exchangeable with
the logged traffic).

The hook is :data:`Certifier`: ``certifier(texts, answers, task) -> Certification | None``, where
``task`` is the proposed task (a :class:`~downsize.tasks.TaskConfig` of the template's kind, the
one ``downsize.yaml`` gets). :func:`certify_task` talks to it only through the kind contract
(``normalise``, ``strata``, ``targets``, ``student_params``, ``score``, ``disagreements``): an
extract-like template certifies with the extract kind's student (the CRF tagger), a
classify-like one with classify's (TF-IDF), and a kind with no installed student is reported as
"not certified yet". The loss bounded is the kind's: for extraction, a record that differs in
any field counts as a disagreement.
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
from ..errors import AnswerError, CalibrationError, StudentError
from ..tasks import KINDS

__all__ = ["Certification", "Certifier", "certify_classify", "certify_task", "default_certifier"]

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
    task : TaskConfig
        The task it was certified for (``task.score(model, texts)`` answers fresh traffic).
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
    task: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("kind", "student", "n_train", "n_calib", "alpha", "delta", "threshold",
                                              "coverage", "coverage_interval", "n_answered", "errors_answered",
                                              "risk_upper", "guarantee", "seconds")}


#: ``(texts, answers, task) -> Certification | None``; ``task`` is the proposed TaskConfig and the
#: answers are any JSON-like form its kind's ``normalise`` takes (classify: label strings;
#: multilabel: lists of labels; extract: ``{field: value}`` dicts).
Certifier = Callable[[Sequence[str], Sequence[Any], Any], "Certification | None"]


def certify_task(task: Any, texts: Sequence[str], answers: Sequence[Any], *, alpha: float | None = None,
                 delta: float | None = None, max_examples: int = 2000, seed: int = 0, family: str | None = None,
                 student_params: dict[str, Any] | None = None) -> Certification | None:
    """Fit the kind's cheapest installed student on part of the pairs and calibrate λ on the rest.

    Parameters
    ----------
    task : TaskConfig
        The proposed task; every step goes through its kind contract.
    texts, answers : sequences
        Request texts and their logged answers (any form ``task.normalise`` takes; answers it
        refuses, e.g. an extracted value not in the text, are left out).
    alpha, delta : float, optional
        Default: the task's.
    max_examples : int, default=2000
        A random sample of at most this many distinct texts is used (the guarantee needs
        hundreds of calibration points, not all of them: 600 held-out points give the share
        to ±4 %).
    family : str, optional
        The student family (default: the first of ``task.students`` that is installed).

    Returns
    -------
    Certification, or None when no student family of the kind is installed.

    Notes
    -----
    Logs repeat inputs. Each distinct text counts once (with its most frequent answer), so no
    calibration text was seen in training: a repeated text in both parts would make the
    held-out agreement, and the share, optimistic. Answer classes (the kind's ``strata``) seen
    fewer than ``min_examples_per_label`` times in the training part are not learnt; their
    requests stay in the calibration part, where the student gets them wrong (as it would live).

    Raises
    ------
    CalibrationError
        Fewer calibration points than α, δ need (the message names the numbers).
    StudentError
        Nothing to learn (fewer than 2 answer classes with enough examples, or the kind's
        ``check_training`` refuses).
    """
    from ..students import available, make_student

    t0 = time.perf_counter()
    if len(texts) != len(answers):
        raise ValueError(f"{len(texts)} texts but {len(answers)} answers")
    alpha = task.alpha if alpha is None else alpha
    delta = task.delta if delta is None else delta
    family = family or next((f for f in task.students if available(f, task_kind=task.kind)), None)
    if family is None:
        return None
    rng = np.random.default_rng(seed)
    by_text: dict[str, Counter[str]] = {}
    decoded: dict[str, Any] = {}
    for t, a in zip(texts, answers):
        try:
            ans = task.normalise(a, t)
        except AnswerError:
            continue
        enc = task.encode(ans)
        decoded[enc] = ans
        by_text.setdefault(t, Counter())[enc] += 1
    uniq = list(by_text)
    idx = np.arange(len(uniq))
    if len(idx) > max_examples:
        idx = np.sort(rng.choice(idx, max_examples, replace=False))
    X = [uniq[i] for i in idx]
    y = [decoded[by_text[t].most_common(1)[0][0]] for t in X]
    raw_strata = task.strata(y)
    strata = np.asarray([task.encode(a) for a in y] if raw_strata is None else
                        [str(s) for s in raw_strata], dtype=object)
    counts = Counter(strata.tolist())
    strata = np.asarray([v if counts[v] >= 2 else "\0rare" for v in strata.tolist()], dtype=object)
    if Counter(strata.tolist())["\0rare"] == 1:
        strata[strata == "\0rare"] = strata[0]
    need = min_calibration_size(alpha, delta)
    tr, cal = train_test_split(np.arange(len(idx)), test_size=task.calibration_fraction,
                               stratify=strata if raw_strata is not None else None, random_state=seed)
    if len(cal) < need:
        raise CalibrationError(f"{len(cal)} held-out pairs are too few to calibrate at alpha={alpha:g}, "
                               f"delta={delta:g} (need {need}; the template has {len(uniq)} distinct answered texts)")
    keep = np.ones(len(tr), dtype=bool)
    if raw_strata is not None:
        train_counts = Counter(strata[tr].tolist())
        keep = np.asarray([train_counts[v] >= task.min_examples_per_label for v in strata[tr].tolist()])
        if len({v for v, c in train_counts.items() if c >= task.min_examples_per_label}) < 2:
            raise StudentError(f"fewer than 2 answers have {task.min_examples_per_label} training examples: "
                               "nothing to learn")
    fit_idx = tr[keep]
    y_fit = [y[i] for i in fit_idx]
    task.check_training("audit", y_fit)
    params = {"random_state": seed, **task.student_params(family), **(student_params or {})}
    student = make_student(family, task_kind=task.kind, **params).fit([X[i] for i in fit_idx], task.targets(y_fit))
    pred, conf = task.score(student, [X[i] for i in cal])
    correct = task.disagreements(pred, [y[i] for i in cal]) == 0
    cal_fit = ThresholdCalibrator(alpha=alpha, delta=delta, bound=task.bound).fit(np.asarray(conf), correct)
    return Certification(
        kind=task.kind, student=family, n_train=len(fit_idx), n_calib=len(cal), alpha=alpha, delta=delta,
        threshold=cal_fit.threshold_, coverage=cal_fit.coverage_,
        coverage_interval=tuple(float(x) for x in cal_fit.coverage_interval_),  # type: ignore[arg-type]
        n_answered=cal_fit.n_answered_, errors_answered=cal_fit.errors_answered_, risk_upper=cal_fit.risk_upper_,
        guarantee=cal_fit.guarantee_, seconds=time.perf_counter() - t0, model=student, task=task,
    )


def certify_classify(texts: Sequence[str], labels: Sequence[str], *, alpha: float = DEFAULT_ALPHA,
                     delta: float = DEFAULT_DELTA, bound: str = DEFAULT_BOUND,
                     calibration_fraction: float = DEFAULT_CAL_FRACTION, max_examples: int = 2000,
                     seed: int = 0, student_params: dict[str, Any] | None = None) -> Certification:
    """:func:`certify_task` for a classify task whose labels are the distinct ``labels`` (TF-IDF)."""
    names = sorted({str(x) for x in labels})
    if len(names) < 2:
        raise StudentError(f"{len(names)} distinct answer(s): nothing to learn")
    task = KINDS["classify"].model_validate({
        "instructions": "audit", "labels": {n: "" for n in names}, "alpha": alpha, "delta": delta, "bound": bound,
        "calibration_fraction": calibration_fraction, "min_examples_per_label": MIN_PER_LABEL})
    cert = certify_task(task, texts, labels, max_examples=max_examples, seed=seed, family="tfidf",
                        student_params=student_params)
    assert cert is not None
    return cert


def default_certifier(texts: Sequence[str], answers: Sequence[Any], task: Any) -> Certification | None:
    """:func:`certify_task` with the kind's cheapest installed student (``None``: none installed)."""
    return certify_task(task, texts, answers)
