"""Continuous distillation: a candidate trained on recent labels, calibrated on fresher ones, gated.

Labels accumulate while the gateway runs: shadow answers (every request of a suspended or
shadow-mode task: a uniform sample of its traffic), spot checks (a uniform sample of the
*answered* requests) and escalations (the requests the student was unsure of). All of them are
fine to **train** on. Only the shadow ones are a uniform sample of all traffic, so only they
**calibrate**: λ is chosen over every request, and a sample that over- or under-represents the
hard ones would bias it (the escalations are exactly the hard ones).

Order is the store's id, never a clock: an example's place in time is the id of its first label
(labels are appended in the order they were written, whatever the wall clocks of the workers
said). :func:`retrain_task` takes the newest shadow examples as the calibration set and trains
on the ``retrain_window`` examples that came in before the oldest of them, each with the label
it had then (labels with a smaller id), so the candidate is calibrated on labels newer than any
it trained on. :func:`recalibrate_task` (too few new labels to train on) keeps the live student
and calibrates it on the shadow examples that came in after it was trained.

The gate is the calibration itself: Learn-then-Test at the task's α and δ on the fresh set; a
candidate goes live (:func:`~downsize.lifecycle.promote`) only when a threshold qualified.
Under the assumption that traffic after the shift is exchangeable with the fresh calibration
set (the newest traffic), the promoted version carries the same guarantee as a first
calibration. The live version is never touched until the candidate is complete: the files are
written to a temporary directory and moved into place before the row that names them.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..calibration import ThresholdCalibrator, min_calibration_size
from ..config import Config
from ..errors import AnswerError, CalibrationError, LifecycleError, StudentError
from ..store import LABEL_SOURCES, CalibrationRun, Example, Label, Store, StudentVersion
from ..students import make_student
from ..students.artifacts import sha256_bytes
from ..training import load_student_version, rare_text
from .state import live, promote, record_event

__all__ = ["RetrainResult", "fresh_label_count", "recalibrate_task", "retrain_or_recalibrate", "retrain_task"]

_PRIO = {s: i for i, s in enumerate(LABEL_SOURCES)}


@dataclass
class RetrainResult:
    """What ``downsize retrain`` prints."""

    task: str
    action: str  #: retrained | recalibrated
    version: int
    student_version_id: int
    calibration_run_id: int
    passed: bool  #: the gate: a threshold certified alpha on the fresh calibration set
    promoted: bool
    n_train: int
    n_calib: int
    cutoff_label_id: int
    threshold: float | None
    coverage: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Ex:
    example_id: int
    first_id: int  #: id of its first label: its place in time
    text: str
    labels: tuple[tuple[int, str, str, str | None], ...]  #: (label id, label, source, origin), by id

    def label_upto(self, cutoff: int | None = None) -> tuple[str, str, str | None] | None:
        """The effective label among labels with id ≤ cutoff (gold > human > teacher, then newest)."""
        best = None
        for lid, lab, src, origin in self.labels:
            if cutoff is not None and lid > cutoff:
                break
            key = (_PRIO[src], lid)
            if best is None or key > best[0]:
                best = (key, (lab, src, origin))
        return None if best is None else best[1]


def _examples(store: Store, task: str) -> list[_Ex]:
    """The task's labelled examples in store order (their first label's id); revoked labels left out."""
    with store.session() as s:
        rows = s.execute(select(Label.id, Label.example_id, Label.label, Label.source, Label.origin)
                         .where(Label.task == task, Label.revoked_at.is_(None)).order_by(Label.id)).all()
        by: dict[int, list[tuple[int, str, str, str | None]]] = {}
        for lid, eid, lab, src, origin in rows:
            by.setdefault(eid, []).append((lid, lab, src, origin))
        texts: dict[int, str] = {}
        ids = list(by)
        for i in range(0, len(ids), 500):
            texts.update(dict(s.execute(select(Example.id, Example.text).where(Example.id.in_(ids[i:i + 500]))).all()))
    out = [_Ex(eid, labs[0][0], texts[eid], tuple(labs)) for eid, labs in by.items()]
    return sorted(out, key=lambda e: e.first_id)


def _is_shadow(e: _Ex) -> bool:
    """Selected uniformly from all traffic: its first label was a shadow answer."""
    return e.labels[0][3] == "shadow"


def _trained_cutoff(store: Store, task: str, sv: StudentVersion, exs: list[_Ex] | None = None) -> int:
    """The last label id the live student can have trained on.

    A candidate records it. A student from ``downsize train`` used every example labelled then,
    which (labels being appended) are the first ``n_train + n_calib`` examples in store order;
    when that count does not fit (labels revoked since), the first state event that named the
    student, which came after it was trained, bounds it; failing that, every label so far.
    """
    m = sv.metrics or {}
    if "cutoff_label_id" in m:
        return int(m["cutoff_label_id"])
    exs = _examples(store, task) if exs is None else exs
    # a cross-fitted version calibrated on every row it had (and trained on those it could learn)
    n = int(sv.n_calib) if m.get("oof") else int(sv.n_train) + int(sv.n_calib)
    cal = set(sv.calib_example_ids or [])
    if 0 < n <= len(exs) and cal <= {e.example_id for e in exs[:n]}:
        return exs[n - 1].first_id if n == len(exs) else exs[n].first_id - 1
    from ..store import TaskEvent

    with store.session() as s:
        evs = s.scalars(select(TaskEvent).where(TaskEvent.task == task, TaskEvent.parent_id.is_not(None),
                                                TaskEvent.student_version_id == sv.id).order_by(TaskEvent.id)).all()
    if evs:
        return int(evs[0].details.get("label_id_max", 0))
    return max((e.labels[-1][0] for e in exs), default=0)


def fresh_label_count(store: Store, task: str) -> int:
    """Shadow examples that came in after the live student's training data (what a gate would use)."""
    cur = live(store, task)
    exs = _examples(store, task)
    cutoff = _trained_cutoff(store, task, cur.student, exs) if cur.student is not None else 0
    return sum(1 for e in exs if e.first_id > cutoff and _is_shadow(e))


def _gate(store: Store, config: Config, task_name: str, sv: StudentVersion, student: Any, cal: list[_Ex],
          cutoff: int, action: str) -> tuple[CalibrationRun, ThresholdCalibrator]:
    task = config.task(task_name)
    answers = []
    for e in cal:
        lab = e.label_upto()
        assert lab is not None
        answers.append(task.decode(lab[0]))
    pred, conf = task.score(student, [e.text for e in cal])
    correct = task.disagreements(pred, answers) == 0
    calib = ThresholdCalibrator(alpha=task.alpha, delta=task.delta, bound=task.bound).fit(conf, correct)
    run = CalibrationRun(
        task=task_name, student_version_id=sv.id, alpha=task.alpha, delta=task.delta,
        threshold=None if calib.threshold_ is None else float(calib.threshold_),
        coverage=float(calib.coverage_), coverage_lo=float(calib.coverage_interval_[0]),
        coverage_hi=float(calib.coverage_interval_[1]), n_calib=int(calib.n_), n_answered=int(calib.n_answered_),
        errors_answered=int(calib.errors_answered_), reference="teacher",
        method=f"ltt-{task.bound.replace('_', '-')}-fresh",
        details={"guarantee": calib.guarantee_, "fresh": True, "action": action, "cutoff_label_id": cutoff,
                 "first_label_ids": [cal[0].first_id, cal[-1].first_id], "student_version": sv.version,
                 "example_ids": [e.example_id for e in cal], "agreement_all": float(correct.mean())},
    )
    store.add(run)
    return run, calib


def _finish(store: Store, config: Config, task: str, sv: StudentVersion, run: CalibrationRun,
            calib: ThresholdCalibrator, *, action: str, n_train: int, cutoff: int, promote_it: bool,
            actor: str) -> RetrainResult:
    passed = run.threshold is not None
    promoted = False
    if passed and promote_it:
        promote(store, config, task, sv.version, calibration_run_id=run.id, actor=actor)
        promoted = True
        msg = (f"{action} v{sv.version}: passed the gate on {run.n_calib} fresh calibration rows (threshold "
               f"{run.threshold:.4f}, {run.coverage:.1%} answered) and is live")
    elif passed:
        msg = (f"{action} v{sv.version}: passed the gate on {run.n_calib} fresh rows; not promoted "
               f"(`downsize promote {task} {sv.version}`)")
    else:
        msg = (f"{action} v{sv.version}: refused by the gate: no threshold certifies alpha={run.alpha:g} on "
               f"{run.n_calib} fresh calibration rows ({run.details.get('agreement_all', 0):.1%} agreement); "
               "the live version is unchanged")
        record_event(store, task, "gate_failed", message=msg, student_version_id=sv.id, calibration_run_id=run.id,
                     details={"n_calib": run.n_calib, "agreement": run.details.get("agreement_all")}, actor=actor)
    return RetrainResult(task, action, sv.version, sv.id, run.id, passed, promoted, n_train, run.n_calib, cutoff,
                         run.threshold, run.coverage, msg)


def _save_candidate(store: Store, config: Config, task_name: str, student: Any, *, kind: str, n_train: int,
                    n_calib: int, cutoff: int, train_s: float, seed: int) -> StudentVersion:
    """Write the files to a temporary directory, move it into place, then add the row (a crash at any
    point leaves the live version, and every row, as they were)."""
    root = config.home_dir() / "students" / task_name
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    try:
        student.save(tmp)
        for _ in range(5):
            version = store.next_student_version(task_name)
            path = root / f"v{version}"
            if path.exists():
                raise StudentError(f"{path} already exists; refusing to overwrite a saved student")
            os.replace(tmp, path)
            row = StudentVersion(
                task=task_name, version=version, kind=kind, path=path.relative_to(config.home_dir()).as_posix(),
                sha256=sha256_bytes((path / "manifest.json").read_bytes()),
                size_bytes=sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
                labels=[str(c) for c in getattr(student, "classes_", [])], n_train=n_train, n_calib=n_calib,
                calib_example_ids=[], train_seconds=train_s,
                metrics={"candidate": True, "origin": "retrain", "cutoff_label_id": cutoff, "seed": seed})
            try:
                store.add(row)
                return row
            except IntegrityError:  # another process took this version number: try the next
                os.replace(path, tmp)
        raise LifecycleError(f"task {task_name!r}: could not claim a version number for the candidate")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def retrain_task(store: Store, config: Config, task_name: str, *, promote_it: bool = True, seed: int = 0,
                 kind: str | None = None, actor: str = "python") -> RetrainResult:
    """Train a candidate on recent labels, calibrate it on fresher shadow labels, gate and promote it.

    Raises
    ------
    LifecycleError
        Too few fresh shadow labels to calibrate (says how many, and how many are needed).
    StudentError
        The training labels do not fit the task (fewer than two labels with enough examples:
        rarer labels are left to the teacher, as ``downsize train`` does).
    """
    task = config.task(task_name)
    cur = live(store, task_name)
    exs = _examples(store, task_name)
    base = _trained_cutoff(store, task_name, cur.student, exs) if cur.student is not None else 0
    fresh = [e for e in exs if e.first_id > base and _is_shadow(e)]
    need_cal = min_calibration_size(task.alpha, task.delta)
    n_cal = max(need_cal, round(task.calibration_fraction * len(fresh)))
    if len(fresh) < max(task.retrain_min_labels, n_cal + 1):
        raise LifecycleError(
            f"task {task_name!r}: {len(fresh)} fresh shadow labels since v{cur.student.version if cur.student else 0} "
            f"was trained; retraining needs {max(task.retrain_min_labels, n_cal + 1)} (retrain_min_labels="
            f"{task.retrain_min_labels}, and {need_cal} to calibrate at alpha={task.alpha:g}); try "
            f"`downsize retrain {task_name} --recalibrate`, or wait for more traffic")
    cal = fresh[-n_cal:]
    cutoff = cal[0].first_id - 1
    train = [e for e in exs if e.first_id <= cutoff][-task.retrain_window:]
    X, y = [], []
    for e in train:
        lab = e.label_upto(cutoff)
        if lab is None:
            continue
        try:
            y.append(task.decode(lab[0]))
        except AnswerError as exc:
            raise StudentError(f"task {task_name!r}: label {lab[0]!r} of example #{e.example_id} does not fit the "
                               f"task: {exc}") from None
        X.append(e.text)
    # as `downsize train`: labels too rare to learn stay with the teacher (their rows are not trained
    # on; in the fresh calibration rows any student answer on them counts as an error)
    rare = task.teacher_only(y)
    if rare:
        keep = [not task.needs_teacher(a, rare) for a in y]
        X, y = [x for x, k in zip(X, keep) if k], [a for a, k in zip(y, keep) if k]
    try:
        task.check_training(task_name, y)
    except StudentError as exc:
        if not rare:
            raise
        raise StudentError(f"{exc}; left to the teacher: {rare_text(rare)}") from None
    family = kind or (cur.student.kind if cur.student is not None else
                      task.student if task.student != "auto" else task.students[0])
    t0 = time.perf_counter()
    student = make_student(family, task_kind=task.kind, **{"random_state": seed, **task.student_params(family)})
    student.fit(X, task.targets(y))
    train_s = time.perf_counter() - t0
    sv = _save_candidate(store, config, task_name, student, kind=family, n_train=len(X), n_calib=len(cal),
                         cutoff=cutoff, train_s=train_s, seed=seed)
    try:
        run, calib = _gate(store, config, task_name, sv, student, cal, cutoff, "retrained")
    except CalibrationError as exc:
        raise LifecycleError(f"task {task_name!r}: the candidate v{sv.version} cannot be calibrated: {exc}") from None
    return _finish(store, config, task_name, sv, run, calib, action="retrained", n_train=len(X), cutoff=cutoff,
                   promote_it=promote_it, actor=actor)


def recalibrate_task(store: Store, config: Config, task_name: str, *, promote_it: bool = True,
                     actor: str = "python") -> RetrainResult:
    """Recalibrate the live student on the recent window only (shadow labels newer than its training
    data), with the same gate: the shift-aware fallback when there are too few labels to retrain."""
    task = config.task(task_name)
    cur = live(store, task_name)
    if cur.student is None:
        raise LifecycleError(f"task {task_name!r} has no student to recalibrate: run `downsize train {task_name}`")
    exs = _examples(store, task_name)
    cutoff = _trained_cutoff(store, task_name, cur.student, exs)
    cal = [e for e in exs if e.first_id > cutoff and _is_shadow(e)][-task.retrain_window:]
    need = min_calibration_size(task.alpha, task.delta)
    if len(cal) < need:
        raise LifecycleError(f"task {task_name!r}: {len(cal)} shadow labels newer than v{cur.student.version}'s "
                             f"training data; recalibrating needs at least {need} at alpha={task.alpha:g}, "
                             f"delta={task.delta:g}")
    try:
        student = load_student_version(cur.student, config.home_dir())
    except StudentError as exc:
        raise LifecycleError(f"task {task_name!r}: the live student cannot be loaded to recalibrate: {exc}") from None
    try:
        run, calib = _gate(store, config, task_name, cur.student, student, cal, cutoff, "recalibrated")
    except CalibrationError as exc:
        raise LifecycleError(f"task {task_name!r}: recalibration impossible: {exc}") from None
    return _finish(store, config, task_name, cur.student, run, calib, action="recalibrated", n_train=0,
                   cutoff=cutoff, promote_it=promote_it, actor=actor)


def retrain_or_recalibrate(store: Store, config: Config, task_name: str, *, promote_it: bool = True,
                           actor: str = "python") -> RetrainResult:
    """Retrain when there are enough fresh labels, else recalibrate on the recent window."""
    task = config.task(task_name)
    if fresh_label_count(store, task_name) >= max(task.retrain_min_labels,
                                                   min_calibration_size(task.alpha, task.delta) + 1):
        try:
            return retrain_task(store, config, task_name, promote_it=promote_it, actor=actor)
        except LifecycleError:
            pass
    return recalibrate_task(store, config, task_name, promote_it=promote_it, actor=actor)
