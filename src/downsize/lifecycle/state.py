"""Which version of a task is live, and whether it is suspended: the chain of state events.

A task's life is a chain of :class:`~downsize.store.TaskEvent` rows (``suspended``, ``resumed``,
``promoted``, ``rolled_back``), each naming the one before it; the unique ``(task, parent_id)``
makes every change a compare-and-set, so two gateway workers (or a worker and the CLI) that act
at once cannot both win: the loser re-reads and sees what the winner did. The head of the chain
says which student version and calibration run are live and whether the task is suspended.

Before the first state event a task lives the old way: its newest student (not a retrain
candidate) with that student's newest calibration. The first promotion, rollback or suspension
pins it; from then on only this chain changes what is live (``downsize promote`` puts a newly
trained version live, through the gate).

Every ``promoted``, ``rolled_back`` and ``resumed`` event starts a fresh monitor (a new *epoch*):
the v-th gets ``version_delta(monitor_delta, v)`` of the task's false-alarm budget, so over the
task's whole life the chance of ever suspending it while it is fine stays ≤ ``monitor_delta``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..config import Config
from ..errors import LifecycleError, StudentError
from ..monitor import version_delta
from ..store import CalibrationRun, Label, RequestLog, SpotCheck, Store, StudentVersion, TaskEvent
from ..training import load_student_version

__all__ = [
    "STATE_KINDS",
    "Live",
    "change_state",
    "events",
    "find_version",
    "live",
    "promote",
    "record_event",
    "resume",
    "rollback",
    "suspend",
    "versions",
]

#: Event kinds that change what is live (they form the chain).
STATE_KINDS = ("suspended", "resumed", "promoted", "rolled_back")
#: State events that start a fresh monitor.
_EPOCH_KINDS = ("resumed", "promoted", "rolled_back")


@dataclass(frozen=True)
class Live:
    """What is live for a task right now (see the module docstring).

    Attributes
    ----------
    student, calibration : row or None
        The live student version and its calibration run (None: none yet).
    head : TaskEvent or None
        The latest state event (None: the task lives the old way, nothing pinned yet).
    suspended : bool
    epoch : int
        The 1-based index of the current monitor (``version_delta``'s ``version``).
    epoch_start : TaskEvent or None
        The event that started the current monitor (None: the first one).
    """

    task: str
    student: StudentVersion | None
    calibration: CalibrationRun | None
    head: TaskEvent | None
    suspended: bool
    epoch: int
    epoch_start: TaskEvent | None

    @property
    def key(self) -> str:
        """Identity of what is served: changes whenever the version, calibration or state does."""
        return (f"{self.head.id if self.head else 0}:{self.student.id if self.student else 0}:"
                f"{self.calibration.id if self.calibration else 0}")

    @property
    def epoch_key(self) -> str:
        """Identity of the current monitor (its checkpoints are stored under it)."""
        return (f"e{self.epoch_start.id if self.epoch_start else 0}:s{self.student.id if self.student else 0}:"
                f"c{self.calibration.id if self.calibration else 0}")

    @property
    def spot_id_start(self) -> int:
        return self.epoch_start.spot_id_start if self.epoch_start else 0

    @property
    def request_id_start(self) -> int:
        return self.epoch_start.request_id_start if self.epoch_start else 0

    def monitor_delta(self, monitor_delta: float) -> float:
        """This epoch's share of the task's lifetime false-alarm budget."""
        return version_delta(monitor_delta, self.epoch)

    @property
    def reason(self) -> str:
        """Why the task is suspended (the suspension event's message), or ''."""
        return self.head.message if self.suspended and self.head is not None else ""

    def describe(self) -> dict[str, Any]:
        sv, run = self.student, self.calibration
        out: dict[str, Any] = {
            "state": "suspended" if self.suspended else "live",
            "version": sv.version if sv else None, "student_version_id": sv.id if sv else None,
            "calibration_run_id": run.id if run else None, "epoch": self.epoch,
        }
        if self.suspended and self.head is not None:
            out["suspended"] = {"event_id": self.head.id, "since": self.head.ts.isoformat() + "Z",
                                "reason": self.head.message, "evidence": self.head.details.get("evidence", {})}
        return out


def _legacy(s: Any, task: str) -> tuple[StudentVersion | None, CalibrationRun | None]:
    rows = s.scalars(select(StudentVersion).where(StudentVersion.task == task)
                     .order_by(StudentVersion.version.desc())).all()
    sv = next((r for r in rows if not (r.metrics or {}).get("candidate")), None)
    if sv is None:
        return None, None
    run = s.scalar(select(CalibrationRun).where(CalibrationRun.task == task, CalibrationRun.student_version_id == sv.id)
                   .order_by(CalibrationRun.id.desc()).limit(1))
    return sv, run


def live(store: Store, task: str) -> Live:
    """The live version and state of ``task`` (see the module docstring)."""
    with store.session() as s:
        chain = s.scalars(select(TaskEvent).where(TaskEvent.task == task, TaskEvent.parent_id.is_not(None))
                          .order_by(TaskEvent.id)).all()
        if not chain:
            sv, run = _legacy(s, task)
            return Live(task, sv, run, None, False, 1, None)
        head = chain[-1]
        sv = s.get(StudentVersion, head.student_version_id) if head.student_version_id else None
        run = s.get(CalibrationRun, head.calibration_run_id) if head.calibration_run_id else None
        starts = [e for e in chain if e.kind in _EPOCH_KINDS]
        return Live(task, sv, run, head, head.kind == "suspended", len(starts) + 1, starts[-1] if starts else None)


def _marks(s: Any, task: str) -> tuple[int, int, int]:
    """The last spot-check, audit-log and label ids of ``task`` (a fresh monitor reads rows after them)."""
    spot = s.scalar(select(func.max(SpotCheck.id)).where(SpotCheck.task == task)) or 0
    req = s.scalar(select(func.max(RequestLog.id)).where(RequestLog.task == task)) or 0
    lab = s.scalar(select(func.max(Label.id)).where(Label.task == task)) or 0
    return int(spot), int(req), int(lab)


def change_state(store: Store, task: str, kind: str, *, expect: Live, student_version_id: int | None,
                 calibration_run_id: int | None, message: str, details: dict[str, Any] | None = None,
                 actor: str = "python") -> TaskEvent:
    """Append a state event after ``expect.head`` (compare-and-set).

    Raises
    ------
    LifecycleError
        Another process changed the task's state since ``expect`` was read.
    """
    if kind not in STATE_KINDS:
        raise ValueError(f"kind must be one of {STATE_KINDS}, got {kind!r}")
    try:
        with store.session() as s:
            spot, req, lab = _marks(s, task)
            ev = TaskEvent(task=task, kind=kind, parent_id=expect.head.id if expect.head else 0,
                           student_version_id=student_version_id, calibration_run_id=calibration_run_id,
                           spot_id_start=spot, request_id_start=req, actor=actor, message=message,
                           details={**(details or {}), "label_id_max": lab,
                                    "previous": {"student_version_id": expect.student.id if expect.student else None,
                                                 "calibration_run_id": expect.calibration.id if expect.calibration
                                                 else None}})
            s.add(ev)
        return ev
    except IntegrityError:
        now = live(store, task)
        raise LifecycleError(
            f"task {task!r} changed while this {kind} was being written (now: {now.describe()['state']}, "
            f"version {now.describe()['version']}, event #{now.head.id if now.head else 0}); nothing was changed "
            "by this call: look at `downsize versions` and try again if it still makes sense") from None


def record_event(store: Store, task: str, kind: str, *, message: str, details: dict[str, Any] | None = None,
                 dedupe: str | None = None, student_version_id: int | None = None,
                 calibration_run_id: int | None = None, actor: str = "python") -> TaskEvent | None:
    """Append a non-state event; with ``dedupe`` an event already recorded under it is not repeated
    (returns None then)."""
    try:
        with store.session() as s:
            ev = TaskEvent(task=task, kind=kind, parent_id=None, dedupe=dedupe, message=message,
                           details=details or {}, student_version_id=student_version_id,
                           calibration_run_id=calibration_run_id, actor=actor)
            s.add(ev)
        return ev
    except IntegrityError:
        return None


def events(store: Store, task: str | None = None, *, limit: int = 20) -> list[TaskEvent]:
    """The newest events (of one task or all), newest first."""
    with store.session() as s:
        q = select(TaskEvent)
        if task is not None:
            q = q.where(TaskEvent.task == task)
        return list(s.scalars(q.order_by(TaskEvent.id.desc()).limit(limit)))


def suspend(store: Store, task: str, *, expect: Live, message: str, evidence: dict[str, Any],
            actor: str = "python") -> TaskEvent:
    """Suspend the live version (every request goes to the teacher). If another process suspended
    it meanwhile, return that process's event."""
    try:
        return change_state(store, task, "suspended", expect=expect,
                            student_version_id=expect.student.id if expect.student else None,
                            calibration_run_id=expect.calibration.id if expect.calibration else None,
                            message=message, details={"evidence": evidence}, actor=actor)
    except LifecycleError:
        now = live(store, task)
        if now.suspended and now.head is not None:
            return now.head
        raise


def find_version(store: Store, task: str, version: int) -> StudentVersion:
    with store.session() as s:
        sv = s.scalar(select(StudentVersion).where(StudentVersion.task == task, StudentVersion.version == version))
        known = s.scalars(select(StudentVersion.version).where(StudentVersion.task == task)).all()
    if sv is None:
        raise LifecycleError(f"task {task!r} has no student v{version} (versions: "
                             f"{', '.join(f'v{v}' for v in sorted(known)) or 'none'})")
    return sv


def _check_files(config: Config, task: str, sv: StudentVersion, cur: Live) -> None:
    try:
        load_student_version(sv, config.home_dir())
    except StudentError as exc:
        keep = f"v{cur.student.version}" if cur.student else "nothing (teacher only)"
        raise LifecycleError(f"refused: student v{sv.version} of task {task!r} cannot be loaded ({exc}); "
                             f"{keep} stays live") from None


def promote(store: Store, config: Config, task: str, version: int, *, calibration_run_id: int | None = None,
            actor: str = "python") -> TaskEvent:
    """Put student ``version`` live with its calibration (the newest, or ``calibration_run_id``).

    The gate: the calibration must certify the task's α (a threshold qualified at α ≤ the task's
    α and δ ≤ its δ), and the files must load and match their checksums. A suspended task resumes.

    Raises
    ------
    LifecycleError
        The gate refused (says why and what stays live), or the task changed meanwhile.
    """
    t = config.task(task)
    sv = find_version(store, task, version)
    cur = live(store, task)
    with store.session() as s:
        q = select(CalibrationRun).where(CalibrationRun.task == task, CalibrationRun.student_version_id == sv.id)
        if calibration_run_id is not None:
            q = q.where(CalibrationRun.id == calibration_run_id)
        run = s.scalar(q.order_by(CalibrationRun.id.desc()).limit(1))
    keep = f"v{cur.student.version}" if cur.student else "nothing (teacher only)"
    if run is None:
        raise LifecycleError(f"refused: student v{version} of task {task!r} has no calibration: run "
                             f"`downsize calibrate {task}` or `downsize retrain {task}`; {keep} stays live")
    if run.threshold is None or run.alpha > t.alpha + 1e-12 or run.delta > t.delta + 1e-12:
        why = ("no threshold certified the risk" if run.threshold is None else
               f"it was calibrated at alpha={run.alpha:g}, delta={run.delta:g}, looser than the task's "
               f"alpha={t.alpha:g}, delta={t.delta:g}")
        raise LifecycleError(f"refused by the gate: calibration #{run.id} of v{version} does not certify "
                             f"alpha={t.alpha:g} ({why}; {run.n_calib} calibration rows); {keep} stays live")
    _check_files(config, task, sv, cur)
    return change_state(store, task, "promoted", expect=cur, student_version_id=sv.id, calibration_run_id=run.id,
                        message=f"v{version} promoted with calibration #{run.id}: threshold {run.threshold:.4f}, "
                        f"{run.coverage:.1%} answered on {run.n_calib} calibration rows ({run.method})",
                        details={"guarantee": (run.details or {}).get("guarantee")}, actor=actor)


def rollback(store: Store, config: Config, task: str, *, actor: str = "python") -> TaskEvent:
    """Put back the version (and calibration) that was live before the current one.

    Not gated again (it passed when it went live), but its files are checked; it gets a fresh
    monitor. Raises :class:`LifecycleError` when there is nothing to roll back to.
    """
    cur = live(store, task)
    if cur.head is None:
        raise LifecycleError(f"task {task!r} has never been promoted: there is nothing to roll back to")
    with store.session() as s:
        chain = s.scalars(select(TaskEvent).where(TaskEvent.task == task, TaskEvent.parent_id.is_not(None))
                          .order_by(TaskEvent.id.desc())).all()
    now = (cur.student.id if cur.student else None, cur.calibration.id if cur.calibration else None)
    target = None
    for e in chain:
        pair = (e.student_version_id, e.calibration_run_id)
        prev = e.details.get("previous", {})
        back = (prev.get("student_version_id"), prev.get("calibration_run_id"))
        if pair != now:
            target = pair
            break
        if back != now and back[0] is not None:
            target = back
            break
    if target is None or target[0] is None:
        raise LifecycleError(f"task {task!r}: no earlier version was ever live; nothing to roll back to")
    sv = store.student(target[0])
    assert sv is not None
    _check_files(config, task, sv, cur)
    return change_state(store, task, "rolled_back", expect=cur, student_version_id=target[0],
                        calibration_run_id=target[1], message=f"rolled back to v{sv.version} "
                        f"(calibration #{target[1]}) from v{cur.student.version if cur.student else '-'}", actor=actor)


def resume(store: Store, config: Config, task: str, *, actor: str = "python") -> tuple[TaskEvent, str]:
    """Serve the suspended version again, without a new version; returns the event and what it risks."""
    cur = live(store, task)
    if not cur.suspended or cur.head is None:
        raise LifecycleError(f"task {task!r} is not suspended; nothing to resume")
    ev_ = cur.head.details.get("evidence", {})
    t = config.task(task)
    nxt = version_delta(t.monitor_delta, cur.epoch + 1)
    risk = (f"v{cur.student.version if cur.student else '-'} was suspended because its spot checks showed live "
            f"risk above alpha={t.alpha:g} ({cur.head.message}). Resuming serves its answers again under the "
            f"same threshold with no new evidence that the guarantee holds: until a fresh monitor (false-alarm "
            f"budget {nxt:.4g}) suspends it again, answers may disagree with the teacher more often than "
            f"{t.alpha:.1%}" + (f" (the checks showed {ev_['mean_loss']:.1%})" if "mean_loss" in ev_ else "")
            + ". Retraining (`downsize retrain`) is the way that keeps the guarantee.")
    ev = change_state(store, task, "resumed", expect=cur, student_version_id=cur.head.student_version_id,
                      calibration_run_id=cur.head.calibration_run_id,
                      message=f"resumed by hand (explicit risk accepted): {risk}"[:2000], actor=actor)
    return ev, risk


def versions(store: Store, task: str) -> list[dict[str, Any]]:
    """Every student version of ``task`` with its newest calibration, gate verdict and whether it is live."""
    cur = live(store, task)
    with store.session() as s:
        rows = s.scalars(select(StudentVersion).where(StudentVersion.task == task)
                         .order_by(StudentVersion.version)).all()
        runs = {r.student_version_id: r for r in s.scalars(
            select(CalibrationRun).where(CalibrationRun.task == task).order_by(CalibrationRun.id))}
    out = []
    for sv in rows:
        run = runs.get(sv.id)
        if cur.calibration is not None and cur.student is not None and sv.id == cur.student.id:
            run = cur.calibration
        m = sv.metrics or {}
        out.append({
            "version": sv.version, "kind": sv.kind, "created_at": sv.created_at.isoformat() + "Z",
            "n_train": sv.n_train, "candidate": bool(m.get("candidate")), "origin": m.get("origin", "train"),
            "calibration_run_id": run.id if run else None, "threshold": run.threshold if run else None,
            "coverage": run.coverage if run else None, "n_calib": run.n_calib if run else None,
            "fresh": bool((run.details or {}).get("fresh")) if run else False,
            "gate": None if run is None else run.threshold is not None,
            "live": cur.student is not None and sv.id == cur.student.id,
            "state": ("suspended" if cur.suspended else "live") if cur.student is not None and sv.id == cur.student.id
            else "",
        })
    return out
