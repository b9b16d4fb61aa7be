"""Live monitors of a deployed student: is the calibrated guarantee still true?

* :class:`RiskMonitor` — anytime-valid test of "live risk ≤ α" from spot checks (a betting
  test martingale); alarms with lifetime false-alarm probability ≤ δ. Decides suspension.
* :class:`DriftMonitor` — unsupervised early warning from the student's confidences alone
  (an exchangeability martingale against the calibration confidences). Raises the spot-check
  rate; never suspends.
* :func:`version_delta` — split a task's ``monitor_delta`` over its successive monitors.

Pure statistics: no store, no clock, no I/O. Both monitors are deterministic functions of
their ordered inputs, save to / load from JSON-ready dicts, and can be rebuilt with
``replay`` from the rows in the store.
"""

from __future__ import annotations

from .drift import DriftMonitor, DriftState
from .risk import MonitorState, RiskMonitor, version_delta

__all__ = ["DriftMonitor", "DriftState", "MonitorState", "RiskMonitor", "version_delta"]
