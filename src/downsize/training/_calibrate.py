"""``calibrate_task``: λ for a task's latest student on its calibration rows, and the what-if table."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calibration import ThresholdCalibrator, min_calibration_size
from ..calibration.whatif import certified_by_alpha, held_back_by, labels_needed
from ..config import Config
from ..errors import CalibrationError
from ..store import CalibrationRun, Store
from ..tasks import TaskConfig
from ._common import _answers, load_student_version

__all__ = ["calibrate_task"]


def calibrate_task(store: Store, config: Config, task_name: str, *, alpha: float | None = None,
                   delta: float | None = None, save: bool = True, force: bool = False,
                   cost_per_request: float | None = None) -> tuple[CalibrationRun, ThresholdCalibrator]:
    """Pick λ for the latest student on its calibration rows and record the run.

    A cross-fitted version (the default) calibrates on the out-of-fold answers stored with it, so
    every labelled row counts; an older or ``calibration_folds: 0`` version on its held-out split.
    ``cost_per_request`` (the teacher's $ per request) prices the what-if table (``details["what_if"]``).

    ``save=False`` (``calibrate --dry-run``) computes and returns the run without recording it. A
    run in which no threshold qualifies at another α or δ is not recorded over a calibration of the
    same student that has one (that would send every request to the teacher at once) unless
    ``force``; at the same α and δ it is (the labels or the reference changed, and the old λ no
    longer holds).

    With the task's ``reference: human`` the split's rows labelled by people are the reference once
    there are enough of them (see :func:`_reference_rows`); ``details["reference_rows"]`` says how
    many there were and what was used, and the guarantee then reads "disagrees with your reviewers".

    Raises
    ------
    CalibrationError
        No student yet, too little calibration data for the requested α and δ, or (without
        ``force``) nothing qualifies at an α or δ other than the current calibration's, which has a
        threshold.
    """
    task = config.task(task_name)
    alpha = task.alpha if alpha is None else alpha
    delta = task.delta if delta is None else delta
    sv = store.latest_student(task_name)
    if sv is None:
        raise CalibrationError(f"task {task_name!r} has no trained student: run `downsize train {task_name}` first")
    if not sv.calib_example_ids:
        raise CalibrationError(
            f"task {task_name!r}: student v{sv.version} was trained without a calibration split (its labels are "
            "synthetic, or too few are real): calibration needs real traffic. Label some with `downsize label "
            f"{task_name} DATA` or `downsize audit import LOGS --task {task_name}`, then train and calibrate again")
    student = load_student_version(sv, config.home_dir(), embedding_cache=True)
    cal_ids = set(sv.calib_example_ids)
    effective = {e.example_id: e for e in store.labelled_examples(task_name) if e.example_id in cal_ids}
    if not effective:
        raise CalibrationError(f"task {task_name!r}: the calibration split of v{sv.version} has no labelled rows")
    exs = [effective[i] for i in sorted(effective)]
    oof = (sv.metrics or {}).get("oof")
    if oof:  # cross-fitted: calibrate on the stored out-of-fold answers (rows labelled since are not in it)
        by_id = {int(i): (a, c) for i, a, c in zip(oof["ids"], oof["answers"], oof["confidence"], strict=True)}
        exs = [e for e in exs if e.example_id in by_id]
    exs, people = _reference_rows(task, exs, alpha, delta)
    if oof:
        pred = [None if by_id[e.example_id][0] is None else task.decode(by_id[e.example_id][0]) for e in exs]
        conf = np.array([by_id[e.example_id][1] for e in exs], dtype=float)
    else:
        pred, conf = task.score(student, [e.text for e in exs])
    refs = _answers(task_name, task, exs)
    rare = set((sv.metrics or {}).get("teacher_only") or {})
    teacher_only = np.array([task.needs_teacher(r, rare) for r in refs], dtype=bool)
    loss = task.disagreements(pred, refs)
    # the student could not have given a teacher-only answer: any answer it gives there is an error
    loss[teacher_only] = 1.0
    correct = loss == 0
    sources = {e.source for e in exs}
    reference = "human" if people["used"] else sources.pop() if len(sources) == 1 else "mixed"
    bound = task.calibration_bound()
    cal = ThresholdCalibrator(alpha=alpha, delta=delta, bound=bound).fit(conf, loss=loss)
    guarantee = cal.guarantee_
    if people["used"]:
        guarantee = guarantee.replace("with the reference", "with your reviewers")
    curve = _thin([dict(r) for r in getattr(cal, "curve_", [])], cal.threshold_)
    run = CalibrationRun(
        task=task_name, student_version_id=sv.id, alpha=alpha, delta=delta,
        threshold=None if cal.threshold_ is None else float(cal.threshold_),
        coverage=float(cal.coverage_), coverage_lo=float(cal.coverage_interval_[0]),
        coverage_hi=float(cal.coverage_interval_[1]), n_calib=int(cal.n_), n_answered=int(cal.n_answered_),
        errors_answered=int(cal.errors_answered_), reference=reference,
        method=f"ltt-{bound.replace('_', '-')}-fst" + (f"-crossfit{oof['folds']}" if oof else ""),
        details={"guarantee": guarantee, "risk_upper": _f(getattr(cal, "risk_upper_", None)),
                 "curve": curve, "student_version": sv.version,
                 "agreement_all": float(correct.mean()), "mean_loss": float(loss.mean()),
                 "loss_answered": float(cal.loss_answered_), "reference_rows": people,
                 "teacher_only": {"labels": sorted(rare), "rows": int(teacher_only.sum())},
                 "what_if": _what_if(task, conf, loss, refs, cal, cost_per_request)},
    )
    if not save:
        return run, cal
    prev = None if force or run.threshold is not None else store.latest_calibration(task_name, student_version_id=sv.id)
    # a new α or δ that nothing meets is a setting to reconsider; at the same α and δ the evidence
    # changed (corrected labels, another reference) and the working threshold no longer holds
    if prev is not None and prev.threshold is not None and (prev.alpha, prev.delta) != (alpha, delta):
        raise CalibrationError(
            f"task {task_name!r}: no threshold qualifies at alpha={alpha:g}, delta={delta:g} on {run.n_calib:,} "
            f"calibration rows of v{sv.version}; kept the current calibration (threshold {prev.threshold:.4f} at "
            f"alpha={prev.alpha:g}, {prev.coverage:.1%} answered locally). Pass --force (force=True) to replace "
            "it and send every request to the teacher, or --dry-run to see the figures")
    store.add(run)
    return run, cal


#: Label sources that are people's answers (``reference: human`` calibrates against these).
_PEOPLE = ("human", "gold")


def _reference_rows(task: TaskConfig, exs: list[Any], alpha: float, delta: float) -> tuple[list[Any], dict[str, Any]]:
    """The calibration rows the task's ``reference`` asks for, and what was decided.

    ``reference: human`` keeps only the rows whose effective label came from a person (a review
    correction or gold) once there are at least :func:`~downsize.calibration.min_calibration_size`
    of them (fewer could never pass any threshold); until then the task calibrates against its
    whole split as before, and the returned note says so. People's rows are exchangeable with
    live traffic only if the reviewed texts were (the random review sample, a gold file); the
    targeted queue over-represents hard cases, which makes λ more conservative, not less.
    """
    n_people = sum(e.source in _PEOPLE for e in exs)
    note: dict[str, Any] = {"requested": task.reference, "n_split": len(exs), "n_people": n_people, "used": False}
    if task.reference != "human":
        return exs, note
    need = min_calibration_size(alpha, delta)
    note["needed"] = need
    if n_people < need:
        note["note"] = (f"reference: human, but only {n_people} of the {len(exs)} calibration rows have a label "
                        f"from a person (need {need} at alpha={alpha:g}, delta={delta:g}); calibrated against "
                        "the split's labels as they are")
        return exs, note
    note["used"] = True
    note["note"] = f"calibrated against the {n_people} calibration rows labelled by people (of {len(exs)})"
    return [e for e in exs if e.source in _PEOPLE], note


def _what_if(task: TaskConfig, conf: np.ndarray, loss: np.ndarray, refs: list[Any], cal: ThresholdCalibrator,
             cost: float | None) -> dict[str, Any]:
    """What other α would certify (and save at ``cost`` $ per teacher request), an estimate of the
    labels the configured α needs, and the labels that hold the student back."""
    bound = task.calibration_bound()
    by_alpha = certified_by_alpha(conf, loss, delta=cal.delta, bound=bound)
    for r in by_alpha:
        r["saved_usd_per_1k"] = None if cost is None else r["coverage"] * cost * 1000
    need = labels_needed(conf, loss, alpha=cal.alpha, delta=cal.delta, bound=bound)
    region = min(1.0, cal.coverage_ + 0.1) if cal.threshold_ is not None else 0.25
    return {"by_alpha": by_alpha, "labels_needed": need, "cost_per_request_usd": cost, "n": int(len(conf)),
            "held_back_by": held_back_by(conf, loss, refs, parts=task.parts, coverage=region), "region": region}


def _thin(curve: list[dict[str, Any]], threshold: float | None, points: int = 200) -> list[dict[str, Any]]:
    """At most ``points`` evenly spaced rows of the calibration curve (plus the chosen λ) for the store."""
    if len(curve) <= points:
        return curve
    keep = set(np.linspace(0, len(curve) - 1, points).round().astype(int).tolist())
    keep |= {i for i, r in enumerate(curve) if threshold is not None and r.get("threshold") == threshold}
    return [curve[i] for i in sorted(keep)]


def _f(x: Any) -> float | None:
    return None if x is None else float(x)
