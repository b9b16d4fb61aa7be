"""The audit log: one :class:`~downsize.store.RequestLog` row per answered request.

* :mod:`.record`: the rows, built for both channels (batch ``downsize predict`` and the gateway);
* :mod:`.writer`: :class:`AuditWriter`, batched writes off the request path;
* :mod:`.log`: reading it back (``downsize log tail`` / ``log export``).

Layering: ``cascade`` → ``audit`` → ``report`` / ``server`` / ``project``; nothing here imports fastapi.
"""

from __future__ import annotations

from .log import export_log, parse_duration, parse_since, read_log
from .record import LOG_COLUMNS, AuditRecord, ShadowLabel, SpotCheckRecord, decision_records, teacher_only_cost
from .writer import AuditWriter

__all__ = [
    "AuditWriter",
    "LOG_COLUMNS",
    "AuditRecord",
    "SpotCheckRecord",
    "ShadowLabel",
    "decision_records",
    "teacher_only_cost",
    "read_log",
    "export_log",
    "parse_since",
    "parse_duration",
]
