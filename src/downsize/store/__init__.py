"""The store: everything downsize records, in one SQLAlchemy database (SQLite by default).

:mod:`.schema` holds the tables, :mod:`.store` the :class:`Store` that reads and appends them.
"""

from __future__ import annotations

from .schema import (
    LABEL_ORIGINS,
    LABEL_SOURCES,
    ApiKey,
    Base,
    CallClaim,
    CalibrationRun,
    EvalRun,
    Example,
    Label,
    MonitorCheckpoint,
    RequestLog,
    Review,
    ReviewCursor,
    ReviewItem,
    ReviewReason,
    SpendLedger,
    SpotCheck,
    StudentVersion,
    TaskEvent,
    TeacherCall,
    dumps,
    text_hash,
    utcnow,
)
from .claims import BUSY, CLAIMED, RECLAIMED, RECORDED, new_owner, owner_alive
from .store import LabelledExample, Store, make_engine

__all__ = [
    "ApiKey",
    "BUSY",
    "Base",
    "CLAIMED",
    "CalibrationRun",
    "CallClaim",
    "EvalRun",
    "Example",
    "LABEL_ORIGINS",
    "LABEL_SOURCES",
    "Label",
    "LabelledExample",
    "MonitorCheckpoint",
    "RECLAIMED",
    "RECORDED",
    "RequestLog",
    "Review",
    "ReviewCursor",
    "ReviewItem",
    "ReviewReason",
    "SpendLedger",
    "SpotCheck",
    "Store",
    "StudentVersion",
    "TaskEvent",
    "TeacherCall",
    "dumps",
    "make_engine",
    "new_owner",
    "owner_alive",
    "text_hash",
    "utcnow",
]
