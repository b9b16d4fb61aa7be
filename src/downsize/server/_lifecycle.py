"""The gateway's lifecycle loop: live monitors, automatic suspension, hot reload, auto-retrain.

One background thread per gateway process (never the event loop that answers requests), every
``server.lifecycle_interval_s``, for each task:

1. reads what is live (:func:`downsize.lifecycle.live`); when it changed — another worker or the
   CLI promoted, rolled back, resumed or suspended — it loads the new version (checksums
   verified) and swaps it in with one assignment (:meth:`TaskRuntime.swap`): requests in flight
   finish on the version they started with, none is dropped, no restart. A version whose files
   do not load is refused: the old one keeps serving, and a ``refused`` event says why;
2. feeds the epoch's monitors from the store (:class:`downsize.lifecycle.TaskWatch`): spot checks
   into the risk monitor, the confidences of every request the student scored into the drift
   monitor. Every worker reads the same rows in id order, so they agree;
3. when the risk monitor rejects "live risk ≤ α", suspends the task (a state event with the
   evidence; if another worker did it first, that one stands): every request then goes to the
   teacher, whose answers become labels; if the teacher is down meanwhile, the student answers
   as ``student_fallback``, its reason saying the task is suspended;
4. when the drift monitor warns, raises the task's spot-check rate to ``drift_spot_check_rate``
   for ``drift_boost_s`` (more checks, a sooner verdict; it never suspends);
5. with ``retrain: auto``, once a suspended task has ``retrain_min_labels`` more shadow labels,
   retrains (or recalibrates) it in a worker thread; one worker claims each attempt through a
   unique event, and the gate decides whether the candidate goes live.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from sqlalchemy import func, select

from .. import lifecycle
from ..errors import DownsizeError
from ..project import Project
from ..store import Label
from ._runtime import TaskRuntime

__all__ = ["LifecycleLoop"]

log = logging.getLogger("downsize.server")


class LifecycleLoop:
    """See the module docstring. ``start`` / ``close`` bracket its life; :meth:`tick` runs one pass."""

    def __init__(self, gateway: Any, *, interval_s: float) -> None:
        self.gw = gateway
        self.interval_s = interval_s
        self.actor = f"gateway:{os.getpid()}"
        self._watches: dict[str, lifecycle.TaskWatch] = {}
        self._retiring: list[tuple[float, Any]] = []
        self._retrains: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one pass at a time (the thread, or a test calling tick)

    def start(self) -> LifecycleLoop:
        for rt in self.gw.tasks.values():  # what Gateway.open loaded is what is live now
            try:
                now = lifecycle.live(self.gw.store, rt.name)
                rt.live_key, rt.lifecycle = now.key, now.describe()
                self.gw.metrics.task_suspended.labels(rt.name).set(1.0 if now.suspended else 0.0)
            except Exception as exc:
                log.error("task %s: cannot read its lifecycle state: %s", rt.name, exc)
        self._thread = threading.Thread(target=self._run, name="downsize-lifecycle", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for t in list(self._retrains.values()):
            t.join(timeout=60)
        for _, b in self._retiring:
            b.close()
        self._retiring.clear()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        """One pass over every task (errors are logged, never raised: serving must go on)."""
        with self._lock:
            for rt in list(self.gw.tasks.values()):
                try:
                    self._tick(rt)
                except Exception as exc:
                    log.exception("task %s: lifecycle pass failed: %s", rt.name, self.gw.redact(str(exc)))
            now = time.monotonic()
            keep = []
            for at, b in self._retiring:
                if now - at > 30.0:  # long after its last request was scored
                    b.close()
                else:
                    keep.append((at, b))
            self._retiring = keep

    # -- one task -------------------------------------------------------------------------
    def _tick(self, rt: TaskRuntime) -> None:
        store = self.gw.store
        now = lifecycle.live(store, rt.name)
        if now.key != rt.live_key:
            self._reload(rt, now)
        w = self._watches.get(rt.name)
        if w is None or w.epoch != now.epoch_key:
            student = rt.cascade.student if rt.cascade.student_version_id == (now.student.id if now.student else None) \
                else None
            ref = lifecycle.reference_confidences(store, self.gw.config, now, student) if student is not None else []
            w = self._watches[rt.name] = lifecycle.TaskWatch(store, self.gw.config, now, reference=ref)
        rep = w.sync()
        self._publish(rt, now, rep)
        if rep.risk is not None and rep.risk.rejected and not now.suspended:
            self._suspend(rt, now, rep)
        if rep.drift is not None and rep.drift.warned and rt.boost_until == 0.0 and not now.suspended:
            rt.boost_until = time.monotonic() + rt.cfg.drift_boost_s
            lifecycle.record_event(store, rt.name, "drift_warning", message=rep.drift.describe(),
                                   details={"drift": _drift(rep.drift), "spot_check_rate": rt.cfg.drift_spot_check_rate,
                                            "for_s": rt.cfg.drift_boost_s},
                                   dedupe=f"drift:{now.epoch_key}", actor=self.actor)
            log.warning("task %s: drift warning (%s): spot-check rate %.0f%% for %.0f s", rt.name,
                        rep.drift.describe(), 100 * rt.cfg.drift_spot_check_rate, rt.cfg.drift_boost_s)
        if now.suspended and rt.cfg.retrain == "auto":
            self._maybe_retrain(rt, now)

    def _reload(self, rt: TaskRuntime, now: lifecycle.Live) -> None:
        old = rt.cascade
        cascade = Project(self.gw.config, self.gw.store).cascade(rt.name, teacher=rt.teacher, require_calibration=False)
        if cascade.load_error and old.student is not None and cascade.student_version_id != old.student_version_id:
            msg = (f"refused to load v{now.student.version if now.student else '?'}: {cascade.load_error}; "
                   f"still serving student #{old.student_version_id}")
            log.error("task %s: %s", rt.name, msg)
            lifecycle.record_event(self.gw.store, rt.name, "refused", message=msg, dedupe=f"refused:{now.key}",
                                   student_version_id=cascade.student_version_id, actor=self.actor)
            rt.live_key = now.key
            rt.lifecycle = {**rt.lifecycle, "refused": msg}
            return
        retired = rt.swap(cascade)
        rt.live_key = now.key
        rt.boost_until = 0.0
        if retired is not None:
            self._retiring.append((time.monotonic(), retired))
        log.warning("task %s: now serving %s (%s)", rt.name, rt.mode, rt.mode_reason)

    def _suspend(self, rt: TaskRuntime, now: lifecycle.Live, rep: lifecycle.WatchReport) -> None:
        r = rep.risk
        assert r is not None
        msg = (f"live risk above alpha={r.alpha:g}: {r.loss_sum:,.4g} of {r.n_checks:,} spot checks disagreed "
               f"({r.mean_loss:.1%}); evidence {r.wealth:.3g} >= 1/delta = {r.threshold:.3g} (anytime-valid "
               f"test, false-alarm budget {r.delta:.3g})")
        ev = lifecycle.suspend(self.gw.store, rt.name, expect=now, message=msg, evidence=rep.evidence(),
                               actor=self.actor)
        log.error("task %s: SUSPENDED (event #%d): %s; every request goes to the teacher", rt.name, ev.id, ev.message)
        self._reload(rt, lifecycle.live(self.gw.store, rt.name))

    def _publish(self, rt: TaskRuntime, now: lifecycle.Live, rep: lifecycle.WatchReport) -> None:
        info = now.describe()
        info["monitor"] = {"risk": rep.evidence() or None, "drift": _drift(rep.drift) if rep.drift else None}
        if rt.lifecycle.get("refused") and rt.cascade.student_version_id != info.get("student_version_id"):
            info["refused"] = rt.lifecycle["refused"]
        rt.lifecycle = info
        m = self.gw.metrics
        m.task_suspended.labels(rt.name).set(1.0 if now.suspended else 0.0)
        m.drift_warning.labels(rt.name).set(1.0 if rep.drift is not None and rep.drift.warned else 0.0)
        if rep.risk is not None:
            m.risk_evidence.labels(rt.name).set(rep.risk.wealth)

    def _maybe_retrain(self, rt: TaskRuntime, now: lifecycle.Live) -> None:
        job = self._retrains.get(rt.name)
        if job is not None and job.is_alive():
            return
        head = now.head
        assert head is not None
        since = int(head.details.get("label_id_max", 0))
        with self.gw.store.session() as s:
            n = s.scalar(select(func.count()).select_from(Label).where(
                Label.task == rt.name, Label.origin == "shadow", Label.id > since)) or 0
        k = n // rt.cfg.retrain_min_labels
        if k < 1:
            return
        claim = lifecycle.record_event(self.gw.store, rt.name, "retrain_started", dedupe=f"retrain:{head.id}:{k}",
                                       message=f"retraining after {n} shadow labels since the suspension",
                                       actor=self.actor)
        if claim is None:  # another worker has this attempt
            return

        def run() -> None:
            try:
                res = lifecycle.retrain_or_recalibrate(self.gw.store, self.gw.config, rt.name, actor=self.actor)
                log.warning("task %s: %s", rt.name, res.message)
            except (DownsizeError, ValueError) as exc:
                lifecycle.record_event(self.gw.store, rt.name, "retrain_failed", message=str(exc)[:2000],
                                       actor=self.actor)
                log.warning("task %s: retrain attempt %d did not produce a version: %s", rt.name, k, exc)
            except Exception as exc:  # a crash halfway: the live version is untouched
                lifecycle.record_event(self.gw.store, rt.name, "retrain_failed", message=repr(exc)[:2000],
                                       actor=self.actor)
                log.exception("task %s: retrain crashed", rt.name)

        t = self._retrains[rt.name] = threading.Thread(target=run, name=f"downsize-retrain-{rt.name}", daemon=True)
        t.start()


def _drift(d: Any) -> dict[str, Any]:
    return {"n_live": d.n_live, "live_mean": d.live_mean, "reference_mean": d.reference_mean,
            "statistic": d.martingale, "threshold": d.threshold, "warned": d.warned, "warned_at": d.warned_at,
            "describe": d.describe()}
