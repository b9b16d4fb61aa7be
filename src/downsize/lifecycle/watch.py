"""The live monitors of a task's current epoch, fed from the store and checkpointed in it.

:class:`TaskWatch` feeds a :class:`~downsize.monitor.RiskMonitor` with the losses of the spot
checks of the live version (a failed spot check, where the teacher gave no answer, has no
loss and is fed neither as an agreement nor as a disagreement) and a
:class:`~downsize.monitor.DriftMonitor` with the confidences of every gateway request the live
student scored, both **in store-id order**, reading only rows written after the epoch began.
Every gateway worker reads the same rows in the same order, so they all hold the same monitor
whatever request each of them answered; the state is saved as a
:class:`~downsize.store.MonitorCheckpoint` after each sync, so a restart continues where the
last process stopped instead of replaying the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..config import Config
from ..errors import MonitorError
from ..monitor import DriftMonitor, DriftState, MonitorState, RiskMonitor
from ..store import Example, MonitorCheckpoint, RequestLog, SpotCheck, Store, utcnow
from .state import Live

__all__ = ["TaskWatch", "WatchReport", "reference_confidences"]


@dataclass(frozen=True)
class WatchReport:
    """The monitors after a sync, and how many new rows it read."""

    risk: MonitorState | None
    drift: DriftState | None
    new_checks: int
    new_confidences: int

    def evidence(self) -> dict[str, Any]:
        """The risk monitor's evidence, JSON-ready (for the suspension event, /healthz, the report)."""
        r = self.risk
        if r is None:
            return {}
        return {"checks": r.n_checks, "disagreements": round(r.loss_sum, 4), "mean_loss": r.mean_loss,
                "alpha": r.alpha, "statistic": r.wealth, "log_wealth": r.log_wealth, "threshold": r.threshold,
                "delta": r.delta, "alarm_at": r.alarm_at, "upper_bound": r.upper_bound, "describe": r.describe()}


def reference_confidences(store: Store, config: Config, live: Live, student: Any) -> list[float]:
    """The live student's confidences on its calibration rows (the drift monitor's reference)."""
    run, sv = live.calibration, live.student
    if run is None or sv is None or student is None:
        return []
    oof = (sv.metrics or {}).get("oof")
    if oof and not (run.details or {}).get("example_ids"):
        # cross-fitted: the refit has seen these rows; the calibrated confidences are the out-of-fold ones
        return [min(max(float(c), 0.0), 1.0) for c in oof["confidence"]]
    ids = list((run.details or {}).get("example_ids") or sv.calib_example_ids or [])
    texts: list[str] = []
    with store.session() as s:
        for i in range(0, len(ids), 500):
            texts.extend(t for (t,) in s.execute(select(Example.text).where(Example.id.in_(ids[i:i + 500]))))
    if not texts:
        return []
    _, conf = config.task(live.task).score(student, texts)
    return [min(max(float(c), 0.0), 1.0) for c in conf]


class TaskWatch:
    """The risk and drift monitors of one task's current epoch (see the module docstring).

    Parameters
    ----------
    store, config : the project's
    live : Live
        What is live (its epoch decides which rows are read and each monitor's δ).
    reference : list of float or None
        Calibration confidences for the drift monitor when it has no checkpoint yet (None or
        empty: no drift monitor).
    """

    def __init__(self, store: Store, config: Config, live: Live, *, reference: list[float] | None = None) -> None:
        self.store = store
        self.live = live
        self.task = live.task
        self.epoch = live.epoch_key
        t = config.task(live.task)
        self.delta = live.monitor_delta(t.monitor_delta)
        alpha = live.calibration.alpha if live.calibration is not None else t.alpha
        self.risk: RiskMonitor | None = None
        self.drift: DriftMonitor | None = None
        self._last = {"risk": live.spot_id_start, "drift": live.request_id_start}
        if live.student is None or live.calibration is None or live.calibration.threshold is None:
            return  # nothing answers: nothing to monitor
        saved = self._checkpoints()
        self.risk = self._restore("risk", saved, RiskMonitor.from_dict) or RiskMonitor(alpha, self.delta)
        self.drift = self._restore("drift", saved, DriftMonitor.from_dict)
        if self.drift is None and reference:
            self.drift = DriftMonitor(reference, self.delta)

    def _checkpoints(self) -> dict[str, MonitorCheckpoint]:
        with self.store.session() as s:
            rows = s.scalars(select(MonitorCheckpoint).where(MonitorCheckpoint.task == self.task,
                                                             MonitorCheckpoint.epoch == self.epoch)).all()
        return {r.monitor: r for r in rows}

    def _restore(self, name: str, saved: dict[str, MonitorCheckpoint], load: Any) -> Any:
        row = saved.get(name)
        if row is None:
            return None
        try:
            mon = load(row.state)
        except MonitorError:  # a damaged checkpoint: rebuild from the rows
            return None
        self._last[name] = max(self._last[name], int(row.last_id))
        return mon

    def sync(self, *, max_rows: int = 20_000) -> WatchReport:
        """Feed the rows written since the last sync (in id order) and save the checkpoints."""
        sv = self.live.student
        n_checks = n_conf = 0
        if self.risk is not None and sv is not None:
            with self.store.session() as s:
                rows = s.execute(select(SpotCheck.id, SpotCheck.loss).where(
                    SpotCheck.task == self.task, SpotCheck.student_version_id == sv.id,
                    SpotCheck.id > self._last["risk"]).order_by(SpotCheck.id).limit(max_rows)).all()
            losses = [float(loss) for _, loss in rows if loss is not None]  # teacher failed: fed neither way
            if rows:
                self.risk.extend(losses)
                self._last["risk"] = int(rows[-1][0])
                n_checks = len(losses)
                self._save("risk", self.risk.to_dict())
        if self.drift is not None and sv is not None:
            with self.store.session() as s:
                rows = s.execute(select(RequestLog.id, RequestLog.confidence).where(
                    RequestLog.task == self.task, RequestLog.student_version_id == sv.id,
                    RequestLog.channel == "gateway", RequestLog.confidence.is_not(None),
                    RequestLog.id > self._last["drift"]).order_by(RequestLog.id).limit(max_rows)).all()
            if rows:
                self.drift.extend([min(max(float(c), 0.0), 1.0) for _, c in rows])
                self._last["drift"] = int(rows[-1][0])
                n_conf = len(rows)
                self._save("drift", self.drift.to_dict())
        return WatchReport(self.risk.state if self.risk else None, self.drift.state if self.drift else None,
                           n_checks, n_conf)

    def _save(self, name: str, state: dict[str, Any]) -> None:
        last = self._last[name]
        try:
            with self.store.session() as s:
                row = s.scalar(select(MonitorCheckpoint).where(
                    MonitorCheckpoint.task == self.task, MonitorCheckpoint.epoch == self.epoch,
                    MonitorCheckpoint.monitor == name))
                if row is None:
                    s.add(MonitorCheckpoint(task=self.task, epoch=self.epoch, monitor=name, last_id=last, state=state))
                elif row.last_id < last:  # only ever forward (another worker may be ahead)
                    row.last_id, row.state, row.updated_at = last, state, utcnow()
        except IntegrityError:  # another worker wrote the first checkpoint at the same moment
            pass
