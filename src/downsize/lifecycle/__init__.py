"""A task's life after its first calibration: live monitors, suspension, retraining, promotion.

* :mod:`.state` — which version is live and whether the task is suspended: a chain of
  :class:`~downsize.store.TaskEvent` rows changed only by compare-and-set (:func:`promote`,
  :func:`rollback`, :func:`resume`, :func:`suspend`), so concurrent workers cannot both win.
* :mod:`.retrain` — continuous distillation: :func:`retrain_task` (a candidate trained on recent
  labels, calibrated on fresher shadow labels, live only if that calibration certifies α) and
  :func:`recalibrate_task` (too few labels: the live student recalibrated on the recent window).
* :mod:`.watch` — :class:`TaskWatch`: the risk and drift monitors of the current epoch, fed from
  the store in id order and checkpointed in it (the same in every worker, across restarts).

The gateway (:mod:`downsize.server`) runs these off the request path; the CLI wraps them
(``downsize versions / promote / rollback / resume / retrain``).
"""

from __future__ import annotations

from .retrain import (
                    RetrainResult,
                    fresh_label_count,
                    recalibrate_task,
                    retrain_or_recalibrate,
                    retrain_task,
)
from .state import (
                    STATE_KINDS,
                    Live,
                    change_state,
                    events,
                    find_version,
                    live,
                    promote,
                    record_event,
                    resume,
                    rollback,
                    suspend,
                    versions,
)
from .watch import TaskWatch, WatchReport, reference_confidences

__all__ = [
                    "STATE_KINDS",
                    "Live",
                    "RetrainResult",
                    "TaskWatch",
                    "WatchReport",
                    "change_state",
                    "events",
                    "find_version",
                    "fresh_label_count",
                    "live",
                    "promote",
                    "recalibrate_task",
                    "record_event",
                    "reference_confidences",
                    "resume",
                    "retrain_or_recalibrate",
                    "retrain_task",
                    "rollback",
                    "suspend",
                    "versions",
]
